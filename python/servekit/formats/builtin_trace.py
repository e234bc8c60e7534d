"""A second trace for the converters with the fewest ops: LiteRT and OpenVINO (and ONNX).

The TensorFlow worker traces a model once for every format. Some patterns
in that trace convert to SavedModel (and most to ONNX) but not to LiteRT's
built-in ops or OpenVINO's frontend, and the worker traces the model again,
with each written another way, for a format whose trace has them
(`needs_builtin_trace`):

- A recurrent layer's loop over TensorLists (LiteRT): the layer is unrolled,
  or over a sequence of unknown length looped over tensors
  (`servekit.source_model.recurrences`).
- `Bitcast` (both): Keras's TensorFlow `signbit` reads the sign bit through
  an int32 bitcast, and `keras.ops.argmax` and `argmin` call it on float
  inputs to rank -0.0 below 0.0. Neither LiteRT's built-in ops nor
  OpenVINO have a bitcast. In this trace `signbit` is `x < 0 or (x == 0 and
  1 / x < 0)`: the same for every number, zeros of either sign and
  infinities included; only a NaN with its sign bit set reads as positive,
  which changes no `argmax`, whose use tests `x == 0` first.
- `DenseBincount` (LiteRT): Keras's `CategoryEncoding` (multi_hot, count)
  takes a TensorFlow-only fast path through `bincount`, for which LiteRT
  has no kernel. In this trace it takes Keras's path for the other
  backends, a one-hot encoding reduced over the inputs (OpenVINO converts
  `DenseBincount` itself: `servekit.formats.openvino_ops`).
- New axes in a slice (LiteRT): `mask[:, None, None, :, :]`, as LLM
  attention masks are broadcast, is one `StridedSlice` with a
  `new_axis_mask`, which the converter lowers to built-in ops only for
  static shapes (keras_hub's Gemma: a Flex op). In this trace a slice with
  `None`s is the slice without them, then one `ExpandDims` per new axis.
- `Abs` and `Sign` of int64 (LiteRT): built-in for int32 and floats only
  (DeBERTa's relative positions). In this trace they are a `Select` and a
  difference of two comparisons, exact for every int64 (`abs` of the
  smallest wraps, as TensorFlow's does).
- `FFT2D` (LiteRT, OpenVINO): Keras's `fft2` (keras_hub's FNet mixes tokens
  with it) runs on complex tensors, which LiteRT's built-in ops lack and
  OpenVINO's frontend converts from a SavedModel only. In this trace it
  is the discrete Fourier transform written out as real matmuls with cosine
  and sine matrices built at run time for the dims' sizes (their angles
  reduced modulo the size in int32 first, so they stay exact); the sums
  round differently from an FFT's, which the artifact's verification bounds.
- `MaxPool3D`, `AvgPool3D` (LiteRT): no built-in kernel (Keras's
  `MaxPooling3D`, `AveragePooling3D`). In this trace a 3-D pool is two 2-D
  pools, over height and width with the depth folded into the batch, then
  over the depth: the same numbers, since a max, and a mean over the window
  positions inside the input (TensorFlow's count with "same" padding), both
  split axis by axis. Keras's 3-D adaptive pools call TensorFlow's 3-D pools
  too: here each output bin reduces its own slice of the input
  (`graph_mode.adaptive_pool_by_bins`).
- `Erf` (LiteRT): no built-in kernel (`keras.ops.erf`; an exact GELU does not
  use it: the converter fuses TensorFlow's into its GELU op). In this trace
  it is the rational approximation XLA and Eigen compute float32 `erf` with
  (odd degree 13 over even degree 8, the input clamped to [-4, 4]), within a
  few float32 roundings of TensorFlow's kernel.
- `Cumprod` (LiteRT, OpenVINO, ONNX): `keras.ops.cumprod`; none of the
  three has a cumulative product (each has a cumulative sum). In this trace
  it is a Hillis-Steele scan: for k = 1, 2, 4, ... below the axis's length,
  each element is multiplied by the one k before it (1 before the start),
  unrolled when the length is static and a loop when it is not. Integers
  come out exact (products wrap as TensorFlow's do); floats are rounded in
  another order, within the verification's tolerance.
- `LookupTableFindV2` on integer keys and values (LiteRT): `IntegerLookup`.
  LiteRT's built-in hash tables map strings to integers and integers to
  strings only. In this trace a table built from tensors
  (`KeyValueTensorInitializer`, as Keras's lookup layers build theirs) is
  compared with every key: the value of the key a number equals, else the
  default; exact, in memory the inputs' size times the vocabulary's.
- `ResizeBicubic`, `ResizeArea`, `ScaleAndTranslate` (LiteRT, OpenVINO,
  ONNX): bicubic, area, lanczos and antialiased resizing. LiteRT and
  OpenVINO have no conversion for them; tf2onnx has none for
  `ScaleAndTranslate`, converts `ResizeArea` to other numbers, and ONNX
  Runtime's cubic `Resize` neither rounds its offsets as TensorFlow does nor
  takes the NHWC layout its optimizer gives a downscaling one. In this trace
  each is two matmuls with TensorFlow's exact weights
  (`servekit.source_model.resampling`).
- `SpaceToBatchND` (OpenVINO): TensorFlow writes a dilated convolution as a
  convolution between `SpaceToBatchND` and `BatchToSpaceND`, which
  OpenVINO's frontend folds into a dilated convolution that forgets the
  groups of a grouped one (`Conv2D(groups=4, dilation_rate=2)`: "channel
  count (8) does not match filter input channel count (2)"). In this trace
  a grouped dilated convolution is one convolution op with its `dilations`
  attribute, which the frontend converts as it converts an undilated one.
- `MatrixDiagV3` (OpenVINO): `tf.eye`, which `keras.ops.eye` and
  `keras.ops.image.extract_patches` (its identity kernel) build with a
  diagonal op the frontend has no rule for. In this trace an eye of sizes
  known while tracing is a constant.
- `XlaDynamicUpdateSlice` (OpenVINO): `keras.ops.slice_update` (a
  key/value cache's write, a loop's output buffer), which the frontend has
  no rule for. In this trace the update is padded to the input's shape and
  selected where its box lies (the start clamped as XLA clamps it): exact.
- `LowerBound`, `UpperBound` (LiteRT, OpenVINO): `keras.ops.searchsorted`,
  for which neither has a kernel or a rule. In this trace a value's index is
  the count of the sorted sequence's entries below it (at most it, for
  `side="right"`), for a sequence of at most 4096 entries known while
  tracing: exact.
- `MatrixDiagPartV3`, `MatrixSetDiagV3`, `Cross` (LiteRT, OpenVINO):
  `keras.ops.diagonal`, `trace` (through `tf.eye`) and `cross`, which LiteRT
  has no kernel and OpenVINO's frontend no rule for. In this trace a diagonal
  is a gather of the flattened matrices at `i * m + i + offset`, a trace the
  sum of the entries where `column - row == offset`, and a cross product of
  3-vectors its three differences of products: exact, sizes unknown while
  tracing included.
- int8 x int8 matmuls (LiteRT): Keras's `quantize("int8")` layers (`Dense`,
  `EinsumDense`) multiply int8 inputs by int8 kernels into int32, which
  LiteRT's kernels take only as quantized tensors (a scale and zero point per
  tensor). In this trace both operands are cast to float32 and the product
  cast back to int32: the same integers while a sum has at most 1024 terms
  (127 x 128 x 1024 < 2^24), float32's rounding of the sum beyond, far below
  the quantization's own error. Kernels of more than a few thousand elements
  stay int8 in the flatbuffer (the converter folds the cast of smaller ones).

- `Reshape` of a `tf.repeat` with dims unknown while tracing (LiteRT):
  `keras.ops.repeat`, and so `UpSampling1D/2D/3D` (nearest). TensorFlow
  repeats by tiling, then reshaping to a shape it computes from the input's;
  the converter's shape inference loses every dim of that result, the static
  ones too, and an op that needs one (the channels of a U-Net's convolution
  after an upsampling and a concatenation of images of any size) is left to
  Flex. In this trace a repeat by an integer along an axis of a tensor whose
  shape is not fully known is a gather of `range(n * repeats) // repeats`
  along it, whose result keeps every static dim; exact.

- `Reshape` to a shape computed in the graph with one dim unknown while
  tracing (LiteRT): Keras's `Reshape` and `Flatten` reshape to
  `(batch, ...)` with the batch read from the input's shape. LiteRT's kernel
  then makes its output a dynamic tensor, sized while it runs in LiteRT's own
  memory; as a model's output, LiteRT's C API never writes it into the buffer
  bound to it (the native verifier found zeros, then failed runs). In this
  trace such a reshape is to a constant shape with -1 for the unknown dim,
  whose output LiteRT sizes before the run; the same values.

- `keras.ops.scan` and `keras.ops.map` (LiteRT): Keras's TensorFlow `scan`
  and `map` (`tf.map_fn`) hold their steps in TensorLists, which the
  converter lowers only when every dim of a step is known (a dynamic batch
  rules it out), so they became Flex ops. In this trace each is the same
  `while` loop over tensors, each step's input read by a `Gather` and its
  output written by a `DynamicUpdateSlice`: the same steps in the same
  order, the same numbers.

- `Tan`, `Asin`, `Acos`, `Sinh`, `Cosh`, `Asinh`, `Acosh`, `Atanh` and
  `Roll` (LiteRT): no built-in kernels (`keras.ops.tan`, `arcsin`, ...,
  `roll`, as in a Swin transformer's shifted windows). In this trace each
  function is its textbook identity over built-in ops (`sin / cos`,
  `atan2(x, sqrt(1 - x^2))`, exponentials and logarithms; `sinh` near zero
  as its cubic series, where the exponentials' difference cancels), within a
  few float32 roundings of TensorFlow's kernels, which the verification
  bounds; a roll is a gather of `(i - shift) mod n` along its axis, exact.

- `Case` (LiteRT, OpenVINO, ONNX): `keras.ops.switch` picks a branch by
  index with `tf.switch_case`, which none of the three converts (tf2onnx
  lowers it to `_SwitchN`, OpenVINO has no rule, the TFLite converter no
  flatbuffer op). In this trace it is a chain of `cond`s on the index
  (clipped to the branches, as Keras clips it), which all three convert.

- A transposed convolution to a shape computed in the graph (LiteRT):
  Keras's `Conv1D/2D/3DTranspose` compute their output shape from the
  input's whenever a dim is unknown (a dynamic batch is enough), and LiteRT's
  kernel makes that output a dynamic tensor, as above (an autoencoder's or a
  generator's image: the native verifier found it unwritten). In this trace
  the convolution is followed by `maximum(y, -inf)`, which is `y` (NaN and
  -inf included) and which LiteRT sizes from its input before writing it.

- float16 and bfloat16 compute (LiteRT; bfloat16 for OpenVINO): a layer
  under a `float16`, `mixed_float16`, `bfloat16` or `mixed_bfloat16` dtype
  policy. LiteRT's built-in kernels have none (the converter leaves Flex
  ops), and OpenVINO's frontend has no bfloat16 constants. In this trace
  those layers compute in float32 (`servekit.source_model.precision`), their
  low-precision weights widened exactly, and the outputs are cast back to
  the dtypes the model gives them; the roundings the source makes in its low
  precision are left out, within the tolerance its verification already
  allows the model.

One rewrite is asked for only after a conversion failed, since it undoes a
fusion the converter usually makes (`builtin_ops("litert", unfused_gelu=True)`):

- An exact GELU the converter did not fuse (LiteRT): it fuses TensorFlow's
  `0.5 * x * erfc(-x / sqrt(2))` into its GELU op only while nothing else
  computes `x * 0.5`; a tanh GELU of the same tensor does, the two products
  become one, and the unfused `Erfc` has no LiteRT kernel. In this trace an
  exact GELU is `0.5 * x * (1 + erf(x / sqrt(2)))` with the rational `erf`
  above (`servekit.formats.litert.unfused_gelu` tells the failure).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from servekit import patching

# Op types each format's converter cannot take, by prefix.
_RESAMPLING = ("ResizeBicubic", "ResizeArea", "ScaleAndTranslate")
_CASES = ("Case", "StatelessCase")
_SEARCHES = ("LowerBound", "UpperBound")
_MATRIX_PARTS = ("MatrixDiagPart", "MatrixSetDiag", "Cross")
# LiteRT has no kernel for these (matched whole: "Tan" is not "Tanh").
_LITERT_ELEMENTARY = frozenset({"Tan", "Asin", "Acos", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Roll"})
_UNCONVERTIBLE = {"litert": ("TensorList", "Bitcast", "DenseBincount", "FFT2D", "MaxPool3D", "AvgPool3D", "Cumprod",
                             *_RESAMPLING, *_CASES, *_SEARCHES, *_MATRIX_PARTS),
                  "openvino": ("Bitcast", "FFT2D", "Cumprod", "SpaceToBatchND", "MatrixDiagV3", "XlaDynamicUpdateSlice",
                               *_RESAMPLING, *_CASES, *_SEARCHES, *_MATRIX_PARTS),
                  "onnx": ("Cumprod", *_RESAMPLING, *_CASES)}
# The compute dtypes each format's trace computes in float32 instead.
COMPUTED_IN_FLOAT32 = {"litert": ("float16", "bfloat16"), "openvino": ("bfloat16",)}
# The formats whose trace casts such outputs back to the model's dtypes. OpenVINO's frontend
# leaves a traced cast to bfloat16 untyped; its IR's outputs are typed like the signature's
# after the conversion instead (`servekit.formats.openvino`).
OUTPUTS_CAST_BACK = ("litert",)
# Ops that move or name a tensor without computing with it: a float16 output or input alone
# is no float16 compute.
_MOVES = frozenset({"Identity", "IdentityN", "ReadVariableOp", "Cast", "StopGradient", "Placeholder", "Const"})


def _computes_in_float32_instead(node, fmt: str) -> bool:
    from tensorflow.core.framework import types_pb2

    names = {types_pb2.DT_HALF: "float16", types_pb2.DT_BFLOAT16: "bfloat16"}
    return ("T" in node.attr and node.op not in _MOVES
            and names.get(node.attr["T"].type) in COMPUTED_IN_FLOAT32.get(fmt, ()))


def _unconvertible(node, fmt: str, constants: frozenset = frozenset()) -> bool:
    from tensorflow.core.framework import types_pb2

    if node.op.startswith(_UNCONVERTIBLE.get(fmt, ())):
        return True
    if _computes_in_float32_instead(node, fmt):
        return True
    if fmt != "litert":
        return False
    if node.op in _LITERT_ELEMENTARY:
        return True
    if node.op == "StridedSlice":
        return node.attr["new_axis_mask"].i != 0
    if node.op == "Reshape" and any(scope.startswith("Repeat") for scope in node.name.split("/")[:-1]):
        return _partly_static(node)
    if node.op == "Reshape" and node.input[1].split(":")[0] not in constants:
        return _unknown_dims(node) == 1
    if node.op in ("Conv2DBackpropInput", "Conv3DBackpropInputV2"):
        return node.input[0].split(":")[0] not in constants
    if node.op == "Erf":
        return node.attr["T"].type == types_pb2.DT_FLOAT
    if node.op in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
        return node.attr["Ta" if "Ta" in node.attr else "T"].type == types_pb2.DT_INT8
    if node.op == "LookupTableFindV2":
        return all(node.attr[t].type in (types_pb2.DT_INT32, types_pb2.DT_INT64) for t in ("Tin", "Tout"))
    return node.op in ("Abs", "Sign") and node.attr["T"].type == types_pb2.DT_INT64


def _partly_static(node) -> bool:
    """Whether a traced node's (first) output has both known and unknown
    dims, as tracing inferred them (`_output_shapes`, absent in functions it
    calls: then False)."""
    shapes = node.attr["_output_shapes"].list.shape if "_output_shapes" in node.attr else ()
    if not shapes or shapes[0].unknown_rank:
        return False
    sizes = [d.size for d in shapes[0].dim]
    return any(size < 0 for size in sizes) and any(size >= 0 for size in sizes)


def _unknown_dims(node) -> int:
    """How many dims of a traced node's (first) output tracing left unknown
    (0 when it did not infer the shape)."""
    shapes = node.attr["_output_shapes"].list.shape if "_output_shapes" in node.attr else ()
    if not shapes or shapes[0].unknown_rank:
        return 0
    return sum(d.size < 0 for d in shapes[0].dim)


def _any_unconvertible(nodes: list, fmt: str) -> bool:
    constants = frozenset(node.name for node in nodes if node.op == "Const")
    return fmt in _UNCONVERTIBLE and any(_unconvertible(node, fmt, constants) for node in nodes)


def traced_nodes(concrete) -> list:
    """The `NodeDef`s of a traced function (with their inferred output shapes)
    and of every function it calls."""
    graph_def = concrete.graph.as_graph_def(add_shapes=True)
    return list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]


def saved_model_nodes(path: str) -> list:
    """The `NodeDef`s of a SavedModel's graph and of every function in it."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    graph_def = saved_model.meta_graphs[0].graph_def
    return list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]


