"""The models of the support matrix (tiny, deterministic weights).

Every builder takes a seed and returns a Keras model whose weights (including
BatchNormalization moving statistics and biases) are drawn from that seed, so
the same model can be rebuilt in another process. Layer names are explicit:
they become tensor names in the artifacts.
"""

from __future__ import annotations

import numpy as np

import keras

VOCAB = ["the", "cat", "sat", "on", "mat", "dog"]


def randomize_weights(model: keras.Model, seed: int) -> keras.Model:
    """Sets every weight from a seeded RNG (variances kept positive)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "variance" in w.path:
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.normal(0.0, 0.5, size=shape)
        w.assign(value.astype(keras.backend.standardize_dtype(w.dtype)))
    return model


def mlp(seed: int = 0) -> keras.Model:
    inp = keras.Input(shape=(3,), name="features")
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    out = keras.layers.Dense(2, name="logits")(x)
    return randomize_weights(keras.Model(inp, out, name="mlp"), seed)


def _two_input_body(x1, x2):
    x = keras.layers.Concatenate(name="concat")([x1, x2])
    x = keras.layers.Dense(8, activation="tanh", name="hidden")(x)
    return keras.layers.Dense(2, name="score")(x)


def two_inputs_list(seed: int = 0) -> keras.Model:
    x1 = keras.Input(shape=(3,), name="x1")
    x2 = keras.Input(shape=(4,), name="x2")
    return randomize_weights(keras.Model([x1, x2], _two_input_body(x1, x2), name="two_inputs_list"), seed)


def two_inputs_dict(seed: int = 0) -> keras.Model:
    x1 = keras.Input(shape=(3,), name="x1")
    x2 = keras.Input(shape=(4,), name="x2")
    return randomize_weights(
        keras.Model({"x1": x1, "x2": x2}, _two_input_body(x1, x2), name="two_inputs_dict"), seed)


def cnn(seed: int = 0) -> keras.Model:
    inp = keras.Input(shape=(32, 32, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    return randomize_weights(keras.Model(inp, out, name="cnn"), seed)


def text_classifier(seed: int = 0) -> keras.Model:
    inp = keras.Input(shape=(5,), dtype="string", name="tokens")
    ids = keras.layers.StringLookup(vocabulary=VOCAB, name="token_ids")(inp)
    x = keras.layers.Embedding(len(VOCAB) + 1, 4, name="embedding")(ids)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    out = keras.layers.Dense(2, name="logits")(x)
    return randomize_weights(keras.Model(inp, [out, ids], name="text_classifier"), seed)


def gru(seed: int = 0) -> keras.Model:
    inp = keras.Input(shape=(6, 4), name="sequence")
    x = keras.layers.GRU(8, name="gru")(inp)
    out = keras.layers.Dense(2, name="logits")(x)
    return randomize_weights(keras.Model(inp, out, name="gru"), seed)


def transformer(seed: int = 0) -> keras.Model:
    inp = keras.Input(shape=(8, 16), name="embeddings")
    attn = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(inp, inp)
    x = keras.layers.Add(name="residual_1")([inp, attn])
    x = keras.layers.LayerNormalization(name="norm_1")(x)
    h = keras.layers.Dense(32, activation="relu", name="ffn_1")(x)
    h = keras.layers.Dense(16, name="ffn_2")(h)
    x = keras.layers.Add(name="residual_2")([x, h])
    x = keras.layers.LayerNormalization(name="norm_2")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    out = keras.layers.Dense(2, name="logits")(x)
    return randomize_weights(keras.Model(inp, out, name="transformer"), seed)


class LayerStack(keras.Model):
    """A subclassed model without get_config (its layers are a constructor
    argument), as research code writes them: it cannot be saved as `.keras`,
    so only the in-process strategy exports it."""

    def __init__(self, layer_list, **kwargs):
        super().__init__(**kwargs)
        self.layer_list = layer_list

    def call(self, inputs):
        x = inputs
        for layer in self.layer_list:
            x = layer(x)
        return x


class GaussianJitter(keras.layers.Layer):
    """Adds N(0, 0.5) noise on every call, in inference too (a random layer)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(7)

    def call(self, x):
        return x + keras.random.normal(keras.ops.shape(x), stddev=0.5, seed=self.seed_generator)


