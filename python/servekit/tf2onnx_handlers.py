"""Conversions tf2onnx lacks for TensorFlow ops that Keras models produce.

Registered with tf2onnx's own handler registry when `servekit.onnx` converts
a graph (importing this module registers them):

- `StatelessRandomUniform[V2]`, `StatelessRandomNormal[V2]`: what
  `keras.random.uniform/normal` with a `SeedGenerator` lower to. ONNX has no
  counter-based generator, so they become `RandomUniformLike` /
  `RandomNormalLike` over a tensor of the requested shape: the exported layer
  stays random (fresh numbers on every run), as Keras's semantics require, and
  servekit verifies it by statistics rather than values.
- `Erfc`: exact GELU (`approximate=False`) lowers to it; `erfc(x) = 1 - erf(x)`.
- `LookupTableFindV2` on integer keys and values (`IntegerLookup`): tf2onnx
  converts string<->int64 tables only; an int64->int64 table is an ai.onnx.ml
  `LabelEncoder` (opset 2: `keys_int64s`, `values_int64s`). Other tables go to
  tf2onnx's own handler.
- `Expm1`: `elu`, `selu` and `celu` activations lower to it; `expm1(x) = exp(x) - 1`
  (without it, tf2onnx's model fails and only the slow cross-backend road was left).
- `Bitcast` float32 -> int32 whose every use masks the sign bit
  (`BitwiseAnd(bits, INT32_MIN)`): Keras's `signbit`, which `keras.ops.argmax`
  and `argmin` use to order -0.0 before 0.0 on TensorFlow. ONNX has no bitcast
  (and opset 17 no bitwise ops), but the sign bit alone is
  `x < 0 or (x == 0 and 1 / x < 0)`; any other use of the bits is refused.
- `Complex`, `FFT2D`, `Real`, `Imag`: `keras.ops.fft2` (FNet's token mixing)
  lowers to them; complex values are float tensors with a leading dimension of
  2, as in tf2onnx's own FFT handlers, and the transform is ONNX `DFT`.
- `RFFT` read by `Real`/`Imag`: `keras.ops.stft` (`MelSpectrogram`) and
  `keras.ops.rfft` take its parts, where tf2onnx converts an `RFFT` that only
  `ComplexAbs` reads: ONNX `DFT` (opset 17), one-sided, in the same layout.
  `FFT`, `IFFT` (`keras.ops.fft`, `ifft`) and `IRFFT` (`irfft`, `istft`),
  which tf2onnx does not convert for these readers or at all, are `DFT`s
  too; an `IRFFT`'s spectrum is completed by its conjugate symmetry first.

And one fix to tf2onnx's optimizer (`_patch_transpose_optimizer`): its
transpose optimizer folds `Add(const)` after a bias-less `Conv` into the Conv's
bias, and crashes (`max() arg is an empty sequence`) when the constant is a
scalar: hard-sigmoid/hard-swish (`relu6(x + 3) / 6`) after a Conv without bias,
as in MobileNetV3.
"""

from __future__ import annotations

import numpy as np
from onnx import onnx_pb
from tf2onnx import constants, utils
from tf2onnx.custom_opsets.onnx_ml import LookupTableFind as _TfLookupTableFind
from tf2onnx.handler import tf_op
from tf2onnx.onnx_opset.signal import RFFTOp as _TfRFFT


# pylint: disable=unused-argument
@tf_op(["StatelessRandomUniformV2", "StatelessRandomNormalV2", "StatelessRandomUniform", "StatelessRandomNormal"])
class StatelessRandom:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        dtype = ctx.get_dtype(node.output[0])
        shape = ctx.make_node("Cast", [node.input[0]], attr={"to": onnx_pb.TensorProto.INT64}).output[0]
        template = ctx.make_node("ConstantOfShape", [shape]).output[0]
        node.type = "RandomUniformLike" if "Uniform" in node.type else "RandomNormalLike"
        ctx.replace_inputs(node, [template])
        for tf_attr in ("T", "Tshape", "Tseed", "dtype"):
            if tf_attr in node.attr:
                del node.attr[tf_attr]
        node.set_attr("dtype", dtype)


def _difference_with_one(ctx, node, unary: str, one_first: bool) -> None:
    """Rewrites `node` as `1 - unary(x)` (one_first) or `unary(x) - 1`."""
    np_dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    value = ctx.make_node(unary, [node.input[0]]).output[0]
    one = ctx.make_const(utils.make_name("one"), np.array(1, dtype=np_dtype)).output[0]
    node.type = "Sub"
    ctx.replace_inputs(node, [one, value] if one_first else [value, one])


@tf_op("Erfc")
class Erfc:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        _difference_with_one(ctx, node, "Erf", one_first=True)


