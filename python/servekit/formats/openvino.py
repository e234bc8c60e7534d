"""OpenVINO IR: converted from the traced serving function, proved in OpenVINO.

The TensorFlow worker hands `convert` the serving signature's concrete
function (inputs named by the signature keys, outputs a dict keyed by them);
`ov.convert_model` reads it without a SavedModel on disk. The IR's inputs and
outputs carry exactly the signature keys as tensor names (the converter adds
TensorFlow op names to outputs: they are dropped), in signature order, with
dynamic dimensions left dynamic (`?`).

Precision. OpenVINO's CPU plugin infers in bfloat16 by default on CPUs with
AMX or AVX512-BF16, which a float32 model does not reproduce to 1e-5. The IR
records the precision it was verified at in its runtime options
(`rt_info/runtime_options/INFERENCE_PRECISION_HINT`), and the manifest too:
`f32` by default, `bf16` when asked (`openvino_precision="bf16"`, checked at
the bfloat16 tolerance). OpenVINO 2026.4 does not apply that entry when it
compiles the IR (measured), so the checks here and the native verifier pass
the hint explicitly, and so must a server that wants the verified numbers.

An IR is two files written side by side, `<name>.xml` and `<name>.bin`. The
writer stages them in a directory (`model.xml`, `model.bin`); `commit` moves
the `.bin` into place before the `.xml` and puts the old pair back if the
second move fails.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Iterator, NamedTuple, Sequence

from servekit import atomic
from servekit import patching
from servekit import signature as sig
from servekit.errors import ExportError, root_cause
from servekit.formats import openvino_ops

PRECISIONS = {"f32": "float32", "bf16": "bfloat16"}
DEFAULT_PRECISION = "f32"
STAGED_XML = "model.xml"


def check_precision(precision: str, model_name: str) -> str:
    """`precision` if OpenVINO servekit verifies at it, else a clear error."""
    if precision not in PRECISIONS:
        raise ExportError(f"Model '{model_name}': openvino_precision must be one of {sorted(PRECISIONS)}; got "
                          f"{precision!r}.", model=model_name, reason="bad_argument")
    return precision


def tolerances(precision: str) -> dict[str, tuple[float, float]]:
    """The tolerances an IR declared at `precision` is checked with, over the defaults."""
    from servekit.verification import TOLERANCES

    return {} if precision == "f32" else {"float32": TOLERANCES["bfloat16"]}


def _converter_without_telemetry() -> None:
    """Has OpenVINO's converter use its own no-op telemetry stub.

    `ov.convert_model` reports every conversion to Google Analytics unless a
    consent file in the user's home says no (openvino_telemetry, installed with
    openvino: on by default outside CI). Each event forks the converting
    process to send it (nine for one small model, measured): for servekit the
    multi-threaded export worker, holding a model of gigabytes at times (its
    fork counted 6.3 GiB resident in the 1.59B decoder's conversion). It also
    writes `~/intel/`. An export is a build step: hermetic, offline, with no
    side effect outside its outputs. The converter falls back to
    `openvino.tools.ovc.telemetry_stub` when openvino_telemetry is not
    installed; its two modules that report are pointed at that stub here. (The
    export worker hides the package altogether, `worker/__main__.py`; this
    covers a conversion in any other process.)
    """
    from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils

    convert_impl.tm = telemetry_utils.tm = telemetry_stub


def convert(concrete, endpoint: sig.Signature, model_name: str, precision: str = DEFAULT_PRECISION):
    """An `ov.Model` of the serving concrete function, named like `endpoint`.

    Raises:
        ExportError: the converter refused the graph, or its model's inputs
            or outputs do not match the signature.
    """
    import openvino as ov

    _converter_without_telemetry()
    try:
        with _weights_outside_offline_passes():
            converted = ov.convert_model(concrete, extension=openvino_ops.extensions())
    except Exception as e:  # OpenVINO's frontend: any op it has no rule for
        raise _conversion_error(e, "the serving function", model_name) from None
    return _impose_signature(converted, endpoint, model_name, precision)


def convert_saved_model(path: str, endpoint: sig.Signature, model_name: str, precision: str = DEFAULT_PRECISION):
    """As `convert`, from a SavedModel directory's serving signature."""
    import openvino as ov

    _converter_without_telemetry()
    try:
        with _weights_outside_offline_passes():
            converted = ov.convert_model(path, extension=openvino_ops.extensions())
    except Exception as e:  # as in convert
        raise _conversion_error(e, "the SavedModel", model_name) from None
    return _impose_signature(converted, endpoint, model_name, precision)


# A MatMul weight this large or larger stays the frontend's Constant (below);
# smaller ones go through the converter's passes as they would without servekit.
_SHARED_WEIGHT_BYTES = 2**20


@contextlib.contextmanager
def _weights_outside_offline_passes() -> Iterator[None]:
    """`ov.convert_model`'s offline passes run with each untransposed MatMul
    weight of `_SHARED_WEIGHT_BYTES` or more stood in for by a Parameter, and
    the frontend's Constant put back after them.

    The TensorFlow frontend's Constants share the memory of the variables they
    read. The passes then copy weights: MatMulConstTransposesExtraction folds a
    transpose of every MatMul weight with `transpose_b=False` (Keras's `Dense`
    and `EinsumDense` kernels) into a new Constant, while the variable stays
    resident in the worker. A 0.38 GiB kernel cost 0.40 GiB more; the 1.59B
    decoder's export worker peaked at 2.03x its weights while converting, 1.13x
    with the weights kept out. The IR then holds those MatMuls untransposed,
    which OpenVINO's CPU plugin lays out when it compiles them, as it does
    every weight. Every other weight, and every small one, goes through the
    passes as OpenVINO's converter would take it. (A SavedModel's weights are
    the frontend's own: kept out of the passes too, so that both roads write
    the same IR.)
    """
    from openvino.tools.ovc import convert_impl
    import openvino.opset13 as ops

    original = convert_impl.moc_emit_ir

    def emit(model, argv):
        weights, stand_ins = {}, []
        for node in model.get_ordered_ops():
            if _untransposed_matmul_weight(node):
                stand_in = ops.parameter(node.get_output_partial_shape(0), node.get_output_element_type(0))
                # The passes rebuild Parameters: each is found again by its name.
                stand_in.set_friendly_name(f"servekit_weight_stand_in_{len(stand_ins)}")
                node.output(0).replace(stand_in.output(0))
                weights[stand_in.get_friendly_name()] = node
                stand_ins.append(stand_in)
        model.add_parameters(stand_ins)
        model = original(model, argv)
        for stand_in in [p for p in model.get_parameters() if p.get_friendly_name() in weights]:
            stand_in.output(0).replace(weights[stand_in.get_friendly_name()].output(0))
            model.remove_parameter(stand_in)
        model.validate_nodes_and_infer_types()
        return model

    with patching.replaced(convert_impl, moc_emit_ir=emit):
        yield


def _untransposed_matmul_weight(node) -> bool:
    """Whether `node` is a Constant of `_SHARED_WEIGHT_BYTES` or more that only
    MatMuls take, as their second operand and untransposed."""
    if node.get_type_name() != "Constant" or node.get_byte_size() < _SHARED_WEIGHT_BYTES:
        return False
    consumers = node.output(0).get_target_inputs()
    return bool(consumers) and all(
        port.get_node().get_type_name() == "MatMul" and port.get_index() == 1
        and not port.get_node().get_attributes()["transpose_b"] for port in consumers)


def needs_saved_model(error: ExportError) -> bool:
    """Whether `convert` failed on what `convert_saved_model` converts: a
    captured resource (a lookup table's handle, which a SavedModel's
    initializer fills), complex tensors (`keras.ops.fft`, `irfft`, `istft`:
    the frontend marks their parts only when it reads a SavedModel) or
    bfloat16 variables (a function's captured weights are constants to the
    frontend, which has no bfloat16 constant; it reads a SavedModel's
    variables)."""
    message = str(error)
    return (("undeclared parameters" in message and "table_handle" in message) or "ComplexTypeMark" in message
            or _UNREADABLE_CONSTANT in message)


_STRING_OPS = re.compile(r"String|Substr|Regex|Unicode")
_UNREADABLE_CONSTANT = "cannot read a constant of one of the model's dtypes"


def _conversion_error(error: Exception, what: str, model_name: str) -> ExportError:
    ops = openvino_ops.unconverted(error)
    # String ops (Keras's Hashing, string lookups) convert to no other format either.
    formats = "format='tf_saved_model'" if _STRING_OPS.search(ops) else "format='onnx' or 'tf_saved_model'"
    cause = f"it {ops}. Export {formats}, or keep those ops out of the model" if ops else root_cause(error)
    if "Const of unknown type" in ops or ops == "failed to convert Const":  # from a function, from a SavedModel
        cause = (f"it {_UNREADABLE_CONSTANT}, such as bfloat16 (its frontend has none): "
                 "the weights of a bfloat16 dtype policy, or a constant the model makes in bfloat16 outside its "
                 "layers (keras_hub's Gemma scales its embeddings by one). Keep the weights in float32 "
                 "(mixed_bfloat16: servekit's OpenVINO IR computes its layers in float32) and such constants in "
                 "float32, or export format='onnx' or 'tf_saved_model'")
    return ExportError(f"Model '{model_name}': OpenVINO's TensorFlow frontend could not convert {what}: {cause}",
                       model=model_name, reason="conversion_failed")


def _widen_integer_matmuls(model) -> None:
    """Makes 8- and 16-bit integer matmuls accumulate in int32, as TensorFlow's do.

    OpenVINO 2026.4's TensorFlow frontend converts an int8 x int8 matmul with an
    int32 output (`BatchMatMulV3(Tout=int32)`, Keras's int8-quantized `Dense` and
    `EinsumDense` on TensorFlow) into an int8 `MatMul` followed by a `Convert`:
    every sum over 127 wraps around. Each such `MatMul` that only feeds
    `Convert`s becomes one over its inputs converted to int32.
    """
    import openvino as ov
    import openvino.opset13 as ops

    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul":
            continue
        element = node.get_output_element_type(0)
        if not (element.is_integral() and element.bitwidth < 32):
            continue
        consumers = [port for port in node.output(0).get_target_inputs()]
        if not consumers or any(port.get_node().get_type_name() != "Convert" for port in consumers):
            continue
        attributes = node.get_attributes()
        wide = ops.matmul(ops.convert(node.input_value(0), ov.Type.i32), ops.convert(node.input_value(1), ov.Type.i32),
                          attributes["transpose_a"], attributes["transpose_b"])
        for port in consumers:
            port.replace_source_output(wide.output(0))


# The inputs of each op that OpenVINO's CPU plugin mishandles after an If when they are
# constants (`_shapes_read_at_run_time`), by op and version: a Pad's pads, a resize's
# target sizes or scales.
_SHAPE_INPUTS = {("Pad", "opset1"): (1, 2), ("Pad", "opset12"): (1, 2), ("Interpolate", "opset4"): (1, 2),
                 ("Interpolate", "opset11"): (1,)}


def _shapes_read_at_run_time(model) -> None:
    """Makes each constant-padded `Pad` and constant-sized `Interpolate` after a
    branch take its pads or sizes at run time.

    OpenVINO 2026.4's CPU plugin computes such a node wrong (uninitialized
    values, 1e+30 and NaN) on a call whose input shape differs from the
    previous call's, when it runs after an `If` (measured: a `CenterCrop` of
    images of any size, an `If`, then `ZeroPadding2D`, `Resizing` or a
    bilinear `UpSampling2D`, then a convolution; a layout change after it is
    enough). The same node with pads or sizes it reads at run time is right
    at every shape, so each such constant gets zeros added, made from its
    node's input shape (`0 * dim`, for a dimension unknown until run time).
    """
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    after_branch: set[str] = set()
    for node in model.get_ordered_ops():
        if node.get_type_name() == "If" or any(value.get_node().get_name() in after_branch
                                               for value in node.input_values()):
            after_branch.add(node.get_name())
        inputs = _SHAPE_INPUTS.get((node.get_type_name(), node.get_type_info().version_id), ())
        if not inputs or node.get_name() not in after_branch:
            continue
        data_shape = node.input_value(0).get_partial_shape()
        dynamic = [axis for axis, dim in enumerate(data_shape) if dim.is_dynamic] if data_shape.rank.is_static else []
        if not dynamic:
            continue
        for i in inputs:
            if i >= node.get_input_size() or node.input_value(i).get_node().get_type_name() != "Constant":
                continue
            value = node.input_value(i)
            constant = value.get_node().get_data()
            dim = ops.gather(ops.shape_of(node.input_value(0), ov.Type.i64),
                             ops.constant(np.full(constant.shape, dynamic[0], np.int64)), ops.constant(np.int64(0)))
            zeros = ops.multiply(ops.convert(dim, value.get_element_type()),
                                 ops.constant(np.zeros(constant.shape, constant.dtype)))
            node.input(i).replace_source_output(ops.add(zeros, value).output(0))


def _impose_signature(converted, endpoint: sig.Signature, model_name: str, precision: str):
    import openvino as ov
    import openvino.opset16 as opset16

    _widen_integer_matmuls(converted)
    _shapes_read_at_run_time(converted)

    def by_name(ports, kind: str, names: Sequence[str]):
        found = {}
        for port in ports:
            for name in names:
                if name in port.get_names():
                    found.setdefault(name, port)
        if len(ports) == len(names):
            # An output that is one of the inputs keeps the input's name (the converter
            # names a Parameter's tensor once); it has no other port to be, so it is the
            # port at its own position when that port carries no signature name.
            for port, name in zip(ports, names):
                if name not in found and not port.get_names() & set(names):
                    found[name] = port
        missing = [n for n in names if n not in found]
        if missing or len(ports) != len(names):
            have = [sorted(p.get_names()) for p in ports]
            raise ExportError(
                f"Model '{model_name}': OpenVINO's converter produced {kind}s {have}; the signature has {list(names)} "
                f"(missing {missing}).", model=model_name, reason="conversion_failed")
        return [found[n] for n in names]

    in_names = [t.name for t in endpoint.inputs]
    out_names = [t.name for t in endpoint.outputs]
    inputs = by_name(list(converted.inputs), "input", in_names)
    outputs = by_name(list(converted.outputs), "output", out_names)
    parameters = [p.get_node() for p in inputs]
    results = [o.get_node() for o in outputs]
    for name, param in zip(in_names, parameters):
        param.set_friendly_name(name)
        param.output(0).get_tensor().set_names({name})
    named = {param.output(0) for param in parameters}
    for index, (name, result) in enumerate(zip(out_names, results)):
        source = result.input_value(0)
        if source in named:
            # Another output (or an input) is this tensor: a model that returns one
            # tensor under two names, or a layer that is the identity at inference
            # (Dropout) beside its input. The converter gives them one Result, and a
            # tensor has one set of names, so the IR would not load ("Result layer
            # ... has incorrect input"): this output gets an Identity and a Result.
            source = opset16.identity(source).output(0)
            result = results[index] = opset16.result(source)
        named.add(source)
        result.set_friendly_name(name)
        source.get_tensor().set_names({name})
    model = _typed_like_signature(ov.Model(results, parameters, model_name), endpoint, model_name)
    model.set_rt_info(precision, ["runtime_options", "INFERENCE_PRECISION_HINT"])
    _rank_counted_names(model)
    return model


def _typed_like_signature(model, endpoint: sig.Signature, model_name: str):
    """`model` with the signature's bfloat16 (and float16) inputs and outputs typed so.

    OpenVINO's TensorFlow frontend gives a bfloat16 placeholder an f32
    Parameter when it reads a traced function (a SavedModel keeps bf16): the
    IR would take float32 where the signature says bfloat16, and a caller
    feeding bfloat16 (the native verifier) would be refused. Typing the
    tensor bf16 adds an exact Convert to the f32 the graph computes in (for
    an output, the rounding the source's own output has).

    Raises:
        ExportError: a floating input or output has another element type
            than the signature's dtype (named).
    """
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    expected = {"bfloat16": ov.Type.bf16, "float16": ov.Type.f16, "float32": ov.Type.f32, "float64": ov.Type.f64}
    process = None
    for kind, ports, specs in (("input", model.inputs, endpoint.inputs), ("output", model.outputs, endpoint.outputs)):
        for index, (port, spec) in enumerate(zip(ports, specs)):
            want = expected.get(spec.dtype)
            found = port.get_element_type()
            if want is None or found == want:
                continue
            if want not in (ov.Type.bf16, ov.Type.f16) or found != ov.Type.f32:
                raise ExportError(f"Model '{model_name}': OpenVINO's converter typed {kind} '{spec.name}' {found}; "
                                  f"the signature says {spec.dtype}.", model=model_name, reason="conversion_failed")
            process = process or PrePostProcessor(model)
            (process.input if kind == "input" else process.output)(index).tensor().set_element_type(want)
    if process is None:
        return model
    model = process.build()
    for port, spec in zip(model.outputs, endpoint.outputs):
        port.get_node().set_friendly_name(spec.name)
        port.get_tensor().set_names({spec.name})  # an output's Convert leaves its tensor without a name
    return model


def _rank_counted_names(model) -> None:
    """Replaces the process-wide counter in OpenVINO's generated node names
    (`Transpose_3760` in a fresh process, `Transpose_11983` after another
    conversion) by its rank among the names of the same stem, as
    `servekit.determinism` does for TensorFlow's counters."""
    import re

    counted: dict[str, list[tuple[int, Any]]] = {}

    def count(graph, top: bool) -> None:
        for node in graph.get_ordered_ops():
            # The bodies of an If (a CenterCrop of images of any size) or a Loop are graphs of
            # their own, named from the same counter.
            for body in _bodies(node):
                count(body, top=False)
            if top and node.get_type_name() in ("Parameter", "Result"):
                continue  # named by the signature
            match = re.fullmatch(r"(.*)_(\d+)", node.get_friendly_name())
            if match:
                counted.setdefault(match.group(1), []).append((int(match.group(2)), node))

    count(model, top=True)
    for stem, nodes in counted.items():
        for rank, (_, node) in enumerate(sorted(nodes, key=lambda item: item[0])):
            node.set_friendly_name(f"{stem}_{rank}")


def _bodies(node) -> list:
    """The graphs inside `node`: an If's two branches, a Loop's or TensorIterator's body."""
    if hasattr(node, "get_then_body"):
        return [node.get_then_body(), node.get_else_body()]
    if hasattr(node, "get_function"):
        return [node.get_function()]
    return []


def write(model, staged: str) -> str:
    """Writes the IR into the staging directory `staged`; returns its .xml."""
    import openvino as ov

    os.makedirs(staged, exist_ok=True)
    xml = os.path.join(staged, STAGED_XML)
    ov.save_model(model, xml, compress_to_fp16=False)
    return xml


def staged_xml(staged: str) -> str:
    return os.path.join(staged, STAGED_XML) if os.path.isdir(staged) else staged


def commit(staged: str, xml_path: str) -> None:
    """Moves a staged IR (`staged/model.{xml,bin}`) to `xml_path` and its .bin."""
    bin_path = os.path.splitext(xml_path)[0] + ".bin"
    previous_bin = None
    if os.path.lexists(bin_path):
        previous_bin = atomic.staging_path(bin_path)
        os.rename(bin_path, previous_bin)
    os.rename(os.path.join(staged, "model.bin"), bin_path)
    try:
        atomic.commit(os.path.join(staged, STAGED_XML), xml_path)
    except BaseException:
        os.replace(previous_bin, bin_path) if previous_bin else os.remove(bin_path)
        raise
    if previous_bin:
        os.remove(previous_bin)
    atomic.discard(staged)


class CompiledIR(NamedTuple):
    """An IR compiled for a check, with its ports' names as the IR declares them.

    A compiled port can carry more names than the IR's tensor: the CPU plugin's
    fusions merge the fused nodes' names into the output's (RMS normalization:
    'rms_normalization' and 'functional_1/rms_normalization_1/Mul:0'), and
    `get_any_name` picks the first. The IR's own ports name them, by position.
    """

    compiled: Any  # ov.CompiledModel
    input_names: list[str]
    output_names: list[str]


def compile_for_check(xml_path: str, precision: str = DEFAULT_PRECISION) -> CompiledIR:
    """The IR compiled on CPU at `precision`, one stream (as the check runs it)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(xml_path)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                 "PERFORMANCE_HINT": "LATENCY"})
    return CompiledIR(compiled, [p.get_any_name() for p in model.inputs], [p.get_any_name() for p in model.outputs])


def check(xml_path: str, cases, precision: str = DEFAULT_PRECISION, page_out_weights: bool = False) -> list[Any]:
    """Runs each case through OpenVINO's CPU plugin at `precision`.

    Args:
        xml_path: the IR's .xml (its .bin beside it).
        cases: `servekit.pipeline.cases.Case`s of the serving endpoint.
        page_out_weights: hand the mapped `.bin`'s pages back to the kernel
            while the check runs (`servekit.mapped_pages`): the CPU plugin
            packs its own copy of the weights from them, and a large model's
            check then holds one copy of its weights, not two.

    Returns:
        `servekit.verification.Comparison`s, one per case (and per repeated run).
    """
    from servekit import mapped_pages, verification

    xml_path = staged_xml(xml_path)
    bin_path = os.path.splitext(xml_path)[0] + ".bin"
    with mapped_pages.paged_out(bin_path) if page_out_weights else contextlib.nullcontext():
        _, infer = infer_function(xml_path, precision)  # alive, with the mapping, until the block ends
        return verification._check(list(cases), lambda endpoint, inputs: infer(inputs))


def infer_function(xml_path: str, precision: str = DEFAULT_PRECISION):
    """The IR compiled on CPU at `precision` (`compile_for_check`), and a function
    running it: inputs by name -> outputs by name, NumPy arrays (bfloat16 as
    `ml_dtypes.bfloat16`)."""
    ir = compile_for_check(staged_xml(xml_path), precision)
    outputs = ir.compiled.outputs

    def infer(inputs):
        request = ir.compiled.create_infer_request()
        result = request.infer({k: _tensor(v) for k, v in inputs.items()})
        return {name: _array(result[i], outputs[i]) for i, name in enumerate(ir.output_names)}

    return ir, infer


def declared_precision(xml_path: str) -> str:
    """The inference precision an IR servekit wrote declares ("f32" or "bf16"); "f32"
    for an IR that declares none."""
    import openvino as ov

    model = ov.Core().read_model(xml_path)
    if model.has_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]):
        declared = model.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str)
        if declared in PRECISIONS:
            return declared
    return DEFAULT_PRECISION


def _tensor(value):
    """An input for an infer request; `ml_dtypes.bfloat16` as a bf16 `ov.Tensor`
    of its bits. An infer request copies an array into a bf16 input by value,
    through its float16 buffer type: float16 numbers read as bfloat16 bits
    (wrong numbers, measured)."""
    import numpy as np

    array = np.ascontiguousarray(value)
    if array.dtype.name != "bfloat16":
        return array
    import openvino as ov

    tensor = ov.Tensor(ov.Type.bf16, ov.Shape(list(array.shape)))
    tensor.data[...] = array.view(tensor.data.dtype)
    return tensor


def _array(value, port):
    """An output as NumPy; bf16 as `ml_dtypes.bfloat16` (OpenVINO's Python API
    returns its bits as a float16 array)."""
    import numpy as np

    import openvino as ov

    array = np.array(value)
    if port.get_element_type() == ov.Type.bf16:
        import ml_dtypes

        return array.view(ml_dtypes.bfloat16)
    return array