def needs_builtin_trace_of_saved_model(path: str, fmt: str) -> bool:
    """`needs_builtin_trace` of the functions a SavedModel holds."""
    return _any_unconvertible(saved_model_nodes(path), fmt)


def needs_builtin_trace(concrete, fmt: str) -> bool:
    """Whether the traced function (or a function it calls) has an op the
    converter of `fmt` cannot take and a builtin trace writes another way."""
    return _any_unconvertible(traced_nodes(concrete), fmt)


@contextlib.contextmanager
def builtin_ops(fmt: str, unfused_gelu: bool = False) -> Iterator[None]:
    """While the block traces: `signbit` without a bitcast, categorical encoding
    without `bincount`, slices without new axes, int64 `abs` and `sign` from
    comparisons, `fft2` as real matmuls, 3-D pools as 2-D ones, `erf` as a
    rational function, `cumprod` as a scan of products, integer tables as
    comparisons, bicubic, area and lanczos resizing as matmuls, grouped
    dilated convolutions with a `dilations` attribute, eyes as constants,
    int8 products in float32, repeats of tensors of unknown shape as gathers,
    reshapes to one unknown dim as reshapes to a constant shape, transposed
    convolutions to computed shapes followed by an identity maximum, scans
    and maps without TensorLists, switches as chains of conds (the module
    docstring says why).
    The source backend's own arithmetic, where it differs, is patched inside
    this (`servekit.source_model.backend_semantics.computed_as`).

    Args:
        fmt: the format the trace is converted to. Scans and maps are
            written without TensorLists for LiteRT only: OpenVINO and tf2onnx
            convert TensorFlow's loops as they are, and have no conversion
            for the `XlaDynamicUpdateSlice` that rewrite writes.
        unfused_gelu: also write exact GELUs with the rational `erf`, for a
            model whose LiteRT conversion left one unfused.
    """
    from servekit.source_model import resampling

    rewrites = [_signbit_without_bitcast, _categorical_encoding_without_bincount, _slices_without_new_axes,
                _int64_abs_and_sign_from_comparisons, _fft2_as_real_matmuls, _pools_3d_as_2d, _erf_as_rational,
                _cumprod_as_scan, _integer_tables_as_comparisons, resampling.tensorflow_resizes_as_matmuls,
                _grouped_dilated_convolutions_as_one_op, _eyes_as_constants, _int8_products_in_float32,
                _repeats_of_unknown_shapes_as_gathers, _reshapes_to_one_unknown_dim_as_constant_shapes,
                _transposed_convolutions_to_computed_shapes_then_an_op_sized_before_the_run,
                _switches_as_chained_conds]
    if fmt == "litert":
        rewrites += [_scans_and_maps_without_tensor_lists, _elementary_functions_and_rolls_from_builtins]
    if fmt in ("litert", "openvino"):
        rewrites += [_searches_as_comparison_counts, _diagonals_and_cross_products_as_gathers_and_products]
    if fmt == "openvino":
        rewrites.append(_slice_updates_as_selects)
    if unfused_gelu:
        rewrites.append(_exact_gelu_from_erf)
    with contextlib.ExitStack() as stack:  # in this order: a later rewrite may call an earlier one
        for rewrite in rewrites:
            stack.enter_context(rewrite())
        yield


