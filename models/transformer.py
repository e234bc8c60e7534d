"""A Transformer encoder block: MultiHeadAttention, LayerNormalization, residuals, FFN."""

import keras

SEQUENCE_LENGTH = 8
MODEL_DIM = 16


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(SEQUENCE_LENGTH, MODEL_DIM), name="embeddings")
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(inputs, inputs)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm1")(
        keras.layers.Add(name="residual1")([inputs, attention])
    )
    ffn = keras.layers.Dense(32, activation="relu", name="ffn_in")(x)
    ffn = keras.layers.Dense(MODEL_DIM, name="ffn_out")(ffn)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm2")(keras.layers.Add(name="residual2")([x, ffn]))
    outputs = keras.layers.Dense(4, name="logits")(keras.layers.GlobalAveragePooling1D(name="pool")(x))
    return keras.Model(inputs, outputs, name="transformer")
