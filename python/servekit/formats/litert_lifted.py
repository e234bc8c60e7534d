"""LiteRT conversion with the weights lifted out of the graph the converter sees.

The TFLite converter holds about three copies of every weight it converts
(the frozen constant, its MLIR attribute and the serialized flatbuffer;
measured on one 512 MiB variable: 3.08x over its baseline), and TensorFlow
2.21 has no converter that serializes without them. So a large model is
converted the way its ONNX export is (`servekit.frozen_weights`): frozen with every
weight of 1 MiB or more left out (read as a view of its variable), each such
weight a graph input for the conversion, and put back afterwards as a
constant buffer after the flatbuffer (LiteRT's buffer offsets), streamed
from the variable into the file.

The converter picks some ops by whether a weight is a constant, so the graph
is rewritten around the lifted weights before and after it converts:

- a ReLU after a product by a weight becomes a `LeakyRelu` of slope 0: the
  converter fuses a ReLU into a matmul whose weights are not constant, then
  writes a `BATCH_MATMUL`, which has no activation, and the ReLU is lost
  (measured, TensorFlow 2.21: `Dense(activation="relu")` over sequences
  computed without it; `_activations_kept`);
- a `RESHAPE` or `TRANSPOSE` of a weight (an `EinsumDense` kernel, a
  convolution's filter in LiteRT's layout), which the converter folds into
  a constant, is folded here: the weight is written reshaped or transposed;
- a `BATCH_MATMUL` by a 2-D weight becomes the `FULLY_CONNECTED` the
  converter makes of a constant one (its weights transposed, `keep_num_dims`),
  the layer LiteRT's kernels and delegates run best; its bias and activation
  stay the ops after it;
- a float16 or bfloat16 weight that the trace only reads through a cast to
  float32 (a low-precision layer traced for LiteRT) is an input of float32,
  which the converter takes (it takes no bfloat16 input), and is widened as
  it is written (`_widened_where_cast`), as the plain conversion folds it.

Every other op keeps the weight as its constant input. The result is
verified against the source model like any artifact.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from servekit import patching
from servekit.frozen_weights import LiftedWeights
from servekit import signature as sig
from servekit.errors import ExportError

# From this many bytes of variables on, LiteRT converts with the weights lifted
# (tests lower it with the environment variable; the weights lifted are those of
# `servekit.frozen_weights.LIFT_BYTES` or more).
LIFT_BYTES = 256 << 20
LIFT_ENV = "SERVEKIT_LITERT_LIFT_BYTES"

# The alignment of each weight after the flatbuffer (what the converter's
# buffer offsets use, and more than any LiteRT kernel asks).
_ALIGNMENT = 64
# Written as every weight's offset while the flatbuffer's size is measured: a
# non-default value keeps the field in the table, and a uint64 has one size.
_UNKNOWN_OFFSET = 1 << 40


@dataclasses.dataclass
class LiftedConversion:
    """The converter's flatbuffer of a graph whose weights are inputs.

    Args:
        flatbuffer: the converted model (small: the weights are not in it).
        converter: the converter's description for the manifest.
        weights: lifted weight name -> (TF dtype enum, shape, the value: a
            NumPy view of the variable, or bytes).
        input_names, output_names: the function's inputs and outputs, in
            the flatbuffer's subgraph order (weights excluded).
    """

    flatbuffer: bytes
    converter: str
    weights: LiftedWeights
    input_names: list[str]
    output_names: list[str]


def convert(concrete, options: dict[str, Any], model_name: str) -> Optional[LiftedConversion]:
    """Converts a traced serving function with its weights lifted out.

    Returns:
        The conversion, or None where lifting does not apply: the function
        looks tables up (the converter initializes them from a SavedModel of
        its own), or has no weight to lift (a loop's body keeps its weights
        as constants).

    Raises:
        ExportError: the converter failed (`litert.convert`'s error).
    """
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    from servekit import frozen_weights
    from servekit.formats import litert
    from servekit.formats.builtin_trace import traced_nodes

    if any(node.op.startswith("LookupTable") for node in traced_nodes(concrete)):
        return None
    specs = tf.nest.flatten(concrete.structured_input_signature)
    values: list = []
    with frozen_weights.weights_left_out(values):
        data = convert_to_constants._FunctionConverterDataInEager(
            func=concrete, lower_control_flow=False, aggressive_inlining=True)
        graph_def, _ = convert_to_constants._replace_variables_by_constants(converter_data=data)
    weights = _widened_where_cast(graph_def, frozen_weights.lift_weights(graph_def, values))
    del values
    if not weights or not _activations_kept(graph_def, weights):
        return None
    inputs = [t.name for t in concrete.inputs[:len(specs)]]
    outputs = [t.name for t in concrete.outputs]
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    del graph_def
    pruned = wrapped.prune([wrapped.graph.get_tensor_by_name(n) for n in inputs + [w + ":0" for w in weights]],
                           [wrapped.graph.get_tensor_by_name(n) for n in outputs])
    with _weights_unknown_to_grappler(set(weights)):
        flatbuffer, converter = litert.convert(lambda: tf.lite.TFLiteConverter.from_concrete_functions([pruned]),
                                               dict(options, _experimental_use_buffer_offset=False), model_name)
    output_keys = sorted(concrete.structured_outputs) if isinstance(concrete.structured_outputs, dict) else [
        f"output_{i}" for i in range(len(outputs))]
    return LiftedConversion(flatbuffer, converter + "+lifted_weights", weights, [s.name for s in specs], output_keys)


def _widened_where_cast(graph_def, weights: LiftedWeights) -> LiftedWeights:
    """Lifts as float32 each float16 or bfloat16 weight the graph only casts to
    float32 (in place: its placeholder float32, its casts identities).

    The converter takes no bfloat16 input ("Unsupported TensorFlow type
    bfloat16 provided for the input type", TensorFlow 2.21), and a layer
    traced for LiteRT computes in float32 over its low-precision variables
    (`servekit.source_model.precision`), reading each through a cast: such a
    weight is written widened, as the plain conversion folds it (exactly).
    A weight read in its own dtype stays as it is.

    Returns:
        `weights`, the widened ones with the float32 dtype and their values
        as NumPy arrays of their own dtype (`_Weight.value` widens them).
    """
    import ml_dtypes
    import tensorflow as tf

    low = {tf.bfloat16.as_datatype_enum: ml_dtypes.bfloat16, tf.float16.as_datatype_enum: np.float16}
    float32 = tf.float32.as_datatype_enum
    readers: dict[str, list] = {node.name: [] for node in graph_def.node}
    for node in graph_def.node:
        for tensor in node.input:
            if not tensor.startswith("^"):  # an order, not a read
                readers.setdefault(tensor.split(":")[0], []).append(node)
    by_name = {node.name: node for node in graph_def.node}
    widened = dict(weights)
    for name, (dtype, dims, data) in weights.items():
        if dtype not in low:
            continue
        # The freezing reads a variable through an `Identity` (its `ReadVariableOp`).
        retyped, casts, pending, ok = [by_name[name]], [], list(readers[name]), bool(readers[name])
        while pending and ok:
            node = pending.pop()
            if node.op == "Identity":
                retyped.append(node)
                pending += readers[node.name]
                ok = bool(readers[node.name])
            elif node.op == "Cast" and node.attr["DstT"].type == float32:
                casts.append(node)
            else:
                ok = False
        if not ok:
            continue
        for node in retyped:
            node.attr["dtype" if node.op == "Placeholder" else "T"].type = float32
        for cast in casts:
            cast.op = "Identity"
            cast.ClearField("attr")
            cast.attr["T"].type = float32
        value = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=low[dtype])
        widened[name] = (float32, dims, value)
    return widened


@contextlib.contextmanager
def _weights_unknown_to_grappler(weights: set[str]) -> Iterator[None]:
    """The grappler pass the converter runs to inline functions, without a copy
    of the lifted weights (`frozen_weights.optimized_without_weight_copies`;
    measured: +1x the weights while converting)."""
    from tensorflow.python.grappler import tf_optimizer

    from servekit import frozen_weights

    original = tf_optimizer.OptimizeGraph

    def optimize_graph(config_proto, metagraph, *args, **kwargs):
        return frozen_weights.optimized_without_weight_copies(
            metagraph.graph_def, weights, lambda _: original(config_proto, metagraph, *args, **kwargs))

    with patching.replaced(tf_optimizer, OptimizeGraph=optimize_graph):
        yield


# Ops between a matmul and the activation the converter fuses into it: a reshape
# (Keras's `Dense` over sequences is a `Tensordot`), a bias, a cast.
_PASS_THROUGH = ("Identity", "Reshape", "BiasAdd", "Add", "AddV2", "Cast", "Transpose", "Squeeze", "ExpandDims")
# Ops the converter fuses into a matmul's result as an activation (`Maximum` and
# `Minimum` become RELU, RELU6 or RELU_N1_TO_1 when one operand is a constant).
_FUSED_ACTIVATIONS = ("Relu", "Relu6", "Maximum", "Minimum", "ClipByValue")


def _activations_kept(graph_def, weights) -> bool:
    """Rewrites the graph (in place) so that the converter keeps every
    activation of a product by a lifted weight; False where it cannot.

    TensorFlow 2.21's converter fuses a RELU (or RELU6, RELU_N1_TO_1) into a
    matmul whose weights are not constant and whose bias it cannot fold, then
    writes a `BATCH_MATMUL`, which has no activation: the model computes
    without it (measured: `relu(x @ w)` with `w` an input). A `Relu` after
    such a product becomes a `LeakyRelu` of slope 0 (the same values; never
    fused); a clip (`Relu6`, `Maximum`, `Minimum`) keeps the model on the
    converter's plain road.
    """
    by_name = {node.name: node for node in graph_def.node}

    def node_of(tensor: str):
        return by_name.get(tensor.split(":")[0].lstrip("^"))

    def lifted(tensor: str) -> bool:
        node = node_of(tensor)
        while node is not None and node.op in _PASS_THROUGH and node.input:
            node = node_of(node.input[0])
        return node is not None and node.name in weights

    def product_by_a_weight(tensor: str) -> bool:
        node = node_of(tensor)
        while node is not None and node.op in _PASS_THROUGH and node.input:
            if node.op in ("BiasAdd", "Add", "AddV2") and any(lifted(i) for i in node.input[1:]):
                return True
            node = node_of(node.input[0])
        return node is not None and node.op in ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3") \
            and any(lifted(i) for i in node.input[:2])

    for node in graph_def.node:
        if node.op not in _FUSED_ACTIVATIONS or not any(product_by_a_weight(i) for i in node.input[:2]):
            continue
        if node.op != "Relu":
            return False
        node.op = "LeakyRelu"
        node.attr["alpha"].f = 0.0
    return True


@dataclasses.dataclass
class _Weight:
    """A lifted weight as some tensor of the converted graph holds it: its
    name in `LiftedConversion.weights`, its dims there, and the reshapes and
    transposes between the two, in order."""

    name: str
    dims: tuple[int, ...]
    steps: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def then(self, step: str, argument: Sequence[int]) -> "_Weight":
        argument = tuple(int(a) for a in argument)
        if step == "reshape":
            size = int(np.prod(self.dims, dtype=np.int64))
            known = int(np.prod([a for a in argument if a != -1], dtype=np.int64))
            argument = tuple(size // known if a == -1 else a for a in argument)
            dims = argument
        else:
            dims = tuple(self.dims[a] for a in argument)
        return _Weight(self.name, dims, self.steps + ((step, argument),))

    def value(self, weights: LiftedWeights) -> np.ndarray:
        import tensorflow as tf

        tf_dtype, dims, data = weights[self.name]
        dtype = np.dtype(tf.dtypes.as_dtype(tf_dtype).as_numpy_dtype)
        value = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=dtype)
        value = value.reshape(dims)
        for step, argument in self.steps:
            value = value.reshape(argument) if step == "reshape" else np.transpose(value, argument)
        # A copy only where a transpose moved elements, or a weight lifted widened (`_widened_where_cast`).
        return np.ascontiguousarray(value, dtype=dtype)


def write(conversion: LiftedConversion, path: str, endpoint: sig.Signature, model_name: str) -> None:
    """Writes the lifted conversion as a LiteRT model at `path`: the graph
    rewritten around its weights (module docstring), a `serving_default`
    signature of the endpoint's names, and each weight after the flatbuffer,
    64-byte aligned, in buffer order (reproducible bytes), found by offset.

    Raises:
        ExportError: the converter renamed a lifted weight's input, or a
            weight's bytes differ from its tensor's size.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from servekit.formats import litert

    model = schema.ModelT.InitFromPackedBuf(conversion.flatbuffer, 0)
    # A loop's body is another subgraph, whose weights stayed constants (`frozen_weights.lift_weights`).
    graph = model.subgraphs[0]
    held: dict[int, _Weight] = {}  # tensor -> the weight it holds
    for t in list(graph.inputs)[len(conversion.input_names):]:
        name = graph.tensors[t].name.decode()
        if name not in conversion.weights:
            raise ExportError(f"Model '{model_name}': the LiteRT converter renamed the lifted weight input "
                              f"'{name}'.", model=model_name, reason="conversion_failed")
        held[int(t)] = _Weight(name, tuple(int(d) for d in conversion.weights[name][1]))
    codes = {_builtin_code(code): i for i, code in enumerate(model.operatorCodes)}
    kept = []
    for op in graph.operators:
        code = _builtin_code(model.operatorCodes[op.opcodeIndex])
        inputs = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        source = held.get(inputs[0]) if inputs else None
        if code == schema.BuiltinOperator.RESHAPE and source is not None:
            shape = _constant(model, graph, inputs[1]) if len(inputs) > 1 else None
            if shape is None and op.builtinOptions is not None and op.builtinOptions.newShape is not None:
                shape = op.builtinOptions.newShape
            if shape is not None and list(shape).count(-1) <= 1:
                held[int(op.outputs[0])] = source.then("reshape", shape)
                continue
        if code == schema.BuiltinOperator.TRANSPOSE and source is not None:
            permutation = _constant(model, graph, inputs[1])
            if permutation is not None:
                held[int(op.outputs[0])] = source.then("transpose", permutation)
                continue
        if code == schema.BuiltinOperator.BATCH_MATMUL and len(inputs) == 2 and inputs[1] in held \
                and not op.builtinOptions.adjX and len(held[inputs[1]].dims) == 2:
            weight = held[inputs[1]]
            if not op.builtinOptions.adjY:  # FULLY_CONNECTED takes [out, in]
                weight = weight.then("transpose", (1, 0))
            transposed = _new_tensor(graph, graph.tensors[inputs[1]])
            held[transposed] = weight
            op.opcodeIndex = _opcode(model, codes, schema.BuiltinOperator.FULLY_CONNECTED, 5)
            op.inputs = [inputs[0], transposed, -1]
            options = schema.FullyConnectedOptionsT()
            options.keepNumDims = True
            op.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
            op.builtinOptions = options
        kept.append(op)
    graph.operators = kept
    used = {int(i) for op in kept for i in (op.inputs if op.inputs is not None else []) if i >= 0}
    graph.inputs = [int(t) for t in graph.inputs[:len(conversion.input_names)]]
    placed: list[tuple[Any, _Weight]] = []
    for t, weight in sorted(held.items()):
        if t not in used:
            continue
        tensor = graph.tensors[t]
        buffer = schema.BufferT()
        buffer.offset, buffer.size = _UNKNOWN_OFFSET, 0
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
        tensor.shape, tensor.shapeSignature = np.asarray(weight.dims, dtype=np.int32), None
        placed.append((buffer, weight))
    _compact_tensors(graph)
    serving = schema.SignatureDefT()
    serving.signatureKey = b"serving_default"
    serving.subgraphIndex = 0
    serving.inputs = [_tensor_map(schema, name, t) for name, t in zip(conversion.input_names, graph.inputs)]
    serving.outputs = [_tensor_map(schema, name, t) for name, t in zip(conversion.output_names, graph.outputs)]
    model.signatureDefs = [serving]

    sizes = []
    for buffer, weight in placed:  # sizes only: a transposed weight is computed again when written
        tf_dtype, dims, _ = conversion.weights[weight.name]
        buffer.size = int(np.prod(dims, dtype=np.int64)) * _itemsize(tf_dtype)
        sizes.append(buffer.size)
    head = _packed(model, flatbuffers)
    offset = _aligned(len(head))
    for (buffer, _), size in zip(placed, sizes):
        buffer.offset = offset
        offset = _aligned(offset + size)
    final = _packed(model, flatbuffers)
    if len(final) != len(head):
        raise ExportError(f"Model '{model_name}': the LiteRT model's size changed with its buffer offsets.",
                          model=model_name, reason="conversion_failed")
    with open(path, "wb") as f:
        f.write(final)
        for (buffer, weight), size in zip(placed, sizes):
            f.write(b"\0" * (buffer.offset - f.tell()))
            value = weight.value(conversion.weights)
            if value.nbytes != size:
                raise ExportError(f"Model '{model_name}': lifted weight '{weight.name}' has {value.nbytes} bytes, "
                                  f"its tensor {size}.", model=model_name, reason="conversion_failed")
            f.write(memoryview(value).cast("B"))
            del value
    litert.in_signature_order_in_file(path, endpoint, model_name)


def _packed(model, flatbuffers) -> bytes:
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _aligned(n: int) -> int:
    return -(-n // _ALIGNMENT) * _ALIGNMENT


def _itemsize(tf_dtype: int) -> int:
    import tensorflow as tf

    return tf.dtypes.as_dtype(tf_dtype).size


def _builtin_code(code) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _opcode(model, codes: dict[int, int], builtin: int, version: int) -> int:
    """The index of `builtin`'s operator code at `version` or later (a
    fully connected layer with `keep_num_dims` is version 5), added when the
    model has none."""
    from ai_edge_litert import schema_py_generated as schema

    if builtin not in codes:
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
        model.operatorCodes.append(code)
        codes[builtin] = len(model.operatorCodes) - 1
    code = model.operatorCodes[codes[builtin]]
    code.version = max(code.version, version)
    return codes[builtin]


def _constant(model, graph, t: int) -> Optional[np.ndarray]:
    """The int32 values of a small constant tensor held in the flatbuffer, or None."""
    tensor = graph.tensors[t]
    buffer = model.buffers[tensor.buffer] if tensor.buffer else None
    if buffer is None or buffer.data is None:
        return None
    return np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.int32)


def _new_tensor(graph, like) -> int:
    """A tensor for a weight the rewrite lays out anew, of `like`'s type (its
    shape is the weight's, set with its buffer)."""
    from ai_edge_litert import schema_py_generated as schema

    tensor = schema.TensorT()
    tensor.type = like.type
    tensor.name = like.name + b";fully_connected_weights"
    tensor.buffer = 0
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _tensor_map(schema, name: str, index: int):
    tensor_map = schema.TensorMapT()
    tensor_map.name = name.encode()
    tensor_map.tensorIndex = int(index)
    return tensor_map


def _compact_tensors(graph) -> None:
    """Drops the tensors no op, input or output refers to, renumbering the rest."""
    referenced = set()
    for op in graph.operators:
        for field in (op.inputs, op.outputs, op.intermediates):
            if field is not None:
                referenced.update(int(i) for i in field if i >= 0)
    referenced.update(int(t) for t in graph.inputs)
    referenced.update(int(t) for t in graph.outputs)
    order = sorted(referenced)
    renumber = {old: new for new, old in enumerate(order)}
    graph.tensors = [graph.tensors[old] for old in order]

    def mapped(values):
        return None if values is None else [renumber[int(i)] if i >= 0 else -1 for i in values]

    for op in graph.operators:
        op.inputs, op.outputs, op.intermediates = mapped(op.inputs), mapped(op.outputs), mapped(op.intermediates)
    graph.inputs, graph.outputs = mapped(graph.inputs), mapped(graph.outputs)
