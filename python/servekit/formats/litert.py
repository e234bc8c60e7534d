"""LiteRT (TFLite): converted from the traced serving function, proved in LiteRT.

The TensorFlow worker hands `convert` the serving signature's concrete
function; the TFLite converter keeps it as the flatbuffer's `serving_default`
signature, whose input and output keys are the signature keys, and keeps
dynamic dimensions as `-1` in each tensor's `shape_signature`.

Tensor order. The converter lists the subgraph's inputs and outputs in an
order of its own (for two inputs `a, b`, often `b, a`), and the SignatureDef's
maps sorted by key. A caller that feeds tensors by position (the
interpreter's `get_input_details()`, `set_tensor` by index, the LiteRT C
API's signature input index) would swap them. `in_signature_order` rewrites
both lists in place, in the signature's order (the model's input order; its
output order), changing no other byte; `read_signature` checks the order.

Ops. Built-in LiteRT ops are tried first: an artifact that needs the Flex
(Select TensorFlow ops) delegate does not run in LiteRT's own runtime, the
C API servekit's native verifier and most mobile deployments use. Only when
the built-ins cannot express the graph is the conversion repeated with
`SELECT_TF_OPS` (Keras's setting), and the artifact must then still load and
verify in `ai_edge_litert`'s interpreter, or the export fails.

Converter options. Keras passes export keyword arguments that name
`tf.lite.TFLiteConverter` attributes to the converter (`optimizations`,
`representative_dataset`, `target_spec={...}`, ...); so does servekit. They
travel to the worker as JSON (`optimizations` as names, plain values,
`target_spec` dicts); a `representative_dataset` is drawn once in the
exporting process and travels as its samples (up to `MAX_SAMPLE_BYTES`),
which the worker replays. Any other callable keeps the export in the
exporting process (the in-process strategy, TensorFlow backend). A quantizing option makes the
artifact's outputs differ from the float model's by the quantization error:
it is checked coarsely, every element within `QUANTIZED_SCALE_FRACTION` of
the output's scale (`verification.coarse_tolerance`), and the manifest says so.

`allow_custom_ops=True` is refused on every backend: a custom op does not run
in LiteRT's runtime without its registration, so the artifact could not be
verified, and the flag would stop a graph that needs TensorFlow ops from
reaching the Select TF ops conversion, which does run.

PyTorch backend. Keras converts torch models with `litert-torch` and takes
`litert_torch.convert`'s arguments (plus `optimizations`), refusing the
others with "Unsupported arguments for LiteRT export with the PyTorch
backend". servekit reaches LiteRT from torch through the portable TensorFlow
rebuild (no torch tracing), so it takes the TFLite converter attributes there
too, and of `litert_torch.convert`'s arguments (`TORCH_ARGUMENTS`):
- `strict_export`, `lightweight_conversion`, `runtime_constant_folding`:
  how litert-torch traces the module and holds its constants while
  converting. They do not change what the model computes, and servekit
  neither traces with `torch.export` nor converts with litert-torch: checked
  for type, then without effect.
- `enable_x64`: True (the default) keeps 64-bit tensors, as servekit does;
  False asks for none, and the export fails (naming them) when the converted
  model has any: servekit does not downcast.
- `quant_config` (a litert-torch `QuantConfig`) and `dynamic_shapes`
  (torch.export's) are refused with what to pass instead, as are
  litert-torch's converter internals (`use_v2`, `export_dir`, ...).
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import re
import struct
from typing import Any, Callable, Iterator, Mapping

from servekit import settings
from servekit import signature as sig
from servekit.errors import ExportError, root_cause

# A representative dataset larger than this stays in the exporting process.
MAX_SAMPLE_BYTES = 64 << 20
# A quantized model's float outputs against the float model's: every element within
# this fraction of the output's scale over the endpoint's cases (int8 error follows the
# range the quantizer calibrated, which one case of few rows can fall well short of).
# Keras's representative-dataset tests, with 5 or 10 random calibration samples, measured
# up to 0.36 of it in 450 runs (a case's own scale: up to 1.7). Below 1, so an artifact
# whose outputs are all zeros fails. A coarse check that catches a model that does not
# run or computes something else, marked `"precision": "quantized"` in the manifest.
QUANTIZED_SCALE_FRACTION = 0.75
_OPS_BUILTIN = ("TFLITE_BUILTINS",)
_OPS_SELECT = ("TFLITE_BUILTINS", "SELECT_TF_OPS")
# `litert_torch.convert`'s arguments servekit takes on the torch backend (see the module
# docstring): name -> the values it takes.
TORCH_ARGUMENTS = {
    "strict_export": "True, False or 'auto'",
    "lightweight_conversion": "True or False",
    "runtime_constant_folding": "True, False or None",
    "enable_x64": "True or False",
}
# Those it refuses, with what to do instead.
_TORCH_REFUSED = {
    "quant_config": "it is litert-torch's quantization recipe, and servekit converts with the TFLite converter: "
                    "pass optimizations=[tf.lite.Optimize.DEFAULT] (dynamic-range int8), with a "
                    "representative_dataset for full-integer quantization",
    "dynamic_shapes": "servekit's LiteRT model keeps every None dimension of the input signature dynamic (a "
                      "resizable -1 in its shape signature): give the shapes through input_signature",
}
# A servekit option among the converter attributes (not set on the converter).
_ENABLE_X64 = "enable_x64"
# A model with this many bytes of weights or more is converted with its buffers after
# the flatbuffer, found by offset (the converter does so itself past flatbuffers' 2 GB).
# The converter then holds about half the copies: converting 512 MiB of Dense kernels
# peaked at 5.9x the weights over the model's own, 2.9x with offsets, in half the time
# (measured 2026-12-05). LiteRT reads such files since TensorFlow 2.15; smaller models
# stay plain flatbuffers, which every TFLite runtime reads.
# The environment variable moves the bar (tests take small models down that road).
BUFFER_OFFSET_BYTES = 256 << 20
BUFFER_OFFSET_ENV = "SERVEKIT_LITERT_BUFFER_OFFSET_BYTES"
_BUFFER_OFFSET = "_experimental_use_buffer_offset"
_WIDE_TYPES = ("INT64", "UINT64", "FLOAT64", "COMPLEX128")


def _torch_backend() -> bool:
    import keras

    return keras.backend.backend() == "torch"


def _unsupported(names, model_name: str, why: str = "") -> ExportError:
    """Keras's wording for arguments the LiteRT export does not take (on torch:
    "Unsupported arguments for LiteRT export with the PyTorch backend")."""
    torch = _torch_backend()
    supported = (f" Supported arguments are: {', '.join(sorted(TORCH_ARGUMENTS))}, and the attributes of "
                 "tf.lite.TFLiteConverter (optimizations, representative_dataset, target_spec, ...), which "
                 "servekit's converter takes on every backend." if torch else "")
    return ExportError(f"Model '{model_name}': Unsupported arguments for LiteRT export"
                       f"{' with the PyTorch backend' if torch else ''}: {', '.join(sorted(names))}"
                       f"{' (' + why + ')' if why else ''}.{supported}", model=model_name, reason="bad_argument")


def split_options(options: Mapping[str, Any], model_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits converter options into `(portable, local)`: JSON values the
    worker can apply, and those only this process holds (callables).

    On the torch backend, `litert_torch.convert`'s arguments are taken as the
    module docstring says: those without effect are dropped here, and
    `enable_x64=False` travels on for `convert` to check.

    Raises:
        ExportError: an option that is no `tf.lite.TFLiteConverter` attribute
            (on torch: nor a `TORCH_ARGUMENTS` one), or one servekit refuses.
    """
    import tensorflow as tf

    portable, local = {}, {}
    probe = tf.lite.TFLiteConverter([], None)
    torch = _torch_backend()
    refused = sorted(name for name in options if torch and name in _TORCH_REFUSED)
    if refused:
        raise _unsupported(refused, model_name, "; ".join(f"{n}: {_TORCH_REFUSED[n]}" for n in refused))
    unknown = sorted(name for name in options if not hasattr(probe, name) and not (torch and name in TORCH_ARGUMENTS))
    if unknown and torch:
        raise _unsupported(unknown, model_name)
    if options.get("allow_custom_ops"):
        raise _unsupported(["allow_custom_ops"], model_name,
                           "a custom op does not run in LiteRT's runtime without its registration, so servekit could "
                           "not verify the model; a graph that needs TensorFlow ops is converted with Select TF ops "
                           "instead, without this flag")
    for name, value in options.items():
        if torch and name in TORCH_ARGUMENTS:
            allowed = {"strict_export": (True, False, "auto"), "runtime_constant_folding": (True, False, None)}
            if not any(value is v or (isinstance(v, str) and value == v) for v in allowed.get(name, (True, False))):
                raise ExportError(f"Model '{model_name}': {name} takes {TORCH_ARGUMENTS[name]}; got {value!r}.",
                                  model=model_name, reason="bad_argument")
            if name == _ENABLE_X64 and value is False:
                portable[name] = False
            continue
        if name == "target_spec" and isinstance(value, dict):
            unknown = sorted(k for k in value if not hasattr(probe.target_spec, k))
            if unknown:
                raise ExportError(f"Model '{model_name}': unknown target_spec attribute(s) {unknown} for the LiteRT "
                                  "converter.", model=model_name, reason="bad_argument")
            if all(_is_json(v) or _enum_names(v) is not None for v in value.values()):
                portable[name] = {k: _enum_names(v) if _enum_names(v) is not None else v for k, v in value.items()}
            else:
                local[name] = value
        elif name == "representative_dataset" and callable(value):
            samples = _drawn(value, model_name)
            (portable if samples is not None else local)[name] = samples if samples is not None else value
        elif not hasattr(probe, name):
            raise ExportError(f"Model '{model_name}': {name!r} is neither an export argument nor an attribute of "
                              "tf.lite.TFLiteConverter (the LiteRT converter).", model=model_name,
                              reason="bad_argument")
        elif _enum_names(value) is not None:
            portable[name] = _enum_names(value)
        elif _is_json(value):
            portable[name] = value
        else:
            local[name] = value
    return portable, local


