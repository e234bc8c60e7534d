"""Running the source model on flat inputs, on its own backend."""

from __future__ import annotations

import functools
import weakref
from typing import Callable, Optional, Sequence

import numpy as np

from servekit.errors import ExportError
from servekit.source_model.input_layout import InputLayout, resolve_input_layout
from servekit.source_model.kinds import is_functional
from servekit.source_model.outputs import model_output_names


def to_numpy(x) -> np.ndarray:
    """Converts a backend tensor (or TF tensor) to a NumPy array."""
    import keras

    if type(x).__module__.startswith("tensorflow"):
        return np.asarray(x.numpy())
    try:
        return np.asarray(keras.ops.convert_to_numpy(x))
    except (TypeError, ValueError, AttributeError):  # already host data
        return np.asarray(x)


def call_functional_raw(model, flat_inputs):
    """Runs a Functional model layer by layer without converting its inputs to
    backend tensors (needed for string inputs on JAX and torch, where the
    preprocessing layers run TensorFlow ops on any backend). Nested Functional
    models are run the same way."""
    import keras

    def operation_fn(op):
        if is_functional(op):
            def call_nested(*args, **kwargs):
                outs = op._run_through_graph(keras.tree.flatten(args[0]), operation_fn=operation_fn)
                return outs[0] if isinstance(outs, (list, tuple)) and len(outs) == 1 else outs

            return call_nested
        if isinstance(op, keras.layers.Layer):
            return functools.partial(op, training=False)
        return op

    outputs = model._run_through_graph(list(flat_inputs), operation_fn=operation_fn)
    return keras.tree.flatten(outputs)


def call_model_flat(model, layout: InputLayout, flat_inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Calls `model` in inference mode on flat inputs; returns flat NumPy outputs."""
    import keras

    backend = keras.backend.backend()
    has_strings = any(s.dtype == "string" for s in layout.flat)
    if has_strings and backend != "tensorflow" and is_functional(model):
        import tensorflow as tf  # the lookup layers run TF ops on every backend

        flat = call_functional_raw(model, [tf.constant(v) for v in flat_inputs])
        return [to_numpy(x) for x in flat]
    if has_strings and backend != "tensorflow":
        raise ExportError(
            f"Model '{model.name}' takes string inputs, which the {backend} backend cannot hold as tensors, "
            "and it is not a Functional model, so servekit cannot run it to compute reference outputs. "
            "Build it as a Functional model (keras.Input(dtype='string') -> StringLookup -> ...).",
            model=model.name, reason="unsupported_input")
    args = layout.pack(list(flat_inputs))
    jitted = _jitted_inference(model) if backend == "jax" else None
    outputs = jitted(*args) if jitted is not None else model(*args, training=False)
    return [to_numpy(x) for x in keras.tree.flatten(outputs)]


# Each JAX model's compiled inference call (jax.jit traces it again for each new input shape).
_JITTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _jitted_inference(model) -> Optional[Callable]:
    """`model(*args, training=False)` compiled with `jax.jit`, as Keras's
    `predict` runs a JAX model, or None where Keras would not compile it
    either (`run_eagerly`, `jit_compile=False`, a layer without
    `supports_jit`) or cannot (an unbuilt model).

    In JAX's eager mode each op compiles on its own for each new shape: a
    MobileNetV3's five reference calls took 16.1 s eagerly and 2.6 s jitted
    (2 cores), outputs equal to 1.5e-6. The model's variables are the
    compiled function's arguments, not constants folded into it, and the
    non-trainable ones it updates (seed generators, counters) are assigned
    back, so random and stateful models behave as they do eagerly. A model
    that jax.jit cannot trace (Python control flow on values, data-dependent
    shapes, unseeded random ops) or that updates a variable it does not
    track (a seed generator outside its layers) runs eagerly from then on.
    """
    import keras
    from keras.src.trainers.trainer import model_supports_jit

    if (not isinstance(model, keras.Model) or not model.built or model.run_eagerly or not model.jit_compile
            or not model_supports_jit(model)):
        return None
    if _JITTED.get(model, True) is None:  # found untraceable before
        return None
    if model not in _JITTED:
        import jax

        # Weakly: the cache's value must not keep its key, the model and its weights, alive.
        model_ref = weakref.ref(model)

        def inference(values, *args):
            traced = model_ref()
            variables = traced.variables
            with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
                outputs = traced(*args, training=False)
            if set(scope.state_mapping) - {id(v) for v in variables}:
                raise _UntrackedUpdate()
            # The non-trainable ones only: returning the weights would copy them.
            return outputs, [scope.get_current_value(v) for v in traced.non_trainable_variables]

        _JITTED[model] = jax.jit(inference)
    compiled = _JITTED[model]

    def call(*args):
        import jax

        try:
            outputs, updated = compiled([v.value for v in model.variables], *args)
        except (jax.errors.JAXTypeError, jax.errors.JAXIndexError, _UntrackedUpdate, ValueError, TypeError):
            # Not traceable as it runs eagerly: as Keras calls it (which raises a model's own error again).
            _JITTED[model] = None
            return model(*args, training=False)
        for variable, value in zip(model.non_trainable_variables, updated):
            variable.assign(value)
        return outputs

    return call


class _UntrackedUpdate(Exception):
    """A jitted call updated a variable that is not the model's: its update would be lost."""


def reference_outputs(model, inputs, input_signature=None) -> dict[str, np.ndarray]:
    """Runs `model` on its own (source) backend and names its outputs.

    Args:
        model: a Keras model.
        inputs: a dict keyed by input name, a flat list of arrays, or the
            structure `model` is called with.
        input_signature: optional, as for `servekit.export`.

    Returns:
        A dict from output name (the SavedModel signature key / ONNX output
        name `servekit.export` gives it) to a NumPy array.

    Example:

    ```python
    outs = servekit.source_model.reference_outputs(model, {"features": x})
    outs["logits"].shape  # (batch, 2)
    ```
    """
    layout = resolve_input_layout(model, input_signature)
    flat = layout.coerce(inputs)
    names = model_output_names(model, layout)
    values = call_model_flat(model, layout, flat)
    return dict(zip(names, values))
