"""In-process export on the source backend, the way Keras exports.

SavedModel (TensorFlow and JAX backends): a Keras `ExportArchive` of the source
backend traces each endpoint in this process (TensorFlow: `tf.function`; JAX:
`jax2tf`, with the caller's `jax2tf_kwargs` and `is_static`), so subclassed
models without `get_config`, classes defined in `__main__`, random and stateful
layers all export as Keras exports them. servekit then adds its own signatures
(inputs named by their keys, outputs by their layers), writes the SavedModel,
makes its bytes canonical and verifies it.

ONNX: on TensorFlow, tf2onnx converts the in-process SavedModel; on JAX, Keras
runs jax2onnx; on torch, `torch.onnx` (the dynamo exporter, else TorchScript).
servekit renames the graph's inputs and outputs to the signature keys, names
the dynamic dimensions, strips doc strings and paths and verifies the result.

A SavedModel from the torch backend needs torch_xla, which does not import
with this torch: the portable rebuild is the only road there.
"""

from __future__ import annotations

import contextlib
import functools
import dataclasses
import os
import shutil
from typing import Any, Callable, Optional, Sequence

from servekit import formats
from servekit import signature as sig
from servekit.errors import ExportError, root_cause
from servekit.pipeline.request import EndpointPlan, ExportRequest
from servekit.source_model.kinds import backend_name
from servekit.source_model.outputs import output_specs
from servekit.source_model.sample_inputs import generate_inputs


# The ONNX converters Keras's `model.export` runs on JAX and torch: quick to convert
# a small model and quick to fail (their failures are found by the verification).
QUICK_ONNX_CONVERTERS = ("jax2onnx", "TorchScript")
ONNX_CONVERTERS = {"jax": ("jax2onnx",), "torch": ("TorchScript", "dynamo")}


def converts_before_rebuild(request: ExportRequest) -> bool:
    """Whether the default order converts `request` in this process before the
    rebuild under TensorFlow, with Keras's own converter (jax2onnx, TorchScript).

    ONNX of a JAX or torch model whose weights are small (a large one takes the
    bounded-memory road: `_write.frees_before_checking`), verified (the
    verification is what sends a wrong conversion on to the rebuild). Measured
    on the zoo (`bazel run //python/servekit/bench:onnx_converters`): where
    they verify, these converters export 1.5-6x faster than the rebuild; where
    they fail (ViT, BERT, Llama, which the rebuild alone covers), the rebuild's
    artifact comes 0-0.8 s later than it would alone.
    """
    from servekit import _write
    from servekit.source_model.variables import weight_bytes

    return (request.format == "onnx" and request.kind == "model" and request.backend in ONNX_CONVERTERS
            and request.verify
            and not _write.frees_before_checking(weight_bytes(request.source)))


