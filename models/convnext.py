"""ConvNeXt from keras.applications on 32x32x3 images (random weights), at a small width.

The architecture of `keras.applications.ConvNeXtTiny` (the same builder,
`keras.applications`' `ConvNeXt`): patchify stem, depthwise 7x7 convolutions
(grouped `Conv2D`, which Keras's TensorFlow backend compiles with XLA), exact
GELU, LayerNormalization, layer scale, and the downsampling stages; with one
block per stage and widths 16-128 instead of 3-3-9-3 blocks of 96-768 (28M
parameters), so that CI exports it on three backends in seconds. The layer
scale is 0.1 instead of 1e-6, so that the blocks move the output (with 1e-6 the
residual branches are invisible next to the skip connections).
"""

import keras
from keras.src.applications.convnext import ConvNeXt


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return ConvNeXt(
        depths=[1, 1, 1, 1], projection_dims=[16, 32, 64, 128], layer_scale_init_value=0.1,
        name="convnext", include_preprocessing=False, weights=None, input_shape=(32, 32, 3), classes=10)
