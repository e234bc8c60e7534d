"""One small model per family of layers and `keras.ops` that real models use.

The op and layer long tail of the support matrix (tests/python/test_layer_families.py):
each family packs the layers and ops of one kind into a Functional model with named
inputs, small enough to export in seconds on any backend. `FAMILIES` maps a family's
name to its builder; `sample_inputs` draws inputs each model accepts (ids in range,
padded masks with at least one valid position per row).
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

VOCAB = 20  # ids of the token inputs
SEQ = 6     # the static sequence length of the token inputs


def _seeded(build: Callable[[], keras.Model]) -> Callable[[], keras.Model]:
    def wrapped() -> keras.Model:
        keras.utils.set_random_seed(11)
        return build()

    wrapped.__name__ = build.__name__
    return wrapped


@_seeded
def recurrent_masked() -> keras.Model:
    """LSTM and bidirectional GRU over a padded sequence (Embedding mask_zero)."""
    ids = keras.Input(shape=(SEQ,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="embed")(ids)
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(4), name="bigru")(x)
    return keras.Model(ids, keras.layers.Dense(2, name="logits")(x), name="recurrent_masked")


@_seeded
def variable_length_rnn() -> keras.Model:
    """Bidirectional LSTMs over sequences of any length (a tagger's encoder)."""
    frames = keras.Input(shape=(None, 4), name="frames")
    x = keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True), name="bilstm")(frames)
    x = keras.layers.Bidirectional(keras.layers.LSTM(3), name="bilstm_last")(x)
    return keras.Model(frames, keras.layers.Dense(2, name="logits")(x), name="variable_length_rnn")


@_seeded
def simple_rnn() -> keras.Model:
    """SimpleRNN returning sequences, then a time-distributed Dense."""
    x_in = keras.Input(shape=(SEQ, 3), name="series")
    x = keras.layers.SimpleRNN(5, return_sequences=True, name="rnn")(x_in)
    x = keras.layers.TimeDistributed(keras.layers.Dense(2), name="per_step")(x)
    return keras.Model(x_in, x, name="simple_rnn")


@_seeded
def causal_attention() -> keras.Model:
    """Self-attention with a causal mask and a padding mask, a pre-norm block."""
    x_in = keras.Input(shape=(SEQ, 8), name="hidden_states")
    mask = keras.Input(shape=(SEQ,), dtype="int32", name="padding_mask")
    h = keras.layers.LayerNormalization(name="norm")(x_in)
    attention_mask = keras.ops.cast(mask[:, None, :], "bool")
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h, attention_mask=attention_mask,
                                                          use_causal_mask=True)
    x = keras.layers.Add(name="residual")([x_in, h])
    return keras.Model([x_in, mask], keras.layers.Dense(3, activation="gelu", name="ffn")(x),
                       name="causal_attention")


