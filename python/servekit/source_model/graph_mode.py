"""Keras layers whose TensorFlow code assumes a size known while tracing.

Every endpoint trace (`servekit.saved_model`) runs a model in graph mode with
its dynamic dims unknown. Some Keras 3 layers take a Python branch on a size
there, and their traced function then fails or computes something else than
the model does eagerly. While tracing (`unknown_sizes_traced`), each is
written so that an unknown size computes what the model computes:

- `TimeDistributed` over a number of steps unknown while tracing: Keras
  maps the steps with `vectorized_map`, whose fallback loop (a convolution,
  for one) fails at run time as soon as the batch is larger than the number
  of steps ("slice index 3 of dimension 0 out of bounds"): a video model,
  `TimeDistributed(Conv2D)` over clips of any length, failed in every
  format. Here the layer runs once, over the batch and the steps folded into
  one dim; each step is the layer on its own slice either way.
- `keras.ops.image.resize` to a size computed from the input
  (`UpSampling2D(interpolation="bilinear")` of images of any size): its
  argument check `size[0] <= 0` takes a tensor as a Python bool, and the
  trace failed. Here a computed size goes to the backend's resize directly.
- `CenterCrop` of images of any size: Keras crops an image at least as large
  as the crop and resizes a smaller one (`smart_resize`), but with sizes
  unknown while tracing it always crops: an image smaller than the crop came
  out smaller. Here the trace chooses between the two by the image's size.
- `RandomCrop` of images of any size, at inference: Keras draws its crop
  box from the image's size with Python's `float()` before it learns that
  inference leaves the image as it is, and the trace failed. Here the box is
  not drawn at inference.
- Adaptive pooling (`AdaptiveAveragePooling1D/2D/3D`, `AdaptiveMaxPooling*`,
  `keras.ops.adaptive_*_pool`) of inputs of any size, the reason it exists:
  Keras's TensorFlow code picks its two window sizes from the static size and
  refuses an unknown one. Here each output bin reduces its own window
  (`floor(i*L/n)` to `ceil((i+1)*L/n)`, as Keras and torch define it), one
  spatial axis after the other: a window is the product of its ranges.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from servekit import patching


@contextlib.contextmanager
def unknown_sizes_traced() -> Iterator[None]:
    """While the block traces (TensorFlow), the layers the module docstring
    lists compute with sizes unknown while tracing what they compute eagerly."""
    try:
        import keras  # noqa: F401
    except ImportError:  # no keras: nothing to rewrite
        yield
        return
    with _time_distributed_steps_folded_into_the_batch(), _resizes_to_computed_sizes(), \
            _center_crops_of_unknown_sizes(), _random_crops_at_inference(), _adaptive_pools_of_unknown_sizes():
        yield


def _time_distributed_steps_folded_into_the_batch() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.layers.rnn.time_distributed import TimeDistributed

    original = TimeDistributed.call

    def call(layer, inputs, training=None, mask=None):
        if not isinstance(inputs, tf.Tensor) or inputs.shape.rank is None or inputs.shape[1] is not None:
            return original(layer, inputs, training=training, mask=mask)
        shape = tf.shape(inputs)

        def folded(x):
            rest = x.shape[2:]
            return tf.reshape(x, [-1, *rest] if rest.is_fully_defined() else tf.concat([[-1], tf.shape(x)[2:]], 0))

        kwargs = {}
        if layer.layer._call_has_mask_arg and mask is not None:
            kwargs["mask"] = folded(mask)
        if layer.layer._call_has_training_arg:
            kwargs["training"] = training
        outputs = layer.layer.call(folded(inputs), **kwargs)
        unfolded = tf.reshape(outputs, tf.concat([shape[:2], tf.shape(outputs)[1:]], 0))
        unfolded.set_shape(tf.TensorShape(inputs.shape[:2]).concatenate(outputs.shape[1:]))
        return unfolded

    return patching.replaced(TimeDistributed, call=call)


def _resizes_to_computed_sizes() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src import backend
    from keras.src.ops import image as image_ops

    original = image_ops.resize

    def resize(images, size, interpolation="bilinear", antialias=False, crop_to_aspect_ratio=False,
               pad_to_aspect_ratio=False, fill_mode="constant", fill_value=0.0, data_format=None):
        if isinstance(images, tf.Tensor) and len(size) == 2 and any(isinstance(s, tf.Tensor) for s in size):
            return backend.image.resize(images, size, interpolation=interpolation, antialias=antialias,
                                        crop_to_aspect_ratio=crop_to_aspect_ratio,
                                        pad_to_aspect_ratio=pad_to_aspect_ratio, fill_mode=fill_mode,
                                        fill_value=fill_value, data_format=data_format)
        return original(images, size, interpolation=interpolation, antialias=antialias,
                        crop_to_aspect_ratio=crop_to_aspect_ratio, pad_to_aspect_ratio=pad_to_aspect_ratio,
                        fill_mode=fill_mode, fill_value=fill_value, data_format=data_format)

    return patching.replaced(image_ops, resize=resize)


def _center_crops_of_unknown_sizes() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src.layers.preprocessing.image_preprocessing.center_crop import CenterCrop
    from keras.src.utils import image_utils

    original = CenterCrop.transform_images

    def transform_images(layer, images, transformation=None, training=True):
        sides = images.shape[-2:] if layer.data_format == "channels_first" else images.shape[-3:-1]
        if not isinstance(images, tf.Tensor) or None not in sides:
            return original(layer, images, transformation=transformation, training=training)
        inputs = tf.cast(images, layer.compute_dtype)
        shape = tf.shape(inputs)
        height, width = (shape[-2], shape[-1]) if layer.data_format == "channels_first" else (shape[-3], shape[-2])
        large_enough = tf.logical_and(height >= layer.height, width >= layer.width)
        # Either branch makes an image of the crop's size, written into each branch as a reshape
        # to it (a static shape only Python knows is lost in the converters: the crop's slices
        # with computed bounds leave its sides unknown, the `If` came out unranked, and the
        # convolution after it was a Flex op in LiteRT).
        sized = list(images.shape)
        axes = (-2, -1) if layer.data_format == "channels_first" else (-3, -2)
        sized[axes[0]], sized[axes[1]] = layer.height, layer.width

        def of_the_crops_size(branch):
            def sized_branch():
                out = branch()
                if sum(d is None for d in sized) <= 1:  # a reshape takes one unknown dim (the batch)
                    out = tf.reshape(out, [-1 if d is None else d for d in sized])
                out.set_shape(sized)
                return out
            return sized_branch

        return tf.cond(large_enough,
                       of_the_crops_size(lambda: original(layer, images, transformation=transformation,
                                                          training=training)),
                       of_the_crops_size(lambda: image_utils.smart_resize(inputs, [layer.height, layer.width],
                                                                          data_format=layer.data_format,
                                                                          backend_module=layer.backend)))

    return patching.replaced(CenterCrop, transform_images=transform_images)


def _random_crops_at_inference() -> contextlib.AbstractContextManager[None]:
    from keras.src.layers.preprocessing.image_preprocessing.random_crop import RandomCrop

    original = RandomCrop.get_random_transformation

    def get_random_transformation(layer, data, training=True, seed=None):
        if not training:
            return 0, 0  # a box inference does not use: RandomCrop leaves the images as they are
        return original(layer, data, training=training, seed=seed)

    return patching.replaced(RandomCrop, get_random_transformation=get_random_transformation)


def _adaptive_pools_of_unknown_sizes() -> contextlib.AbstractContextManager[None]:
    import tensorflow as tf
    from keras.src import backend
    from keras.src.backend.tensorflow import nn as tf_nn

    def of_any_size(keras_pool, reduce):
        def pool(inputs, output_size, data_format=None):
            data_format = backend.standardize_data_format(data_format)
            if not isinstance(inputs, tf.Tensor) or None not in _spatial_sizes(inputs, data_format):
                return keras_pool(inputs, output_size, data_format=data_format)
            return adaptive_pool_by_bins(inputs, output_size, data_format, reduce)

        return pool

    return patching.replaced(
        tf_nn,
        adaptive_average_pool=of_any_size(tf_nn.adaptive_average_pool, tf.reduce_mean),
        adaptive_max_pool=of_any_size(tf_nn.adaptive_max_pool, tf.reduce_max))


def _spatial_axes(inputs, data_format: str) -> range:
    spatial_dims = inputs.shape.rank - 2
    return range(1, spatial_dims + 1) if data_format == "channels_last" else range(2, spatial_dims + 2)


def _spatial_sizes(inputs, data_format: str) -> list:
    return [inputs.shape[axis] for axis in _spatial_axes(inputs, data_format)]


def adaptive_pool_by_bins(inputs, output_size, data_format: str, reduce):
    """Adaptive pooling (TensorFlow) in which each output bin reduces its own
    window, `floor(i*L/n)` to `ceil((i+1)*L/n)` as Keras and torch define it,
    one spatial axis after the other (a window is the product of its ranges).

    Keras's TensorFlow code needs the sizes while tracing and pools with
    `tf.nn.pool`, which is `MaxPool3D`/`AvgPool3D` in 3-D (no LiteRT kernel);
    this takes sizes known at run time only, with slices and reductions.

    Args:
        inputs: a tensor of rank 3, 4 or 5.
        output_size: the bins per spatial axis (an int for all of them).
        data_format: "channels_last" or "channels_first".
        reduce: `tf.reduce_mean` or `tf.reduce_max`.

    Returns:
        The pooled tensor.
    """
    import tensorflow as tf

    axes = _spatial_axes(inputs, data_format)
    bins = (output_size,) * len(axes) if isinstance(output_size, int) else tuple(output_size)
    pooled = inputs
    for axis, count in zip(axes, bins):
        length = tf.shape(pooled)[axis]
        rank = pooled.shape.rank
        at_axis = tf.one_hot(axis, rank, dtype=tf.int32)
        windows = []
        for i in range(count):
            start = (i * length) // count
            end = ((i + 1) * length + count - 1) // count
            window = tf.slice(pooled, at_axis * start, tf.fill([rank], -1) + at_axis * (end - start + 1))
            windows.append(reduce(window, axis=axis, keepdims=True))
        pooled = tf.concat(windows, axis=axis)
    return pooled
