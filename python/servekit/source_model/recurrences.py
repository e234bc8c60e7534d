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

With a fixed number of time steps the layer is unrolled (`unroll=True`):
each step is written out with the same arithmetic, TensorFlow's outputs
bit-identical, torch's loop a Python loop already. Keras 3.15's unrolled
code has two faults for a layer that goes backwards over a masked sequence
(the backward half of a masked `Bidirectional`): on TensorFlow it zeroes
the masked steps of the reversed outputs by the mask in time order, and on
torch it fails (`torch.flip` of a tuple). Such a layer runs forward here
over its reversed inputs and mask, which is what going backwards means, and
Keras's code then masks in the order the outputs come.

A sequence of unknown length cannot be unrolled. On TensorFlow it runs in
`loop_without_tensor_lists`: Keras's own `while` loop, step for step, with
each step's input read by a `Gather` and its output written into a tensor
of all the steps by a `DynamicUpdateSlice`, two ops LiteRT has, instead of
TensorLists.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from servekit import patching


@contextlib.contextmanager
def for_converters(model, fmt: str) -> Iterator[list[str]]:
    """Traces `model`'s recurrent layers step by step while the block runs,
    then restores them: the caller's model is left as it was.

    A layer over a fixed number of time steps is unrolled; over a sequence of
    unknown length, on TensorFlow and for LiteRT, it loops without
    TensorLists (`loop_without_tensor_lists`), and for the other formats as
    Keras loops (OpenVINO and tf2onnx convert TensorFlow's loop, and have no
    conversion for the `XlaDynamicUpdateSlice` the other one writes).

    Args:
        model: the Keras model about to be traced.
        fmt: the format the trace is for (`litert`, `openvino`, `onnx`,
            `torch`).

    Yields:
        The names of the layers changed.
    """
    changed = _step_by_step(model, without_tensor_lists=fmt == "litert")
    try:
        yield [layer.name for layer, _ in changed]
    finally:
        for layer, restore in changed:
            restore()


def _step_by_step(model, without_tensor_lists: bool) -> list[tuple[Any, Any]]:
    import keras

    changed = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not isinstance(layer, keras.layers.RNN) or layer.unroll:
            continue
        layer.inner_loop = _stepwise_inner_loop(layer, layer.inner_loop, without_tensor_lists)
        changed.append((layer, lambda layer=layer: delattr(layer, "inner_loop")))  # the class's method again
    return changed


def _stepwise_inner_loop(layer, inner_loop, without_tensor_lists: bool):
    """`layer.inner_loop`, unrolled over a fixed number of time steps, else
    (TensorFlow, `without_tensor_lists`) a loop without TensorLists, else
    Keras's own loop."""
    import keras

    unrolled = _forward_over_reversed(layer, inner_loop) if layer.go_backwards else inner_loop

    def stepwise_inner_loop(sequences, initial_state, mask, training=False):
        steps = keras.tree.flatten(sequences)[0].shape[1]
        if steps is None:
            if without_tensor_lists and keras.backend.backend() == "tensorflow":
                return _without_tensor_lists(inner_loop, sequences, initial_state, mask, training)
            return inner_loop(sequences, initial_state, mask, training=training)
        # Set for this call only: Keras's `call` refuses `unroll` before a sequence of unknown length.
        layer.unroll = True
        try:
            return unrolled(sequences, initial_state, mask, training=training)
        finally:
            layer.unroll = False

    return stepwise_inner_loop


def _without_tensor_lists(inner_loop, sequences, initial_state, mask, training):
    from keras.src import backend

    def not_fused(*args, **kwargs):
        raise NotImplementedError  # cuDNN's loop: the layers fall back to `backend.rnn`

    with patching.replaced(backend, rnn=loop_without_tensor_lists, lstm=not_fused, gru=not_fused):
        return inner_loop(sequences, initial_state, mask, training=training)


