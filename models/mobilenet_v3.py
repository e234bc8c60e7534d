"""MobileNetV3-Small from keras.applications on 32x32x3 images (random weights,
BatchNormalization statistics calibrated on random images so that the output
depends on the input).

Hard-swish and hard-sigmoid after bias-less convolutions, squeeze-and-excite
blocks, depthwise convolutions. Its `x + 3` after a Conv without bias crashed
tf2onnx's transpose optimizer (see servekit.tf2onnx_handlers).
"""

import keras

from calibration import calibrate_batch_norm  # models/calibration.py, in the target's data


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=10, include_preprocessing=False,
        name="mobilenet_v3_small")
    calibrate_batch_norm(model)
    return model