@tf_op("LookupTableFindV2")
class IntegerLookupTableFind:
    @classmethod
    def version_8(cls, ctx, node, initialized_tables, **kwargs):
        integers = (onnx_pb.TensorProto.INT64, onnx_pb.TensorProto.INT32)
        in_dtype, out_dtype = ctx.get_dtype(node.input[1]), ctx.get_dtype(node.output[0])
        if in_dtype not in integers or out_dtype not in integers:
            return _TfLookupTableFind.version_8(ctx, node, initialized_tables=initialized_tables, **kwargs)
        table = node.inputs[0]
        while table.type == "Identity":
            table = table.inputs[0]
        shared_name = table.get_attr_value("shared_name")
        utils.make_sure(shared_name in initialized_tables, "Initialized table %s for node %s not found.",
                        shared_name, node.name)
        keys, values = initialized_tables[shared_name]
        default = node.inputs[2]
        utils.make_sure(default.is_const(), "Default value of table lookup must be const.")
        keys_input = node.input[1]
        if in_dtype != onnx_pb.TensorProto.INT64:
            keys_input = ctx.make_node("Cast", [keys_input], attr={"to": onnx_pb.TensorProto.INT64}).output[0]
        name, outputs, shape = node.name, node.output, ctx.get_shape(node.input[1])
        ctx.remove_node(name)
        attr = {"keys_int64s": [int(k) for k in np.asarray(keys).ravel()],
                "values_int64s": [int(v) for v in np.asarray(values).ravel()],
                "default_int64": int(default.get_tensor_value())}
        if out_dtype == onnx_pb.TensorProto.INT64:
            ctx.make_node("LabelEncoder", [keys_input], outputs=outputs, name=name, attr=attr,
                          domain=constants.AI_ONNX_ML_DOMAIN, shapes=[shape], dtypes=[out_dtype])
        else:
            encoded = ctx.make_node("LabelEncoder", [keys_input], name=name, attr=attr,
                                    domain=constants.AI_ONNX_ML_DOMAIN, shapes=[shape],
                                    dtypes=[onnx_pb.TensorProto.INT64]).output[0]
            ctx.make_node("Cast", [encoded], outputs=outputs, attr={"to": out_dtype}, shapes=[shape],
                          dtypes=[out_dtype])
        if not ctx.find_output_consumers(table.output[0]):
            ctx.remove_node(table.name)


@tf_op("Expm1")
class Expm1:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        _difference_with_one(ctx, node, "Exp", one_first=False)


_INT32_SIGN_BIT = np.int32(np.iinfo(np.int32).min)


def _is_sign_bit_mask(ctx, consumer, bits: str) -> bool:
    """`consumer` is `BitwiseAnd(bits, INT32_MIN)` (either operand order)."""
    if consumer.type != "BitwiseAnd" or len(consumer.input) != 2 or bits not in consumer.input:
        return False
    other = ctx.get_node_by_output(consumer.input[1 - list(consumer.input).index(bits)])
    return other is not None and other.is_const() and np.all(other.get_tensor_value(as_list=False) == _INT32_SIGN_BIT)


@tf_op("Bitcast")
class SignBitOfFloat:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        source, target = ctx.get_dtype(node.input[0]), node.get_attr_value("type")
        consumers = ctx.find_output_consumers(node.output[0])
        if (source != onnx_pb.TensorProto.FLOAT or target != onnx_pb.TensorProto.INT32 or not consumers
                or not all(_is_sign_bit_mask(ctx, c, node.output[0]) for c in consumers)):
            raise ValueError(f"Bitcast {node.name}: only a float32 -> int32 bitcast whose bits are masked to the "
                             "sign bit (Keras's signbit) has an ONNX equivalent")
        x = node.input[0]
        zero = ctx.make_const(utils.make_name("zero"), np.array(0, np.float32)).output[0]
        one = ctx.make_const(utils.make_name("one"), np.array(1, np.float32)).output[0]
        negative = ctx.make_node("Less", [x, zero]).output[0]
        is_zero = ctx.make_node("Equal", [x, zero]).output[0]
        reciprocal_negative = ctx.make_node("Less", [ctx.make_node("Div", [one, x]).output[0], zero]).output[0]
        negative_zero = ctx.make_node("And", [is_zero, reciprocal_negative]).output[0]
        sign = ctx.make_node("Or", [negative, negative_zero]).output[0]
        set_bit = ctx.make_const(utils.make_name("sign_bit"), np.array(_INT32_SIGN_BIT)).output[0]
        unset = ctx.make_const(utils.make_name("no_bit"), np.array(0, np.int32)).output[0]
        # The bits with everything but the sign cleared: what each mask computes.
        ctx.remove_node(node.name)
        ctx.make_node("Where", [sign, set_bit, unset], outputs=node.output, name=node.name,
                      shapes=[ctx.get_shape(x)], dtypes=[onnx_pb.TensorProto.INT32])
        for mask in consumers:
            mask.type = "Identity"  # converted later by tf2onnx's Identity handler
            ctx.replace_inputs(mask, [node.output[0]])


