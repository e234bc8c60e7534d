"""Errors raised by servekit."""

from __future__ import annotations


class ExportError(ValueError):
    """An export that cannot be done, or whose artifact failed its self-check.

    The message names the model, the input, layer or endpoint concerned, and
    what to do instead. When an `ExportError` is raised, nothing was written at
    the requested path (an artifact that was already there is left intact).

    Attributes:
        model: name of the model (or archive) being exported, if known.
        layer: name of the offending layer, if one is to blame.
        reason: a short machine-readable reason, e.g. `"unsupported_layer"`,
            `"verification_failed"`, `"conversion_failed"`, `"bad_signature"`.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        layer: str | None = None,
        reason: str = "export_failed",
    ) -> None:
        super().__init__(message)
        self.model = model
        self.layer = layer
        self.reason = reason


class ExportTypeError(ExportError, TypeError):
    """An `ExportError` about the type of an argument or input signature.

    Also a `TypeError`, where Keras raises one (`except TypeError` written
    against Keras keeps working).
    """
