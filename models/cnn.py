"""A small CNN on 32x32x3 images: Conv2D, BatchNormalization, MaxPooling2D."""

import keras
import numpy as np


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="classes")(x)
    model = keras.Model(inputs, outputs, name="cnn")
    # Non-trivial BatchNormalization statistics, so the export must carry them.
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(0.0, 0.1, 8).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 1.5, 8).astype("float32"))
    return model
