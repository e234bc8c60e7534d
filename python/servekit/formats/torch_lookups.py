"""Keras's integer lookup layers in a PyTorch program.

`IntegerLookup` (and any `IndexLookup` over integers) looks its inputs up in
a TensorFlow hash table on every backend: on torch, Keras converts the
inputs to TensorFlow and back, which `torch.export` cannot trace. While a
program is exported, `integer_lookups_as_comparisons` gives each such layer
a `call` in Keras ops, written from its table and settings as they are then:
every input is compared with every key, and takes the value of the key it
equals (the first, as keys are unique), else the table's default. Exact, in
memory the inputs' size times the vocabulary's (as the LiteRT trace does it:
`servekit.formats.builtin_trace`). Then, as Keras's `IndexLookup.call`:
the mask token maps to the mask value; out-of-vocabulary inputs to the OOV
index, or with several OOV indices to `input mod n` past the OOV start; and
the indices are encoded for `output_mode` (`one_hot`, `multi_hot`,
`count`, `tf_idf`) with comparisons against the indices' range.

What this cannot write is refused with an error naming the layer: string
vocabularies (no strings in a program), `num_oov_indices=0` (Keras asserts
at run time that every input is in the vocabulary), FarmHash OOV buckets and
sparse outputs; and, before torch.export sees them, `Hashing` and
`HashedCrossing` layers (TensorFlow's string hashes on every backend), which
torch.export failed on with TensorFlow's own error.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import numpy as np

from servekit.errors import ExportError


@contextlib.contextmanager
def integer_lookups_as_comparisons(model, model_name: str) -> Iterator[None]:
    """While the block exports `model`, each integer `IndexLookup` layer in it
    computes its lookup with comparisons in Keras ops.

    Raises:
        ExportError: a lookup layer this cannot write (the module docstring
            says which), naming the layer and what to do instead.
    """
    from keras.src.layers.preprocessing.index_lookup import IndexLookup

    from servekit.source_model.kinds import all_layers

    hashing = tensorflow_hashing_layers(model)
    if hashing:
        raise ExportError(
            f"Model '{model_name}': layer '{hashing[0].name}' ({type(hashing[0]).__name__}) hashes its inputs "
            "with TensorFlow's string hashes on every Keras backend, which a PyTorch program cannot hold: hash "
            "before the model (e.g. in the input pipeline), or export format='tf_saved_model'.",
            model=model_name, reason="unsupported_layer")
    layers = [layer for layer in all_layers(model) if isinstance(layer, IndexLookup)]
    calls = {id(layer): _comparison_call(layer, model_name) for layer in layers}
    for layer in layers:
        layer.call = calls[id(layer)]
    try:
        yield
    finally:
        for layer in layers:
            del layer.call  # the class's call again


def tensorflow_hashing_layers(model) -> list:
    """The `Hashing` and `HashedCrossing` layers of `model`: Keras hashes their
    inputs' string forms with TensorFlow's FarmHash (SipHash with a salt) on
    every backend, which nothing traced under JAX or torch can call."""
    from keras.src.layers.preprocessing.hashed_crossing import HashedCrossing
    from keras.src.layers.preprocessing.hashing import Hashing

    from servekit.source_model.kinds import all_layers

    return [layer for layer in all_layers(model) if isinstance(layer, (Hashing, HashedCrossing))]


def hashing_outside_onnx_converters(model) -> Optional[str]:
    """Why jax2onnx and torch.onnx cannot convert `model` (a layer of
    `tensorflow_hashing_layers`), or None."""
    hashing = tensorflow_hashing_layers(model)
    if not hashing:
        return None
    return (f"layer '{hashing[0].name}' ({type(hashing[0]).__name__}) hashes with TensorFlow's string hashes on "
            "every backend, which neither jax2onnx nor torch.onnx can capture")


def _refusal(layer, model_name: str, why: str) -> ExportError:
    return ExportError(
        f"Model '{model_name}': layer '{layer.name}' ({type(layer).__name__}) {why}, which a PyTorch program cannot "
        "hold: do the lookup before the model (e.g. in the input pipeline), or export format='tf_saved_model', "
        "'onnx' or 'openvino'.", model=model_name, reason="unsupported_layer")


def _comparison_call(layer, model_name: str) -> Callable:
    """`layer.call` with the lookup and encoding in Keras ops (see the module docstring)."""
    import tensorflow as tf

    from keras import ops

    if tf.as_dtype(layer._key_dtype) == tf.string or tf.as_dtype(layer._value_dtype) == tf.string:
        raise _refusal(layer, model_name, "looks strings up in a TensorFlow table")
    if not layer.invert and layer.num_oov_indices == 0:
        raise _refusal(layer, model_name, "asserts at run time that every input is in its vocabulary "
                                          "(num_oov_indices=0)")
    if not layer.invert and layer.num_oov_indices > 1 and layer.oov_method == "farmhash":
        raise _refusal(layer, model_name, "hashes out-of-vocabulary inputs with FarmHash")
    if layer.sparse:
        raise _refusal(layer, model_name, "returns a sparse tensor")
    layer._ensure_known_vocab_size()
    keys, values = (np.asarray(t) for t in layer.lookup_table.export())
    key_dtype, value_dtype = tf.as_dtype(layer._key_dtype).name, tf.as_dtype(layer._value_dtype).name
    default = np.asarray(layer._default_value, value_dtype)
    has_mask = layer.mask_token is not None
    mask_key = np.asarray(layer._mask_key) if has_mask else None
    mask_value = np.asarray(layer._mask_value) if has_mask else None
    hashed_oov = not layer.invert and layer.num_oov_indices > 1
    num_oov, oov_start = layer.num_oov_indices, layer._oov_start_index()
    mode = layer.output_mode
    depth = layer.max_tokens if layer.pad_to_max_tokens else layer._frozen_vocab_size
    idf = np.asarray(layer.idf_weights_const) if mode == "tf_idf" else None

    def lookup(x):
        if keys.size == 0:
            return ops.full(ops.shape(x), default, dtype=value_dtype)
        hits = ops.equal(ops.expand_dims(x, -1), ops.convert_to_tensor(keys, key_dtype))
        found = ops.take(ops.convert_to_tensor(values, value_dtype), ops.argmax(ops.cast(hits, "int32"), axis=-1))
        return ops.where(ops.any(hits, axis=-1), found, default)

    def call(inputs):
        x = ops.convert_to_tensor(inputs, key_dtype)
        scalar = len(x.shape) == 0
        if scalar:
            x = ops.expand_dims(x, -1)
        lookups = lookup(x)
        if has_mask:
            lookups = ops.where(ops.equal(x, mask_key), mask_value, lookups)
        if hashed_oov:
            lookups = ops.where(ops.equal(lookups, default), ops.mod(x, num_oov) + oov_start, lookups)
        if mode == "int":
            return ops.squeeze(lookups, -1) if scalar else lookups
        if mode == "one_hot" and lookups.shape[-1] == 1:
            lookups = ops.squeeze(lookups, -1)
        one_hot = ops.equal(ops.expand_dims(lookups, -1), ops.arange(depth, dtype=value_dtype))
        if mode == "one_hot":
            return ops.cast(one_hot, value_dtype)
        if mode == "multi_hot":
            return ops.cast(ops.any(one_hot, axis=-2), value_dtype)
        counts = ops.sum(ops.cast(one_hot, value_dtype), axis=-2)
        if mode == "count":
            return counts
        return ops.cast(counts, idf.dtype.name) * ops.convert_to_tensor(idf)  # tf_idf

    return call
