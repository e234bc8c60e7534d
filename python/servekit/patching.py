"""Attributes of a module or class replaced for the length of a block.

servekit rewrites library functions while it traces or converts a model (a
Keras op torch.export cannot trace, a TensorFlow op LiteRT has no kernel
for, tf2onnx's process-wide counters): each rewrite sets its functions and
puts the originals back after the block, through `replaced`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


_INHERITED = object()


@contextlib.contextmanager
def replaced(owner: Any, **replacements: Any) -> Iterator[None]:
    """Sets `owner`'s attributes named in `replacements` to their values
    while the block runs, then sets them back to what they were.

    The originals are read when the block starts, and restored even when the
    block raises, so an error while tracing never leaves a library patched.

    Args:
        owner: the module, class or object whose attributes are replaced.
        **replacements: each attribute's name and its value in the block.

    Yields:
        None, once the attributes hold their replacements.

    Example:

    ```python
    from keras.src.backend.tensorflow import math as tf_math

    def erf(x):
        ...  # the replacement, which may call the original it closes over

    with patching.replaced(tf_math, erf=erf):
        trace(model)  # tf_math.erf is `erf` here, and the original again after
    ```
    """
    if isinstance(owner, type):  # a class's own entries: a classmethod stays one, an inherited one stays inherited
        originals = {name: owner.__dict__.get(name, _INHERITED) for name in replacements}
    else:
        originals = {name: getattr(owner, name) for name in replacements}
    for name, value in replacements.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in originals.items():
            if value is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
