"""A Functional model with two list inputs, (None, 3) and (None, 4)."""

import keras


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    left = keras.Input(shape=(3,), name="left")
    right = keras.Input(shape=(4,), name="right")
    x = keras.layers.Concatenate(name="concat")([
        keras.layers.Dense(5, activation="tanh", name="left_proj")(left),
        keras.layers.Dense(5, activation="tanh", name="right_proj")(right),
    ])
    outputs = keras.layers.Dense(2, name="scores")(x)
    return keras.Model([left, right], outputs, name="list_inputs")
