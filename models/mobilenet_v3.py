"""MobileNetV3-Small from keras.applications on 32x32x3 images (random weights,
BatchNormalization statistics calibrated on random images so that the output
depends on the input).

Hard-swish and hard-sigmoid after bias-less convolutions, squeeze-and-excite
blocks, depthwise convolutions. Its `x + 3` after a Conv without bias crashed
tf2onnx's transpose optimizer (see servekit.tf2onnx_handlers).
"""

import keras
import numpy as np


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=10, include_preprocessing=False,
        name="mobilenet_v3_small")
    calibrate_batch_norm(model)
    return model


def calibrate_batch_norm(model: keras.Model, image_shape=(32, 32, 3)) -> None:
    """Gives every BatchNormalization the statistics of the activations it sees.

    With random weights, the moving statistics stay at mean 0 and variance 1,
    activations shrink layer after layer, and the network answers the same
    for every input (a verification of a constant proves nothing). One
    training-mode pass on seeded random images with momentum 0 sets each
    layer's statistics to those of its actual inputs, as training would.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momentums = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    images = np.random.default_rng(0).standard_normal((16,) + tuple(image_shape)).astype("float32")
    model(images, training=True)
    for layer, momentum in zip(layers, momentums):
        layer.momentum = momentum
