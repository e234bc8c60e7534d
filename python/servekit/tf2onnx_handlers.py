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
"""

from __future__ import annotations

import numpy as np
from onnx import onnx_pb
from tf2onnx import utils
from tf2onnx.handler import tf_op


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


@tf_op("Erfc")
class Erfc:
    @classmethod
    def version_9(cls, ctx, node, **kwargs):
        np_dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
        erf = ctx.make_node("Erf", [node.input[0]]).output[0]
        one = ctx.make_const(utils.make_name("one"), np.array(1, dtype=np_dtype)).output[0]
        node.type = "Sub"
        ctx.replace_inputs(node, [one, erf])
