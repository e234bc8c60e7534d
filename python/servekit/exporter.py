"""`servekit.export`: one call from a Keras model to a proven artifact."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional

from servekit import export_utils as eu
from servekit import portable
from servekit import signature as sig
from servekit import strategies
from servekit import summary
from servekit.errors import ExportError
from servekit.pipeline import behavior as behavior_lib
from servekit.pipeline import core as pipeline
from servekit.pipeline import reference
from servekit.pipeline.cases import CaseSet
from servekit.pipeline.request import EndpointPlan, ExportRequest

FORMATS = ("tf_saved_model", "onnx")
DEFAULT_ENDPOINT_NAME = "serve"
SERVING_DEFAULT = "serving_default"
_FORMAT_ALIASES = {"tf_saved_model": "tf_saved_model", "saved_model": "tf_saved_model", "onnx": "onnx"}


def _version() -> str:
    from servekit import __version__

    return __version__


def _is_tf_module(obj) -> bool:
    """A plain `tf.Module`/trackable that is not a Keras layer."""
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf

    import keras

    if isinstance(obj, keras.layers.Layer):
        return False
    return isinstance(obj, (tf.Module, tf.__internal__.tracking.AutoTrackable))


def export(
    model,
    filepath,
    format: str = "tf_saved_model",
    verbose: Optional[bool] = None,
    input_signature=None,
    **kwargs: Any,
) -> sig.ExportedArtifact:
    """Exports a Keras model (any backend) as a verified inference artifact.

    The model's forward pass in inference mode is written as a TensorFlow
    SavedModel (endpoint `serve`, also the `serving_default` signature) or an
    ONNX model (one graph, the `serving_default` endpoint). Export strategies
    are tried in order (`servekit.strategies`): first the portable rebuild
    (the model is saved as `.keras` and rebuilt under TensorFlow in a fresh
    process: byte-reproducible, and every backend reaches both formats), then
    the in-process export on the source backend, as Keras does it (subclassed
    models without `get_config`, classes a fresh process cannot import). The
    first artifact that verifies is moved to `filepath`: it is reloaded and
    run on generated inputs (batch 1 and 7) and must reproduce the outputs the
    model computes on its own backend (float32: max abs diff <= 1e-5; ints and
    strings exactly). Random outputs are compared by shape, dtype and
    statistics over repeated calls and must stay random; a stateful model's
    successive calls must advance its state as the source model does.

    Signature keys and ONNX tensor names are the model's input names (dict
    keys for dict inputs) and output layer names (dict keys for dict outputs);
    a dynamic batch dimension is named `batch`.

    Args:
        model: a `keras.Model` (Functional, Sequential or subclassed, built),
            or a plain `tf.Module` whose `tf.function`s are exported with
            `tf.saved_model.save` rules (pass `signatures=`).
        filepath: `str` or `pathlib.Path`: the SavedModel directory or the
            `.onnx` file. Replaced atomically if it exists.
        format: `"tf_saved_model"` or `"onnx"`.
        verbose: print a short summary (endpoints, signatures, file sizes,
            time). Defaults to True, like Keras; False prints nothing.
        input_signature: optional; one structure per positional argument of
            the model's `call`, made of `keras.InputSpec`, `tf.TensorSpec`,
            `KerasTensor` or tensors. Inferred from the model when omitted (a
            Functional/Sequential model with `keras.Input` needs no call).
        **kwargs:
            - `verify` (bool, default True): reload and compare before moving
              the artifact into place.
            - `opset_version` (int, ONNX only): the ONNX opset (default 17).
            - `strategy` ("auto", "portable_rebuild" or "in_process"): try
              only this strategy (default "auto": all, in order).
            - JAX backend only: `is_static` (bool) and `jax2tf_kwargs`
              (dict), passed to jax2tf by the in-process strategy; their
              `polymorphic_shapes` (e.g. `["(b, 3)"]`) also name the dynamic
              dimensions of the signature (the first one `batch`).
            - `signatures` (tf.Module only): as `tf.saved_model.save`.

    Returns:
        A `servekit.signature.ExportedArtifact` (format, path, endpoints
        marked stochastic/stateful, opset, the strategy that produced it).

    Raises:
        ExportError: the export is impossible (naming the layer or input and
            what to do instead) or the artifact failed its check; nothing is
            left at `filepath` (a previous artifact there is left intact).

    Example:

    ```python
    artifact = servekit.export(model, "out/model", format="tf_saved_model")
    artifact.endpoint("serving_default").inputs  # (TensorSignature(...),)
    loaded = servekit.load("out/model")
    loaded.serve(x)
    ```
    """
    t0 = time.monotonic()
    verbose = True if verbose is None else bool(verbose)
    if format not in _FORMAT_ALIASES:
        raise ExportError(f"Unknown format {format!r}; servekit exports 'tf_saved_model' and 'onnx'.",
                          reason="bad_argument")
    fmt = _FORMAT_ALIASES[format]
    filepath = os.fspath(filepath)
    verify = bool(kwargs.pop("verify", True))
    opset = kwargs.pop("opset_version", None)
    if _is_tf_module(model):
        from servekit import tf_module

        if fmt != "tf_saved_model":
            raise ExportError("A plain tf.Module exports only as format='tf_saved_model'.", reason="bad_argument")
        return tf_module.export_module(model, filepath, verbose=verbose, verify=verify,
                                       signatures=kwargs.pop("signatures", None),
                                       options=kwargs.pop("options", None), **kwargs)
    import keras

    if not isinstance(model, keras.Model):
        raise ExportError(
            f"export() takes a keras.Model or a tf.Module; got {type(model).__name__}. Wrap a layer in a model, or "
            "use servekit.ExportArchive to export a layer's call.", reason="bad_argument")
    model_name = model.name
    backend = eu.backend_name()
    is_static = kwargs.pop("is_static", None)
    jax2tf_kwargs = kwargs.pop("jax2tf_kwargs", None)
    strategy = kwargs.pop("strategy", None)
    if (is_static is not None or jax2tf_kwargs is not None) and backend != "jax":
        raise ExportError(f"'jax2tf_kwargs' and 'is_static' apply to the jax backend only; this is the {backend} "
                          "backend.", model=model_name, reason="bad_argument")
    if kwargs:
        raise ExportError(f"Unknown argument(s) for export(): {sorted(kwargs)}.", model=model_name,
                          reason="bad_argument")
    if opset is not None and fmt != "onnx":
        raise ExportError("opset_version applies to format='onnx' only.", model=model_name, reason="bad_argument")
    if opset is not None and (not isinstance(opset, int) or opset < 13):
        raise ExportError(f"opset_version must be an int >= 13; got {opset!r}.", model=model_name,
                          reason="bad_argument")
    if jax2tf_kwargs is not None and not isinstance(jax2tf_kwargs, dict):
        raise ExportError("jax2tf_kwargs must be a dict.", model=model_name, reason="bad_argument")
    chosen = strategies.resolve(strategy)
    polymorphic = (jax2tf_kwargs or {}).get("polymorphic_shapes")

    layout = eu.resolve_input_layout(model, input_signature, polymorphic_shapes=polymorphic)
    output_names = eu.model_output_names(model, layout)
    backend_kwargs = {k: v for k, v in (("jax2tf_kwargs", jax2tf_kwargs), ("is_static", is_static)) if v is not None}
    plan = EndpointPlan(DEFAULT_ENDPOINT_NAME, layout, output_names, fn=model, kwargs=backend_kwargs)
    cases = CaseSet()
    if verify:
        def call(flat):
            try:
                return eu.call_model_flat(model, layout, flat)
            except ExportError:
                raise
            except Exception as e:  # the user's model failed: say so, with its own message
                raise ExportError(f"Model '{model_name}' failed on generated inputs on the {backend} backend: {e}",
                                  model=model_name, reason="source_failed") from None

        plan.behavior, made = reference.make_cases(SERVING_DEFAULT, layout, output_names, call,
                                                   behavior_lib.model_variables(model), vocab_source=model)
        cases = CaseSet(made)
    if fmt == "onnx" and plan.behavior.stateful:
        layer = plan.behavior.state_layer
        raise ExportError(
            f"Model '{model_name}': layer '{layer}' updates its variables when called "
            f"({', '.join(plan.behavior.state_variables)}), and ONNX models have no variables: the artifact could "
            "not advance its state. Export format='tf_saved_model', or keep the state outside the model.",
            model=model_name, layer=layer, reason="stateful_onnx")

    request = ExportRequest("model", fmt, model_name, backend, [plan], cases, verify=verify, opset=opset,
                            source=model, version=_version())
    report, attempts = pipeline.run(request, filepath, chosen, what=f"Model '{model_name}' ({backend} backend) -> {fmt}",
                                    make_workdir=portable.make_workdir, remove_workdir=portable.remove_workdir)
    endpoints = tuple(sig.Signature.from_json(e).with_behavior(plan.behavior) for e in report["endpoints"])
    artifact = sig.ExportedArtifact(format=fmt, path=filepath, endpoints=endpoints, opset=report.get("opset"),
                                    strategy=report["strategy"])
    if verbose:
        report["strategy_line"] = pipeline.describe(attempts)
        summary.print_summary(artifact, model_name, backend, report, time.monotonic() - t0)
    return artifact