def _drawn(dataset, model_name: str):
    """The samples a representative dataset yields, as JSON (`.npy` bytes in
    base64 per array), or None when they exceed `MAX_SAMPLE_BYTES`."""
    import base64
    import io

    import numpy as np

    samples, total = [], 0
    try:
        for sample in dataset():
            items = sample.items() if isinstance(sample, dict) else enumerate(sample)
            encoded = {}
            for key, array in items:
                array = np.asarray(array)
                total += array.nbytes
                buffer = io.BytesIO()
                np.save(buffer, array, allow_pickle=False)
                encoded[str(key)] = base64.b64encode(buffer.getvalue()).decode()
            samples.append({"dict": isinstance(sample, dict), "arrays": encoded})
            if total > MAX_SAMPLE_BYTES:
                return None
    except TypeError as e:
        raise ExportError(f"Model '{model_name}': representative_dataset must be a function returning an iterable "
                          f"of input lists or dicts of arrays ({e}).", model=model_name,
                          reason="bad_argument") from None
    return {"__samples__": samples}


def _replayed(samples: list[dict[str, Any]]):
    """A representative dataset function yielding the drawn samples again."""
    import base64
    import io

    import numpy as np

    def load(text):
        return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)

    def dataset():
        for sample in samples:
            arrays = {k: load(v) for k, v in sample["arrays"].items()}
            yield arrays if sample["dict"] else [arrays[str(i)] for i in range(len(arrays))]

    return dataset


