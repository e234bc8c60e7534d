"""A text classifier: StringLookup on a string token input, Embedding, pooling, Dense."""

import keras
import numpy as np

VOCABULARY = ["the", "cat", "sat", "on", "mat", "dog", "ran", "fast", "slow", "home"]
SEQUENCE_LENGTH = 6


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    tokens = keras.Input(shape=(SEQUENCE_LENGTH,), dtype="string", name="tokens")
    ids = keras.layers.StringLookup(vocabulary=VOCABULARY, name="lookup")(tokens)
    x = keras.layers.Embedding(len(VOCABULARY) + 1, 8, name="embedding")(ids)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="topic")(x)
    return keras.Model(tokens, outputs, name="text_classifier")


def sample_inputs(batch: int, rng: np.random.Generator) -> np.ndarray:
    # Out-of-vocabulary tokens too: they must map to the OOV index in every runtime.
    words = np.array(VOCABULARY + ["zebra", "quantum"])
    return words[rng.integers(0, len(words), (batch, SEQUENCE_LENGTH))]
