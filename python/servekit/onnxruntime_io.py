"""Running an ONNX Runtime session from NumPy, bfloat16 included.

ONNX Runtime's Python API has no NumPy type for bfloat16: a session whose
inputs or outputs are bfloat16 (a model under the `bfloat16` dtype policy)
cannot be fed or read through `InferenceSession.run` ("No corresponding Numpy
type for Tensor Type. bfloat16"). `run` passes such tensors as `OrtValue`s over
their 16-bit patterns and hands them back as `ml_dtypes.bfloat16` arrays, the
type Keras and JAX use; every other tensor goes through `run` unchanged.
"""

from __future__ import annotations

import ctypes
from typing import Any, Mapping, Sequence

import numpy as np

_BFLOAT16 = "tensor(bfloat16)"


def run(session: Any, output_names: Sequence[str], feeds: Mapping[str, Any]) -> list[np.ndarray]:
    """`session.run(output_names, feeds)`, with bfloat16 inputs and outputs.

    Args:
        session: an `onnxruntime.InferenceSession`.
        output_names: the outputs to fetch, in order.
        feeds: input name -> array (bfloat16 inputs as `ml_dtypes.bfloat16`, or
            any float array, which is rounded to bfloat16).

    Returns:
        The outputs, bfloat16 ones as `ml_dtypes.bfloat16` arrays.
    """
    inputs = {i.name: i.type for i in session.get_inputs()}
    outputs = {o.name: o.type for o in session.get_outputs()}
    if _BFLOAT16 not in inputs.values() and not any(outputs[n] == _BFLOAT16 for n in output_names):
        return session.run(list(output_names), dict(feeds))
    import ml_dtypes
    import onnxruntime as ort
    from onnx import TensorProto

    values = {}
    for name, value in feeds.items():
        if inputs.get(name) == _BFLOAT16:
            bits = np.ascontiguousarray(np.asarray(value).astype(ml_dtypes.bfloat16)).view(np.uint16)
            values[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, TensorProto.BFLOAT16)
        else:
            values[name] = ort.OrtValue.ortvalue_from_numpy(np.asarray(value))
    results = session.run_with_ort_values(list(output_names), values)
    return [_bfloat16_array(r) if outputs[n] == _BFLOAT16 else r.numpy() for n, r in zip(output_names, results)]


def _bfloat16_array(value: Any) -> np.ndarray:
    """A copy of a bfloat16 `OrtValue` on the CPU as an `ml_dtypes.bfloat16` array."""
    import ml_dtypes

    shape = tuple(value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.zeros(shape, ml_dtypes.bfloat16)
    bits = (ctypes.c_uint16 * count).from_address(value.data_ptr())
    return np.frombuffer(bits, np.uint16).copy().view(ml_dtypes.bfloat16).reshape(shape)
