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
        details: machine-readable findings (a dict). After a failed
            verification: `first_diverging_layer` (its `name`, `class`,
            `path` of enclosing models, `max_abs_err`, `endpoint`, `batch`,
            `artifact_tensors`, `strategy`, `format`) and `localization`
            (one entry per failed strategy, `localized` or `why` not).
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        layer: str | None = None,
        reason: str = "export_failed",
        details: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.layer = layer
        self.reason = reason
        self.details = dict(details or {})


class ExportTypeError(ExportError, TypeError):
    """An `ExportError` about the type of an argument or input signature.

    Also a `TypeError`, where Keras raises one (`except TypeError` written
    against Keras keeps working).
    """


class ExportRuntimeError(ExportError, RuntimeError):
    """An `ExportError` where a tracer could not capture the model (e.g.
    `torch.export` on data-dependent control flow); also a `RuntimeError`,
    as Keras raises one there."""


def root_cause(error: BaseException) -> str:
    """A converter's error in one line that keeps its cause: the class, the
    first line (what failed) and the last (often the op or the fix)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return f"{type(error).__name__}: {' '.join(lines)}"
    return f"{type(error).__name__}: {lines[0]} ... {lines[-1]}"
