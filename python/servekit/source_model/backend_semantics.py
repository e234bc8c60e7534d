"""Where Keras's backends compute a layer differently: the rebuild computes it
as the source backend does.

servekit rebuilds a model under another backend for most formats: the
TensorFlow worker for SavedModel, ONNX, OpenVINO and LiteRT, torch for a
torch program or AOTInductor package of a TensorFlow or JAX model, JAX or
torch for an ONNX model no other strategy wrote. The artifact must reproduce
the model the user trained and checked, so where Keras's backends disagree,
the rebuild computes the source backend's numbers (`computed_as`):

- Average pooling with "same" padding that cannot be split evenly (an odd
  total, e.g. a window of 3 with stride 2 over an even size): TensorFlow
  and JAX average each window over the input positions it covers; Keras's
  torch backend pads every spatial dim by repeating the edge values and
  counts those in the mean (`_apply_same_padding`, mode "replicate", then a
  pool without padding). With an even split the torch backend lets PyTorch
  pad, excluding the padding as the others do, so only the odd case
  differs, by up to half the gap between an edge value and its neighbours.
- Bicubic resizing (`Resizing(interpolation="bicubic")`, `keras.ops.image.
  resize`, without antialiasing): each backend samples at the same
  half-pixel positions with a different kernel. TensorFlow's is Keys' cubic
  with a = -0.5, its fractional offsets rounded to 1/1024 (a table), taps
  outside the image weighted 0 and the rest renormalized; JAX's is the same
  kernel without the table; torch's has a = -0.75 and repeats the edge pixel
  for taps outside the image. They differ by up to about 1e-3 (the table)
  and several percent (torch) of the values' range.
  `servekit.source_model.resampling` computes each one exactly, as two
  matmuls with the kernel's weights.
- The max (min) of an empty segment (`keras.ops.segment_max`/`segment_min`
  with `num_segments`, no id in a segment): TensorFlow's is the dtype's
  lowest (highest) value, -3.4e38 for float32; JAX's and torch's are -inf
  (inf). Where the two differ, the empty segments of a floating result take
  the source backend's value.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from servekit import patching
from servekit.source_model import resampling

# How each backend averages a window that "same" padding split unevenly: over
# the input it covers ("exclude") or over the window with the edge repeated
# into the padding ("replicate").
_UNEVEN_SAME_AVERAGE = {"tensorflow": "exclude", "jax": "exclude", "numpy": "exclude", "torch": "replicate"}


@contextlib.contextmanager
def computed_as(source_backend: str) -> Iterator[None]:
    """While the block traces, this process' backend computes what Keras's
    `source_backend` computes differently (the module docstring lists it).

    Args:
        source_backend: the backend the model was built and checked on.

    Example:

    ```python
    with computed_as("torch"):  # in the TensorFlow worker
        module = build_module(endpoints)
    ```
    """
    import keras

    here = keras.backend.backend()
    with _average_pool_as(source_backend, here), _bicubic_as(source_backend, here), \
            _empty_segments_as(source_backend, here):
        yield


# What each backend's segment max (min) is where no id falls: the dtype's lowest
# (highest) finite value, or -inf (inf).
_EMPTY_SEGMENT_EXTREME = {"tensorflow": "finite", "jax": "infinite", "torch": "infinite"}


@contextlib.contextmanager
def _empty_segments_as(source_backend: str, here: str) -> Iterator[None]:
    import importlib

    import ml_dtypes
    import numpy as np
    from keras import ops
    from keras.src.backend import standardize_dtype

    wanted, computed = _EMPTY_SEGMENT_EXTREME.get(source_backend), _EMPTY_SEGMENT_EXTREME.get(here)
    if wanted is None or computed is None or wanted == computed:
        yield
        return
    backend_math = importlib.import_module(f"keras.src.backend.{here}.math")
    originals = {name: getattr(backend_math, name) for name in ("segment_max", "segment_min")}

    def as_source(name: str, lowest: bool):
        def reduce(data, segment_ids, num_segments=None, sorted=False):
            out = originals[name](data, segment_ids, num_segments=num_segments, sorted=sorted)
            dtype = standardize_dtype(out.dtype)
            if num_segments is None or "float" not in dtype:
                return out
            if wanted == "finite":
                fill = ml_dtypes.finfo(dtype).min if lowest else ml_dtypes.finfo(dtype).max
            else:
                fill = -np.inf if lowest else np.inf
            counts = ops.segment_sum(ops.ones_like(segment_ids, dtype=dtype), segment_ids, num_segments=num_segments)
            empty = ops.reshape(ops.equal(counts, 0), (-1,) + (1,) * (len(out.shape) - 1))
            return ops.where(empty, ops.cast(fill, dtype), out)

        return reduce

    with patching.replaced(backend_math, segment_max=as_source("segment_max", True),
                           segment_min=as_source("segment_min", False)):
        yield


@contextlib.contextmanager
def _average_pool_as(source_backend: str, here: str) -> Iterator[None]:
    wanted = _UNEVEN_SAME_AVERAGE.get(source_backend, _UNEVEN_SAME_AVERAGE.get(here))
    if wanted == _UNEVEN_SAME_AVERAGE.get(here):
        yield
        return
    import importlib

    nn = importlib.import_module(f"keras.src.backend.{here}.nn")
    original = nn.average_pool

    def average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
        if padding.lower() != "same":
            return original(inputs, pool_size, strides, padding, data_format)
        return _uneven_same_average(original, wanted, inputs, pool_size, strides, data_format)

    with patching.replaced(nn, average_pool=average_pool):
        yield


def _uneven_same_average(pool, wanted: str, inputs, pool_size, strides, data_format):
    """`pool` (a backend's `average_pool`) with "same" padding, an uneven split
    averaged the `wanted` way, an even one as every backend does."""
    from keras import ops
    from keras.src import backend
    from keras.src.utils.argument_validation import standardize_tuple

    x = ops.convert_to_tensor(inputs)
    rank = len(x.shape)
    spatial = rank - 2
    pool_size = standardize_tuple(pool_size, spatial, "pool_size")
    strides = pool_size if strides is None else standardize_tuple(strides, spatial, "strides")
    data_format = backend.standardize_data_format(data_format)
    axes = list(range(1, rank - 1)) if data_format == "channels_last" else list(range(2, rank))
    shape = ops.shape(x)
    lengths = [shape[a] for a in axes]
    splits = [_same_split(n, k, s) for n, k, s in zip(lengths, pool_size, strides)]
    uneven = [(right - left) for left, right in splits]
    if all(isinstance(u, int) for u in uneven):
        if not any(uneven):
            return pool(x, pool_size, strides, "same", data_format)
        return _padded_average(pool, wanted, x, axes, lengths, splits, pool_size, strides, data_format)
    # A length known only at run time: both results (of one shape), the right one selected.
    any_uneven = ops.any(ops.stack([ops.not_equal(u, 0) for u in uneven]))
    return ops.where(any_uneven,
                     _padded_average(pool, wanted, x, axes, lengths, splits, pool_size, strides, data_format),
                     pool(x, pool_size, strides, "same", data_format))


def _same_split(length, kernel: int, stride: int) -> tuple[Any, Any]:
    """"same" padding's (before, after) along one dim, as every backend splits it."""
    from keras import ops

    if stride == 1:
        total = kernel - 1
    else:
        out = (length + stride - 1) // stride
        total = (out - 1) * stride + kernel - length
        total = max(total, 0) if isinstance(total, int) else ops.maximum(total, 0)
    return total // 2, total - total // 2


def _padded_average(pool, wanted: str, x, axes: Sequence[int], lengths, splits, pool_size, strides, data_format):
    from keras import ops

    if wanted == "replicate":
        # The edge repeated into the padding, every spatial dim, counted in the mean.
        for axis, n, (before, after) in zip(axes, lengths, splits):
            index = ops.clip(ops.arange(-before, n + after, dtype="int32"), 0, n - 1)
            x = ops.take(x, index, axis=axis)
        return pool(x, pool_size, strides, "valid", data_format)
    # The mean over the input alone: window sums over zero padding, over the count of input positions.
    widths = [(0, 0)] * len(x.shape)
    for axis, split in zip(axes, splits):
        widths[axis] = split
    ones_shape = [1] * len(x.shape)
    for axis, n in zip(axes, lengths):
        ones_shape[axis] = n
    sums = pool(ops.pad(x, widths), pool_size, strides, "valid", data_format)
    counts = pool(ops.pad(ops.ones(ones_shape, dtype=x.dtype), widths), pool_size, strides, "valid", data_format)
    return sums / counts


@contextlib.contextmanager
def _bicubic_as(source_backend: str, here: str) -> Iterator[None]:
    if source_backend == here or source_backend not in resampling.BICUBIC or here not in ("tensorflow", "torch"):
        yield
        return
    with resampling.bicubic_resize_as(source_backend):
        yield
