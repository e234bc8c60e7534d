"""Low-precision layers traced in float32, for the converters without their kernels.

A Keras layer under the `float16`, `mixed_float16`, `bfloat16` or
`mixed_bfloat16` dtype policy computes in that dtype. Two converters cannot
take such a trace:

- LiteRT: its built-in kernels have no float16 or bfloat16 `MatMul`,
  `BiasAdd`, convolution, ...; the converter leaves TensorFlow ops (Flex ops)
  that LiteRT's runtime cannot run.
- OpenVINO: its TensorFlow frontend has no bfloat16 constants (GELU's
  coefficients, a traced function's weights).

Serving runtimes run such models in float32 anyway (LiteRT's own float16
models store float16 weights and compute in float32). While
`computed_in_float32` is entered, each such layer computes in float32: its
inputs are converted to float32, its variables read as float32 (Keras's
autocast; float16 and bfloat16 weights widen exactly) and the tensors it
built in its compute dtype (`Normalization`'s mean and variance) are
float32 too; the layers are restored afterwards. The artifact then differs from
the source by the roundings the source makes in its low precision, which the
model's verification tolerance (`servekit.verification.tolerances_for`: the
low-precision dtype's for a model that computes in it) bounds. The trace
computes outputs in float32 where the source returns float16 or bfloat16;
the caller casts them back to the source's dtypes at the signature
(`servekit.saved_model.build_module`'s `output_dtypes`; for OpenVINO, whose
frontend leaves such a cast untyped, the IR's outputs are typed after the
conversion), so the artifact's signature is the model's.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence


def _float32_compute(variable_dtype: str):
    """A dtype policy computing in float32 over variables of `variable_dtype`
    (Keras names no such policy: `float16` and `bfloat16` store in the dtype
    they compute in)."""
    import keras

    policy = keras.dtype_policies.DTypePolicy("float32")
    policy._variable_dtype = variable_dtype
    return policy


@contextlib.contextmanager
def computed_in_float32(model, dtypes: Sequence[str]) -> Iterator[list[str]]:
    """Traces every layer of `model` that computes in one of `dtypes` in
    float32 while the block runs, then restores their policies: the caller's
    model is left as it was.

    Args:
        model: the Keras model (or layer) about to be traced.
        dtypes: the compute dtypes to widen (`"float16"`, `"bfloat16"`).

    Yields:
        The names of the layers changed.

    Example:

    ```python
    with computed_in_float32(model, ("float16", "bfloat16")):
        concrete = tf.function(model).get_concrete_function(spec)
    ```
    """
    import keras

    changed, built = [], []
    for layer in layers_computing_in(model, dtypes):
        # Set directly, not through the `dtype_policy` setter: a layer under a
        # DTypePolicyMap keeps the map, which the setter would write into.
        changed.append((layer, layer._dtype_policy, layer.autocast))
        layer._dtype_policy = _float32_compute(layer.variable_dtype)
        # A layer that does not autocast (Keras's `Embedding`) reads its variables in their
        # own dtype when called inside another layer's autocast scope: a bfloat16 table
        # gathered in bfloat16 inside a decoder backbone, a Flex op for LiteRT.
        layer.autocast = True
        for name, value in _tensors_in(layer, dtypes):
            built.append((layer, name, value))
            setattr(layer, name, keras.ops.cast(value, "float32"))
    try:
        yield [layer.name for layer, _, _ in changed]
    finally:
        for layer, name, value in built:
            setattr(layer, name, value)
        for layer, policy, autocast in changed:
            layer._dtype_policy = policy
            layer.autocast = autocast


def layers_computing_in(model, dtypes: Sequence[str]) -> list:
    """The layers of `model` (itself included) whose compute dtype is one of `dtypes`."""
    from servekit.source_model.kinds import all_layers

    if not dtypes:
        return []
    return [layer for layer in all_layers(model)
            if getattr(layer, "_dtype_policy", None) is not None and layer.compute_dtype in dtypes]


def _tensors_in(layer, dtypes: Sequence[str]) -> list[tuple[str, object]]:
    """The attributes of `layer` that hold a tensor of one of `dtypes` (not a
    variable: a tensor it built, in its compute dtype)."""
    import keras

    return [(name, value) for name, value in vars(layer).items()
            if not isinstance(value, keras.Variable) and keras.ops.is_tensor(value)
            and keras.backend.standardize_dtype(value.dtype) in dtypes]