def unfused_gelu(error: ExportError) -> bool:
    """Whether a conversion failed on an `Erf` or `Erfc` LiteRT has no kernel
    for: an exact GELU the converter did not fuse into its GELU op, which a
    trace with `servekit.formats.builtin_trace.builtin_ops("litert", unfused_gelu=True)`
    writes with built-in ops (or a `keras.ops.erf` of another dtype, which it
    leaves, and which then fails again)."""
    return re.search(r"'tf\.Erfc?' op is neither a custom op nor a flex op", str(error)) is not None


def quantizes(options: Mapping[str, Any]) -> bool:
    """Whether these converter options make a quantized model."""
    return bool(options.get("optimizations")) or options.get("representative_dataset") is not None


def _is_json(value) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    return False


def _enum_names(value):
    """tf.lite enums (and lists of them) as their names, else None."""
    import enum

    if isinstance(value, enum.Enum):
        return {"__enum__": f"{type(value).__name__}.{value.name}"}
    if isinstance(value, (list, tuple, set)) and value and all(isinstance(v, enum.Enum) for v in value):
        return [{"__enum__": f"{type(v).__name__}.{v.name}"} for v in value]
    return None


def _decoded(value):
    import tensorflow as tf

    if isinstance(value, dict) and "__samples__" in value:
        return _replayed(value["__samples__"])
    if isinstance(value, dict) and "__enum__" in value:
        cls, _, member = value["__enum__"].partition(".")
        return getattr(getattr(tf.lite, cls), member)
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items()}
    return value