def _switches_as_chained_conds() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import core as tf_core

    def switch(index, branches, *operands):
        index = tf.clip_by_value(tf.convert_to_tensor(index, "int32"), 0, len(branches) - 1)

        def from_branch(i):
            if i == len(branches) - 1:
                return branches[i](*operands)
            return tf.cond(tf.equal(index, i), lambda: branches[i](*operands), lambda: from_branch(i + 1))

        return from_branch(0)

    return patching.replaced(tf_core, switch=switch)


def _scans_and_maps_without_tensor_lists() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras import tree
    from keras.src.backend.tensorflow import core as tf_core

    from servekit.source_model.recurrences import steps_buffers, written_at_step

    original_scan = tf_core.scan

    def packed(like, flat):
        return tree.pack_sequence_as(like, flat) if tree.is_nested(like) else flat[0]

    def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
        """Keras's TensorFlow `scan`, step for step (its ys take the carry's
        structure, shapes and dtypes, as there), over tensors."""
        if not callable(f) or (xs is None and length is None):
            return original_scan(f, init, xs, length=length, reverse=reverse, unroll=unroll)  # Keras's own errors
        xs_flat = [] if xs is None else [tf.convert_to_tensor(x) for x in tree.flatten(xs)]
        steps = int(length) if length is not None else tf.shape(xs_flat[0])[0]
        carry_flat = tuple(tf.convert_to_tensor(c) for c in tree.flatten(init))

        def step(i, carry_flat, ys_flat):
            x = packed(xs, [tf.gather(x, i) for x in xs_flat]) if xs_flat else None
            carry, ys = f(packed(init, list(carry_flat)), x)
            if ys is not None:
                ys_flat = written_at_step(i, ys_flat, tree.flatten(ys))
            if carry is not None:
                carry_flat = tuple(tree.flatten(carry))
            return (i - 1 if reverse else i + 1), carry_flat, ys_flat

        _, carry_flat, ys_flat = tf.while_loop(lambda i, *_: i >= 0 if reverse else i < steps, step,
                                               (steps - 1 if reverse else 0, carry_flat, steps_buffers(steps, carry_flat)))
        if xs_flat:
            for y in ys_flat:
                y.set_shape(tf.TensorShape(xs_flat[0].shape[:1]).concatenate(y.shape[1:]))
        return packed(init, list(carry_flat)), packed(init, list(ys_flat))

    def map_(f, xs):
        """Keras's TensorFlow `map` (`tf.map_fn`), element by element, over tensors."""
        xs = tree.map_structure(tf.convert_to_tensor, xs)
        xs_flat = tree.flatten(xs)
        steps = tf.shape(xs_flat[0])[0]
        # As Keras does, the first element for the outputs' structure; only their sizes are
        # used, which the converter folds when they are static.
        first = f(packed(xs, [x[0] for x in xs_flat]))

        def step(i, outputs):
            output = f(packed(xs, [tf.gather(x, i) for x in xs_flat]))
            return i + 1, written_at_step(i, outputs, tree.flatten(output))

        _, outputs = tf.while_loop(lambda i, _: i < steps, step, (0, steps_buffers(steps, tree.flatten(first))))
        for output in outputs:
            output.set_shape(tf.TensorShape(xs_flat[0].shape[:1]).concatenate(output.shape[1:]))
        return packed(first, list(outputs))

    return patching.replaced(tf_core, scan=scan, map=map_)


