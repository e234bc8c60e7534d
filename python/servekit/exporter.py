"""`servekit.export`: one call from a Keras model to a proven artifact."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional

from servekit import atomic
from servekit import export_utils as eu
from servekit import portable
from servekit import signature as sig
from servekit import summary
from servekit.errors import ExportError

FORMATS = ("tf_saved_model", "onnx")
DEFAULT_ENDPOINT_NAME = "serve"
_FORMAT_ALIASES = {"tf_saved_model": "tf_saved_model", "saved_model": "tf_saved_model", "onnx": "onnx"}


def _version() -> str:
    from servekit import __version__

    return __version__


def _is_tf_module(obj) -> bool:
    """A plain `tf.Module`/trackable that is not a Keras layer."""
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf

    try:
        import keras

        if isinstance(obj, keras.layers.Layer):
            return False
    except Exception:  # pragma: no cover
        pass
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
    ONNX model (one graph, the `serving_default` endpoint). The artifact is
    built under TensorFlow from a `.keras` copy of the model in a fresh
    process, so it is the same whichever backend the model lives on. Before it
    is moved to `filepath`, the artifact is reloaded and run on generated
    inputs (batch 1 and 7) and must reproduce the outputs the model computes
    on its own backend (float32: max abs diff <= 1e-5; ints and strings
    exactly).

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
            - JAX backend only: `is_static` (bool; accepted for Keras
              compatibility, servekit always exports state-free inference) and
              `jax2tf_kwargs` (dict); its `polymorphic_shapes` (e.g.
              `["(b, 3)"]`) mark dimensions dynamic: symbols become dynamic
              dimensions (the first one named `batch`). Other jax2tf options
              do not apply, since servekit does not go through jax2tf.
            - `signatures` (tf.Module only): as `tf.saved_model.save`.

    Returns:
        A `servekit.signature.ExportedArtifact` (format, path, endpoints,
        opset).

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
    polymorphic = (jax2tf_kwargs or {}).get("polymorphic_shapes")

    layout = eu.resolve_input_layout(model, input_signature, polymorphic_shapes=polymorphic)
    output_names = eu.model_output_names(model, layout)
    classes, in_process_reason = portable.preflight(model, model_name, allow_in_process=backend == "tensorflow")
    if backend == "tensorflow" and os.environ.get("SERVEKIT_EXPORT_IN_PROCESS") == "1":
        in_process_reason = "SERVEKIT_EXPORT_IN_PROCESS=1"  # debugging aid

    writer = portable.CaseWriter()
    if verify:
        batches = eu.VERIFY_BATCH_SIZES if layout.flat and all(
            s.shape and s.shape[0] is None for s in layout.flat) else (None,)
        for batch in batches:
            if batch is None:
                batch = next((s.shape[0] for s in layout.flat if s.shape), 1)
            inputs = eu.generate_inputs(layout, batch, model=model)
            try:
                outputs = eu.call_model_flat(model, layout, inputs)
            except ExportError:
                raise
            except Exception as e:
                raise ExportError(f"Model '{model_name}' failed on generated inputs of batch {batch} on the "
                                  f"{backend} backend: {e}", model=model_name, reason="source_failed") from None
            writer.add("serving_default", batch, dict(zip([s.name for s in layout.flat], inputs)),
                       dict(zip(output_names, outputs)))

    layer_names = [l.name for l in portable._layers(model)]
    workdir = portable.make_workdir()
    try:
        with atomic.staged_write(filepath) as staged:
            if in_process_reason:
                report = _export_in_process(model, layout, output_names, fmt, staged, writer, opset, model_name,
                                            layer_names, workdir)
            else:
                keras_file = os.path.join(workdir, "model.keras")
                portable.save_keras(model, keras_file, model_name)
                job = {
                    "kind": "model", "keras_file": keras_file, "format": fmt, "output": staged,
                    "opset": opset, "model_name": model_name, "version": _version(),
                    "endpoints": [{"name": DEFAULT_ENDPOINT_NAME, "layout": layout.to_json(),
                                   "output_names": output_names}],
                    "lambda_globals": portable.lambda_globals(model)[0],
                    "custom_classes": [dict(module=c.module, qualname=c.qualname, names=c.names)
                                       for c in classes],
                    "sys_path": portable.importable_sys_path() if classes else [],
                    "layer_names": layer_names, "verify": verify,
                    "cases_file": writer.write(os.path.join(workdir, "cases.npz")), "cases": writer.cases,
                }
                report = portable.run_worker(job, workdir)
            if not report.get("ok"):
                raise ExportError(
                    f"Model '{model_name}' ({backend} backend) -> {fmt}: {report.get('message')}\n"
                    f"Nothing was written at '{filepath}'.", model=model_name, layer=report.get("layer"),
                    reason=report.get("reason", "export_failed"))
            atomic.commit(staged, filepath)
        report["files"] = atomic.artifact_files(filepath)
    finally:
        portable.remove_workdir(workdir)
    endpoints = tuple(sig.Signature.from_json(e) for e in report["endpoints"])
    artifact = sig.ExportedArtifact(format=fmt, path=filepath, endpoints=endpoints, opset=report.get("opset"))
    if verbose:
        summary.print_summary(artifact, model_name, backend, report, time.monotonic() - t0)
    return artifact


def _export_in_process(model, layout, output_names, fmt, staged, writer, opset, model_name, layer_names, workdir):
    """TensorFlow backend, model with classes a worker cannot import."""
    from servekit import _write
    from servekit.saved_model import Endpoint

    def serve(*args):
        return model(*args, training=False)

    cases = []
    for case in writer.cases:
        inputs = {n: writer.arrays[k] for n, k in case["inputs"].items()}
        expected = {n: writer.arrays[k] for n, k in case["expected"].items()}
        cases.append((case["endpoint"], case["batch"], inputs, expected, case["values"]))
    try:
        return _write.write_and_verify(
            [Endpoint(DEFAULT_ENDPOINT_NAME, serve, layout, output_names)], [model], {}, fmt=fmt, output=staged,
            cases=cases, opset=opset, model_name=model_name, layer_names=layer_names, scratch_dir=workdir,
            version=_version())
    except ExportError as e:
        return {"ok": False, "message": str(e), "reason": e.reason, "layer": e.layer}