# Complex tensors the way tf2onnx's own FFT handlers hold them: a leading
# dimension of 2, real part then imaginary part, in a float tensor.
@tf_op("Complex")
class Complex:
    @classmethod
    def version_13(cls, ctx, node, **kwargs):
        parts = [ctx.make_node("Unsqueeze", [name, ctx.make_const(utils.make_name("axis"), np.array([0], np.int64))
                                             .output[0]]).output[0] for name in node.input]
        dtype = ctx.get_dtype(node.input[0])
        shape = ctx.get_shape(node.input[0])
        ctx.remove_node(node.name)
        ctx.make_node("Concat", parts, attr={"axis": 0}, outputs=node.output, name=node.name,
                      shapes=[None if shape is None else [2] + list(shape)], dtypes=[dtype])


@tf_op(["Real", "Imag"])
class RealImag:
    @classmethod
    def version_13(cls, ctx, node, **kwargs):
        part = ctx.make_const(utils.make_name("part"), np.array(0 if node.type == "Real" else 1, np.int64))
        shape = ctx.get_shape(node.input[0])
        dtype = ctx.get_dtype(node.input[0])
        if dtype in (onnx_pb.TensorProto.COMPLEX64, onnx_pb.TensorProto.COMPLEX128):
            dtype = onnx_pb.TensorProto.FLOAT if dtype == onnx_pb.TensorProto.COMPLEX64 else onnx_pb.TensorProto.DOUBLE
        ctx.remove_node(node.name)
        ctx.make_node("Gather", [node.input[0], part.output[0]], attr={"axis": 0}, outputs=node.output, name=node.name,
                      shapes=[None if shape is None else list(shape)[1:]], dtypes=[dtype])


def _complex_last(ctx, name: str, rank: int) -> str:
    """The [2, ...] complex layout with the parts moved to the last axis, where `DFT` wants them."""
    return ctx.make_node("Transpose", [name], attr={"perm": list(range(1, rank)) + [0]}).output[0]


@tf_op("FFT2D")
class FFT2D:
    """A 2D DFT over the last two axes: ONNX `DFT` (opset 17) on each, with
    the complex parts moved to the last axis, where `DFT` wants them."""

    @classmethod
    def version_17(cls, ctx, node, **kwargs):
        shape = ctx.get_shape(node.input[0])
        utils.make_sure(shape is not None and len(shape) >= 3 and shape[0] == 2,
                        "FFT2D of a tensor of unknown rank or not from Complex (%r)", shape)
        rank = len(shape)
        x = _complex_last(ctx, node.input[0], rank)
        for axis in (rank - 3, rank - 2):  # the two signal axes, counted in the moved tensor
            x = ctx.make_node("DFT", [x], attr={"axis": axis, "onesided": 0, "inverse": 0}).output[0]
        dtype = ctx.get_dtype(node.input[0])
        ctx.remove_node(node.name)
        ctx.make_node("Transpose", [x], attr={"perm": [rank - 1] + list(range(rank - 1))}, outputs=node.output,
                      name=node.name, shapes=[list(shape)], dtypes=[dtype])