def _repeats_of_unknown_shapes_as_gathers() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    original = tf_numpy.repeat

    def repeat(x, repeats, axis=None):
        x = tf.convert_to_tensor(x)
        if axis is None or isinstance(repeats, bool) or not isinstance(repeats, int) or x.shape.rank is None \
                or x.shape.is_fully_defined():
            return original(x, repeats, axis=axis)
        size = tf.shape(x, out_type=tf.int32)[axis]
        return tf.gather(x, tf.range(size * repeats) // repeats, axis=axis)

    return patching.replaced(tf_numpy, repeat=repeat)


def _reshapes_to_one_unknown_dim_as_constant_shapes() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    original = tf_numpy.reshape

    def reshape(x, newshape):
        if isinstance(newshape, (list, tuple)):
            sizes = [d if isinstance(d, int) else tf.get_static_value(d) for d in newshape]
            unknown = [i for i, d in enumerate(sizes) if d is None]
            if len(unknown) == 1 and all(d is None or int(d) > 0 for d in sizes):
                sizes[unknown[0]] = -1
                return original(x, tuple(int(d) for d in sizes))
        return original(x, newshape)

    return patching.replaced(tf_numpy, reshape=reshape)


def _transposed_convolutions_to_computed_shapes_then_an_op_sized_before_the_run(
) -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn as tf_nn

    original = tf_nn.conv_transpose

    def conv_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None, data_format=None,
                       dilation_rate=1):
        outputs = original(inputs, kernel, strides, padding, output_padding, data_format, dilation_rate)
        if outputs.shape.is_fully_defined():
            return outputs
        # max(y, -inf) is y, NaN and -inf included; LiteRT sizes it from its input.
        return tf.maximum(outputs, tf.constant(-float("inf"), outputs.dtype))

    return patching.replaced(tf_nn, conv_transpose=conv_transpose)