class InProcess:
    """Exports on the source backend in this process.

    Args:
        role: "alone" (`strategy="in_process"`): every converter; in the
            default order, "before_rebuild": Keras's quick ONNX converters
            where `converts_before_rebuild`, and "after_rebuild": the rest
            (the dynamo exporter there; everything for other exports).
    """

    name = "in_process"

    def __init__(self, role: str = "alone"):
        if role not in ("alone", "before_rebuild", "after_rebuild"):
            raise ValueError(f"Unknown role {role!r}")
        self.role = role
        # A failure before the rebuild is not explained layer by layer: the rebuild is tried next.
        self.explains_divergence = role != "before_rebuild"

    def onnx_converters(self, request: ExportRequest) -> tuple[str, ...]:
        """The ONNX converters this role tries for `request`, in order."""
        every = ONNX_CONVERTERS.get(request.backend, ())
        if self.role == "alone":
            return every
        if not converts_before_rebuild(request):
            return () if self.role == "before_rebuild" else every
        quick = tuple(c for c in every if c in QUICK_ONNX_CONVERTERS)
        return quick if self.role == "before_rebuild" else tuple(c for c in every if c not in quick)

    def applies(self, request: ExportRequest) -> bool:
        """Whether this role is in `request`'s order at all (the pipeline
        records no attempt otherwise): before the rebuild only with converters
        to try, after it unless the quick ones were all there was."""
        if self.role == "alone" or (self.role == "after_rebuild" and not converts_before_rebuild(request)):
            return True
        return bool(self.onnx_converters(request))

    def unavailable(self, request: ExportRequest) -> Optional[str]:
        if request.format in formats.TORCH_FORMATS and request.backend != "torch":
            return f"a {formats.FORMATS[request.format].description} is exported under torch; this is {request.backend}"
        if request.format in ("openvino", "litert") and request.backend != "tensorflow":
            return (f"in this process the {formats.FORMATS[request.format].description} is converted from a "
                    f"TensorFlow SavedModel, which {request.backend} cannot trace without XLA calls")
        if request.format in formats.TORCH_FORMATS and request.kind != "model":
            return "ExportArchives are exported under TensorFlow only"
        if request.backend == "torch" and request.format == "tf_saved_model":
            return ("a SavedModel from the torch backend needs torch_xla, which does not import with this torch; "
                    "only the portable rebuild writes one")
        if request.backend not in ("tensorflow", "jax", "torch"):
            return f"the {request.backend} backend has no in-process exporter"
        if request.format == "onnx" and request.backend != "tensorflow" and request.kind == "model":
            from servekit.formats import torch_lookups

            hashing = torch_lookups.hashing_outside_onnx_converters(request.source)
            if hashing:
                return hashing
        if request.kind == "archive":
            return request.source._in_process_unavailable()
        return None

    def write_deferring_check(self, request: ExportRequest, staged: str, workdir: str) -> Callable[[], dict[str, Any]]:
        """`write`, a torch format's check returned for later (other formats are
        written and checked now): the check loads the program back, and a caller
        that frees the model first holds its weights once
        (`servekit.strategies.cross_backend`).

        Returns:
            A function returning the strategy report.
        """
        from servekit import _write
        from servekit.strategies import stablehlo

        if request.format not in formats.TORCH_FORMATS:
            report = self.write(request, staged, workdir)
            return lambda: report
        from servekit.formats import torch_program

        with _write.quiet(), _no_source_paths(), stablehlo.for_tensorflow():
            check = torch_program.write(request, staged, workdir)

        def quiet_check() -> dict[str, Any]:
            with _write.quiet():
                return check()

        return quiet_check

    def write(self, request: ExportRequest, staged: str, workdir: str) -> dict[str, Any]:
        from servekit import _write
        from servekit.strategies import stablehlo

        if request.format in formats.TORCH_FORMATS:
            return self.write_deferring_check(request, staged, workdir)()
        with _write.quiet(), _no_source_paths(), stablehlo.for_tensorflow():
            if request.format == "tf_saved_model":
                return _saved_model(request, staged)
            if request.format in ("openvino", "litert"):
                return _converted_from_saved_model(request, staged, workdir)
            if request.backend == "tensorflow":
                return _onnx_from_saved_model(request, staged, workdir)
            if self.role == "before_rebuild" and request.opset is None:
                # The default's opset, as the rebuild writes it: servekit's default ONNX
                # from any backend loads in the same runtimes (jax2onnx's own is 23).
                from servekit.onnx import DEFAULT_OPSET

                request = dataclasses.replace(request, opset=DEFAULT_OPSET)
            return _onnx_native(request, staged, workdir, self.onnx_converters(request))


def keras_archive(request: ExportRequest):
    """The source backend's Keras `ExportArchive`, with the request's endpoints."""
    if request.kind == "archive":
        return request.source._keras_archive
    from servekit import saved_model as sk_sm

    archive = new_keras_archive()
    plan = request.endpoints[0]
    try:
        archive.track_and_add_endpoint(plan.name, request.source, sk_sm.arg_specs(plan.layout), **plan.kwargs)
    except (TypeError, ValueError) as e:
        cls = TypeError if isinstance(e, TypeError) else ValueError
        raise _error(cls, f"Keras could not trace the model on the {request.backend} backend: {e}",
                     "untraceable_endpoint") from None
    return archive


def _error(cls, message: str, reason: str) -> ExportError:
    from servekit.errors import ExportTypeError

    return (ExportTypeError if cls is TypeError else ExportError)(message, reason=reason)


