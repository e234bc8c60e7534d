"""A model that counts its calls in a non-trainable variable and adds the count.

A stateful endpoint: each call advances the state. servekit marks it `stateful`
in the manifest; the reference outputs are the model's successive calls from the
state it was exported in, which a freshly loaded artifact must reproduce in
order. SavedModel only: ONNX models have no variables.
"""

import keras


class CallCounter(keras.layers.Layer):
    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False,
                                     name="count")

    def call(self, x):
        self.count.assign(self.count + 1.0)
        return x + self.count


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(3,), name="features")
    x = keras.layers.Dense(4, name="hidden")(inputs)
    outputs = CallCounter(name="counted")(x)
    return keras.Model(inputs, outputs, name="call_counter")