def _int8_products_in_float32() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    originals = {"matmul": tf_numpy.matmul, "einsum": tf_numpy.einsum}

    def int8(operands) -> bool:
        return len(operands) == 2 and all(isinstance(t, tf.Tensor) and t.dtype == tf.int8 for t in operands)

    def matmul(x1, x2):
        x1, x2 = tf.convert_to_tensor(x1), tf.convert_to_tensor(x2)
        if not int8((x1, x2)):
            return originals["matmul"](x1, x2)
        return tf.cast(originals["matmul"](tf.cast(x1, tf.float32), tf.cast(x2, tf.float32)), tf.int32)

    def einsum(subscripts, *operands, **kwargs):
        operands = [tf.convert_to_tensor(t) for t in operands]
        if not int8(operands):
            return originals["einsum"](subscripts, *operands, **kwargs)
        product = originals["einsum"](subscripts, *(tf.cast(t, tf.float32) for t in operands), **kwargs)
        return tf.cast(product, tf.int32)

    return patching.replaced(tf_numpy, matmul=matmul, einsum=einsum)


def _exact_gelu_from_erf() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import math as tf_math
    from keras.src.backend.tensorflow import nn as tf_nn

    original = tf_nn.gelu

    def gelu(x, approximate=True):
        x = tf.convert_to_tensor(x)
        if approximate or x.dtype != tf.float32:
            return original(x, approximate)
        return 0.5 * x * (1.0 + tf_math.erf(x * 0.7071067811865476))  # the erf of `_erf_as_rational`

    return patching.replaced(tf_nn, gelu=gelu)


# The longest sorted sequence a search is written as comparisons for (each value is
# compared with every entry).
_MAX_COMPARED_ENTRIES = 4096


def _searches_as_comparison_counts() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    keras_searchsorted = tf_numpy.searchsorted

    def searchsorted(sorted_sequence, values, side="left"):
        sorted_sequence, values = tf.convert_to_tensor(sorted_sequence), tf.convert_to_tensor(values)
        entries = sorted_sequence.shape[0] if sorted_sequence.shape.rank == 1 else None
        if entries is None or entries > _MAX_COMPARED_ENTRIES or side not in ("left", "right"):
            return keras_searchsorted(sorted_sequence, values, side=side)
        before = tf.less if side == "left" else tf.less_equal
        return tf.reduce_sum(tf.cast(before(sorted_sequence, values[..., None]), tf.int32), axis=-1)

    return patching.replaced(tf_numpy, searchsorted=searchsorted)


# The dtypes Keras's trace sums small integers and booleans in.
_TRACE_WIDENS = {"bool": "int32", "int8": "int32", "int16": "int32", "uint8": "uint32", "uint16": "uint32"}