def _saved_model(request: ExportRequest, path: str, output_dtypes=None) -> dict[str, Any]:
    from servekit import verification

    archive = keras_archive(request)
    try:
        signatures = save_traced(archive, request.endpoints, path, request.options, output_dtypes)
    except TypeError as e:
        raise _error(TypeError, f"tracing failed: {e}", "untraceable_endpoint") from None
    report = {"ok": True, "endpoints": [s.to_json() for s in signatures], "comparisons": []}
    if request.verify and len(request.cases):
        verification.record(report, verification.check_saved_model(path, request.cases), "tf_saved_model",
                            "SavedModel")
    return report


def _onnx_from_saved_model(request: ExportRequest, path: str, workdir: str) -> dict[str, Any]:
    from servekit import onnx as sk_onnx
    from servekit import onnx_bfloat16, verification

    from servekit.formats import builtin_trace

    twin = os.path.join(workdir, "twin_saved_model")
    report = _saved_model(request, twin)
    if report["ok"] and request.kind != "archive" and builtin_trace.needs_builtin_trace_of_saved_model(twin, "onnx"):
        shutil.rmtree(twin)  # traced again as the worker traces an ONNX model tf2onnx cannot take
        with builtin_trace.builtin_ops("onnx"):
            report = _saved_model(request, twin)
    if not report["ok"]:
        report["message"] = report["message"].replace("SavedModel", "SavedModel (from which the ONNX model is "
                                                                    "converted)", 1)
        return report
    serving = sig.Signature.from_json(report["endpoints"][0])
    proto = sk_onnx.convert_saved_model(twin, serving, opset=request.opset, layer_names=request.layer_names,
                                        model_name=request.name, producer_version=request.version)
    sk_onnx.write_onnx(proto, path)
    report["endpoints"] = [serving.to_json()]
    report["opset"] = sk_onnx._opset_of(proto)
    report["converter"] = "tf2onnx"
    if request.verify and len(request.cases):
        verification.record(report, verification.check_onnx(path, request.cases.for_endpoint(serving.name),
                                                             casts_weights=onnx_bfloat16.casts_weights(proto)),
                            "onnx", "ONNX model")
    return report


def _converted_from_saved_model(request: ExportRequest, path: str, workdir: str) -> dict[str, Any]:
    """OpenVINO IR or LiteRT from the in-process SavedModel (TensorFlow backend), as Keras converts them."""
    from servekit import _write, verification
    from servekit import onnx as sk_onnx
    from servekit.formats import litert, openvino

    twin = os.path.join(workdir, "twin_saved_model")
    report = _builtin_saved_model(request, twin)
    what = "OpenVINO IR" if request.format == "openvino" else "LiteRT model"
    if not report["ok"]:
        report["message"] = report["message"].replace("SavedModel", f"SavedModel (from which the {what} is "
                                                                    "converted)", 1)
        return report
    serving = sig.Signature.from_json(report["endpoints"][0])
    report["endpoints"] = [serving.to_json()]
    cases = list(request.cases.for_endpoint(serving.name)) if request.verify else []
    weight_bytes = sk_onnx.saved_model_variables_bytes(twin)
    large = _write.frees_before_checking(weight_bytes)  # checked as the worker checks it
    if request.format == "openvino":
        precision = request.format_options.get("openvino", {}).get("precision", openvino.DEFAULT_PRECISION)
        model = openvino.convert_saved_model(twin, serving, request.name, precision)
        openvino.write(model, path)
        report.update(converter="openvino.convert_model", precision=openvino.PRECISIONS[precision])
        tolerances = openvino.tolerances(precision)
        check = lambda cs: openvino.check(path, cs, precision, page_out_weights=large)  # noqa: E731
    else:
        options = {**request.format_options.get("litert", {}), **request.local_options.get("litert", {})}
        try:
            flatbuffer, converter = litert.convert(litert.from_saved_model(twin), options, request.name,
                                                   weight_bytes=weight_bytes)
        except ExportError as e:
            if not litert.unfused_gelu(e):
                raise
            shutil.rmtree(twin)
            retraced = _builtin_saved_model(request, twin, unfused_gelu=True)
            if not retraced["ok"]:
                raise
            flatbuffer, converter = litert.convert(litert.from_saved_model(twin), options, request.name,
                                                   weight_bytes=weight_bytes)
        litert.write(flatbuffer, path, serving, request.name)
        del flatbuffer
        litert.read_signature(path, serving, request.name)
        quantized = litert.quantizes(options)
        report.update(converter=converter, precision="quantized" if quantized else "float32")
        tolerances = litert.quantized_tolerances() if quantized else {}
        check = lambda cs: litert.check(path, cs, delegates=not large, page_out_weights=large)  # noqa: E731
    if cases:
        verification.record(report, check([verification.with_tolerances(c, tolerances) for c in cases]),
                            request.format, what)
    return report