@_seeded
def convolutions() -> keras.Model:
    """Strided, depthwise, separable and transposed convolutions, pooling, batch norm."""
    x_in = keras.Input(shape=(16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(x_in)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.SeparableConv2D(6, 3, padding="valid", name="separable")(x)
    x = keras.layers.Conv2DTranspose(4, 2, strides=2, name="transposed")(x)
    x = keras.layers.MaxPooling2D(name="max_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(x_in, keras.layers.Dense(2, name="logits")(x), name="convolutions")


@_seeded
def causal_conv1d() -> keras.Model:
    """Dilated causal Conv1D and average pooling over a sequence."""
    x_in = keras.Input(shape=(12, 3), name="signal")
    x = keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2, name="causal")(x_in)
    x = keras.layers.AveragePooling1D(2, name="avg_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(x_in, keras.layers.Dense(2, name="logits")(x), name="causal_conv1d")


@_seeded
def dynamic_image() -> keras.Model:
    """Any image size: convolutions, resizing to a fixed size, upsampling."""
    x_in = keras.Input(shape=(None, None, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x_in)
    x = keras.layers.Resizing(8, 8, name="resize")(x)
    x = keras.layers.UpSampling2D(2, name="upsample")(x)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(x_in, keras.layers.Dense(2, name="logits")(x), name="dynamic_image")


@_seeded
def numeric_preprocessing() -> keras.Model:
    """Normalization (adapted), Rescaling, Discretization, CategoryEncoding."""
    x_in = keras.Input(shape=(4,), name="features")
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(np.random.default_rng(0).normal(3.0, 2.0, size=(64, 4)).astype("float32"))
    x = norm(x_in)
    x = keras.layers.Rescaling(0.5, offset=1.0, name="rescale")(x)
    bins = keras.layers.Discretization(bin_boundaries=[-1.0, 0.0, 1.0], name="bins")(x_in)
    onehot = keras.layers.CategoryEncoding(num_tokens=4, output_mode="multi_hot", name="multi_hot")(bins)
    x = keras.layers.Concatenate(name="concat")([x, onehot])
    return keras.Model(x_in, keras.layers.Dense(2, name="logits")(x), name="numeric_preprocessing")


@_seeded
def integer_lookup() -> keras.Model:
    """IntegerLookup (with an out-of-vocabulary id) into an Embedding."""
    ids = keras.Input(shape=(3,), dtype="int64", name="item_ids")
    lookup = keras.layers.IntegerLookup(vocabulary=[3, 7, 11, 19], name="lookup")
    x = keras.layers.Embedding(lookup.vocabulary_size(), 4, name="embed")(lookup(ids))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(ids, keras.layers.Dense(2, name="logits")(x), name="integer_lookup")


@_seeded
def string_lookup() -> keras.Model:
    """StringLookup of a string input (with an out-of-vocabulary token) into an Embedding."""
    words = keras.Input(shape=(3,), dtype="string", name="words")
    lookup = keras.layers.StringLookup(vocabulary=["red", "green", "blue"], name="lookup")
    x = keras.layers.Embedding(lookup.vocabulary_size(), 4, name="embed")(lookup(words))
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(words, keras.layers.Dense(2, name="logits")(x), name="string_lookup")


class SortingOps(keras.layers.Layer):
    """sort, top_k, cumsum, argmax, logsumexp and where over the last axis."""

    def call(self, x):
        values, indices = keras.ops.top_k(x, k=2)
        return {
            "sorted": keras.ops.sort(x, axis=-1),
            "top_values": values,
            "top_indices": keras.ops.cast(indices, "int32"),
            "cumsum": keras.ops.cumsum(x, axis=-1),
            "argmax": keras.ops.cast(keras.ops.argmax(x, axis=-1), "int32"),
            "logsumexp": keras.ops.logsumexp(x, axis=-1),
            "clipped": keras.ops.where(x > 0, x, keras.ops.clip(x, -0.5, 0.0)),
        }


@_seeded
def sorting_ops() -> keras.Model:
    x_in = keras.Input(shape=(5,), name="scores")
    return keras.Model(x_in, SortingOps(name="ops")(x_in), name="sorting_ops")


class FixedLoop(keras.layers.Layer):
    """A fixed-trip-count loop (fori_loop) and a data-independent `cond`."""

    def call(self, x):
        x = keras.ops.fori_loop(0, 3, lambda i, acc: acc * 0.5 + keras.ops.tanh(acc), x)
        return keras.ops.cond(keras.ops.shape(x)[-1] > 2, lambda: x + 1.0, lambda: x - 1.0)


@_seeded
def control_flow() -> keras.Model:
    x_in = keras.Input(shape=(4,), name="features")
    return keras.Model(x_in, FixedLoop(name="loop")(x_in), name="control_flow")


@_seeded
def activations() -> keras.Model:
    """The activation family: gelu (both), silu, softplus, elu, selu, celu, hard_sigmoid, mish."""
    x_in = keras.Input(shape=(6,), name="features")
    outs = {name: keras.layers.Activation(name, name=name)(x_in)
            for name in ("gelu", "silu", "softplus", "elu", "selu", "celu", "hard_sigmoid", "mish")}
    outs["gelu_tanh"] = keras.layers.Lambda(lambda t: keras.ops.gelu(t, approximate=True), name="gelu_tanh")(x_in)
    return keras.Model(x_in, outs, name="activations")


@_seeded
def reshaping() -> keras.Model:
    """Reshape, Permute, RepeatVector, Cropping, ZeroPadding, EinsumDense."""
    x_in = keras.Input(shape=(4, 6), name="features")
    x = keras.layers.Reshape((6, 4), name="reshape")(x_in)
    x = keras.layers.Permute((2, 1), name="permute")(x)
    x = keras.layers.ZeroPadding1D(1, name="pad")(x)
    x = keras.layers.Cropping1D((0, 2), name="crop")(x)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(4, 3), name="einsum")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.RepeatVector(2, name="repeat")(keras.layers.Dense(3, name="dense")(x))
    return keras.Model(x_in, x, name="reshaping")


@_seeded
def quantized_dense() -> keras.Model:
    """Dense layers quantized to int8 with Keras's own `quantize("int8")`."""
    x_in = keras.Input(shape=(8,), name="features")
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2, name="logits")(x), name="quantized_dense")
    model.quantize("int8")
    return model


FAMILIES: dict[str, Callable[[], keras.Model]] = {
    fn.__name__: fn for fn in (
        recurrent_masked, variable_length_rnn, simple_rnn, causal_attention, convolutions, causal_conv1d, dynamic_image,
        numeric_preprocessing, integer_lookup, string_lookup, sorting_ops, control_flow, activations,
        reshaping, quantized_dense)
}


def sample_inputs(model: keras.Model, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs `model` accepts at `batch`, by input name: token ids in the vocabulary with
    trailing padding (never a whole row), masks matching the ids, item ids from the
    lookup vocabulary plus an unknown one, words plus an unknown word, a 12x10 image for
    a dynamic image input."""
    inputs = {}
    for tensor in model.inputs:
        shape = tuple(batch if i == 0 else (d if d is not None else (12, 10)[i - 1])
                      for i, d in enumerate(tensor.shape))
        name = tensor.name
        if name == "token_ids":
            ids = rng.integers(1, VOCAB, size=shape)
            lengths = rng.integers(1, shape[1] + 1, size=batch)
            ids[np.arange(shape[1])[None, :] >= lengths[:, None]] = 0
            inputs[name] = ids.astype("int32")
        elif name == "padding_mask":
            lengths = rng.integers(1, shape[1] + 1, size=batch)
            inputs[name] = (np.arange(shape[1])[None, :] < lengths[:, None]).astype("int32")
        elif name == "item_ids":
            inputs[name] = rng.choice(np.array([3, 7, 11, 19, 42]), size=shape).astype("int64")
        elif name == "words":
            inputs[name] = rng.choice(np.array([b"red", b"green", b"blue", b"violet"], dtype=object), size=shape)
        else:
            inputs[name] = rng.standard_normal(shape).astype("float32")
    return inputs
