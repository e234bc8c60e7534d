"""Errors raised by servekit."""

from __future__ import annotations

import re


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
    first line (what failed) and the last (often the op or the fix); for a
    cause servekit recognizes (TensorFlow cannot run jax2tf's StableHLO
    module), what it means and the fix."""
    known = xla_call_module_cause(str(error))
    if known:
        return f"{type(error).__name__}: {known}"
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return f"{type(error).__name__}: {' '.join(lines)}"
    return f"{type(error).__name__}: {lines[0]} ... {lines[-1]}"


def xla_call_module_cause(text: str) -> str | None:
    """Explains, from an error's text, why TensorFlow's `XlaCallModule` could
    not run the StableHLO module jax2tf embedded; None for any other error.

    TensorFlow reports it as an `InvalidArgumentError` whose first and last
    lines name only the node (`Graph execution error` ...
    `[[.../XlaCallModule]]`); the cause is in its middle: a version skew
    (`produced by: StableHLO_v1.15.0`, `failed to deserialize portable
    artifact using StableHLO_v1.13.7`), a function whose dynamic shapes it
    could not refine (`Module has dynamic shapes`), or a custom call TensorFlow's
    XLA has no kernel for (`No FFI handler registered for lapack_spotrf_ffi`).
    """
    if "XlaCallModule" not in text:
        return None
    traced_before = ("servekit serializes the jax2tf functions it converts or traces for this TensorFlow; one "
                     "traced before (e.g. a tf.Module's function called before the export) keeps jax's "
                     "serialization. Export it before calling or tracing it, or convert it inside "
                     "servekit.strategies.stablehlo.for_tensorflow()")
    handler = re.search(r"No FFI handler registered for (\S+)", text)
    if handler:
        return (f"TensorFlow's XLA has no kernel for the custom call '{handler.group(1)}' that jax lowered the "
                "model to (jaxlib's own kernels, e.g. LAPACK for cholesky, qr, svd, eigh, inv and solve on CPU), "
                "so the module jax2tf embedded cannot run in TensorFlow. Rebuild the model under TensorFlow "
                "(importable, registered custom layers; strategy 'portable_rebuild'), which uses TensorFlow's "
                "kernels.")
    if "Module has dynamic shapes" in text:
        where = re.search(r'sym_name = "([^"]+)"', text)
        first = re.search(r"error: (.*)", text)
        if where and where.group(1).endswith(".impl"):
            return ("TensorFlow's XlaCallModule could not give static shapes to the module jax2tf embedded: "
                    f"'{where.group(1)}' is the decomposition of a stablehlo.composite, and XlaCallModule refines "
                    "the shapes of main and of the functions it calls, not of a composite's decomposition. "
                    f"{traced_before}, or export with static shapes.")
        return ("TensorFlow's XlaCallModule could not give static shapes to the module jax2tf embedded"
                + (f": {first.group(1).strip()}" if first else "") + ". Export with static shapes "
                "(is_static=True, or an input_signature without None dimensions).")
    if "deserialize" not in text:
        return None
    produced = re.search(r"produced by: StableHLO_v([0-9.]+)", text)
    reader = re.search(r"deserialize portable artifact using StableHLO_v([0-9.]+)", text)
    if not reader:
        detail = re.search(r"Cannot deserialize computation: (.*)", text)
        return ("TensorFlow's XlaCallModule could not deserialize the module jax2tf embedded"
                + (f": {detail.group(1).strip()}" if detail else "."))
    op = re.search(r"unregistered operation '([^']+)'", text)
    made = f"StableHLO {produced.group(1)}" if produced else "a newer StableHLO"
    return (f"TensorFlow's XlaCallModule could not read the module jax2tf embedded: jax serialized it as {made}"
            + (f" (op '{op.group(1)}')" if op else "")
            + f", and this TensorFlow reads StableHLO up to {reader.group(1)}. {traced_before}, rebuild the "
            "model under TensorFlow (importable, registered custom layers; strategy 'portable_rebuild'), or use "
            "a jax and TensorFlow whose StableHLO versions agree.")
