"""An MLP whose output layer adds Gaussian noise on every call, in inference too.

Keras exports such a layer as it is: the artifact stays random. servekit marks the
endpoint and its output `stochastic` in the manifest; the export is verified by
shapes, dtypes and statistics over repeated calls, and the native verifier checks
shapes, finiteness and that two runs differ.
"""

import keras


class GaussianJitter(keras.layers.Layer):
    """x + N(0, stddev^2), drawn from a seeded generator on every call."""

    def __init__(self, stddev=0.1, seed=1, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x):
        return x + keras.random.normal(keras.ops.shape(x), stddev=self.stddev, seed=self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(3,), name="features")
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dense(2, name="logits")(x)
    outputs = GaussianJitter(0.1, name="jittered")(x)
    return keras.Model(inputs, outputs, name="noisy_mlp")
