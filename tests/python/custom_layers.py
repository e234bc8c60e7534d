"""Custom Keras classes used by the tests (importable, registered)."""

from __future__ import annotations

import os

import keras


@keras.saving.register_keras_serializable(package="servekit_tests")
class Scale(keras.layers.Layer):
    """y = x * w, one trainable weight per feature."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return x * self.w


@keras.saving.register_keras_serializable(package="servekit_tests")
class SkewedLayer(keras.layers.Layer):
    """Adds $SERVEKIT_TEST_SKEW (read when traced/called) to its input.

    The export worker runs with a fixed environment without that variable,
    so setting it in the test process makes the artifact differ from the
    source model: a way to make verification fail on purpose.
    """

    def call(self, x):
        return x + float(os.environ.get("SERVEKIT_TEST_SKEW", "0"))


@keras.saving.register_keras_serializable(package="servekit_tests")
class TinySubclassed(keras.Model):
    """A subclassed model (never Functional): Dense -> Scale."""

    def __init__(self, units=2, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units, name="dense")
        self.scale = Scale(name="scale")

    def call(self, x):
        return self.scale(self.dense(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="servekit_tests")
class ForgetfulDense(keras.layers.Layer):
    """A Dense whose get_config() leaves out `units`: Keras rebuilds it with
    the default and its saved kernel no longer fits (a real bug of
    keras_hub's EfficientNetBackbone and `num_features`)."""

    def __init__(self, units=32, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, x):
        return x @ self.kernel

    def get_config(self):
        config = super().get_config()
        config.pop("units", None)  # the bug
        return config


@keras.saving.register_keras_serializable(package="servekit_tests")
class GraphModeBug(keras.layers.Layer):
    """2 * x, but 2 * x + 1 once TensorFlow traces it into a graph.

    On TensorFlow the source model runs eagerly and every SavedModel (and the
    ONNX model converted from it) is a traced graph: the artifact differs
    from the source at this layer only, as when a converter maps one op
    wrongly."""

    def call(self, x):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if not tf.executing_eagerly():
                return x * 2.0 + 1.0
        return x * 2.0


@keras.saving.register_keras_serializable(package="servekit_tests")
class Sinh(keras.layers.Layer):
    """keras.ops.sinh (TensorFlow's `Sinh` op, which tf2onnx maps to ONNX `Sinh`)."""

    def call(self, x):
        return keras.ops.sinh(x)


@keras.saving.register_keras_serializable(package="servekit_tests")
class SkewedSubclassed(keras.Model):
    """A subclassed model (never Functional) around a `SkewedLayer`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, name="dense")
        self.skewed = SkewedLayer(name="skewed")

    def call(self, x):
        return self.skewed(self.dense(x))
