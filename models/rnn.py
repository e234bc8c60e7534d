"""A GRU sequence classifier: (batch, 10, 4) float32 -> GRU 16 -> Dense 3."""

import keras


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(10, 4), name="sequence")
    x = keras.layers.GRU(16, name="gru")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs, name="rnn")