def _configure(converter, options: Mapping[str, Any], ops: tuple[str, ...]) -> None:
    import tensorflow as tf

    converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, o) for o in ops]
    converter.experimental_enable_resource_variables = True
    for name, value in options.items():
        if name == _ENABLE_X64:
            continue
        value = _decoded(value)
        if name == "target_spec" and isinstance(value, dict):
            for key, item in value.items():
                setattr(converter.target_spec, key, item)
        else:
            setattr(converter, name, value)


def convert(make_converter, options: Mapping[str, Any], model_name: str,
            likely_cause: Callable[[], str] = lambda: "", weight_bytes: int = 0) -> tuple[bytes, str]:
    """Converts with built-in ops, else with Select TF ops.

    Args:
        make_converter: returns a fresh `tf.lite.TFLiteConverter` (from the
            concrete function or a SavedModel).
        options: converter attributes (`split_options`'s, in either half).
        weight_bytes: the model's weights: from `BUFFER_OFFSET_BYTES` (or
            `BUFFER_OFFSET_ENV`'s bytes) on, the buffers go after the
            flatbuffer, unless `options` say otherwise.
        likely_cause: what in the graph LiteRT's ops lack and what to do
            instead (`likely_cause`), asked only when both op sets fail: the
            end of the error, or "".

    Returns:
        `(flatbuffer, converter)`: the bytes and a converter description for
        the manifest.

    Raises:
        ExportError: neither op set converts the graph (both reasons kept);
            or `enable_x64=False` and the model has 64-bit tensors.
    """
    if weight_bytes >= settings.bytes_setting(BUFFER_OFFSET_ENV, BUFFER_OFFSET_BYTES) and _BUFFER_OFFSET not in options:
        options = {**options, _BUFFER_OFFSET: True}
    failures = []
    for ops in (_OPS_BUILTIN, _OPS_SELECT):
        converter = make_converter()
        _configure(converter, options, ops)
        try:
            flatbuffer = converter.convert()
        except Exception as e:  # the converter's own error (MLIR diagnostics): kept for the message
            failures.append(f"{'+'.join(ops)}: {root_cause(e)}")
            continue
        if options.get(_ENABLE_X64) is False:
            _check_no_wide_tensors(flatbuffer, model_name)
        return flatbuffer, "tflite_converter" + ("+select_tf_ops" if "SELECT_TF_OPS" in ops else "")
    cause = likely_cause()
    raise ExportError(f"Model '{model_name}': the TFLite converter could not convert the serving function:\n  "
                      + "\n  ".join(failures) + (f"\n  {cause}" if cause else ""), model=model_name,
                      reason="conversion_failed")


# Why a model that still computes in bfloat16 or float16 in its LiteRT trace does (its layers'
# low-precision policies compute in float32 there: `servekit.source_model.precision`), and
# what it can do instead, in both errors that blame the dtype.
_OUTSIDE_LAYER_POLICIES = ("outside its layers' dtype policies (servekit computes float16 and bfloat16 layers in "
                           "float32 for LiteRT, not an op of the model's own, such as a keras.ops call on a tensor "
                           "cast to that dtype)")
_BFLOAT16_WAY_OUT = ("compute that op in float32 (LiteRT can still make the model smaller: "
                     "optimizations=[tf.lite.Optimize.DEFAULT]), or export format='onnx' (bfloat16 computed in "
                     "float32) or 'tf_saved_model'.")


_FLOAT16_COMPUTE = (f"The model computes in float16 {_OUTSIDE_LAYER_POLICIES}, for which LiteRT has no built-in "
                    "kernels: compute that op in float32 (LiteRT can still store the weights in float16: "
                    "optimizations=[tf.lite.Optimize.DEFAULT] with target_spec={'supported_types': [tf.float16]}), "
                    "or export format='onnx' or 'tf_saved_model'.")