@tf_op("RFFT")
class RFFT:
    """A real signal's one-sided DFT over its last axis, read by any op.

    tf2onnx's own conversion (taken below opset 17, and when only
    `ComplexAbs` reads the transform) refuses every other reader."""

    @classmethod
    def version_1(cls, ctx, node, **kwargs):
        return _TfRFFT.version_1(ctx, node, **kwargs)

    @classmethod
    def version_10(cls, ctx, node, **kwargs):
        return _TfRFFT.version_10(ctx, node, **kwargs)

    @classmethod
    def version_13(cls, ctx, node, **kwargs):
        return _TfRFFT.version_13(ctx, node, **kwargs)

    @classmethod
    def version_17(cls, ctx, node, **kwargs):
        if {consumer.type for consumer in ctx.find_output_consumers(node.output[0])} == {"ComplexAbs"}:
            return _TfRFFT.version_13(ctx, node, **kwargs)
        shape = ctx.get_shape(node.input[0])
        utils.make_sure(shape is not None and node.inputs[1].is_const(),
                        "RFFT of a tensor of unknown rank or to a computed length (%r)", shape)
        length = int(np.asarray(node.inputs[1].get_tensor_value()).ravel()[0])
        rank = len(shape)
        signal = ctx.make_node("Unsqueeze", [node.input[0], ctx.make_const(
            utils.make_name("axis"), np.array([rank], np.int64)).output[0]]).output[0]
        dft_length = ctx.make_const(utils.make_name("dft_length"), np.array(length, np.int64)).output[0]
        transform = ctx.make_node("DFT", [signal, dft_length], attr={"axis": rank - 1, "onesided": 1,
                                                                      "inverse": 0}).output[0]
        dtype = ctx.get_dtype(node.input[0])
        ctx.remove_node(node.name)
        ctx.make_node("Transpose", [transform], attr={"perm": [rank] + list(range(rank))}, outputs=node.output,
                      name=node.name, shapes=[[2] + list(shape[:-1]) + [length // 2 + 1]], dtypes=[dtype])


@tf_op(["FFT", "IFFT"])
class FFT:
    """A complex DFT (or its inverse, scaled by 1/n as TensorFlow's is) over the last axis."""

    @classmethod
    def version_17(cls, ctx, node, **kwargs):
        shape = ctx.get_shape(node.input[0])
        utils.make_sure(shape is not None and len(shape) >= 2 and shape[0] == 2,
                        "%s of a tensor of unknown rank or not from Complex (%r)", node.type, shape)
        rank = len(shape)
        moved = _complex_last(ctx, node.input[0], rank)
        transform = ctx.make_node("DFT", [moved], attr={"axis": rank - 2, "onesided": 0,
                                                        "inverse": int(node.type == "IFFT")}).output[0]
        dtype = ctx.get_dtype(node.input[0])
        ctx.remove_node(node.name)
        ctx.make_node("Transpose", [transform], attr={"perm": [rank - 1] + list(range(rank - 1))},
                      outputs=node.output, name=node.name, shapes=[list(shape)], dtypes=[dtype])


@tf_op("IRFFT")
class IRFFT:
    """The real signal of a one-sided spectrum: the spectrum completed by its
    conjugate symmetry (X[n-k] = conj(X[k])), an inverse `DFT`, its real part
    (the imaginary parts TensorFlow ignores, at 0 and n/2, land there only)."""

    @classmethod
    def version_17(cls, ctx, node, **kwargs):
        shape = ctx.get_shape(node.input[0])
        utils.make_sure(shape is not None and len(shape) >= 2 and shape[0] == 2 and node.inputs[1].is_const(),
                        "IRFFT of a tensor of unknown rank, not from Complex, or to a computed length (%r)", shape)
        length = int(np.asarray(node.inputs[1].get_tensor_value()).ravel()[0])
        rank = len(shape)
        kept = length // 2 + 1
        indices = np.array(list(range(kept)) + [length - k for k in range(kept, length)], np.int64)
        signs = np.array([[1.0] * length, [1.0] * kept + [-1.0] * (length - kept)],
                         utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0])))
        spectrum = ctx.make_node("Gather", [node.input[0], ctx.make_const(utils.make_name("bins"), indices).output[0]],
                                 attr={"axis": rank - 1}).output[0]
        signs = ctx.make_const(utils.make_name("conjugate"), signs.reshape([2] + [1] * (rank - 2) + [length]))
        spectrum = ctx.make_node("Mul", [spectrum, signs.output[0]]).output[0]
        signal = ctx.make_node("DFT", [_complex_last(ctx, spectrum, rank)],
                               attr={"axis": rank - 2, "onesided": 0, "inverse": 1}).output[0]
        real = ctx.make_const(utils.make_name("real"), np.array([0], np.int64)).output[0]
        last = ctx.make_const(utils.make_name("last"), np.array([rank - 1], np.int64)).output[0]
        dtype = ctx.get_dtype(node.output[0])
        ctx.remove_node(node.name)
        sliced = ctx.make_node("Gather", [signal, real], attr={"axis": rank - 1}).output[0]
        ctx.make_node("Squeeze", [sliced, last], outputs=node.output, name=node.name,
                      shapes=[list(shape[1:-1]) + [length]], dtypes=[dtype])


def _patch_transpose_optimizer() -> None:
    """Lets tf2onnx's transpose optimizer fold a scalar `Add` into a Conv's bias.

    `TransposeOptimizer._add_handler` reads the bias size as
    `max(const.shape)`, which fails for a rank-0 constant. For a scalar the
    Add is kept and handled like any other Add after a Transpose (the path
    tf2onnx takes for constants it cannot fold), which is exact.
    """
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    original = TransposeOptimizer._add_handler
    if getattr(original, "_servekit_scalar_bias", False):
        return

    def add_handler(self, trans, node):
        bias = node.inputs[1] if len(node.inputs) > 1 else None
        if bias is not None and bias.is_const() and bias.get_tensor_value(as_list=False).ndim == 0:
            # Not foldable the way tf2onnx folds: keep the Add, move the Transpose past it.
            return self._handle_node_having_branches(trans, node)
        return original(self, trans, node)

    add_handler._servekit_scalar_bias = True
    TransposeOptimizer._add_handler = add_handler


_patch_transpose_optimizer()
