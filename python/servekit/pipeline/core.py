"""The export pipeline: staged write -> strategy -> verify -> commit -> summary.

Every export entry point (`servekit.export`, `ExportArchive.write_out`, the
`tf.Module` export) describes what to write as an `ExportRequest` and hands it
to `run`, with the strategies that may produce it in a fixed order. Each
strategy either declines up front (`unavailable` says why) or writes the
artifact at a fresh staging path next to the destination and verifies it
against the source model (its report says `ok`). The first verified artifact is
moved into place; the others' staging paths are removed. When no strategy
succeeds, the `ExportError` lists every strategy's reason and nothing is left
on disk.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional, Protocol, Sequence

from servekit import atomic
from servekit import errors
from servekit.errors import ExportError


class Strategy(Protocol):
    """One way of producing an artifact (see `servekit.strategies`)."""

    name: str

    def unavailable(self, request: Any) -> Optional[str | ExportError]:
        """Why this strategy cannot produce `request` (a message, or an
        `ExportError` naming the layer to blame), or None if it can try."""

    def write(self, request: Any, staged: str, workdir: str) -> dict[str, Any]:
        """Writes and verifies the artifact at `staged`; returns a report
        (`ok`, `endpoints`, `comparisons`, and `message`/`reason` if not ok)."""


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What one strategy did: `outcome` is "used", "skipped" or "failed"."""

    strategy: str
    outcome: str
    reason: str = ""
    error_class: Optional[type] = None
    layer: Optional[str] = None

    def to_json(self) -> dict[str, str]:
        return {"strategy": self.strategy, "outcome": self.outcome, "reason": self.reason}


def run(
    request: Any,
    filepath: str,
    strategies: Sequence[Strategy],
    what: str,
    make_workdir: Callable[[], str],
    remove_workdir: Callable[[str], None],
) -> tuple[dict[str, Any], list[Attempt]]:
    """Produces `request` at `filepath` with the first strategy that verifies.

    Args:
        request: the typed description of the export.
        filepath: the destination (replaced atomically).
        strategies: tried in this order.
        what: how error messages name the export (e.g. "Model 'mlp' (jax
            backend) -> onnx").

    Returns:
        `(report, attempts)`: the winning strategy's report (with `strategy`
        and `files` set) and what every strategy before it did.

    Raises:
        ExportError: no strategy produced a verified artifact; the message has
            each strategy's reason. Nothing was written at `filepath`.
    """
    filepath = os.fspath(filepath)
    attempts: list[Attempt] = []
    reasons: list[str] = []  # machine-readable reasons of the failed attempts
    for strategy in strategies:
        why = strategy.unavailable(request)
        if why:
            layer = why.layer if isinstance(why, ExportError) else None
            attempts.append(Attempt(strategy.name, "skipped", str(why), layer=layer))
            continue
        workdir = make_workdir()
        try:
            with atomic.staged_write(filepath) as staged:
                try:
                    report = strategy.write(request, staged, workdir)
                except ExportError as e:
                    report = {"ok": False, "message": str(e), "reason": e.reason, "layer": e.layer,
                              "error_class": type(e)}
                except Exception as e:  # a converter or runtime failed: recorded, shown, next strategy
                    detail = str(e).strip().splitlines()
                    report = {"ok": False, "message": f"{type(e).__name__}: {detail[-1] if detail else ''}",
                              "reason": "strategy_failed", "error_class": type(e)}
                if report.get("ok"):
                    atomic.commit(staged, filepath)
                    report["files"] = atomic.artifact_files(filepath)
                    report["strategy"] = strategy.name
                    attempts.append(Attempt(strategy.name, "used"))
                    return report, attempts
                attempts.append(Attempt(strategy.name, "failed", report.get("message", "failed"),
                                        report.get("error_class"), report.get("layer")))
                reasons.append(report.get("reason", "export_failed"))
        finally:
            remove_workdir(workdir)
    raise _no_strategy_error(what, filepath, attempts, reasons)


def _no_strategy_error(what: str, filepath: str, attempts: Sequence[Attempt],
                       reasons: Sequence[str]) -> ExportError:
    tried = [a for a in attempts if a.outcome == "failed"]
    if len(tried) == 1 and len(attempts) == 1:
        body = tried[0].reason
    else:
        body = "no export strategy produced a verified artifact:\n" + "\n".join(
            f"  - {a.strategy} ({a.outcome}): {_indent(a.reason)}" for a in attempts)
    message = f"{what}: {body}\nNothing was written at '{filepath}'."
    # A type problem Keras's own road ran into stays a TypeError, as in Keras.
    cls = errors.ExportError
    if any(a.error_class is not None and issubclass(a.error_class, TypeError) for a in tried):
        cls = errors.ExportTypeError
    layer = next((a.layer for a in attempts if a.layer), None)
    reason = reasons[-1] if reasons else "no_strategy"
    return cls(message, layer=layer, reason=reason)


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def describe(attempts: Sequence[Attempt]) -> str:
    """One line for the verbose summary: which strategy won and why earlier ones did not."""
    used = next((a.strategy for a in attempts if a.outcome == "used"), "none")
    earlier = [f"{a.strategy} {a.outcome}: {a.reason.splitlines()[0] if a.reason else ''}"
               for a in attempts if a.outcome != "used"]
    return f"strategy {used}" + (f" ({'; '.join(earlier)})" if earlier else "")
