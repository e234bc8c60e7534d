"""Recurrent layers traced step by step, for the converters that need it.

A Keras recurrent layer (LSTM, GRU, SimpleRNN, any `keras.layers.RNN`, in a
`Bidirectional` or not) runs its time steps in a loop, and two converters
cannot take the loop as Keras traces it:

- LiteRT: on TensorFlow the loop is a `while` over TensorLists, which
  LiteRT's built-in ops lower only with a static element shape (a dynamic
  batch rules it out), and LiteRT's runtime has no Flex delegate to run
  TensorFlow's own TensorList ops.
- torch.export: on torch the loop sizes its per-step output list by
  iterating the first step's output over the batch (`list(out)` in Keras's
  torch `rnn`), which fixes the batch to the sample's size ("Constraints
  violated (batch)").

Unrolled (`unroll=True`), the same layer writes out each step with the same
arithmetic: TensorFlow's outputs are bit-identical, torch's loop was a
Python loop already. Keras 3.15's unrolled code has two faults for a layer
that goes backwards over a masked sequence (the backward half of a masked
`Bidirectional`): on TensorFlow it zeroes the masked steps of the reversed
outputs by the mask in time order, and on torch it fails (`torch.flip` of a
tuple). Such a layer runs forward here over its reversed inputs and mask,
which is what going backwards means, and Keras's code then masks in the
order the outputs come.

Unrolling needs a fixed number of time steps: Keras raises `ValueError:
Cannot unroll a RNN if the time dimension is undefined` otherwise
(`cannot_unroll`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def unrolled(model) -> Iterator[list[str]]:
    """Unrolls `model`'s recurrent layers while the block runs (a trace), then
    restores them: the caller's model is left as it was.

    Yields:
        The names of the layers changed.
    """
    changed = _unroll(model)
    try:
        yield [layer.name for layer, _ in changed]
    finally:
        for layer, restore in changed:
            restore()


def cannot_unroll(error: ValueError) -> bool:
    """Whether `error` is Keras refusing to unroll a recurrence of unknown length."""
    return "Cannot unroll a RNN" in str(error)


def _unroll(model) -> list[tuple[Any, Any]]:
    import keras

    changed = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not isinstance(layer, keras.layers.RNN) or layer.unroll:
            continue
        layer.unroll = True
        wrapped = layer.go_backwards
        if wrapped:
            layer.inner_loop = _forward_over_reversed(layer, layer.inner_loop)

        def restore(layer=layer, wrapped=wrapped):
            layer.unroll = False
            if wrapped:
                del layer.inner_loop  # the class's method again
        changed.append((layer, restore))
    return changed


def _forward_over_reversed(layer, inner_loop):
    """`layer.inner_loop` (go_backwards=True) that runs forward over the reversed
    sequences and mask: the same steps in the same order, outputs in the
    order they come, as Keras returns them going backwards."""
    import keras
    from keras import ops

    def forward_inner_loop(sequences, initial_state, mask, training=False):
        if keras.tree.is_nested(mask):
            mask = mask[0]
        if mask is None:  # Keras's unrolled code goes backwards correctly without a mask
            return inner_loop(sequences, initial_state, mask, training=training)
        sequences = keras.tree.map_structure(lambda s: ops.flip(s, axis=1), sequences)
        mask = ops.flip(mask, axis=1)
        layer.go_backwards = False
        try:
            return inner_loop(sequences, initial_state, mask, training=training)
        finally:
            layer.go_backwards = True

    return forward_inner_loop