def likely_cause(concrete) -> str:
    """Why LiteRT's ops cannot express a traced function that failed to convert,
    and what to do instead, when its ops say ("" otherwise): bfloat16 or
    float16 compute."""
    from tensorflow.core.framework import types_pb2

    from servekit.formats.builtin_trace import traced_nodes

    nodes = traced_nodes(concrete)
    computed = {value.type for node in nodes for key, value in node.attr.items() if key in ("T", "dtype", "DstT")}
    if types_pb2.DT_BFLOAT16 in computed:
        return (f"The model computes in bfloat16 {_OUTSIDE_LAYER_POLICIES}, for which LiteRT has no built-in kernels "
                "(and TensorFlow's Select ops not all): " + _BFLOAT16_WAY_OUT)
    if types_pb2.DT_HALF in computed:
        return _FLOAT16_COMPUTE
    return ""


def _check_no_wide_tensors(flatbuffer: bytes, model_name: str) -> None:
    """`enable_x64=False`: the model must have no 64-bit tensor (servekit does not downcast)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(flatbuffer, 0)
    wide = []
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            if names.get(tensor.Type()) in _WIDE_TYPES:
                wide.append(f"{(tensor.Name() or b'').decode()} ({names[tensor.Type()].lower()})")
    if wide:
        raise ExportError(f"Model '{model_name}': enable_x64=False asks for a LiteRT model without 64-bit tensors, "
                          f"and the converted model has {len(wide)}: {', '.join(wide[:5])}"
                          f"{', ...' if len(wide) > 5 else ''}. servekit does not downcast them: cast to 32 bits in "
                          "the model (and its input_signature), or leave enable_x64 at True.", model=model_name,
                          reason="bad_argument")


def _converted_root(concrete, root):
    """What the converter saves with a traced serving function: `root`, whose
    lookup tables' initializers it converts, used or not; or, for a function
    that looks nothing up (the builtin trace writes integer tables as
    comparisons), the function's variables alone: its model's tables would
    bring their initializers in as Flex ops LiteRT cannot run."""
    import tensorflow as tf

    from servekit.formats.builtin_trace import traced_nodes

    if any(node.op.startswith("LookupTable") for node in traced_nodes(concrete)):
        return root
    variables_only = tf.Module()
    variables_only.variables_of_the_function = list(concrete.variables)
    return variables_only


def from_concrete(concrete, root):
    """A converter factory for `convert`, on a traced serving function (the
    converter saves it with `_converted_root(concrete, root)` in a SavedModel
    of its own, and converts that)."""
    import tensorflow as tf

    converted_root = _converted_root(concrete, root)
    return lambda: tf.lite.TFLiteConverter.from_concrete_functions([concrete], converted_root)


def save_for_conversion(concrete, root, path: str) -> None:
    """Saves what `from_concrete` would convert as a SavedModel at `path`, its
    function as the `serving_default` signature, for `from_saved_model`."""
    import tensorflow as tf

    tf.saved_model.save(_converted_root(concrete, root), path, signatures={"serving_default": concrete})


def from_saved_model(path: str):
    """A converter factory for `convert`, on a SavedModel's serving signature."""
    import tensorflow as tf

    def make_converter():
        converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["serving_default"])
        # It loads the SavedModel in Python to read its signatures and drops it in
        # reference cycles: collected now, its weights are not held through the conversion.
        gc.collect()
        return converter

    return make_converter


# Field offsets in the vtables of LiteRT's schema (`ai_edge_litert.schema_py_generated`; a
# flatbuffers field keeps its id forever).
_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 6, 8
_SIGNATURE_INPUTS, _SIGNATURE_OUTPUTS = 4, 6
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _vector(table, field: int) -> tuple[int, int]:
    """(absolute position of the first element, length) of a table's vector field."""
    o = table._tab.Offset(field)
    return (table._tab.Vector(o), table._tab.VectorLen(o)) if o else (0, 0)


def _serving(model, endpoint_name: str = "serving_default"):
    for i in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(i)
        if (signature.SignatureKey() or b"").decode() == endpoint_name:
            return signature
    return None


def _tensor_maps(signature, schema, field: int, buf) -> list[tuple[int, str, int]]:
    """A SignatureDef's input or output maps: (element position, name, tensor index)."""
    start, n = _vector(signature, field)
    out = []
    for j in range(n):
        position = start + 4 * j
        tensor_map = schema.TensorMap()
        tensor_map.Init(buf, position + _U32.unpack_from(buf, position)[0])
        out.append((position, tensor_map.Name().decode(), tensor_map.TensorIndex()))
    return out


