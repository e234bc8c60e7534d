"""A second trace for the converters with the fewest ops: LiteRT and OpenVINO.

The TensorFlow worker traces a model once for every format. Two patterns
in that trace convert to SavedModel and ONNX but not to LiteRT's built-in
ops or OpenVINO's frontend, and the worker traces the model again, with
each written another way, for a format whose trace has them
(`needs_builtin_trace`):

- A recurrent layer's loop over TensorLists (LiteRT): the layer is unrolled
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
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# Op types each format's converter cannot take, by prefix.
_UNCONVERTIBLE = {"litert": ("TensorList", "Bitcast", "DenseBincount"), "openvino": ("Bitcast",)}


def traced_nodes(concrete) -> list:
    """The `NodeDef`s of a traced function and of every function it calls."""
    graph_def = concrete.graph.as_graph_def()
    return list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]


def needs_builtin_trace(concrete, fmt: str) -> bool:
    """Whether the traced function (or a function it calls) has an op the
    converter of `fmt` cannot take and a builtin trace writes another way."""
    prefixes = _UNCONVERTIBLE.get(fmt, ())
    return bool(prefixes) and any(node.op.startswith(prefixes) for node in traced_nodes(concrete))


@contextlib.contextmanager
def builtin_ops() -> Iterator[None]:
    """While the block traces: `signbit` without a bitcast, categorical encoding
    without `bincount` (the module docstring says why)."""
    with _signbit_without_bitcast(), _categorical_encoding_without_bincount():
        yield


@contextlib.contextmanager
def _categorical_encoding_without_bincount() -> Iterator[None]:
    from keras.src.utils import tf_utils

    original = tf_utils.tf_encode_categorical_inputs

    def no_fast_path(*args, **kwargs):
        raise ValueError("servekit: Keras's backend-neutral encoding instead of bincount")

    tf_utils.tf_encode_categorical_inputs = no_fast_path
    try:
        yield
    finally:
        tf_utils.tf_encode_categorical_inputs = original


@contextlib.contextmanager
def _signbit_without_bitcast() -> Iterator[None]:
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

    tf_numpy.signbit = signbit
    try:
        yield
    finally:
        tf_numpy.signbit = original
