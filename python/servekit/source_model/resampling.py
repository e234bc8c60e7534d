"""Image resizing as two matmuls, with each backend's kernel weights.

Every resize Keras offers but "nearest" and (unantialiased) "bilinear" is a
separable linear resampling: each output row is a weighted sum of input
rows, each output column of input columns. Written as a matmul with a
[new size, old size] weight matrix along each spatial axis, it is exact to
float32 rounding, its weights are built at run time from the sizes (a
dynamic size stays dynamic), and every converter and runtime takes it. Two
callers need that:

- A rebuild under another backend computes the source backend's kernel
  (`bicubic_resize_as`, from `servekit.source_model.backend_semantics`):
  Keras's bicubic resize is Keys' cubic with a = -0.5 on TensorFlow (its
  fractional offsets rounded to 1/1024: a table) and JAX (exact), and a =
  -0.75 with the edge pixel repeated on torch.
- The builtin trace writes TensorFlow's resize ops for converters that lack
  them or compute them another way (`tensorflow_resizes_as_matmuls`):
  `ResizeBicubic`, `ResizeArea` (each output the mean of the input area it
  covers, fractions of pixels included) and `ScaleAndTranslate` (lanczos3,
  lanczos5 and every antialiased resize: a kernel stretched over the input
  pixels an output covers when shrinking, weights normalized to sum to 1).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

from servekit import patching

# Keys' cubic kernel, its `a`, and how each backend's bicubic resize treats taps outside
# the image: weighted 0 with the rest renormalized, or the edge pixel repeated.
BICUBIC = {"tensorflow": (-0.5, "renormalize"), "jax": (-0.5, "renormalize"), "torch": (-0.75, "repeat_edge")}
# TensorFlow's bicubic kernel reads its weights from a table of this many steps per pixel.
_TENSORFLOW_BICUBIC_TABLE = 1024


def resize(images, axes: Sequence[int], size: Sequence[int], weights: Callable):
    """`images` resized to `size` along its two spatial `axes`: a matmul with
    `weights(old_size, new_size)` ([new, old] float32) along each axis.

    Args:
        images: a float32 tensor of this process' backend.
        axes: the height and width axes.
        size: (height, width) after resizing.
        weights: the kernel's weight matrix for one axis.

    Returns:
        The resized float32 tensor.
    """
    from keras import ops

    x = images
    for axis, new_size in zip(axes, size):
        matrix = weights(ops.shape(x)[axis], int(new_size))
        x = ops.moveaxis(x, axis, -1)
        moved = ops.shape(x)
        x = ops.matmul(ops.reshape(x, (-1, moved[-1])), ops.transpose(matrix))
        x = ops.moveaxis(ops.reshape(x, tuple(moved[:-1]) + (new_size,)), -1, axis)
    return x


def _positions(old_size):
    """(input pixel indices as int32, the last index, the size as float32): as
    tensors, since torch.export would fix a dynamic size cast or compared as a
    SymInt."""
    from keras import ops

    columns = ops.arange(old_size, dtype="int32")
    last = ops.max(columns)
    return columns, last, ops.cast(last + 1, "float32")


def bicubic_weights(old_size, new_size: int, backend_name: str):
    """[new_size, old_size] weights of Keras's bicubic resize (no
    antialiasing) on `backend_name` (`BICUBIC`)."""
    from keras import ops

    a, outside = BICUBIC[backend_name]
    columns, last, old = _positions(old_size)
    if backend_name == "jax":  # jax.image.resize: scale = new / old, sampled at (i + 0.5) / scale - 0.5
        step = 1.0 / (float(new_size) / old)
    else:
        step = old / float(new_size)
    source = (ops.arange(new_size, dtype="float32") + 0.5) * step - 0.5
    first = ops.floor(source)
    t = source - first
    if backend_name == "tensorflow":
        t = ops.round(t * _TENSORFLOW_BICUBIC_TABLE) / _TENSORFLOW_BICUBIC_TABLE

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    taps = [far(t + 1), near(t), near(1 - t), far(2 - t)]
    first = ops.cast(first, "int32")
    weights, total = 0.0, 0.0
    for k, tap in enumerate(taps):
        index = first + (k - 1)
        if outside == "repeat_edge":
            index = ops.minimum(ops.maximum(index, 0), last)
        else:
            tap = ops.where(ops.logical_and(index >= 0, index <= last), tap, 0.0)
            total = total + tap
        weights = weights + ops.cast(ops.equal(index[:, None], columns[None, :]), "float32") * tap[:, None]
    if outside == "renormalize":
        weights = weights / total[:, None]
    return weights


def area_weights(old_size, new_size: int):
    """[new_size, old_size] weights of TensorFlow's `ResizeArea`: output i
    averages the input interval [i, i + 1) * old / new, pixels it covers in
    part weighted by the part."""
    from keras import ops

    columns, _, old = _positions(old_size)
    step = old / float(new_size)
    begin = ops.arange(new_size, dtype="float32")[:, None] * step
    end = (ops.arange(new_size, dtype="float32")[:, None] + 1.0) * step
    left = ops.cast(columns, "float32")[None, :]
    overlap = ops.minimum(left + 1.0, end) - ops.maximum(left, begin)
    return ops.maximum(overlap, 0.0) / step


def _lanczos(radius: int):
    from keras import ops

    def kernel(x):
        safe = ops.maximum(x, 1e-3)
        value = radius * ops.sin(math.pi * safe) * ops.sin(math.pi * safe / radius) / (math.pi ** 2 * safe * safe)
        return ops.where(x > radius, 0.0, ops.where(x <= 1e-3, 1.0, value))

    return kernel, radius


def _keys_cubic(x):
    from keras import ops

    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return ops.where(x >= 2.0, 0.0, ops.where(x >= 1.0, far, near))


def _triangle(x):
    from keras import ops

    return ops.maximum(1.0 - x, 0.0)


# TensorFlow's ScaleAndTranslate kernels by `tf.image.resize` method: (kernel, radius).
_SCALE_AND_TRANSLATE = {"lanczos3": _lanczos(3), "lanczos5": _lanczos(5), "bicubic": (_keys_cubic, 2),
                        "bilinear": (_triangle, 1)}


def scale_and_translate_weights(old_size, new_size: int, method: str, antialias: bool):
    """[new_size, old_size] weights of TensorFlow's `ScaleAndTranslate` (and
    `jax.image.resize`'s): the kernel at each input pixel's distance from
    the sample, stretched by the shrink factor when antialiased, zero beyond
    its radius, normalized to sum to 1 over the input."""
    from keras import ops

    kernel, _ = _SCALE_AND_TRANSLATE[method]
    columns, _, old = _positions(old_size)
    step = old / float(new_size)
    kernel_scale = ops.maximum(step, 1.0) if antialias else 1.0
    sample = (ops.arange(new_size, dtype="float32")[:, None] + 0.5) * step
    distance = ops.abs(ops.cast(columns, "float32")[None, :] + 0.5 - sample) / kernel_scale
    weights = kernel(distance)
    total = ops.sum(weights, axis=1, keepdims=True)
    return ops.where(ops.abs(total) >= 1000.0 * 1.1754944e-38, weights / total, 0.0)


def _tensorflow_weights(method: str, antialias: bool):
    """TensorFlow's weights for a `tf.image.resize` method, or None for the
    methods its own ops convert everywhere (nearest, bilinear)."""
    if method == "area":
        return area_weights
    if method in ("lanczos3", "lanczos5") or (antialias and method in _SCALE_AND_TRANSLATE):
        return lambda old, new: scale_and_translate_weights(old, new, method, antialias)
    if method == "bicubic":
        return lambda old, new: bicubic_weights(old, new, "tensorflow")
    return None


@contextlib.contextmanager
def _tf_image_resize_as(choose_weights: Callable) -> Iterator[None]:
    """While the block traces, `tf.image.resize` of float32 images is two
    matmuls with the weights `choose_weights(method, antialias)` returns,
    and TensorFlow's own op where it returns None."""
    import tensorflow as tf

    original = tf.image.resize

    def resize_images(images, size, method="bilinear", preserve_aspect_ratio=False, antialias=False, name=None):
        images = tf.convert_to_tensor(images)
        weights = choose_weights(method, antialias)
        if weights is None or preserve_aspect_ratio or images.dtype != tf.float32:
            return original(images, size, method, preserve_aspect_ratio, antialias, name)
        return resize(images, (images.shape.rank - 3, images.shape.rank - 2), size, weights)  # [N,] H, W, C

    with patching.replaced(tf.image, resize=resize_images):
        yield