def in_signature_order(buf: bytearray | mmap.mmap, endpoint: sig.Signature, model_name: str) -> None:
    """Puts a flatbuffer's `serving_default` inputs and outputs in the
    signature's order, in place: the serving subgraph's `inputs` and `outputs`
    (what `get_input_details()` lists and positional callers index), and the
    SignatureDef's input and output maps (the LiteRT C API's signature
    indices).

    Each list is permuted in place (its elements are rewritten, its length
    and place kept): no other byte changes, so equal conversions still give
    equal bytes. Subgraph entries that are no signature tensor keep their
    places; a list whose signature tensors do not match the signature one to
    one (an output tensor listed under two keys) is left as the converter
    wrote it.

    Raises:
        ExportError: the `serving_default` keys differ from the signature's.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(buf, 0)
    serving = _serving(model)
    want = {"inputs": [t.name for t in endpoint.inputs], "outputs": [t.name for t in endpoint.outputs]}
    maps = {} if serving is None else {
        "inputs": _tensor_maps(serving, schema, _SIGNATURE_INPUTS, buf),
        "outputs": _tensor_maps(serving, schema, _SIGNATURE_OUTPUTS, buf)}
    if serving is None or any(sorted(n for _, n, _ in maps[k]) != sorted(want[k]) for k in want):
        found = {k: [n for _, n, _ in v] for k, v in maps.items()} if serving is not None else None
        raise ExportError(f"Model '{model_name}': the LiteRT model's serving_default signature is {found}; the "
                          f"signature has inputs {sorted(want['inputs'])} and outputs {sorted(want['outputs'])}.",
                          model=model_name, reason="conversion_failed")
    subgraph = model.Subgraphs(serving.SubgraphIndex())
    for kind, field in (("inputs", _SUBGRAPH_INPUTS), ("outputs", _SUBGRAPH_OUTPUTS)):
        by_name = {name: (position, index) for position, name, index in maps[kind]}
        # The SignatureDef's maps: element j points at the map of the j-th key (tables
        # follow the vector that points at them, so the forward offsets stay positive).
        tables = {name: position + _U32.unpack_from(buf, position)[0] for name, (position, _) in by_name.items()}
        for (position, _, _), name in zip(maps[kind], want[kind]):
            _U32.pack_into(buf, position, tables[name] - position)
        # The subgraph's list: its signature tensors, in the signature's order.
        start, n = _vector(subgraph, field)
        wanted = [by_name[name][1] for name in want[kind]]
        current = [_I32.unpack_from(buf, start + 4 * i)[0] for i in range(n)]
        slots = [i for i, t in enumerate(current) if t in set(wanted)]
        if sorted(current[i] for i in slots) == sorted(wanted):
            for slot, tensor in zip(slots, wanted):
                _I32.pack_into(buf, start + 4 * slot, tensor)


# The vtable slots of `Buffer.offset` and `Operator.large_custom_options_offset`
# (schema.fbs); an offset of 0 or 1 means the data is not after the flatbuffer.
_BUFFER_OFFSET_SLOT = 6
_OPERATOR_OPTIONS_OFFSET_SLOT = 22


def _data_after_flatbuffer(buf) -> list[tuple[int, int, int]]:
    """What a LiteRT file keeps after its flatbuffer, found by offset (buffers,
    and large custom options): (where the offset is written, offset, size) of
    each, buffers by index, then options by subgraph and operator."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(buf, 0)
    found = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.Offset() > 1:
            found.append((buffer._tab.Pos + buffer._tab.Offset(_BUFFER_OFFSET_SLOT), buffer.Offset(), buffer.Size()))
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            if op.LargeCustomOptionsOffset() > 1:
                found.append((op._tab.Pos + op._tab.Offset(_OPERATOR_OPTIONS_OFFSET_SLOT),
                              op.LargeCustomOptionsOffset(), op.LargeCustomOptionsSize()))
    return found


