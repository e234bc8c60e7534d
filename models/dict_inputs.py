"""A Functional model with dict inputs {"age": (None, 3), "clicks": (None, 4)}."""

import keras


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = {
        "age": keras.Input(shape=(3,), name="age"),
        "clicks": keras.Input(shape=(4,), name="clicks"),
    }
    x = keras.layers.Concatenate(name="concat")([inputs["age"], inputs["clicks"]])
    x = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(inputs, outputs, name="dict_inputs")