def _builtin_saved_model(request: ExportRequest, path: str, unfused_gelu: bool = False) -> dict[str, Any]:
    """The SavedModel an OpenVINO IR or LiteRT model is converted from, traced as
    the worker traces these formats: with what their converters cannot take
    written another way (`servekit.formats.builtin_trace`; exact GELUs too
    with `unfused_gelu`), recurrent layers traced step by step for LiteRT
    (`servekit.source_model.recurrences`)."""
    from servekit.formats import builtin_trace
    from servekit.source_model import precision, recurrences

    if request.kind == "archive":  # the caller's own traced endpoints
        return _saved_model(request, path)
    recurrent = recurrences.for_converters(request.source, "litert") if request.format == "litert" \
        else contextlib.nullcontext()
    widened_dtypes = builtin_trace.COMPUTED_IN_FLOAT32.get(request.format, ())
    # The model's output dtypes, taken before its layers widen (a symbolic call: only for a model
    # that has such layers): cast back to in the trace, or (OpenVINO) typed so by the converter
    # from the signature.
    output_dtypes = {plan.name: {t.name: t.dtype for t in output_specs(request.source, plan.layout,
                                                                       plan.output_names)}
                     for plan in request.endpoints} \
        if precision.layers_computing_in(request.source, widened_dtypes) else {}
    cast_back = output_dtypes if request.format in builtin_trace.OUTPUTS_CAST_BACK else None
    with builtin_trace.builtin_ops(request.format, unfused_gelu), recurrent, \
            precision.computed_in_float32(request.source, widened_dtypes):
        report = _saved_model(request, path, cast_back)
    if output_dtypes and report.get("ok"):
        first = request.endpoints[0].name  # `serving_default` is the first endpoint unless one has its name
        for endpoint in report["endpoints"]:
            dtypes = output_dtypes.get(endpoint["name"]) or output_dtypes[first]
            for output in endpoint["outputs"]:
                output["dtype"] = dtypes.get(output["name"], output["dtype"])
    return report


def _onnx_native(request: ExportRequest, path: str, workdir: str, names: Sequence[str]) -> dict[str, Any]:
    """JAX (jax2onnx) and torch (torch.onnx: TorchScript, then dynamo), on the
    source backend: the converters `names`, in order. Each converter gets its
    chance at verification: a model TorchScript traces with one branch of a
    data-dependent `cond` baked in fails its check, and the dynamo exporter
    (which captures `torch.cond`) is tried next."""
    import onnx

    from servekit import onnx as sk_onnx
    from servekit import onnx_bfloat16, verification

    plan = request.endpoints[0]
    layout = plan.layout
    outputs = tuple(output_specs(request.source, layout, plan.output_names))
    signature = sig.Signature("serving_default", layout.tensor_signatures(), outputs).with_behavior(plan.behavior)
    converters = [("jax2onnx", _jax_to_onnx) if name == "jax2onnx"
                  else (f"torch.onnx ({name})", functools.partial(_torch_to_onnx, exporter=name)) for name in names]
    failures = []
    for name, convert in converters:
        scratch = os.path.join(workdir, f"native_{len(failures)}.onnx")
        try:
            convert(request.source, layout, outputs, scratch, request.opset)
        except Exception as e:  # converters raise anything; the reason goes into the pipeline's report
            failures.append(f"{name} could not convert the model: {root_cause(e)}")
            continue
        proto = onnx.load(scratch)
        sk_onnx.adopt_foreign(proto, signature, model_name=request.name, producer_version=request.version,
                              layer_names=request.layer_names)
        sk_onnx.write_onnx(proto, path)
        report = {"ok": True, "endpoints": [signature.to_json()], "comparisons": [],
                  "opset": sk_onnx._opset_of(proto), "converter": name}
        if request.verify and len(request.cases):
            verification.record(report, verification.check_onnx(path, request.cases.for_endpoint("serving_default"),
                                                                 casts_weights=onnx_bfloat16.casts_weights(proto)),
                                "onnx", f"ONNX model ({name})")
        if report["ok"]:
            return report
        failures.append(report["message"])
    raise ExportError("\n".join(failures), reason="conversion_failed")