def write(flatbuffer: bytes, path: str, endpoint: sig.Signature, model_name: str) -> None:
    """Writes the converter's output at `path` with reproducible bytes, then
    puts its inputs and outputs in the signature's order
    (`in_signature_order`) in the file itself: a multi-GB model is not copied
    in memory to do so.

    A model converted with buffer offsets (`BUFFER_OFFSET_BYTES`, or past
    2 GB) keeps its buffers after the flatbuffer in an order that changes from
    one conversion to the next (measured: 3 of 4 conversions of one function
    in one process differ). They are written back to back in buffer order
    instead, from where the converter put the first one, and their offsets
    rewritten: the same conversion gives the same bytes.

    Raises:
        ExportError: the `serving_default` keys differ from the signature's.
    """
    data = memoryview(flatbuffer)
    after = _data_after_flatbuffer(flatbuffer)
    start = min((offset for _, offset, _ in after), default=len(flatbuffer))
    end = max((offset + size for _, offset, size in after), default=len(flatbuffer))
    by_place = sorted((offset, size) for _, offset, size in after)
    if any(offset != at for (offset, _), at in zip(by_place, [start] + [o + n for o, n in by_place])):
        # Not back to back: something this schema does not name may point in
        # between, so the converter's layout is kept as it is.
        after, start, end = [], len(flatbuffer), len(flatbuffer)
    moved = []
    with open(path, "wb") as f:
        f.write(data[:start])
        for field, offset, size in after:
            moved.append((field, f.tell()))
            f.write(data[offset:offset + size])
        f.write(data[end:])
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as buf:
        for field, offset in moved:
            _U64.pack_into(buf, field, offset)
        in_signature_order(buf, endpoint, model_name)


def in_signature_order_in_file(path: str, endpoint: sig.Signature, model_name: str) -> None:
    """`in_signature_order` of a written LiteRT file, in place (mapped, not read)."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as buf:
        in_signature_order(buf, endpoint, model_name)


def _interpreter(path: str, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if delegates:
        return Interpreter(model_path=path, num_threads=1)
    return Interpreter(model_path=path, num_threads=1,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def read_signature(path: str, endpoint: sig.Signature, model_name: str) -> None:
    """Checks that the flatbuffer's `serving_default` has the signature's keys,
    and that the interpreter lists its inputs and outputs in the signature's
    order (`get_input_details()`, `get_output_details()`).

    Raises:
        ExportError: keys or order differ (named).
    """
    interpreter = _interpreter(path)
    listed = interpreter.get_signature_list().get("serving_default")
    want_in, want_out = sorted(t.name for t in endpoint.inputs), sorted(t.name for t in endpoint.outputs)
    if listed is None or sorted(listed["inputs"]) != want_in or sorted(listed["outputs"]) != want_out:
        raise ExportError(f"Model '{model_name}': the LiteRT model's serving_default signature is {listed}; the "
                          f"signature has inputs {want_in} and outputs {want_out}.", model=model_name,
                          reason="conversion_failed")
    full = interpreter._get_full_signature_list()["serving_default"]
    for kind, details, want in (("inputs", interpreter.get_input_details(), endpoint.inputs),
                                ("outputs", interpreter.get_output_details(), endpoint.outputs)):
        names = {index: name for name, index in full[kind].items()}
        found = [names.get(d["index"], d["name"]) for d in details]
        if len(names) == len(full[kind]) == len(found) and found != [t.name for t in want]:
            raise ExportError(f"Model '{model_name}': the LiteRT model lists its {kind} as {found}; the signature's "
                              f"order is {[t.name for t in want]}.", model=model_name, reason="conversion_failed")


def check(path: str, cases, delegates: bool = True, page_out_weights: bool = False) -> list[Any]:
    """Runs each case through `ai_edge_litert`'s signature runner.

    Args:
        path: the `.tflite` file.
        cases: `servekit.pipeline.cases.Case`s of the serving endpoint.
        delegates: run with LiteRT's default delegate (XNNPACK), as a server
            does; False: its built-in kernels alone, which read the weights
            where the file is mapped, where XNNPACK packs a copy of every
            layer's (a large model's check held its weights twice: 1.95x in
            the worker for a 1.59B decoder). The native validation runs the
            delegate either way.
        page_out_weights: hand the mapped file's pages back to the kernel
            while the check runs (`servekit.mapped_pages`): the pages each
            call reads stay resident otherwise, the whole file by the end.
    """
    from servekit import mapped_pages, verification

    with mapped_pages.paged_out(path) if page_out_weights else contextlib.nullcontext():
        _, infer = infer_function(path, delegates)  # alive, with the mapping, until the block ends
        return verification._check(list(cases), lambda endpoint, inputs: infer(inputs))


def infer_function(path: str, delegates: bool = True):
    """`ai_edge_litert`'s runner of the flatbuffer's `serving_default`, its tensors
    allocated, and a function running it: inputs by name -> outputs by name, NumPy.

    Raises:
        ExportError: the model needs Select TF ops, which LiteRT's runtime cannot
            run (named).
    """
    import numpy as np

    interpreter = _interpreter(path, delegates)
    try:
        with _flex_named(path):
            interpreter.allocate_tensors()  # where LiteRT refuses ops it has no kernel for
    except RuntimeError:
        # Its dynamic dims at 1 (their placeholder size), the inputs may be of no size the
        # model takes (a U-Net pools one pixel to none): each call allocates at its own.
        if not any(-1 in detail["shape_signature"] for detail in interpreter.get_input_details()):
            raise
    runner = interpreter.get_signature_runner("serving_default")

    def infer(inputs):
        with _flex_named(path):  # an op behind a dynamic shape is prepared only once the inputs are sized
            out = runner(**{k: np.asarray(v) for k, v in inputs.items()})
        return {k: np.array(v) for k, v in out.items()}

    return runner, infer


@contextlib.contextmanager
def _flex_named(path: str) -> Iterator[None]:
    """LiteRT's refusal of Select TF ops ("Node number 2 (FlexStringLower) failed to
    prepare") as servekit's error, naming every Flex op of the model and what to do."""
    try:
        yield
    except RuntimeError as e:
        if "Select TensorFlow op" not in str(e):
            raise
        raise _needs_flex_error(path) from None


