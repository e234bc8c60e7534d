"""Reading a model's variables without copying them.

`variable.numpy()` and `keras.ops.convert_to_numpy` copy a variable's value
(TensorFlow's `numpy()` twice over, through `np.array`): for a model of a few
gigabytes, each read is that much more memory. Where only the bytes are read
(a fingerprint, a file write), `read_only_view` gives them as the variable
holds them (`tf_view`).
"""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np

# Dtypes a TensorFlow tensor exposes through the buffer protocol.
_VIEWABLE = ("bool", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
             "uint64", "complex64", "complex128")


def read_only_view(variable: Any) -> np.ndarray:
    """The current value of a Keras or TensorFlow variable as a read-only NumPy
    array: `tf_view(variable)` where there is one, else a copy."""
    import keras

    view = tf_view(variable)
    if view is not None:
        return view
    if isinstance(variable, keras.Variable):
        return np.asarray(keras.ops.convert_to_numpy(variable.value))
    return np.asarray(variable.numpy())  # tf.Variable of another dtype


def tf_view(variable: Any) -> Optional[np.ndarray]:
    """A read-only NumPy view of a TensorFlow-backed variable's buffer (a
    Keras variable on the TensorFlow backend, or a `tf.Variable`, on the CPU,
    of a dtype the buffer protocol carries), or None.

    Reading a resource variable shares its buffer (TensorFlow copies on a later
    write; a variable in copy-on-read mode, after sparse writes, is copied by
    the read), so the view keeps its value, whatever the variable does next,
    for as long as the view is alive.
    """
    import sys

    if "tensorflow" not in sys.modules:  # another backend's variable
        return None
    import keras
    import tensorflow as tf

    value = variable.value if isinstance(variable, keras.Variable) else variable
    if not isinstance(value, tf.Variable) or value.dtype.name not in _VIEWABLE or "GPU" in (value.device or ""):
        return None
    return np.asarray(memoryview(value.read_value()))


def weight_bytes(model: Any) -> int:
    """The bytes of a Keras model's weights, as their dtypes store them (no read)."""
    import keras

    def itemsize(dtype: str) -> int:  # from the name: bfloat16 and float8 are not NumPy's
        bits = re.search(r"\d+", dtype)
        return (int(bits.group()) + 7) // 8 if bits else 1  # bool

    return sum(int(np.prod(v.shape, dtype=np.int64)) * itemsize(keras.backend.standardize_dtype(v.dtype))
               for v in model.weights)