def _symbolic_dims(spec) -> tuple:
    return tuple(d if isinstance(d, int) else str(d) for d in spec.dims)


def _jax_to_onnx(model, layout, outputs, path: str, opset: Optional[int]) -> str:
    """jax2onnx on the model's inference call, with named dynamic dimensions.
    Returns the converter's name."""
    import jax
    import jax2onnx
    import keras
    import numpy as np

    def predict(*flat):
        return keras.tree.flatten(model(*layout.pack(list(flat)), training=False))

    inputs = [jax.ShapeDtypeStruct(_symbolic_dims(s), np.dtype(s.dtype)) for s in layout.flat]
    kwargs = {"opset": opset} if opset else {}
    jax2onnx.to_onnx(predict, inputs=inputs, input_names=[s.name for s in layout.flat], return_mode="file",
                     output_path=path, **kwargs)
    return "jax2onnx"


def _torch_to_onnx(model, layout, outputs, path: str, opset: Optional[int], exporter: str) -> None:
    """torch.onnx on the model's inference call, with the TorchScript or the
    dynamo `exporter`.

    TorchScript is tried first, because it writes the requested opset: the
    dynamo exporter (torch 2.13) writes opset 18 and its conversion down to 17
    fails on common ops (`ReduceMean` with an axes input), and it records every
    node's stack trace (`servekit.determinism` removes them); but it captures
    data-dependent control flow (`torch.cond`), which TorchScript bakes in.
    """
    import keras
    import torch

    from servekit import onnx as sk_onnx
    from servekit.formats.torch_program import to_torch

    class FlatCall(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *flat):
            return tuple(keras.tree.flatten(self.model(*layout.pack(list(flat)), training=False)))

    sample = tuple(to_torch(x) for x in generate_inputs(layout, 2))
    names = [s.name for s in layout.flat]
    dynamic = {t.name: {i: str(d) for i, d in enumerate(dims) if not isinstance(d, int)}
               for t, dims in [(s, s.dims) for s in layout.flat] + [(o, o.shape) for o in outputs]}
    dynamic = {k: {i: (d if d != "None" else f"{k}_{i}") for i, d in v.items()} for k, v in dynamic.items() if v}
    common = dict(input_names=names, output_names=[o.name for o in outputs],
                  opset_version=opset or sk_onnx.DEFAULT_OPSET)
    module = FlatCall().eval()
    with torch.no_grad():
        if exporter == "TorchScript":
            torch.onnx.export(module, sample, path, dynamo=False, dynamic_axes=dynamic or None,
                              do_constant_folding=True, verbose=False, **common)
        else:
            torch.onnx.export(module, sample, dynamo=True, **common).save(path)


