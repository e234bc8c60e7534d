"""The MLP of the Keras export docs: (None, 3) float32 -> Dense 8 relu -> Dropout -> Dense 2."""

import keras


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(3,), name="features")
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")