def _diagonals_and_cross_products_as_gathers_and_products() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend import standardize_dtype
    from keras.src.backend.common import dtypes
    from keras.src.backend.tensorflow import numpy as tf_numpy

    keras_diagonal, keras_trace, keras_cross = tf_numpy.diagonal, tf_numpy.trace, tf_numpy.cross

    def rows_and_columns(x, axis1, axis2):
        moved = tf_numpy.moveaxis(x, (axis1, axis2), (-2, -1))
        shape = tf.shape(moved)
        return moved, shape, shape[-2], shape[-1]

    def diagonal(x, offset=0, axis1=0, axis2=1):
        x = tf.convert_to_tensor(x)
        if not isinstance(offset, int) or x.shape.rank is None or x.shape.rank < 2:
            return keras_diagonal(x, offset=offset, axis1=axis1, axis2=axis2)
        moved, shape, rows, columns = rows_and_columns(x, axis1, axis2)
        first = max(0, -offset)
        along = tf.range(first, tf.maximum(first, tf.minimum(rows, columns - offset)))
        flat = tf.reshape(moved, tf.concat([shape[:-2], [rows * columns]], 0))
        return tf.gather(flat, along * columns + along + offset, axis=-1)

    def trace(x, offset=0, axis1=0, axis2=1):
        x = tf.convert_to_tensor(x)
        if not isinstance(offset, int) or x.shape.rank is None or x.shape.rank < 2:
            return keras_trace(x, offset=offset, axis1=axis1, axis2=axis2)
        summed = _TRACE_WIDENS.get(standardize_dtype(x.dtype), standardize_dtype(x.dtype))  # as Keras's trace
        moved, _, rows, columns = rows_and_columns(tf.cast(x, summed), axis1, axis2)
        on_diagonal = tf.equal(tf.range(columns)[None, :] - tf.range(rows)[:, None], offset)
        return tf.reduce_sum(tf.where(on_diagonal, moved, tf.zeros_like(moved)), axis=(-2, -1))

    def cross(x1, x2, axisa=-1, axisb=-1, axisc=-1, axis=None):
        x1, x2 = tf.convert_to_tensor(x1), tf.convert_to_tensor(x2)
        if (axis is not None or (axisa, axisb, axisc) != (-1, -1, -1) or x1.shape.rank is None
                or x2.shape.rank is None or x1.shape[-1] != 3 or x2.shape[-1] != 3):
            return keras_cross(x1, x2, axisa=axisa, axisb=axisb, axisc=axisc, axis=axis)
        dtype = dtypes.result_type(x1.dtype, x2.dtype)
        a, b = tf.unstack(tf.cast(x1, dtype), axis=-1), tf.unstack(tf.cast(x2, dtype), axis=-1)
        return tf.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]], axis=-1)

    return patching.replaced(tf_numpy, diagonal=diagonal, trace=trace, cross=cross)


def _slice_updates_as_selects() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import core as tf_core

    def slice_update(inputs, start_indices, updates):
        inputs = tf.convert_to_tensor(inputs)
        updates = tf.cast(updates, inputs.dtype)
        if isinstance(start_indices, (list, tuple)):
            start_indices = tf.stack([tf.cast(start, tf.int32) for start in start_indices])
        shape, box = tf.shape(inputs), tf.shape(updates)
        starts = tf.clip_by_value(tf.cast(start_indices, tf.int32), 0, shape - box)
        padded = tf.pad(updates, tf.stack([starts, shape - box - starts], axis=1))
        inside = tf.ones_like(inputs, tf.bool)
        rank = inputs.shape.rank
        for axis in range(rank):
            position = tf.range(shape[axis])
            along = (position >= starts[axis]) & (position < starts[axis] + box[axis])
            inside = inside & tf.reshape(along, [-1 if a == axis else 1 for a in range(rank)])
        return tf.where(inside, padded, inputs)

    return patching.replaced(tf_core, slice_update=slice_update)


def _eyes_as_constants() -> contextlib.AbstractContextManager[None]:
    import numpy as np
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    original = tf_numpy.eye

    def eye(N, M=None, k=0, dtype=None):
        if not all(isinstance(n, int) for n in (N, k) + (() if M is None else (M,))):
            return original(N, M, k, dtype)
        return tf.constant(np.eye(N, M, k), dtype=dtype or tf_numpy.config.floatx())

    return patching.replaced(tf_numpy, eye=eye)


def _grouped_dilated_convolutions_as_one_op() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src import backend
    from keras.src.backend.tensorflow import nn as tf_nn
    from keras.src.utils.argument_validation import standardize_tuple

    original = tf_nn.conv
    ops_by_rank = {4: tf.nn.conv2d, 5: tf.nn.conv3d}  # NHWC, NDHWC; conv1d (NWC) takes scalars

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        inputs = tf.convert_to_tensor(inputs)
        rank = inputs.shape.rank
        spatial = (rank or 0) - 2
        channels_last = backend.standardize_data_format(data_format) == "channels_last"
        dilations = standardize_tuple(dilation_rate, spatial, "dilation_rate") if spatial > 0 else ()
        if (rank not in (3, 4, 5) or not channels_last or all(d == 1 for d in dilations)
                or inputs.shape[-1] == kernel.shape[-2]):
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        steps = standardize_tuple(strides, spatial, "strides")
        if rank == 3:
            return tf.nn.conv1d(inputs, kernel, steps[0], padding.upper(), dilations=dilations[0])
        return ops_by_rank[rank](inputs, kernel, [1, *steps, 1], padding.upper(), dilations=[1, *dilations, 1])

    return patching.replaced(tf_nn, conv=conv)


def _integer_tables_as_comparisons() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf

    table_class = tf.lookup.StaticHashTable
    original = table_class.lookup

    def lookup(table, keys, name=None):
        initializer = getattr(table, "_initializer", None)
        if not (isinstance(initializer, tf.lookup.KeyValueTensorInitializer) and isinstance(keys, tf.Tensor)
                and keys.dtype.is_integer and table.value_dtype.is_integer):
            return original(table, keys, name)
        vocabulary, values = (tf.get_static_value(t) for t in (initializer._keys, initializer._values))
        if vocabulary is None or values is None:  # not known while tracing: the table itself
            return original(table, keys, name)
        matches = tf.equal(tf.expand_dims(keys, -1), tf.constant(vocabulary, keys.dtype))
        position = tf.argmax(tf.cast(matches, tf.int32), axis=-1, output_type=tf.int32)
        return tf.where(tf.reduce_any(matches, axis=-1), tf.gather(tf.constant(values, table.value_dtype), position),
                        tf.cast(table.default_value, table.value_dtype))

    return patching.replaced(table_class, lookup=lookup)