def save_traced(archive, plans: list[EndpointPlan], path: str, options=None,
                output_dtypes=None) -> list[sig.Signature]:
    """Saves a Keras `ExportArchive` with servekit's signatures, canonically.

    Each endpoint's method is Keras's (same arguments and return structure as
    the exported function); its signature takes flat tensors named like the
    layout and returns a dict named like `plan.output_names` (floating outputs
    cast to `output_dtypes[endpoint][output]` where given, as in
    `servekit.saved_model.build_module`). The first endpoint is also
    `serving_default` unless one has that name.

    Returns:
        The signatures, `serving_default` first.
    """
    import tensorflow as tf

    from servekit import determinism
    from servekit import saved_model as sk_sm

    archive._filter_and_track_resources()
    # Keras collects the variables the endpoints use through sets: order them as
    # the archive tracks them, so the object graph is the same in every process.
    root = archive._tf_trackable
    root._all_variables = sk_sm._stable_variable_order(list(root._all_variables), [root])
    for attr in ("variables", "trainable_variables", "non_trainable_variables"):
        setattr(root, attr, sk_sm.tf_variables(getattr(root, attr)))  # each weight saved once
    signatures: dict[str, Any] = {}
    result: list[sig.Signature] = []
    for plan in plans:
        method = getattr(archive._tf_trackable, plan.name)
        layout = plan.layout or traced_layout(method, plan.name)
        box: dict[str, Any] = {}
        sig_fn = tf.function(sk_sm._signature_wrapper(method, layout, plan.output_names, box,
                                                      (output_dtypes or {}).get(plan.name)),
                             input_signature=sk_sm.flat_specs(layout), autograph=False)
        concrete = sig_fn.get_concrete_function()
        signatures[plan.name] = concrete
        batch_dynamic = any(s.dims and s.dims[0] == sig.BATCH_DIM for s in layout.flat)
        outputs = sk_sm._output_signatures(concrete, box["names"], batch_dynamic, layout.output_dims)
        result.append(sig.Signature(plan.name, layout.tensor_signatures(), outputs).with_behavior(plan.behavior))
    if sk_sm.SERVING_DEFAULT not in signatures:
        signatures[sk_sm.SERVING_DEFAULT] = signatures[plans[0].name]
        result.insert(0, dataclasses.replace(result[0], name=sk_sm.SERVING_DEFAULT))
    else:
        result.sort(key=lambda s: s.name != sk_sm.SERVING_DEFAULT)
    if options is None and backend_name() == "jax":
        # jax2tf gives every traced call a custom gradient; saving them re-traces
        # each one and costs most of the save (11 of 15 s for MobileNetV2).
        # A serving artifact is never differentiated. Options a caller passes
        # are used as they are.
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    tf.saved_model.save(archive._tf_trackable, path, signatures=signatures, options=options)
    if options is not None and getattr(options, "function_aliases", None):
        _alias_every_trace(path, archive, plans, options.function_aliases)
    determinism.canonicalize_saved_model(path, result)
    return result


def _alias_every_trace(path: str, archive, plans: list[EndpointPlan], aliases: dict) -> None:
    """Records each function alias for exactly the traces the SavedModel keeps.

    `tf.saved_model.save` records an alias for every trace the function has in
    this process, but the object graph keeps only the trace made in the save
    context; on load, TensorFlow then refuses the alias ("mismatched concrete
    functions") and returns a list instead of the function.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    attribute_of = {id(getattr(archive._tf_trackable, p.name)): p.name for p in plans}
    pb = os.path.join(path, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        saved.ParseFromString(f.read())
    meta = saved.meta_graphs[0]
    nodes = meta.object_graph_def.nodes
    children = {c.local_name: c.node_id for c in nodes[0].children}
    for alias, fn in aliases.items():
        attribute = attribute_of.get(id(fn))
        if attribute in children:
            recorded = meta.meta_info_def.function_aliases
            for name in [n for n, a in recorded.items() if a == alias]:
                del recorded[name]
            for name in nodes[children[attribute]].function.concrete_functions:
                meta.meta_info_def.function_aliases[name] = alias
    with open(pb, "wb") as f:
        f.write(saved.SerializeToString(deterministic=True))


def traced_layout(method, name: str):
    """The layout of a `tf.function` endpoint registered without a signature:
    its first trace, with the batch dimension made dynamic when possible."""
    from servekit import saved_model as sk_sm
    from servekit.source_model.input_layout import layout_from_signature

    _, arg_sig = sk_sm._traced_concrete(method, name)
    return layout_from_signature(list(arg_sig), arg_names=sk_sm._arg_names(method), where=f"endpoint '{name}'")


@contextlib.contextmanager
def _no_source_paths():
    """jax2tf serializes source locations (absolute paths of this machine) into
    the module it embeds; servekit artifacts carry no paths, so file names are
    canonicalized to nothing while servekit traces."""
    import sys

    if "jax" not in sys.modules:
        yield
        return
    import jax

    saved = {}
    for flag, value in (("jax_include_full_tracebacks_in_locations", False),
                        ("jax_traceback_in_locations_limit", 0),
                        ("jax_hlo_source_file_canonicalization_regex", ".*")):
        try:
            saved[flag] = getattr(jax.config, flag)
            jax.config.update(flag, value)
        except (AttributeError, KeyError):
            continue
    try:
        yield
    finally:
        for flag, value in saved.items():
            jax.config.update(flag, value)


def new_keras_archive():
    """A Keras `ExportArchive` of this backend (TensorFlow or JAX).

    Taken by its backend class, not through `keras.export.ExportArchive`, so
    that code routing Keras's name to servekit still gets Keras's archive here.
    """
    from keras.src.export.saved_model import BackendSavedModelExportArchive

    return BackendSavedModelExportArchive()