def loop_without_tensor_lists(step_function, inputs, initial_states, go_backwards=False, mask=None, constants=None,
                              unroll=False, input_length=None, time_major=False, zero_output_for_mask=False,
                              return_all_outputs=True):
    """Keras's TensorFlow `rnn` (`keras.src.backend.tensorflow.rnn.rnn`) as its
    `while` loop computes it, with the same arguments and results, over
    tensors instead of TensorLists: the same steps in the same order, so the
    same numbers. `unroll` and `input_length` are not used (Keras's layers
    pass the static length, unknown here)."""
    import tensorflow as tf
    from keras import tree

    def swap_batch_and_time(x):
        axes = list(range(len(x.shape)))
        axes[0], axes[1] = 1, 0
        return tf.transpose(x, axes)

    if not time_major:
        inputs = tree.map_structure(swap_batch_and_time, inputs)
    flat_inputs = [tf.reverse(x, [0]) if go_backwards else x for x in tree.flatten(inputs)]
    steps = tf.shape(flat_inputs[0])[0]
    if mask is not None:
        mask = tf.cast(mask, tf.bool)
        if len(mask.shape) == 2:
            mask = tf.expand_dims(mask, -1)
        if not time_major:
            mask = swap_batch_and_time(mask)
        if go_backwards:
            mask = tf.reverse(mask, [0])
    constants = tuple(constants or ())

    def step_input(time):
        return tree.pack_sequence_as(inputs, [tf.gather(x, time) for x in flat_inputs])

    def where_mask(mask_t, new, old):
        for _ in range(len(new.shape) - len(mask_t.shape)):
            mask_t = tf.expand_dims(mask_t, -1)
        return tf.where(tf.broadcast_to(mask_t, tf.shape(new)), new, old)

    # As in Keras: a first step, outside the loop, for the outputs' shapes and dtypes.
    output_time_zero, _ = step_function(step_input(0), tuple(initial_states) + constants)
    flat_zero_output = tuple(tf.zeros_like(o) for o in tree.flatten(output_time_zero))
    all_steps = steps_buffers(steps if return_all_outputs else 1, flat_zero_output)

    def step(time, all_outputs, previous_output, *states):
        output, new_states = step_function(step_input(time), tuple(states) + constants)
        flat_output, flat_new_states = tree.flatten(output), tree.flatten(new_states)
        if mask is not None:
            mask_t = tf.gather(mask, time)
            kept = flat_zero_output if zero_output_for_mask else previous_output
            flat_output = [where_mask(mask_t, o, k) for o, k in zip(flat_output, kept)]
            flat_new_states = [where_mask(mask_t, s, p) for s, p in zip(flat_new_states, tree.flatten(states))]
        all_outputs = written_at_step(time if return_all_outputs else 0, all_outputs, flat_output)
        return (time + 1, all_outputs, tuple(flat_output)) + tuple(
            tree.pack_sequence_as(initial_states, flat_new_states))

    final = tf.while_loop(lambda time, *_: time < steps, step,
                          (tf.constant(0, "int32"), all_steps, flat_zero_output) + tuple(initial_states))
    outputs = tree.pack_sequence_as(output_time_zero, list(final[1]))
    last_output = tree.pack_sequence_as(output_time_zero, list(final[2]))
    if not time_major:
        outputs = tree.map_structure(swap_batch_and_time, outputs)
    return last_output, outputs, final[3:]


def steps_buffers(steps, like) -> tuple:
    """Zeros to hold `steps` steps of each tensor of `like`: a loop's outputs,
    written by `written_at_step` instead of a TensorList."""
    import tensorflow as tf

    return tuple(tf.zeros(tf.concat([[steps], tf.shape(t)], 0), t.dtype) for t in like)


def written_at_step(step, buffers, values) -> tuple:
    """`buffers` (`steps_buffers`) with each of `values` written at `step`, by a
    `DynamicUpdateSlice`, which LiteRT has."""
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla

    return tuple(xla.dynamic_update_slice(b, v[None], tf.stack([step] + [0] * (len(b.shape) - 1)))
                 for b, v in zip(buffers, values))


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
