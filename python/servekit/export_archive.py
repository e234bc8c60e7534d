"""`servekit.ExportArchive`: a SavedModel with several endpoints, on any backend.

Same API as `keras.export.ExportArchive` (`track`, `add_endpoint`,
`track_and_add_endpoint`, `add_variable_collection`, `write_out`), with the
guarantees of `servekit.export`: the artifact is written to a staging sibling,
reloaded and compared with the endpoints computed on the source backend,
made byte-stable, and only then moved into place.

- Keras-only archives (every backend): each endpoint is called once on
  symbolic Keras inputs; the Keras layers, models and `keras.ops` it calls
  form a Functional graph, which is saved as `.keras` and rebuilt under
  TensorFlow in a fresh worker process (see `servekit.portable`), so the
  artifact does not depend on what this process did before.
- TensorFlow backend, endpoints with TensorFlow code (traced `tf.function`s,
  `tf.lookup` tables, `tf.Variable` collections, `SaveOptions`, or functions
  that cannot be traced symbolically): written in this process.
- JAX and torch backends: endpoints must be built from Keras layers/models and
  `keras.ops` (e.g. `model.call`, `lambda x: model(x, training=True)`); code
  calling `jax.numpy`/`torch` directly is refused with an `ExportError`
  saying so.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

from servekit import atomic
from servekit import export_utils as eu
from servekit import portable
from servekit import signature as sig
from servekit import summary
from servekit.errors import ExportError

_EXAMPLE = (
    "export_archive.add_endpoint(\n"
    "    name='serve',\n"
    "    fn=model.call,\n"
    "    input_signature=[keras.InputSpec(shape=(None, 3), dtype='float32')],\n"
    ")"
)


@dataclasses.dataclass
class _EndpointSpec:
    name: str
    fn: Callable
    layout: Optional[eu.InputLayout]
    output_names: Optional[list[str]]
    model: Any = None


def _is_tf_function(fn) -> bool:
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf

    return isinstance(fn, tf.types.experimental.GenericFunction)


def _is_tf_trackable(obj) -> bool:
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf

    return isinstance(obj, tf.__internal__.tracking.Trackable)


def _model_of(fn):
    """The Keras model whose forward pass `fn` is (model, model.call, model.__call__)."""
    import keras

    if isinstance(fn, keras.Model):
        return fn
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, keras.Model) and getattr(fn, "__name__", "") in ("call", "__call__"):
        return owner
    return None


def _positional_names(fn) -> Optional[list[str]]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


class _LayerPool:
    """Presents the layers of several models as one (for generated inputs)."""

    def __init__(self, layers):
        self._layers = layers

    def _flatten_layers(self, include_self=True, recursive=True):
        return list(self._layers)


class ExportArchive:
    """Writes a SavedModel with custom endpoints, from any Keras backend.

    Use `track()` to register the layers/models (and, on TensorFlow, other
    trackable resources) to save, `add_endpoint()` to register each serving
    function and its input signature, then `write_out()`. The first endpoint
    is also the `serving_default` signature unless one is named so.

    Variables used by endpoints are tracked automatically, and so are the
    lookup tables of `StringLookup`, `IntegerLookup` and `TextVectorization`
    layers an endpoint calls, tracked or not.

    Example:

    ```python
    archive = servekit.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", model.call, input_signature=[keras.InputSpec((None, 3), "float32")])
    archive.add_endpoint(
        "call_training", lambda x: model(x, training=True),
        input_signature=[keras.InputSpec((None, 3), "float32")])
    archive.write_out("path/to/location")
    servekit.load("path/to/location").serve(x)
    ```
    """

    def __init__(self) -> None:
        self._backend = eu.backend_name()
        if self._backend not in ("tensorflow", "jax", "torch"):
            raise ExportError(f"ExportArchive supports the tensorflow, jax and torch backends; this is "
                              f"{self._backend}.", reason="unsupported_backend")
        self._endpoints: list[_EndpointSpec] = []
        self._tracked: list[Any] = []
        self._collections: dict[str, list] = {}

    # -- tracked variables (Keras semantics) ---------------------------------

    def _keras_tracked(self):
        import keras

        return [r for r in self._tracked if isinstance(r, keras.layers.Layer)]

    @property
    def variables(self) -> list:
        return [v for r in self._keras_tracked() for v in r.variables]

    @property
    def trainable_variables(self) -> list:
        return [v for r in self._keras_tracked() for v in r.trainable_variables]

    @property
    def non_trainable_variables(self) -> list:
        return [v for r in self._keras_tracked() for v in r.non_trainable_variables]

    # -- API -------------------------------------------------------------------

    def track(self, resource):
        """Tracks a layer or model (its variables and lookup tables) or, on the
        TensorFlow backend, a TensorFlow trackable (e.g. a `tf.lookup` table).

        Args:
            resource: a built `keras.layers.Layer`/`keras.Model`, or a TF
                `Trackable` (TensorFlow backend only).

        Returns:
            `resource`.

        Raises:
            ExportError: the layer is not built, or the resource cannot be
                tracked on this backend.
        """
        import keras

        if isinstance(resource, keras.layers.Layer):
            if not resource.built:
                raise ExportError(
                    f"Layer '{resource.name}' has not been built, so it has no variables to export. Call it once "
                    "on data (or build it) before track().", layer=resource.name, reason="not_built")
        elif _is_tf_trackable(resource):
            if self._backend != "tensorflow":
                raise ExportError(
                    f"Cannot track {type(resource).__name__}: on the {self._backend} backend ExportArchive rebuilds "
                    "endpoints from Keras layers, so TensorFlow resources cannot be part of them. Use a Keras layer "
                    "(e.g. StringLookup instead of a tf.lookup table), or export from the tensorflow backend.",
                    reason="untrackable")
        else:
            raise ExportError(
                f"Cannot track {resource!r} of type {type(resource).__name__}: ExportArchive tracks Keras layers "
                "and models and, on the tensorflow backend, TensorFlow trackables (tf.lookup tables, tf.Variable, "
                "tf.Module).", reason="untrackable")
        if not any(r is resource for r in self._tracked):
            self._tracked.append(resource)
        return resource

    def add_endpoint(self, name: str, fn: Callable, input_signature=None, **kwargs):
        """Registers a serving endpoint.

        Args:
            name: the endpoint's method and signature name.
            fn: the function to serve. With `input_signature`, any callable;
                without, a `tf.function` already called at least once
                (TensorFlow backend; its batch dimension is made dynamic when
                the function allows it).
            input_signature: one structure per positional argument of `fn`:
                `keras.InputSpec`, `tf.TensorSpec`, `KerasTensor` or tensors;
                for a Functional model with several inputs, a nested list
                (`[[spec1, spec2]]`) or dict (`[{"a": spec1, "b": spec2}]`).
            **kwargs: JAX backend only: `is_static` (ignored, accepted for
                Keras compatibility) and `jax2tf_kwargs` (`polymorphic_shapes`
                makes dimensions dynamic).

        Returns:
            On TensorFlow, the `tf.function` for `fn`; otherwise `fn`.

        Raises:
            ExportError: duplicate name, missing signature, bad arguments.

        Example:

        ```python
        archive.add_endpoint("serve", model.call,
                             input_signature=[keras.InputSpec((None, 3), "float32")])
        ```
        """
        self._check_name(name)
        if not callable(fn):
            raise ExportError(f"Endpoint '{name}': fn must be callable; got {type(fn).__name__}.",
                              reason="bad_argument")
        is_static = kwargs.pop("is_static", None)
        jax2tf_kwargs = kwargs.pop("jax2tf_kwargs", None)
        if (is_static is not None or jax2tf_kwargs is not None) and self._backend != "jax":
            raise ExportError(f"'jax2tf_kwargs' and 'is_static' apply to the jax backend only; this is the "
                              f"{self._backend} backend.", reason="bad_argument")
        if kwargs:
            raise ExportError(f"Endpoint '{name}': unknown argument(s) {sorted(kwargs)}.", reason="bad_argument")
        polymorphic = (jax2tf_kwargs or {}).get("polymorphic_shapes")

        if input_signature is None:
            if _is_tf_function(fn):
                if self._backend != "tensorflow":
                    raise ExportError(
                        f"Endpoint '{name}': a tf.function cannot be exported from the {self._backend} backend "
                        f"(it would call {self._backend} tensors from TensorFlow). Pass the Python function and an "
                        f"input_signature instead:\n{_EXAMPLE}", reason="bad_signature")
                if not fn._list_all_concrete_functions():
                    raise ExportError(
                        f"Endpoint '{name}': the tf.function {getattr(fn, '__name__', fn)!r} has never been called, "
                        "so the shapes and dtypes of its inputs are unknown. Call it once, or pass an "
                        f"input_signature:\n{_EXAMPLE}", reason="bad_signature")
                self._endpoints.append(_EndpointSpec(name, fn, None, None))
                return fn
            raise ExportError(
                f"Endpoint '{name}': {getattr(fn, '__name__', type(fn).__name__)!r} is not a traced tf.function, "
                f"so it needs an input_signature giving the shape and dtype of each argument, e.g.\n{_EXAMPLE}",
                reason="bad_signature")

        model = _model_of(fn)
        hints = eu.model_input_names(model) if model is not None else None
        signature = input_signature
        if not isinstance(signature, (list, tuple)) or eu._is_leaf_spec(signature):
            signature = [signature]
        signature = list(signature)
        if (model is not None and eu._is_functional(model) and hints and len(hints) > 1
                and len(signature) == len(hints) and all(eu._is_leaf_spec(s) for s in signature)):
            signature = [signature]  # the Functional model's inputs, given flat
        arg_names = _positional_names(fn)
        layout = eu.layout_from_signature(signature, name_hints=hints, arg_names=arg_names,
                                          where=f"input_signature of endpoint '{name}'")
        if polymorphic is not None:
            layout = eu.apply_polymorphic_shapes(layout, polymorphic)
        output_names = None
        if model is not None:
            try:
                output_names = eu.model_output_names(model, layout)
            except Exception:
                output_names = None
        self._endpoints.append(_EndpointSpec(name, fn, layout, output_names, model))
        if self._backend == "tensorflow":
            import tensorflow as tf

            from servekit.saved_model import arg_specs

            return tf.function(fn, input_signature=arg_specs(layout), autograph=False)
        return fn

    def track_and_add_endpoint(self, name: str, resource, input_signature, **kwargs):
        """Tracks `resource` and registers `resource.__call__` as endpoint `name`."""
        self.track(resource)
        return self.add_endpoint(name, resource.__call__, input_signature, **kwargs)

    def add_variable_collection(self, name: str, variables) -> None:
        """Saves `variables` as a list attribute `name` of the reloaded object.

        Args:
            name: attribute name.
            variables: a list/tuple/set of `keras.Variable` or `tf.Variable`.
        """
        import keras

        self._check_name(name)
        if not isinstance(variables, (list, tuple, set)):
            raise ExportError(f"Variable collection '{name}': expected a list/tuple/set of variables; got "
                              f"{type(variables).__name__}.", reason="bad_argument")
        variables = list(variables)
        for v in variables:
            is_tf_var = "tensorflow" in sys.modules and _is_tf_variable(v)
            if not (isinstance(v, keras.Variable) or is_tf_var):
                raise ExportError(f"Variable collection '{name}': {type(v).__name__} is not a keras.Variable or "
                                  "tf.Variable.", reason="bad_argument")
            if is_tf_var and self._backend != "tensorflow":
                raise ExportError(f"Variable collection '{name}': tf.Variable cannot be exported from the "
                                  f"{self._backend} backend; use keras.Variable.", reason="bad_argument")
        self._collections[name] = variables

    def write_out(self, filepath, options=None, verbose: bool = True, verify: bool = True) -> sig.ExportedArtifact:
        """Writes the SavedModel, verified, atomically.

        Args:
            filepath: the SavedModel directory (replaced atomically).
            options: `tf.saved_model.SaveOptions` (TensorFlow backend).
            verbose: print a short summary (endpoints, signatures, sizes).
            verify: reload and compare each endpoint with its source function
                on generated inputs (batch 1 and 7) before moving it in place.
                Endpoints whose outputs are random (e.g. training-mode dropout)
                are compared by names, shapes and dtypes only.

        Returns:
            The `ExportedArtifact`.

        Raises:
            ExportError: no endpoint, an endpoint cannot be exported, or the
                artifact failed its check (nothing is written then).
        """
        if not self._endpoints:
            raise ExportError("No endpoints have been set yet: call add_endpoint() before write_out().",
                              reason="no_endpoint")
        if options is not None and getattr(options, "save_debug_info", False):
            raise ExportError("SaveOptions(save_debug_info=True) writes stack traces with absolute paths of this "
                              "machine into the artifact; servekit artifacts never carry paths. Drop that option.",
                              reason="bad_argument")
        t0 = time.monotonic()
        filepath = os.fspath(filepath)
        workdir = portable.make_workdir()
        try:
            with atomic.staged_write(filepath) as staged:
                if self._backend == "tensorflow":
                    # Keras-only archives go through the worker too (fresh
                    # process: object names and traces do not depend on what
                    # this process did before); TF code runs in-process.
                    report = None
                    if self._portable_candidate(options):
                        try:
                            report = self._write_portable(staged, workdir, verify)
                        except _NotPortable:
                            report = None
                    if report is None:
                        report = self._write_in_process(staged, workdir, options, verify)
                else:
                    if options is not None:
                        raise ExportError("SaveOptions apply on the tensorflow backend only.",
                                          reason="bad_argument")
                    report = self._write_portable(staged, workdir, verify)
                if not report.get("ok"):
                    raise ExportError(f"ExportArchive ({self._backend} backend): {report.get('message')}\n"
                                      f"Nothing was written at '{filepath}'.", layer=report.get("layer"),
                                      reason=report.get("reason", "export_failed"))
                atomic.commit(staged, filepath)
            report["files"] = atomic.artifact_files(filepath)
        finally:
            portable.remove_workdir(workdir)
        endpoints = tuple(sig.Signature.from_json(e) for e in report["endpoints"])
        artifact = sig.ExportedArtifact("tf_saved_model", filepath, endpoints)
        if verbose:
            summary.print_summary(artifact, "ExportArchive", self._backend, report, time.monotonic() - t0)
        return artifact

    # -- internals -------------------------------------------------------------

    def _check_name(self, name) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ExportError(f"Endpoint/collection name {name!r} must be a Python identifier.",
                              reason="bad_argument")
        if any(e.name == name for e in self._endpoints) or name in self._collections:
            raise ExportError(f"Endpoint name '{name}' is already taken.", reason="duplicate_name")
        if name in ("variables", "trainable_variables", "non_trainable_variables", "signatures"):
            raise ExportError(f"'{name}' is reserved on the exported object; choose another name.",
                              reason="bad_argument")

    def _vocab_source(self, spec: _EndpointSpec):
        layers = []
        for r in list(self._keras_tracked()) + ([spec.model] if spec.model is not None else []):
            try:
                layers += list(r._flatten_layers(include_self=True, recursive=True))
            except Exception:
                pass
        return _LayerPool(layers)

    def _batches(self, layout: eu.InputLayout):
        if layout.flat and all(s.shape and s.shape[0] is None for s in layout.flat):
            return list(eu.VERIFY_BATCH_SIZES)
        return [next((s.shape[0] for s in layout.flat if s.shape and s.shape[0] is not None), 1)]

    def _endpoint_runs(self, spec: _EndpointSpec, layout: eu.InputLayout, call):
        """Runs an endpoint's source function on generated inputs.

        Each batch is run three times; if any run differs, the endpoint is
        random (e.g. dropout in training mode) and its outputs are compared by
        name, shape and dtype only. Returns `(batch, inputs, outputs,
        compare_values)` per batch.
        """
        runs, stable = [], True
        for batch in self._batches(layout):
            flat = eu.generate_inputs(layout, batch, model=self._vocab_source(spec))
            outs = [call(flat) for _ in range(3)]
            stable = stable and all(np.array_equal(x, y) for other in outs[1:] for x, y in zip(outs[0], other))
            runs.append((batch, flat, outs[0]))
        return [(batch, flat, out, stable) for batch, flat, out in runs]

    def _portable_candidate(self, options) -> bool:
        """TensorFlow backend: can this archive go through the worker?"""
        import keras

        if options is not None:
            return False
        if any(e.layout is None or _is_tf_function(e.fn) for e in self._endpoints):
            return False
        if any(not isinstance(r, keras.layers.Layer) for r in self._tracked):
            return False
        return all(isinstance(v, keras.Variable) for vs in self._collections.values() for v in vs)

    def _write_in_process(self, staged, workdir, options, verify):
        import tensorflow as tf

        from servekit import _write
        from servekit.saved_model import Endpoint

        endpoints = [Endpoint(e.name, e.fn, e.layout, e.output_names) for e in self._endpoints]

        def cases(built):
            result = []
            if not verify:
                return result
            restore = _snapshot(self.variables + [v for e in self._endpoints if e.model is not None
                                                  for v in e.model.variables])
            try:
                return _cases(built, result)
            finally:
                restore()

        def _cases(built, result):
            by_name = {s.name: s for s in built.endpoints}
            for spec in self._endpoints:
                layout = built.layouts[spec.name]
                names = [t.name for t in by_name[spec.name].outputs]

                def call(flat, _spec=spec, _layout=layout):
                    args = _layout.pack([tf.constant(v) for v in flat])
                    return [np.asarray(t) for t in tf.nest.flatten(_spec.fn(*args))]

                for batch, flat, outs, values in self._endpoint_runs(spec, layout, call):
                    result.append((spec.name, batch, dict(zip([s.name for s in layout.flat], flat)),
                                   dict(zip(names, outs)), values))
            return result

        try:
            return _write.write_and_verify(
                endpoints, self._tracked, self._collections, fmt="tf_saved_model", output=staged, cases=[],
                opset=None, model_name="ExportArchive", layer_names=[], scratch_dir=workdir,
                version=_version(), options=options, case_factory=cases)
        except ExportError as e:
            return {"ok": False, "message": str(e), "reason": e.reason, "layer": e.layer}

    def _write_portable(self, staged, workdir, verify):
        import keras

        bundle_inputs, bundle_outputs, job_endpoints = [], [], []
        writer = portable.CaseWriter()
        for spec in self._endpoints:
            layout = spec.layout
            symbolic = [keras.Input(batch_shape=s.shape, dtype=s.dtype, name=f"{spec.name}__{s.name}")
                        for s in layout.flat]
            # `model.call` on symbolic tensors bypasses Layer.__call__, which is
            # what records the graph: trace the model itself instead.
            trace_fn = spec.model if spec.model is not None else spec.fn
            try:
                out = trace_fn(*layout.pack(symbolic))
            except Exception as e:
                if self._backend == "tensorflow":
                    raise _NotPortable(str(e)) from None
                raise ExportError(
                    f"Endpoint '{spec.name}': on the {self._backend} backend, servekit rebuilds each endpoint under "
                    "TensorFlow from the Keras layers, models and keras.ops it calls, by calling it once on "
                    f"symbolic inputs; that failed ({type(e).__name__}: {e}). Write the endpoint with Keras "
                    "layers/models and keras.ops only (e.g. fn=model.call or lambda x: model(x, training=True)), "
                    "or export from the tensorflow backend.", reason="untraceable_endpoint") from None
            leaves = keras.tree.flatten(out)
            bad = [type(x).__name__ for x in leaves if not isinstance(x, keras.KerasTensor)]
            if bad or not leaves:
                if self._backend == "tensorflow":
                    raise _NotPortable(f"returned {bad}")
                raise ExportError(
                    f"Endpoint '{spec.name}' returned {bad or 'nothing'} instead of Keras tensors when called on "
                    f"symbolic inputs: on the {self._backend} backend endpoints must compute their outputs with "
                    "Keras layers/models and keras.ops.", reason="untraceable_endpoint")
            if spec.output_names is not None and len(spec.output_names) == len(leaves):
                names = list(spec.output_names)
            elif isinstance(out, dict) and all(isinstance(k, str) for k in out):
                names = eu.unique_names(sorted(out))
            else:
                names = [f"output_{i}" for i in range(len(leaves))]
            template = keras.tree.pack_sequence_as(out, list(range(len(leaves))))
            job_endpoints.append({
                "name": spec.name, "layout": layout.to_json(), "output_names": names,
                "inputs_range": [len(bundle_inputs), len(bundle_inputs) + len(symbolic)],
                "outputs_range": [len(bundle_outputs), len(bundle_outputs) + len(leaves)],
                "output_structure": eu._to_json_struct(template),
            })
            bundle_inputs += symbolic
            bundle_outputs += leaves
        try:
            bundle = keras.Model(bundle_inputs, bundle_outputs, name="servekit_archive")
        except Exception as e:
            if self._backend == "tensorflow":
                raise _NotPortable(str(e)) from None
            raise ExportError(f"The endpoints cannot be rebuilt as one Keras graph: {e}",
                              reason="untraceable_endpoint") from None
        if verify:
            restore = _snapshot(list(bundle.variables) + self.variables)
            offset = 0
            for spec, ep in zip(self._endpoints, job_endpoints):
                a, b = ep["inputs_range"]
                c, d = ep["outputs_range"]
                sub = keras.Model(bundle_inputs[a:b], bundle_outputs[c:d])
                runs = self._endpoint_runs(spec, spec.layout,
                                           lambda flat, _spec=spec, _sub=sub: self._source_call(_spec, _sub, flat))
                for batch, flat, outs, values in runs:
                    writer.add(spec.name, batch, dict(zip([s.name for s in spec.layout.flat], flat)),
                               dict(zip(ep["output_names"], outs)), values)
                offset += 1
            restore()
        classes, in_process_reason = portable.preflight(bundle, "ExportArchive",
                                                        allow_in_process=self._backend == "tensorflow")
        if in_process_reason:
            raise _NotPortable(in_process_reason)
        # bundle.variables (unlike .weights) includes RNG seed states; the
        # worker's loaded bundle lists its variables in the same order.
        index = {id(w): i for i, w in enumerate(bundle.variables)}
        values: dict[str, np.ndarray] = {}

        def ref(v):
            if id(v) in index:
                return {"kind": "bundle", "index": index[id(v)], "trainable": bool(v.trainable)}
            key = f"v{len(values)}"
            values[key] = np.asarray(keras.ops.convert_to_numpy(v.value))
            return {"kind": "value", "key": key, "trainable": bool(v.trainable), "name": v.name}

        tracked = [{"variables": [ref(v) for v in r.variables]} for r in self._keras_tracked()]
        collections = {name: [ref(v) for v in vs] for name, vs in self._collections.items()}
        variables_file = None
        if values:
            variables_file = os.path.join(workdir, "variables.npz")
            np.savez(variables_file, **values)
        keras_file = os.path.join(workdir, "archive.keras")
        portable.save_keras(bundle, keras_file, "ExportArchive")
        job = {
            "kind": "archive", "keras_file": keras_file, "format": "tf_saved_model", "output": staged,
            "opset": None, "model_name": "ExportArchive", "version": _version(), "endpoints": job_endpoints,
            "tracked": tracked, "variable_collections": collections, "variables_file": variables_file,
            "lambda_globals": portable.lambda_globals(bundle)[0],
                    "custom_classes": [dict(module=c.module, qualname=c.qualname, names=c.names) for c in classes],
            "sys_path": portable.importable_sys_path() if classes else [], "layer_names": [],
            "verify": verify, "cases_file": writer.write(os.path.join(workdir, "cases.npz")),
            "cases": writer.cases,
        }
        return portable.run_worker(job, workdir)

    def _source_call(self, spec: _EndpointSpec, sub, flat) -> list[np.ndarray]:
        """The endpoint's outputs on the source backend, flat."""
        import keras

        if any(s.dtype == "string" for s in spec.layout.flat):
            import tensorflow as tf  # lookup layers run TF ops on every backend

            outs = eu._call_functional_raw(sub, [tf.constant(v) for v in flat])
        else:
            outs = keras.tree.flatten(spec.fn(*spec.layout.pack(list(flat))))
        return [eu.to_numpy(x) for x in outs]


class _NotPortable(Exception):
    """The archive needs TensorFlow code: write it in-process instead."""


def _snapshot(variables):
    """Saves variable values (e.g. RNG seed states advanced by calling a
    training-mode endpoint); returns a function restoring them."""
    import keras

    seen, saved = set(), []
    for v in variables:
        if id(v) in seen:
            continue
        seen.add(id(v))
        try:
            saved.append((v, np.array(keras.ops.convert_to_numpy(v.value))))
        except Exception:
            pass

    def restore():
        for v, value in saved:
            v.assign(value)

    return restore


def _is_tf_variable(v) -> bool:
    import tensorflow as tf

    return isinstance(v, tf.Variable)


def _version() -> str:
    from servekit.version import __version__

    return __version__
