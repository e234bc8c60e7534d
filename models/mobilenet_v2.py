"""MobileNetV2 (alpha 0.35) from keras.applications on 32x32x3 images (random weights,
BatchNormalization statistics calibrated on random images).

Inverted residuals, depthwise convolutions, ReLU6, BatchNormalization.
"""

import keras

from calibration import calibrate_batch_norm  # models/calibration.py, in the target's data


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, name="mobilenet_v2")
    calibrate_batch_norm(model)
    return model