@contextlib.contextmanager
def tensorflow_resizes_as_matmuls() -> Iterator[None]:
    """While the block traces, `tf.image.resize` with a bicubic, area,
    lanczos or antialiased method is two matmuls with TensorFlow's weights
    (`ResizeBicubic`, `ResizeArea`, `ScaleAndTranslate` otherwise)."""
    with _tf_image_resize_as(_tensorflow_weights):
        yield


@contextlib.contextmanager
def bicubic_resize_as(backend_name: str) -> Iterator[None]:
    """While the block traces, this process' backend (TensorFlow or torch)
    resizes bicubically (without antialiasing) as Keras's `backend_name`
    does, with two matmuls instead of its own resize op.

    Args:
        backend_name: "tensorflow", "jax" or "torch".
    """
    import keras

    weights = lambda old, new: bicubic_weights(old, new, backend_name)  # noqa: E731
    if keras.backend.backend() == "tensorflow":
        with _tf_image_resize_as(lambda method, antialias: weights if method == "bicubic" and not antialias else None):
            yield
        return
    import torch
    import torch.nn.functional as functional

    original = functional.interpolate

    def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                    recompute_scale_factor=None, antialias=False):
        if mode != "bicubic" or antialias or align_corners or size is None or input.dtype != torch.float32:
            return original(input, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias)
        return resize(input, (input.ndim - 2, input.ndim - 1), size, weights)  # N, C, H, W

    with patching.replaced(functional, interpolate=interpolate):
        yield