def _flex_ops_take_float16(model, schema) -> bool:
    """Whether a Select TF op of the flatbuffer reads a float16 tensor (float16
    weights LiteRT dequantizes itself feed built-in ops only)."""
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for o in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(o)
            if not (model.OperatorCodes(operator.OpcodeIndex()).CustomCode() or b"").startswith(b"Flex"):
                continue
            if any(t >= 0 and subgraph.Tensors(t).Type() == schema.TensorType.FLOAT16
                   for t in operator.InputsAsNumpy()):
                return True
    return False


def _needs_flex_error(path: str) -> ExportError:
    """The error for a flatbuffer whose Select TF ops LiteRT's runtime cannot run:
    which ops, and why they are there when it is bfloat16 or float16 compute."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    flex = sorted({(model.OperatorCodes(i).CustomCode() or b"").decode() for i in range(model.OperatorCodesLength())}
                  - {""})
    bfloat16 = any(model.Subgraphs(g).Tensors(t).Type() == schema.TensorType.BFLOAT16
                   for g in range(model.SubgraphsLength()) for t in range(model.Subgraphs(g).TensorsLength()))
    if bfloat16:
        why = (f" The model computes in bfloat16 {_OUTSIDE_LAYER_POLICIES}, for which LiteRT has no built-in "
               "kernels: " + _BFLOAT16_WAY_OUT)
    elif _flex_ops_take_float16(model, schema):
        why = " " + _FLOAT16_COMPUTE
    elif any(op.startswith("FlexTensorList") for op in flex):
        why = (" TensorLists hold the steps of a TensorFlow loop the converter could not lower to built-in ops: "
               "tf.TensorArray or tf.map_fn in the model's own code (servekit writes Keras's recurrent layers, "
               "keras.ops.scan and keras.ops.map without them). Write the loop with keras.ops.scan or "
               "keras.ops.map, or export format='onnx' or 'tf_saved_model'.")
    else:
        why = (" Replace the layers that use them with ones LiteRT has built-in kernels for, or export "
               "format='onnx' or 'tf_saved_model'.")
    return ExportError(f"The LiteRT model needs TensorFlow op(s) {', '.join(flex) or '(unnamed)'} (Select TF ops), "
                       "which LiteRT's own runtime cannot run: neither ai_edge_litert nor the LiteRT C API has the "
                       f"Flex delegate.{why}", reason="unsupported_op")


def quantized_tolerances() -> dict[str, tuple[float, ...]]:
    """The tolerances a quantized LiteRT model is checked with."""
    from servekit.verification import coarse_tolerance

    return {"float32": coarse_tolerance(QUANTIZED_SCALE_FRACTION)}
