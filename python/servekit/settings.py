"""Sizes servekit reads from the environment, for tests and tuning.

A threshold in bytes that decides which road a model takes (ONNX external data,
weights lifted out of a conversion, a LiteRT model's buffers by offset) can be
moved by an environment variable, so that a test takes a small model down the
road a multi-GB one takes. The export worker inherits these variables
(`servekit.worker.launch`).
"""

from __future__ import annotations

import os

from servekit.errors import ExportError


def bytes_setting(variable: str, default: int) -> int:
    """The number of bytes `variable` sets, else `default`.

    Raises:
        ExportError: the variable is set to something other than a number.
    """
    value = os.environ.get(variable)
    if not value:
        return default
    try:
        return max(0, int(value))
    except ValueError:
        raise ExportError(f"{variable}={value!r} is not a number of bytes.", reason="bad_argument") from None
