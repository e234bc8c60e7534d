"""`servekit.ExportArchive`: a SavedModel with several endpoints, on any backend.

Same API and semantics as `keras.export.ExportArchive` (`track`,
`add_endpoint`, `track_and_add_endpoint`, `add_variable_collection`,
`write_out`); on the TensorFlow and JAX backends every call is also made on a
Keras `ExportArchive` of the same backend, so `tf.function` endpoints,
`tf.lookup` tables, `jax2tf_kwargs`, variable collections and
`SaveOptions(function_aliases=...)` behave exactly as in Keras. `write_out`
goes through servekit's export pipeline (`servekit.pipeline.core`):

1. each endpoint is probed and run on generated inputs on the source backend
   (the verification cases; random and stateful endpoints are detected);
2. the portable rebuild is tried first: endpoints made of Keras layers, models
   and `keras.ops` are traced into one Functional graph, saved as `.keras` and
   rebuilt under TensorFlow in a fresh worker, byte-reproducibly, on every
   backend (the only road on torch);
3. otherwise (TensorFlow code in an endpoint, classes a fresh process cannot
   import, ...) the Keras archive writes it in this process, with servekit's
   signature names;
4. the artifact is reloaded and compared with the cases before it is moved
   into place; nothing is written when no strategy produces a verified one.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, Optional


from servekit.source_model.calls import call_functional_raw, to_numpy
from servekit.source_model.input_layout import (InputLayout, apply_polymorphic_shapes, is_leaf_spec,
                                               layout_from_signature, model_input_names)
from servekit.source_model.kinds import all_layers, backend_name, is_functional
from servekit.source_model.names import endpoint_output_names, positional_names
from servekit.source_model.outputs import model_output_names
from servekit.source_model.sample_inputs import generate_inputs
from servekit import signature as sig
from servekit import strategies
from servekit import summary
from servekit.errors import ExportError, ExportTypeError
from servekit.pipeline import behavior as behavior_lib
from servekit.pipeline import core as pipeline
from servekit.pipeline import reference
from servekit.pipeline.cases import CaseSet
from servekit.pipeline.request import EndpointPlan, ExportRequest

_EXAMPLE = (
    "export_archive.add_endpoint(\n"
    "    name='serve',\n"
    "    fn=model.call,\n"
    "    input_signature=[keras.InputSpec(shape=(None, 3), dtype='float32')],\n"
    ")"
)
_RESERVED = ("variables", "trainable_variables", "non_trainable_variables", "signatures")


@dataclasses.dataclass
class _EndpointSpec:
    name: str
    fn: Callable
    layout: Optional[InputLayout]
    output_names: Optional[list[str]]
    model: Any = None
    kwargs: dict = dataclasses.field(default_factory=dict)
    traced: bool = False  # a tf.function registered without input_signature


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


class _LayerPool:
    """Presents the layers of several models as one (for generated inputs)."""

    def __init__(self, layers):
        self._layers = layers

    def _flatten_layers(self, include_self=True, recursive=True):
        return list(self._layers)


class ExportArchive:
    """Writes a SavedModel with custom endpoints, from any Keras backend.

    Use `track()` to register the layers/models (and, on TensorFlow and JAX,
    other TensorFlow trackables such as `tf.lookup` tables) to save,
    `add_endpoint()` to register each serving function and its input
    signature, then `write_out()`. The first endpoint is also the
    `serving_default` signature unless one is named so.

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
        self._backend = backend_name()
        if self._backend not in ("tensorflow", "jax", "torch"):
            raise ExportError(f"ExportArchive supports the tensorflow, jax and torch backends; this is "
                              f"{self._backend}.", reason="unsupported_backend")
        self._endpoints: list[_EndpointSpec] = []
        self._tracked: list[Any] = []
        self._collections: dict[str, list] = {}
        # Keras's own archive of this backend (TensorFlow and JAX): the
        # in-process strategy writes with it.
        self._keras_archive = None
        if self._backend in ("tensorflow", "jax"):
            from servekit.strategies.in_process import new_keras_archive

            self._keras_archive = new_keras_archive()

    # -- tracked variables (Keras semantics) ---------------------------------

    def _keras_tracked(self):
        import keras

        return [r for r in self._tracked if isinstance(r, keras.layers.Layer)]

    @property
    def variables(self) -> list:
        if self._keras_archive is not None:
            return self._keras_archive.variables
        return [v for r in self._keras_tracked() for v in r.variables]

    @property
    def trainable_variables(self) -> list:
        if self._keras_archive is not None:
            return self._keras_archive.trainable_variables
        return [v for r in self._keras_tracked() for v in r.trainable_variables]

    @property
    def non_trainable_variables(self) -> list:
        if self._keras_archive is not None:
            return self._keras_archive.non_trainable_variables
        return [v for r in self._keras_tracked() for v in r.non_trainable_variables]

    @property
    def _tf_trackable(self):
        """The object Keras saves (TensorFlow and JAX backends)."""
        if self._keras_archive is None:
            raise AttributeError("_tf_trackable exists on the tensorflow and jax backends only")
        return self._keras_archive._tf_trackable

    # -- API -------------------------------------------------------------------

    def track(self, resource):
        """Tracks a layer or model (its variables and lookup tables) or, on the
        TensorFlow and JAX backends, a TensorFlow trackable (e.g. a
        `tf.lookup` table).

        Args:
            resource: a built `keras.layers.Layer`/`keras.Model`, or a TF
                `Trackable`.

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
                    f"Layer '{resource.name}' has not been built, so it has no variables to export (It must be "
                    "built before export). Call it once on data (or build it) before track().",
                    layer=resource.name, reason="not_built")
        elif _is_tf_trackable(resource):
            if self._keras_archive is None:
                raise ExportError(
                    f"Cannot track {type(resource).__name__}: on the {self._backend} backend ExportArchive rebuilds "
                    "endpoints from Keras layers, so TensorFlow resources cannot be part of them. Use a Keras layer "
                    "(e.g. StringLookup instead of a tf.lookup table), or export from the tensorflow or jax "
                    "backend.", reason="untrackable")
        else:
            raise ExportError(
                f"Cannot track {resource!r} of type {type(resource).__name__} (Invalid resource type): "
                "ExportArchive tracks Keras layers and models and, on the tensorflow and jax backends, "
                "TensorFlow trackables (tf.lookup tables, tf.Variable, tf.Module).", reason="untrackable")
        if not any(r is resource for r in self._tracked):
            if self._keras_archive is not None:
                _keras_call(self._keras_archive.track, resource)
            self._tracked.append(resource)
        return resource

    def add_endpoint(self, name: str, fn: Callable, input_signature=None, **kwargs):
        """Registers a serving endpoint.

        Args:
            name: the endpoint's method and signature name.
            fn: the function to serve. With `input_signature`, any callable;
                without, a `tf.function` already called at least once
                (TensorFlow and JAX backends; its batch dimension is made
                dynamic when the function allows it).
            input_signature: one structure per positional argument of `fn`:
                `keras.InputSpec`, `tf.TensorSpec`, `KerasTensor` or tensors;
                for a Functional model with several inputs, a nested list
                (`[[spec1, spec2]]`) or dict (`[{"a": spec1, "b": spec2}]`).
            **kwargs: JAX backend only: `is_static` and `jax2tf_kwargs`, as
                for `keras.export.ExportArchive` (`polymorphic_shapes` also
                names the dynamic dimensions of the signature).

        Returns:
            On TensorFlow and JAX, the `tf.function` Keras made for `fn`;
            on torch, `fn`.

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
        backend_kwargs = {k: v for k, v in (("jax2tf_kwargs", jax2tf_kwargs), ("is_static", is_static))
                          if v is not None}

        if input_signature is None:
            if not _is_tf_function(fn):
                raise ExportError(
                    f"Endpoint '{name}': {getattr(fn, '__name__', type(fn).__name__)!r} is not a traced tf.function, "
                    "so it needs an input_signature giving the shape and dtype of each argument (you must provide "
                    f"an `input_signature` argument), e.g.\n{_EXAMPLE}", reason="bad_signature")
            if self._keras_archive is None:
                raise ExportError(
                    f"Endpoint '{name}': a tf.function cannot be exported from the {self._backend} backend "
                    f"(it would call {self._backend} tensors from TensorFlow). Pass the Python function and an "
                    f"input_signature instead:\n{_EXAMPLE}", reason="bad_signature")
            if not fn._list_all_concrete_functions():
                raise ExportError(
                    f"Endpoint '{name}': the tf.function {getattr(fn, '__name__', fn)!r} has never been called, "
                    "so the shapes and dtypes of its inputs are unknown (you must either provide a function that "
                    f"has been called at least once, or an input_signature). Call it once, or pass an "
                    f"input_signature:\n{_EXAMPLE}", reason="bad_signature")
            from servekit.strategies.in_process import traced_layout

            layout = traced_layout(fn, name)
            result = _keras_call(self._keras_archive.add_endpoint, name, fn, **backend_kwargs)
            self._endpoints.append(_EndpointSpec(name, fn, layout, None, None, backend_kwargs, traced=True))
            return result

        model = _model_of(fn)
        hints = model_input_names(model) if model is not None else None
        signature = input_signature
        if not isinstance(signature, (list, tuple)) or is_leaf_spec(signature):
            signature = [signature]
        signature = list(signature)
        if (model is not None and is_functional(model) and hints and len(hints) > 1
                and len(signature) == len(hints) and all(is_leaf_spec(s) for s in signature)):
            signature = [signature]  # the Functional model's inputs, given flat
        layout = layout_from_signature(signature, name_hints=hints, arg_names=positional_names(fn),
                                       where=f"input_signature of endpoint '{name}'")
        if jax2tf_kwargs and jax2tf_kwargs.get("polymorphic_shapes") is not None:
            layout = apply_polymorphic_shapes(layout, jax2tf_kwargs["polymorphic_shapes"])
        output_names = None
        if model is not None:
            try:
                output_names = model_output_names(model, layout)
            except (TypeError, ValueError, NotImplementedError):
                output_names = None  # named from what the endpoint returns
        result = fn
        if self._keras_archive is not None:
            from servekit.saved_model import arg_specs

            result = _keras_call(self._keras_archive.add_endpoint, name, fn, arg_specs(layout), **backend_kwargs)
        self._endpoints.append(_EndpointSpec(name, fn, layout, output_names, model, backend_kwargs))
        return result

    def track_and_add_endpoint(self, name: str, resource, input_signature, **kwargs):
        """Tracks `resource` and registers `resource.__call__` as endpoint `name`."""
        self.track(resource)
        return self.add_endpoint(name, resource.__call__, input_signature, **kwargs)

    def add_variable_collection(self, name: str, variables) -> None:
        """Saves `variables` as a list attribute `name` of the reloaded object.

        Args:
            name: attribute name.
            variables: a list/tuple/set of `keras.Variable` (or, on
                TensorFlow, `tf.Variable`).
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
        if self._keras_archive is not None:
            _keras_call(self._keras_archive.add_variable_collection, name, variables)
        self._collections[name] = variables

    def write_out(self, filepath, options=None, verbose: bool = True, verify: bool = True) -> sig.ExportedArtifact:
        """Writes the SavedModel, verified, atomically.

        Args:
            filepath: the SavedModel directory (replaced atomically).
            options: `tf.saved_model.SaveOptions` (TensorFlow and JAX).
            verbose: print a short summary (endpoints, signatures, sizes,
                the strategy that wrote it).
            verify: reload and compare each endpoint with its source function
                on generated inputs (batch 1 and 7) before moving it in place.
                Random outputs are compared by statistics over repeated calls
                and must stay random; stateful endpoints must advance their
                state as the source does.

        Returns:
            The `ExportedArtifact`.

        Raises:
            ExportError: no endpoint, an endpoint cannot be exported, or no
                strategy produced a verified artifact (nothing is written).
        """
        if not self._endpoints:
            raise ExportError("No endpoints have been set yet: call add_endpoint() before write_out().",
                              reason="no_endpoint")
        if options is not None and getattr(options, "save_debug_info", False):
            raise ExportError("SaveOptions(save_debug_info=True) writes stack traces with absolute paths of this "
                              "machine into the artifact; servekit artifacts never carry paths. Drop that option.",
                              reason="bad_argument")
        if options is not None and self._keras_archive is None:
            raise ExportError("SaveOptions apply on the tensorflow and jax backends only.", reason="bad_argument")
        t0 = time.monotonic()
        filepath = os.fspath(filepath)
        request = ExportRequest("archive", "tf_saved_model", "ExportArchive", self._backend, [], CaseSet(),
                                verify=verify, source=self, options=options, version=_version())
        with strategies.worker_starting_now(strategies.DEFAULT_ORDER, request):
            plans, cases = self._plans(verify)
            request = dataclasses.replace(request, endpoints=plans, cases=cases)
            report, attempts = pipeline.run(request, filepath, strategies.DEFAULT_ORDER,
                                            what=f"ExportArchive ({self._backend} backend)")
        behaviors = {p.name: p.behavior for p in plans}
        behaviors.setdefault("serving_default", plans[0].behavior)
        endpoints = tuple(sig.Signature.from_json(e).with_behavior(behaviors.get(e["name"], behavior_lib.Behavior()))
                          for e in report["endpoints"])
        artifact = sig.ExportedArtifact("tf_saved_model", filepath, endpoints, strategy=report["strategy"])
        if verbose:
            report["strategy_line"] = pipeline.describe(attempts)
            summary.print_summary(artifact, "ExportArchive", self._backend, report, time.monotonic() - t0)
        return artifact

    # -- internals -------------------------------------------------------------

    def _check_name(self, name) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ExportError(f"Endpoint/collection name {name!r} must be a Python identifier.",
                              reason="bad_argument")
        if any(e.name == name for e in self._endpoints) or name in self._collections:
            raise ExportError(f"Endpoint name '{name}' is already taken.", reason="duplicate_name")
        if name in _RESERVED:
            raise ExportError(f"'{name}' is reserved on the exported object; choose another name.",
                              reason="bad_argument")

    def _source_variables(self, spec: _EndpointSpec) -> list:
        """The Keras variables an endpoint may change (restored after probing)."""
        return behavior_lib.model_variables(*self._keras_tracked(), spec.model)

    def _vocab_source(self, spec: _EndpointSpec):
        layers = []
        for r in list(self._keras_tracked()) + ([spec.model] if spec.model is not None else []):
            layers += all_layers(r)
        return _LayerPool(layers)

    def _source_call(self, spec: _EndpointSpec) -> Callable[[list], list]:
        """Runs an endpoint on the source backend: flat NumPy in, flat NumPy out."""
        import keras

        if spec.traced or self._backend == "tensorflow" or any(s.dtype == "string" for s in spec.layout.flat):
            import tensorflow as tf

            if any(s.dtype == "string" for s in spec.layout.flat) and not spec.traced and self._backend != "tensorflow":
                sub = self._symbolic_submodel(spec)  # lookup layers run TF ops on every backend

                def call_raw(flat):
                    return [to_numpy(x) for x in call_functional_raw(sub, [tf.constant(v) for v in flat])]

                return call_raw

            def call_tf(flat):
                out = spec.fn(*spec.layout.pack([tf.constant(v) for v in flat]))
                return [to_numpy(x) for x in tf.nest.flatten(out)]

            return call_tf

        def call(flat):
            out = spec.fn(*spec.layout.pack([keras.ops.convert_to_tensor(v) for v in flat]))
            return [to_numpy(x) for x in keras.tree.flatten(out)]

        return call

    def _symbolic_submodel(self, spec: _EndpointSpec):
        import keras

        symbolic = [keras.Input(batch_shape=s.shape, dtype=s.dtype, name=s.name) for s in spec.layout.flat]
        out = (spec.model if spec.model is not None else spec.fn)(*spec.layout.pack(symbolic))
        return keras.Model(symbolic, keras.tree.flatten(out))

    def _output_structure(self, spec: _EndpointSpec):
        """What the endpoint returns (to name its outputs): traced on symbolic
        inputs when it takes strings on JAX/torch, else run once (state
        restored)."""
        import keras

        if any(s.dtype == "string" for s in spec.layout.flat) and not spec.traced and self._backend != "tensorflow":
            symbolic = [keras.Input(batch_shape=s.shape, dtype=s.dtype, name=s.name) for s in spec.layout.flat]
            return (spec.model if spec.model is not None else spec.fn)(*spec.layout.pack(symbolic))
        flat = generate_inputs(spec.layout, reference.verify_batches(spec.layout)[0],
                                  model=self._vocab_source(spec))
        with behavior_lib.VariableSnapshot(self._source_variables(spec)), \
                reference.blaming_the_source(f"Endpoint '{spec.name}'", self._backend):
            if spec.traced or self._backend == "tensorflow":
                import tensorflow as tf

                return spec.fn(*spec.layout.pack([tf.constant(v) for v in flat]))
            return spec.fn(*spec.layout.pack([keras.ops.convert_to_tensor(v) for v in flat]))

    def _plans(self, verify: bool) -> tuple[list[EndpointPlan], CaseSet]:
        """Each endpoint's plan (output names, behavior) and verification cases."""
        plans, cases = [], CaseSet()
        for spec in self._endpoints:
            call = reference.guarded(self._source_call(spec), f"Endpoint '{spec.name}'", self._backend)
            names = endpoint_output_names(self._output_structure(spec), spec.output_names)
            plan = EndpointPlan(spec.name, spec.layout, names, fn=spec.fn, kwargs=spec.kwargs)
            if verify:
                plan.behavior, made = reference.make_cases(spec.name, spec.layout, names, call,
                                                           self._source_variables(spec), self._vocab_source(spec))
                for case in made:
                    cases.add(case)
            plans.append(plan)
        return plans, cases

    def _portable_unavailable(self, request: ExportRequest) -> Optional[str]:
        """Why the portable rebuild cannot write this archive, or None."""
        import keras

        if request.options is not None:
            return "SaveOptions apply to the SavedModel this process writes"
        for spec in self._endpoints:
            if spec.traced or _is_tf_function(spec.fn):
                return f"endpoint '{spec.name}' is a tf.function: TensorFlow code stays in this process"
        for r in self._tracked:
            if not isinstance(r, keras.layers.Layer):
                return f"a tracked {type(r).__name__} is a TensorFlow resource, not a Keras layer"
        for name, vs in self._collections.items():
            if not all(isinstance(v, keras.Variable) for v in vs):
                return f"variable collection '{name}' holds tf.Variables"
        return None

    def _in_process_unavailable(self) -> Optional[str]:
        if self._keras_archive is None:
            return (f"Keras's ExportArchive cannot trace endpoints on the {self._backend} backend "
                    "(it needs torch_xla)")
        return None

    def _write_portable(self, staged: dict[str, str], workdir: str,
                        request: ExportRequest) -> dict[str, dict[str, Any]]:
        """The portable rebuild of this archive (see `servekit.strategies.portable`)."""
        from servekit.strategies import portable as portable_strategy

        traced = [portable_strategy.BundleEndpoint(spec.name, spec.layout, plan.output_names,
                                                   spec.model if spec.model is not None else spec.fn)
                  for spec, plan in zip(self._endpoints, request.endpoints)]
        return portable_strategy.write_bundle(request, staged, workdir, traced, self._keras_tracked(),
                                              self._collections)


def _keras_call(method, *args, **kwargs):
    """Calls Keras's archive; its errors become `ExportError`s that keep
    Keras's message (and stay `TypeError`s where Keras raises one). On JAX,
    the endpoints it converts with jax2tf serialize for this TensorFlow's
    StableHLO whenever they are traced (`servekit.strategies.stablehlo`)."""
    from servekit.strategies import stablehlo

    try:
        with stablehlo.for_tensorflow():
            return method(*args, **kwargs)
    except TypeError as e:
        raise ExportTypeError(f"ExportArchive: {e}", reason="bad_argument") from None
    except ValueError as e:
        if isinstance(e, ExportError):
            raise
        raise ExportError(f"ExportArchive: {e}", reason="bad_argument") from None


def _is_tf_variable(v) -> bool:
    import tensorflow as tf

    return isinstance(v, tf.Variable)


def _version() -> str:
    from servekit.version import __version__

    return __version__