def _cumprod_as_scan() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    def times_the_one_before(y, k, axis: int):
        # y[i] * y[i - k], with 1 before the start: pad k ones in front, keep the first n.
        paddings = tf.scatter_nd([[axis, 0]], tf.reshape(k, [1]), [y.shape.rank, 2])
        shifted = tf.slice(tf.pad(y, paddings, constant_values=tf.ones([], y.dtype)), tf.zeros_like(tf.shape(y)),
                           tf.shape(y))
        return y * tf.ensure_shape(shifted, y.shape)

    def cumprod(x, axis=None, dtype=None):
        x = tf_numpy.convert_to_tensor(x, dtype=dtype)
        if x.dtype == tf.bool:  # as Keras's: a product of booleans is counted in int32
            x = tf.cast(x, "int32")
        if axis is None:
            x, axis = tf.reshape(x, [-1]), 0
        axis = axis % x.shape.rank
        length = x.shape[axis]
        if length is not None:
            k = 1
            while k < length:
                x = times_the_one_before(x, tf.constant(k), axis)
                k *= 2
            return x
        _, x = tf.while_loop(lambda k, y: k < tf.shape(y)[axis],
                             lambda k, y: (k * 2, times_the_one_before(y, k, axis)), (tf.constant(1), x))
        return x

    return patching.replaced(tf_numpy, cumprod=cumprod)


# XLA's `ErfImpl32` (and Eigen's float32 `erf`): erf(x) = x * P(x^2) / Q(x^2) for x in
# [-4, 4] (erf is +-1 in float32 beyond), coefficients from the highest power down.
_ERF_NUMERATOR = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
                  -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_DENOMINATOR = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
                    -1.42647390514189e-02)


def _erf_as_rational() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import math as tf_math

    original = tf_math.erf

    def horner(coefficients, x2):
        out = tf.fill(tf.shape(x2), tf.constant(coefficients[0], x2.dtype))
        for c in coefficients[1:]:
            out = out * x2 + tf.constant(c, x2.dtype)
        return out

    def erf(x):
        x = tf.convert_to_tensor(x)
        if x.dtype != tf.float32:
            return original(x)
        x = tf.clip_by_value(x, -4.0, 4.0)
        x2 = x * x
        return x * horner(_ERF_NUMERATOR, x2) / horner(_ERF_DENOMINATOR, x2)

    return patching.replaced(tf_math, erf=erf)


def _elementary_functions_and_rolls_from_builtins() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    def float_only(name, identity):
        keras_function = getattr(tf_numpy, name)

        def function(x):
            x = tf.convert_to_tensor(x)
            return identity(x) if x.dtype.is_floating else keras_function(x)

        return function

    def sinh(x):
        series = x + x * x * x / 6.0  # below 1e-2 its next term is under float32's rounding
        return tf.where(tf.abs(x) < 1e-2, series, (tf.exp(x) - tf.exp(-x)) / 2.0)

    def asinh(x):
        magnitude = tf.abs(x)
        return tf.sign(x) * tf.math.log(magnitude + tf.sqrt(magnitude * magnitude + 1.0))

    identities = {
        "tan": lambda x: tf.sin(x) / tf.cos(x),
        "arcsin": lambda x: tf.atan2(x, tf.sqrt(1.0 - x * x)),
        "arccos": lambda x: tf.atan2(tf.sqrt(1.0 - x * x), x),
        "sinh": sinh,
        "cosh": lambda x: (tf.exp(x) + tf.exp(-x)) / 2.0,
        "arcsinh": asinh,
        "arccosh": lambda x: tf.math.log(x + tf.sqrt(x * x - 1.0)),
        "arctanh": lambda x: 0.5 * tf.math.log((1.0 + x) / (1.0 - x)),
    }
    keras_roll = tf_numpy.roll

    def rolled_along(values, shift, axis):
        size = tf.shape(values)[axis]
        return tf.gather(values, tf.math.floormod(tf.range(size) - shift, size), axis=axis)

    def roll(x, shift, axis=None):
        shifts = (shift,) if isinstance(shift, int) else tuple(shift) if isinstance(shift, (list, tuple)) else None
        axes = (axis,) if isinstance(axis, int) else tuple(axis) if isinstance(axis, (list, tuple)) else None
        x = tf.convert_to_tensor(x)
        if shifts is None or not all(isinstance(s, int) for s in shifts) or x.shape.rank is None:
            return keras_roll(x, shift, axis=axis)  # a shift computed in the graph: Keras's tf.roll
        if axis is None and len(shifts) == 1:
            return tf.reshape(rolled_along(tf.reshape(x, [-1]), shifts[0], 0), tf.shape(x))
        if axes is None or len(axes) != len(shifts):
            return keras_roll(x, shift, axis=axis)
        for one_shift, one_axis in zip(shifts, axes):
            x = rolled_along(x, one_shift, one_axis % x.shape.rank)
        return x

    return patching.replaced(tf_numpy, roll=roll,
                             **{name: float_only(name, identity) for name, identity in identities.items()})


