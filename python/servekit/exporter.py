"""`servekit.export`: one call from a Keras model to a proven artifact."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Mapping, Optional

from servekit.source_model import dims
from servekit.source_model.calls import call_model_flat
from servekit.source_model.input_layout import resolve_input_layout
from servekit.source_model.kinds import backend_name
from servekit.source_model.outputs import model_output_names
from servekit import formats
from servekit import peak_memory
from servekit import signature as sig
from servekit import strategies
from servekit import summary
from servekit import verification
from servekit.errors import ExportError
from servekit.pipeline import behavior as behavior_lib
from servekit.pipeline import core as pipeline
from servekit.pipeline import reference
from servekit.pipeline.cases import Case, CaseSet
from servekit.pipeline.request import EndpointPlan, ExportRequest

FORMATS = tuple(formats.FORMATS)
DEFAULT_ENDPOINT_NAME = "serve"
SERVING_DEFAULT = "serving_default"
# Formats whose artifacts hold no variables a call could update.
_STATELESS_FORMATS = ("onnx", "openvino", "litert", "torch", "torch_aoti")


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
    SavedModel (endpoint `serve`, also the `serving_default` signature), an
    ONNX model, an OpenVINO IR, a LiteRT flatbuffer, a torch.export
    ExportedProgram or an AOTInductor package (one `serving_default` endpoint
    each; see `servekit.formats`). Export strategies
    are tried in order (`servekit.strategies`): first the portable rebuild
    (the model is saved as `.keras` and rebuilt under TensorFlow in a fresh
    process: byte-reproducible, and every backend reaches both formats), then
    the in-process export on the source backend, as Keras does it (subclassed
    models without `get_config`, classes a fresh process cannot import). The
    first artifact that verifies is moved to `filepath`: it is reloaded and
    run on generated inputs (three cases: batch 1, 7 and 2; every other
    dynamic dimension at 1, at an odd size and past any window the model's
    configuration declares; padding masks padded and unpadded) and must
    reproduce the outputs the model computes on its own backend (float32:
    max abs diff <= 1e-5; ints and strings exactly). Random outputs are
    compared by shape, dtype and statistics over repeated calls and must
    stay random; a stateful model's successive calls must advance its state
    as the source model does.

    Signature keys and ONNX tensor names are the model's input names (dict
    keys for dict inputs) and output layer names (dict keys for dict outputs);
    a dynamic batch dimension is named `batch`, dims the model requires to be
    equal share one name (`sequence` for keras_hub's `token_ids` and
    `padding_mask`), and output dims are named by the input dim they follow,
    in the ONNX `dim_param`s and the SavedModel's signature alike.

    Args:
        model: a `keras.Model` (Functional, Sequential or subclassed, built),
            or a plain `tf.Module` whose `tf.function`s are exported with
            `tf.saved_model.save` rules (pass `signatures=`).
        filepath: `str` or `pathlib.Path`: the SavedModel directory, or the
            file (`.onnx`, `.xml` (its `.bin` is written beside it),
            `.tflite`, `.pt2`). Replaced atomically if it exists.
        format: `"tf_saved_model"`, `"onnx"`, `"openvino"`, `"litert"`,
            `"torch"` (Keras's five) or `"torch_aoti"`.
        verbose: print a short summary (endpoints, signatures, file sizes,
            time). Defaults to True, like Keras; False prints nothing.
        input_signature: optional; one structure per positional argument of
            the model's `call`, made of `keras.InputSpec`, `tf.TensorSpec`,
            `KerasTensor` or tensors. Inferred from the model when omitted (a
            Functional/Sequential model with `keras.Input` needs no call).
        **kwargs:
            - `verify` (bool, default True): reload and compare before moving
              the artifact into place.
            - `opset_version` (int, ONNX only): the ONNX opset. Default: 17
              from tf2onnx and torch.onnx; jax2onnx writes the opset it
              defaults to (23 with jax2onnx 0.17.1, whose opset-17 models
              can be invalid).
              `ExportedArtifact.opset` and the manifest record it.
            - `strategy`: "auto" (the default: every strategy, in order;
              ONNX of a small JAX or torch model is converted in process
              first, as Keras converts it), "rebuild_first" (the build's
              order: the portable rebuild first for every export), or one
              strategy only: "portable_rebuild", "in_process" or
              "cross_backend_rebuild" (ONNX).
            - `tolerances` (dict, servekit only): `(atol, rtol)` by dtype
              name over the defaults (float32: `(1e-5, 0)`; float32
              outputs of a mixed-precision model: its compute dtype's,
              `(1e-2, 1e-2)`), for a deep
              network whose outputs differ across backends by more than
              1e-5 absolute; an element passes when `|artifact - source| <=
              atol + rtol * |source|`. The build tool passes a model's
              `tolerances` attribute here and into the manifest.
            - `dim_names` (dict, servekit only): names of dynamic
              dimensions, by input name, as a polymorphic shape string
              (`{"token_ids": "(batch, sequence)", "padding_mask":
              "(batch, sequence)"}`) or a sequence (`("batch",
              "sequence")`, `None` or `_` keeps a dim as it is); dims with
              one name share one size, in every format's signature. Without
              it servekit finds the dims the model requires to be equal
              (`servekit.source_model.dims`).
            - `input_ranges` (dict, servekit only): value ranges of the
              generated verification inputs, by input name, as
              `(low, high)` with high exclusive, for inputs whose values
              have a meaning the model's layers do not tell (e.g.
              `{"padding_mask": (1, 2)}`: all ones). Integer inputs that
              index an `Embedding` stay below its `input_dim` without it.
            - JAX backend only: `is_static` (bool) and `jax2tf_kwargs`
              (dict), passed to jax2tf by the in-process strategy; their
              `polymorphic_shapes` (e.g. `["(b, 3)"]`) also name the dynamic
              dimensions of the signature (the first one `batch`).
            - `signatures` (tf.Module only): as `tf.saved_model.save`.
            - `openvino_precision` ("f32" default, or "bf16"): the inference
              precision the IR declares and is verified at.
            - LiteRT: any `tf.lite.TFLiteConverter` attribute
              (`optimizations`, `representative_dataset`, `target_spec`),
              as Keras passes them, but `allow_custom_ops=True` (the model
              could not be verified); a quantized model is checked at a
              quantization tolerance and marked so. On torch also Keras's
              `litert_torch.convert` arguments, as
              `servekit.formats.litert` says (`quant_config` refused).
            - torch: `torch.export.export` arguments (`dynamic_shapes`,
              `strict`, ...), as Keras passes them.

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
    fmt = formats.resolve(format).name
    if _is_tf_module(model):
        from servekit import tf_module

        if fmt != "tf_saved_model":
            raise ExportError("A plain tf.Module exports only as format='tf_saved_model'.", reason="bad_argument")
        verify = bool(kwargs.pop("verify", True))
        return tf_module.export_module(model, os.fspath(filepath), verbose=True if verbose is None else bool(verbose),
                                       verify=verify, signatures=kwargs.pop("signatures", None),
                                       options=kwargs.pop("options", None), **kwargs)
    return export_formats(model, {fmt: filepath}, verbose=verbose, input_signature=input_signature, **kwargs)[fmt]


def export_formats(
    model,
    destinations: Mapping[str, Any],
    verbose: Optional[bool] = None,
    input_signature=None,
    **kwargs: Any,
) -> dict[str, sig.ExportedArtifact]:
    """Exports a Keras model to several formats at once; see `export`.

    The model is probed and its verification cases computed once, and the
    portable rebuild writes every format in one worker job, converting the
    ONNX model in memory from the module it traced for the SavedModel: two
    formats cost little more than one. Nothing is moved into place unless every format
    verifies.

    Args:
        model: a `keras.Model`.
        destinations: format ("tf_saved_model", "onnx") -> path.
        verbose, input_signature, **kwargs: as in `export`; `opset_version`
            applies to the ONNX artifact.

    Returns:
        format -> `servekit.signature.ExportedArtifact`.

    Raises:
        ExportError: as `export`, for the first format that cannot be
            exported; nothing is written at any destination.

    Example:

    ```python
    artifacts = servekit.exporter.export_formats(
        model, {"tf_saved_model": "out/model", "onnx": "out/model.onnx"})
    ```
    """
    return export_formats_with_cases(model, destinations, verbose, input_signature, **kwargs)[0]


def export_formats_with_cases(
    model,
    destinations: Mapping[str, Any],
    verbose: Optional[bool] = None,
    input_signature=None,
    **kwargs: Any,
) -> tuple[dict[str, sig.ExportedArtifact], list[Case]]:
    """`export_formats`, also returning the verification cases every artifact
    reproduced (inputs and the source's outputs, in order; empty when
    `verify=False`): the build tool writes them as the reference data."""
    t0 = time.monotonic()
    verbose = True if verbose is None else bool(verbose)
    destinations = {formats.resolve(fmt).name: os.fspath(path) for fmt, path in destinations.items()}
    verify = bool(kwargs.pop("verify", True))
    opset = kwargs.pop("opset_version", None)
    import keras

    if not isinstance(model, keras.Model):
        raise ExportError(
            f"export() takes a keras.Model or a tf.Module; got {type(model).__name__}. Wrap a layer in a model, or "
            "use servekit.ExportArchive to export a layer's call.", reason="bad_argument")
    model_name = model.name
    backend = backend_name()
    is_static = kwargs.pop("is_static", None)
    jax2tf_kwargs = kwargs.pop("jax2tf_kwargs", None)
    strategy = kwargs.pop("strategy", None)
    input_ranges = kwargs.pop("input_ranges", None)
    dim_names = kwargs.pop("dim_names", None)
    tolerances = verification.tolerances_for(model, kwargs.pop("tolerances", None))
    for fmt, path in destinations.items():
        formats.check_filepath(fmt, path, model_name)
    format_options, local_options = _format_options(destinations, kwargs, model_name)
    if (is_static is not None or jax2tf_kwargs is not None) and backend != "jax":
        raise ExportError(f"'jax2tf_kwargs' and 'is_static' apply to the jax backend only; this is the {backend} "
                          "backend.", model=model_name, reason="bad_argument")
    if kwargs:
        raise ExportError(f"Unknown argument(s) for export(): {sorted(kwargs)}.", model=model_name,
                          reason="bad_argument")
    if opset is not None and "onnx" not in destinations:
        raise ExportError("opset_version applies to format='onnx' only.", model=model_name, reason="bad_argument")
    if opset is not None and (not isinstance(opset, int) or opset < 13):
        raise ExportError(f"opset_version must be an int >= 13; got {opset!r}.", model=model_name,
                          reason="bad_argument")
    if jax2tf_kwargs is not None and not isinstance(jax2tf_kwargs, dict):
        raise ExportError("jax2tf_kwargs must be a dict.", model=model_name, reason="bad_argument")
    chosen = strategies.resolve(strategy)
    polymorphic = (jax2tf_kwargs or {}).get("polymorphic_shapes")

    layout = resolve_input_layout(model, input_signature, polymorphic_shapes=polymorphic)
    layout = dims.apply_dim_names(layout, dim_names, where=f"Model '{model_name}': dim_names")
    # Shared dims get one name, outputs' dims the names of the dims they follow,
    # and each dynamic dim its sizes (1, odd, past any window).
    layout, dim_plan = dims.discover(model, layout)
    output_names = model_output_names(model, layout)
    peak_memory.mark("probe")
    unknown = sorted(set(input_ranges or {}) - {s.name for s in layout.flat})
    if unknown:
        raise ExportError(f"Model '{model_name}': input_ranges names {unknown}, which are not inputs of the model "
                          f"({[s.name for s in layout.flat]}). Key input_ranges by the model's input names.",
                          model=model_name, reason="bad_argument")
    backend_kwargs = {k: v for k, v in (("jax2tf_kwargs", jax2tf_kwargs), ("is_static", is_static)) if v is not None}
    plan = EndpointPlan(DEFAULT_ENDPOINT_NAME, layout, output_names, fn=model, kwargs=backend_kwargs)
    request = ExportRequest("model", next(iter(destinations)), model_name, backend, [plan], CaseSet(), verify=verify,
                            opset=opset, source=model, version=_version(), format_options=format_options,
                            local_options=local_options)
    with strategies.worker_starting_now(chosen, request, list(destinations)):
        if verify:
            call = reference.guarded(lambda flat: call_model_flat(model, layout, flat), f"Model '{model_name}'",
                                     backend, model=model_name)
            plan.behavior, made, dim_plan = reference.make_planned_cases(
                SERVING_DEFAULT, layout, output_names, call, behavior_lib.model_variables(model),
                vocab_source=model, input_ranges=input_ranges, plan=dim_plan)
            if tolerances:
                for case in made:
                    case.tolerances = dict(tolerances)
            request = dataclasses.replace(request, cases=CaseSet(made))
            peak_memory.mark("reference cases")
        stateless = [f for f in destinations if f in _STATELESS_FORMATS]
        if stateless and plan.behavior.stateful:
            layer = plan.behavior.state_layer
            raise ExportError(
                f"Model '{model_name}': layer '{layer}' updates its variables when called "
                f"({', '.join(plan.behavior.state_variables)}), and {formats.FORMATS[stateless[0]].description}s have "
                "no variables: the artifact could not advance its state. Export format='tf_saved_model', or keep the "
                "state outside the model.", model=model_name, layer=layer, reason="stateful_onnx")
        results = pipeline.run_formats(request, destinations, chosen,
                                       what=lambda fmt: f"Model '{model_name}' ({backend} backend) -> {fmt}")
    artifacts = {}
    verified = dim_plan.describe() if verify and dim_plan is not None else {}
    for fmt, (report, attempts) in results.items():
        endpoints = tuple(dataclasses.replace(sig.Signature.from_json(e).with_behavior(plan.behavior), dims=verified)
                          for e in report["endpoints"])
        artifacts[fmt] = sig.ExportedArtifact(format=fmt, path=destinations[fmt], endpoints=endpoints,
                                              opset=report.get("opset"), converter=report.get("converter"),
                                              strategy=report["strategy"], precision=report.get("precision"))
        if verbose:
            report["strategy_line"] = pipeline.describe(attempts) + (
                f", converter {report['converter']}" if report.get("converter") else "")
            summary.print_summary(artifacts[fmt], model_name, backend, report, time.monotonic() - t0)
    return artifacts, list(request.cases)


def _format_options(destinations: Mapping[str, str], kwargs: dict[str, Any],
                    model_name: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Takes the format-specific arguments out of `kwargs`, as `(format_options,
    local_options)` (see `ExportRequest`).

    - `openvino_precision` ("f32" default, or "bf16"): the precision the IR
      declares and is verified at.
    - LiteRT: every `tf.lite.TFLiteConverter` attribute (Keras passes them); on
      torch, Keras's `litert_torch.convert` arguments (`litert.split_options`).
    - torch: `torch.export.export` arguments (`dynamic_shapes`, `strict`, ...),
      applied where the model is exported in this process.
    """
    portable: dict[str, dict[str, Any]] = {}
    local: dict[str, dict[str, Any]] = {}
    precision = kwargs.pop("openvino_precision", None)
    if precision is not None:
        if "openvino" not in destinations:
            raise ExportError("openvino_precision applies to format='openvino' only.", model=model_name,
                              reason="bad_argument")
        from servekit.formats import openvino

        portable["openvino"] = {"precision": openvino.check_precision(precision, model_name)}
    if "torch" in destinations or "torch_aoti" in destinations:
        from servekit.formats import torch_program

        torch_args = torch_program.take_export_arguments(kwargs, model_name)
        if kwargs and "litert" not in destinations:
            raise ExportError(f"Model '{model_name}': Unsupported arguments for `format=\"torch\"`: "
                              f"{', '.join(sorted(kwargs))}. Supported arguments are: "
                              f"{', '.join(sorted(torch_program.EXPORT_ARGUMENTS))}.", model=model_name,
                              reason="bad_argument")
        if torch_args:
            for fmt in ("torch", "torch_aoti"):
                if fmt in destinations:
                    local[fmt] = dict(torch_args)
    if "litert" in destinations and kwargs:
        from servekit.formats import litert

        converter_args = {k: kwargs.pop(k) for k in list(kwargs)}
        if converter_args:
            json_half, local_half = litert.split_options(converter_args, model_name)
            if local_half:
                # A callable stays here: every option goes with it, to the in-process converter.
                local["litert"] = {**json_half, **local_half}
            elif json_half:
                portable["litert"] = json_half
    return portable, local