class CallCounter(keras.layers.Layer):
    """Counts its calls in a non-trainable variable and adds the count (a
    stateful layer: each call advances the state)."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False,
                                     name="count")

    def call(self, x):
        self.count.assign(self.count + 1.0)
        return x + self.count


def subclassed(seed: int = 0) -> keras.Model:
    model = LayerStack([keras.layers.Dense(8, activation="relu", name="hidden"),
                        keras.layers.Dense(2, name="logits")], name="subclassed")
    model(np.zeros((1, 3), "float32"))
    return randomize_weights(model, seed)


def random_layer(seed: int = 0) -> keras.Model:
    inp = keras.Input(shape=(3,), name="features")
    x = keras.layers.Dense(4, name="hidden")(inp)
    out = GaussianJitter(name="jitter")(x)
    return randomize_weights(keras.Model(inp, out, name="random_layer"), seed)


def stateful_layer(seed: int = 0) -> keras.Model:
    inp = keras.Input(shape=(3,), name="features")
    x = keras.layers.Dense(4, name="hidden")(inp)
    out = CallCounter(name="counter")(x)
    model = keras.Model(inp, out, name="stateful_layer")
    rng = np.random.default_rng(seed)
    for w in model.get_layer("hidden").weights:
        w.assign(rng.normal(0.0, 0.5, size=tuple(w.shape)).astype("float32"))
    return model


MODELS = {
    "mlp": mlp,
    "two_inputs_list": two_inputs_list,
    "two_inputs_dict": two_inputs_dict,
    "cnn": cnn,
    "text_classifier": text_classifier,
    "gru": gru,
    "transformer": transformer,
    "subclassed": subclassed,
    "random_layer": random_layer,
    "stateful_layer": stateful_layer,
}
# How the models behave across calls (what the matrix compares).
STOCHASTIC = {"random_layer"}
STATEFUL = {"stateful_layer"}


def build(name: str, seed: int = 0) -> keras.Model:
    return MODELS[name](seed)


# Signature contract of each model: input names (flat, in signature order) and
# output names (in the order the model returns them).
INPUT_NAMES = {
    "mlp": ["features"],
    "two_inputs_list": ["x1", "x2"],
    "two_inputs_dict": ["x1", "x2"],
    "cnn": ["image"],
    "text_classifier": ["tokens"],
    "gru": ["sequence"],
    "transformer": ["embeddings"],
    "subclassed": ["inputs"],
    "random_layer": ["features"],
    "stateful_layer": ["features"],
}
OUTPUT_NAMES = {
    "mlp": ["logits"],
    "two_inputs_list": ["score"],
    "two_inputs_dict": ["score"],
    "cnn": ["probs"],
    "text_classifier": ["logits", "token_ids"],
    "gru": ["logits"],
    "transformer": ["logits"],
    "subclassed": ["output_0"],
    "random_layer": ["jitter"],
    "stateful_layer": ["counter"],
}
_INPUT_SHAPES = {
    "inputs": (3,), "features": (3,), "x1": (3,), "x2": (4,), "image": (32, 32, 3), "tokens": (5,),
    "sequence": (6, 4), "embeddings": (8, 16),
}


def sample_inputs(name: str, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Test inputs by input name (strings include out-of-vocabulary words)."""
    out = {}
    for input_name in INPUT_NAMES[name]:
        shape = (batch,) + _INPUT_SHAPES[input_name]
        if input_name == "tokens":
            pool = np.array(VOCAB + ["zebra", "[UNK]", ""], dtype=object)
            out[input_name] = rng.choice(pool, size=shape).astype(bytes)
        else:
            out[input_name] = rng.standard_normal(size=shape).astype("float32")
    return out


def structured(name: str, named: dict[str, np.ndarray]):
    """The inputs as the model takes them."""
    if name == "two_inputs_list":
        return [named["x1"], named["x2"]]
    if name == "two_inputs_dict":
        return {"x1": named["x1"], "x2": named["x2"]}
    return named[INPUT_NAMES[name][0]]


def source_outputs(name: str, model: keras.Model, named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs the model on this process' (source) backend; outputs by name.

    On JAX and torch a string tensor cannot enter a model, so the text
    classifier runs layer by layer: its StringLookup runs TF ops on every
    backend and hands a backend tensor to the rest, which runs on the backend.
    """
    if name == "text_classifier" and keras.backend.backend() != "tensorflow":
        import tensorflow as tf

        ids = model.get_layer("token_ids")(tf.constant(named["tokens"]))
        x = model.get_layer("embedding")(ids)
        x = model.get_layer("pool")(x)
        logits = model.get_layer("logits")(x)
        outputs = [logits, ids]
    else:
        outputs = model(structured(name, named), training=False)
    flat = keras.tree.flatten(outputs)
    return {n: np.asarray(keras.ops.convert_to_numpy(v)) for n, v in zip(OUTPUT_NAMES[name], flat)}
