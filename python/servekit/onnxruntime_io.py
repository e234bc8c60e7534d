"""Running an ONNX Runtime session from NumPy, bfloat16 included.

ONNX Runtime's Python API has no NumPy type for bfloat16: a session whose
inputs or outputs are bfloat16 (a model under the `bfloat16` dtype policy)
cannot be fed or read through `InferenceSession.run` ("No corresponding Numpy
type for Tensor Type. bfloat16"). `SessionRunner` passes such tensors as `OrtValue`s over
their 16-bit patterns and hands them back as `ml_dtypes.bfloat16` arrays, the
type Keras and JAX use; a session without bfloat16 goes through `InferenceSession.run` unchanged.
"""

from __future__ import annotations

import ctypes
from typing import Any, Mapping, Sequence

import numpy as np

_BFLOAT16 = "tensor(bfloat16)"


class SessionRunner:
    """`session.run(output_names, feeds)`, with bfloat16 inputs and outputs.

    The session's bfloat16 tensors are looked up once, here, not on every call.

    Args:
        session: an `onnxruntime.InferenceSession`.

    Example:

    ```python
    runner = SessionRunner(onnxruntime.InferenceSession("model.onnx"))
    (logits,) = runner.run(["logits"], {"features": x})
    ```
    """

    def __init__(self, session: Any):
        self.session = session
        self._bfloat16_inputs = {i.name for i in session.get_inputs() if i.type == _BFLOAT16}
        self._bfloat16_outputs = {o.name for o in session.get_outputs() if o.type == _BFLOAT16}

    def run(self, output_names: Sequence[str], feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """Runs the session.

        Args:
            output_names: the outputs to fetch, in order.
            feeds: input name -> array (bfloat16 inputs as `ml_dtypes.bfloat16`,
                or any float array, which is rounded to bfloat16).

        Returns:
            The outputs, bfloat16 ones as `ml_dtypes.bfloat16` arrays.
        """
        if not self._bfloat16_inputs and not self._bfloat16_outputs.intersection(output_names):
            return self.session.run(list(output_names), dict(feeds))
        import ml_dtypes
        import onnxruntime as ort
        from onnx import TensorProto

        values = {}
        for name, value in feeds.items():
            if name in self._bfloat16_inputs:
                bits = np.ascontiguousarray(np.asarray(value).astype(ml_dtypes.bfloat16)).view(np.uint16)
                values[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, TensorProto.BFLOAT16)
            else:
                values[name] = ort.OrtValue.ortvalue_from_numpy(np.asarray(value))
        results = self.session.run_with_ort_values(list(output_names), values)
        return [_bfloat16_array(r) if n in self._bfloat16_outputs else r.numpy() for n, r in zip(output_names, results)]


def _bfloat16_array(value: Any) -> np.ndarray:
    """A copy of a bfloat16 `OrtValue` on the CPU as an `ml_dtypes.bfloat16` array."""
    import ml_dtypes

    shape = tuple(value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.zeros(shape, ml_dtypes.bfloat16)
    bits = (ctypes.c_uint16 * count).from_address(value.data_ptr())
    return np.frombuffer(bits, np.uint16).copy().view(ml_dtypes.bfloat16).reshape(shape)