def _pools_3d_as_2d() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src import backend
    from keras.src.backend.tensorflow import nn as tf_nn

    from servekit.source_model import graph_mode

    originals = {"max_pool": tf_nn.max_pool, "average_pool": tf_nn.average_pool}

    def size(t, axis):
        return t.shape[axis] if t.shape[axis] is not None else tf.shape(t)[axis]

    def as_2d(name, pool_2d):
        def pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
            inputs = tf.convert_to_tensor(inputs)
            if inputs.shape.rank != 5:
                return originals[name](inputs, pool_size, strides, padding, data_format)
            window = (pool_size,) * 3 if isinstance(pool_size, int) else tuple(pool_size)
            steps = window if strides is None else (strides,) * 3 if isinstance(strides, int) else tuple(strides)
            padding = padding.upper()
            channels_first = backend.standardize_data_format(data_format) == "channels_first"
            x = tf.transpose(inputs, [0, 2, 3, 4, 1]) if channels_first else inputs  # N, D, H, W, C
            batch, depth, channels = size(x, 0), size(x, 1), size(x, 4)
            planes = pool_2d(tf.reshape(x, [batch * depth, size(x, 2), size(x, 3), channels]), window[1:], steps[1:],
                             padding)
            height, width = size(planes, 1), size(planes, 2)
            y = pool_2d(tf.reshape(planes, [batch, depth, height * width, channels]), (window[0], 1), (steps[0], 1),
                        padding)
            y = tf.reshape(y, [batch, size(y, 1), height, width, channels])
            return tf.transpose(y, [0, 4, 1, 2, 3]) if channels_first else y

        return pool

    def by_bins_in_3d(keras_pool, reduce):
        def pool(inputs, output_size, data_format=None):
            data_format = backend.standardize_data_format(data_format)
            if tf.convert_to_tensor(inputs).shape.rank != 5:
                return keras_pool(inputs, output_size, data_format=data_format)
            return graph_mode.adaptive_pool_by_bins(inputs, output_size, data_format, reduce)

        return pool

    return patching.replaced(tf_nn,
                             max_pool=as_2d("max_pool", tf.nn.max_pool2d),
                             average_pool=as_2d("average_pool", tf.nn.avg_pool2d),
                             adaptive_max_pool=by_bins_in_3d(tf_nn.adaptive_max_pool, tf.reduce_max),
                             adaptive_average_pool=by_bins_in_3d(tf_nn.adaptive_average_pool, tf.reduce_mean))


def _fft2_as_real_matmuls() -> contextlib.AbstractContextManager[None]:
    import math

    import tensorflow as tf
    from keras.src.backend.tensorflow import math as tf_math

    original = tf_math.fft2

    def cos_sin(size, dtype):
        k = tf.range(size)
        turns = tf.math.floormod(tf.expand_dims(k, 1) * tf.expand_dims(k, 0), size)
        angle = tf.cast(turns, dtype) * tf.cast(2 * math.pi, dtype) / tf.cast(size, dtype)
        return tf.cos(angle), tf.sin(angle)

    def fft2(x):
        real, imag = (tf.convert_to_tensor(t) for t in x)
        if not real.dtype.is_floating or real.dtype != imag.dtype:
            return original(x)
        cos_rows, sin_rows = cos_sin(tf.shape(real)[-2], real.dtype)
        cos_cols, sin_cols = cos_sin(tf.shape(real)[-1], real.dtype)
        # (C - iS)(A + iB) over the rows, then (P + iQ)(C - iS) over the columns.
        p = tf.matmul(cos_rows, real) + tf.matmul(sin_rows, imag)
        q = tf.matmul(cos_rows, imag) - tf.matmul(sin_rows, real)
        return tf.matmul(p, cos_cols) + tf.matmul(q, sin_cols), tf.matmul(q, cos_cols) - tf.matmul(p, sin_cols)

    return patching.replaced(tf_math, fft2=fft2)


def _slices_without_new_axes() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf

    original = tf.Tensor.__getitem__

    def getitem(tensor, spec):
        items = tuple(spec) if isinstance(spec, (tuple, list)) else (spec,)  # TensorFlow reads a list as a tuple
        if not any(item is None for item in items) or tensor.shape.rank is None:
            return original(tensor, spec)
        kept = tuple(item for item in items if item is not None)
        out = original(tensor, kept) if kept else tensor
        for axis in _new_axes(items, tensor.shape.rank):
            out = tf.expand_dims(out, axis)
        return out

    return patching.replaced(tf.Tensor, __getitem__=getitem)


def _new_axes(items: tuple, rank: int) -> list[int]:
    """Where a slice's `None`s put their axes in its result, ascending."""
    indexed = sum(1 for item in items if item is not None and item is not Ellipsis)
    axes, out_axis = [], 0
    for item in items:
        if item is None:
            axes.append(out_axis)
            out_axis += 1
        elif item is Ellipsis:
            out_axis += rank - indexed
        elif isinstance(item, slice):
            out_axis += 1
        # an integer index removes its axis
    return axes


def _int64_abs_and_sign_from_comparisons() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    original_abs, original_sign = tf_numpy.absolute, tf_numpy.sign

    def absolute(x):
        x = tf_numpy.convert_to_tensor(x)
        if x.dtype != tf.int64:
            return original_abs(x)
        return tf.where(x < 0, -x, x)

    def sign(x):
        x = tf_numpy.convert_to_tensor(x)
        if x.dtype != tf.int64:
            return original_sign(x)
        return tf.cast(x > 0, tf.int64) - tf.cast(x < 0, tf.int64)

    return patching.replaced(tf_numpy, absolute=absolute, sign=sign)


def _categorical_encoding_without_bincount() -> contextlib.AbstractContextManager[None]:
    from keras.src.utils import tf_utils

    def no_fast_path(*args, **kwargs):
        raise ValueError("servekit: Keras's backend-neutral encoding instead of bincount")

    return patching.replaced(tf_utils, tf_encode_categorical_inputs=no_fast_path)


def _signbit_without_bitcast() -> contextlib.AbstractContextManager[None]:
    """Keras's TensorFlow `signbit` without a bitcast while the block traces."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import numpy as tf_numpy

    original = tf_numpy.signbit

    def signbit(x):
        x = tf_numpy.convert_to_tensor(x)
        if not x.dtype.is_floating:
            return original(x)
        x = tf.cast(x, "float32")
        zero = tf.zeros_like(x)
        return tf.logical_or(tf.less(x, zero),
                             tf.logical_and(tf.equal(x, zero), tf.less(tf.math.reciprocal(x), zero)))

    return patching.replaced(tf_numpy, signbit=signbit)
