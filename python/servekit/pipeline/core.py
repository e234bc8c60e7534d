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

import contextlib
import dataclasses
import os
import shutil
import tempfile
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

from servekit import atomic
from servekit import errors
from servekit import formats
from servekit.errors import ExportError


class Strategy(Protocol):
    """One way of producing an artifact (see `servekit.strategies`)."""

    name: str

    def unavailable(self, request: Any) -> Optional[str | ExportError]:
        """Why this strategy cannot produce `request` (a message, or an
        `ExportError` naming the layer to blame), or None if it can try."""

    def write(self, request: Any, staged: str, workdir: str) -> dict[str, Any]:
        """Writes and verifies the artifact at `staged`; returns a report
        (`ok`, `endpoints`, `comparisons`, and `message`/`reason` if not ok).

        A strategy that writes several formats more cheaply together also has
        `write_formats(requests: {format: request}, staged: {format: path},
        workdir) -> {format: report}`. One that takes its place in the order
        for some requests only has `applies(request) -> bool` (False: no
        attempt is recorded); one whose failed verification is not worth
        localizing (a later strategy follows) has `explains_divergence = False`."""


def applies(strategy: Strategy, request: Any) -> bool:
    """Whether `strategy` is in `request`'s order at all (its `applies`, if it has one)."""
    return getattr(strategy, "applies", lambda _: True)(request)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What one strategy did: `outcome` is "used", "skipped" or "failed"."""

    strategy: str
    outcome: str
    reason: str = ""
    error_class: Optional[type] = None
    layer: Optional[str] = None
    # A failed verification's first diverging layer (`servekit.pipeline.localize`).
    localization: Optional[dict] = None
    # A failed verification's outputs outside their tolerance, by dtype.
    tolerance_dtypes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, str]:
        return {"strategy": self.strategy, "outcome": self.outcome, "reason": self.reason}


def run(
    request: Any,
    filepath: str,
    strategies: Sequence[Strategy],
    what: str,
    make_workdir: Optional[Callable[[], str]] = None,
    remove_workdir: Optional[Callable[[str], None]] = None,
) -> tuple[dict[str, Any], list[Attempt]]:
    """Produces `request` at `filepath` with the first strategy that verifies.

    Args:
        request: the typed description of the export.
        filepath: the destination (replaced atomically).
        strategies: tried in this order.
        what: how error messages name the export (e.g. "Model 'mlp' (jax
            backend) -> onnx").
        make_workdir, remove_workdir: create and delete each strategy's
            private scratch directory (default: a fresh temporary directory).

    Returns:
        `(report, attempts)`: the winning strategy's report (with `strategy`
        and `files` set) and what every strategy before it did.

    Raises:
        ExportError: no strategy produced a verified artifact; the message has
            each strategy's reason. Nothing was written at `filepath`.
    """
    results = run_formats(request, {request.format: filepath}, strategies, lambda fmt: what,
                          make_workdir, remove_workdir)
    return results[request.format]


def run_formats(
    request: Any,
    destinations: Mapping[str, str],
    strategies: Sequence[Strategy],
    what: Callable[[str], str],
    make_workdir: Optional[Callable[[], str]] = None,
    remove_workdir: Optional[Callable[[str], None]] = None,
) -> dict[str, tuple[dict[str, Any], list[Attempt]]]:
    """Produces `request` in several formats at once; see `run`.

    Each format gets the first strategy that verifies it. A strategy with a
    `write_formats` method gets every format it can try in one call (the
    portable rebuild converts the ONNX model from the module it has just
    traced and saved). Artifacts are committed only once every format has one, so a
    format that no strategy produces leaves nothing on disk.

    Args:
        request: the typed description of the export; `request.format` is
            replaced by each format in turn.
        destinations: format -> destination path, in the order to write them.
        what: format -> how error messages name the export.

    Returns:
        format -> `(report, attempts)`, as `run` returns them.

    Raises:
        ExportError: for the first format no strategy produced.
    """
    make_workdir = make_workdir or (lambda: tempfile.mkdtemp(prefix="servekit-export-"))
    remove_workdir = remove_workdir or (lambda path: shutil.rmtree(path, ignore_errors=True))
    destinations = {fmt: os.fspath(path) for fmt, path in destinations.items()}
    attempts: dict[str, list[Attempt]] = {fmt: [] for fmt in destinations}
    reasons: dict[str, list[str]] = {fmt: [] for fmt in destinations}  # machine-readable, of failed attempts
    done: dict[str, tuple[str, dict[str, Any]]] = {}  # format -> (staged path, report)
    with contextlib.ExitStack() as staging:
        for strategy in strategies:
            todo = {}
            for fmt in destinations:
                if fmt in done:
                    continue
                one = request if request.format == fmt else dataclasses.replace(request, format=fmt)
                if not applies(strategy, one):
                    continue
                why = strategy.unavailable(one)
                if why:
                    layer = why.layer if isinstance(why, ExportError) else None
                    skipped = Attempt(strategy.name, "skipped", str(why), layer=layer)
                    if skipped not in attempts[fmt]:  # a strategy in two places of the order, said once
                        attempts[fmt].append(skipped)
                else:
                    todo[fmt] = one
            if not todo:
                continue
            workdir = make_workdir()
            try:
                staged = {fmt: staging.enter_context(atomic.staged_write(destinations[fmt])) for fmt in todo}
                if len(todo) > 1 and hasattr(strategy, "write_formats"):
                    reports = _guarded(lambda: strategy.write_formats(todo, staged, workdir), list(todo))
                else:
                    reports = {}
                    for fmt, one in todo.items():
                        reports.update(_guarded(lambda: {fmt: strategy.write(one, staged[fmt], workdir)}, [fmt]))
            finally:
                remove_workdir(workdir)
            diverged = {fmt: r for fmt, r in reports.items()
                        if not r.get("ok") and r.get("reason") == "verification_failed"}
            if diverged and getattr(strategy, "explains_divergence", True):
                # Only now, on failure: which layer diverges costs an export of the probe.
                from servekit.pipeline import localize

                localize.explain(strategy, {fmt: todo[fmt] for fmt in diverged}, diverged, staged, make_workdir,
                                 remove_workdir)
            for fmt in todo:
                report = reports[fmt]
                if report.get("ok"):
                    report["strategy"] = strategy.name
                    attempts[fmt].append(Attempt(strategy.name, "used"))
                    done[fmt] = (staged[fmt], report)
                else:
                    atomic.discard(staged[fmt])
                    attempts[fmt].append(Attempt(strategy.name, "failed", report.get("message", "failed"),
                                                 report.get("error_class"), report.get("layer"),
                                                 report.get("localization"),
                                                 tuple(report.get("tolerance_dtypes") or ())))
                    reasons[fmt].append(report.get("reason", "export_failed"))
        for fmt in destinations:
            if fmt not in done:
                raise _no_strategy_error(what(fmt), destinations[fmt], attempts[fmt], reasons[fmt])
        for fmt, (staged_path, report) in done.items():
            formats.commit(fmt, staged_path, destinations[fmt])
            report["files"] = formats.artifact_files(fmt, destinations[fmt])
    return {fmt: (done[fmt][1], attempts[fmt]) for fmt in destinations}


def _guarded(write: Callable[[], dict[str, dict[str, Any]]], formats: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Runs a strategy's write; a failure becomes a failed report for each format."""
    try:
        return write()
    except ExportError as e:
        report = {"ok": False, "message": str(e), "reason": e.reason, "layer": e.layer, "error_class": type(e)}
    except Exception as e:  # a converter or runtime failed: recorded, shown, next strategy
        report = {"ok": False, "message": errors.root_cause(e), "reason": "strategy_failed", "error_class": type(e)}
    return {fmt: dict(report) for fmt in formats}


def _declare_a_tolerance(dtypes: Sequence[str]) -> str:
    """The way out of a failed verification, naming the dtypes of the outputs that differ."""
    dtypes = list(dtypes) or ["float32"]
    python = ", ".join(f"'{dtype}': (atol, rtol)" for dtype in dtypes)
    build = ", ".join(f"'{dtype}': 'atol,rtol'" for dtype in dtypes)
    return ("If the differences are rounding the model amplifies rather than a wrong conversion (a log of values "
            "near zero, a difference of large terms, a low precision over many layers), declare the tolerance the "
            f"model needs: servekit.export(..., tolerances={{{python}}}), or the build rule's tolerances = "
            f"{{{build}}}.\n")


def _no_strategy_error(what: str, filepath: str, attempts: Sequence[Attempt],
                       reasons: Sequence[str]) -> ExportError:
    tried = [a for a in attempts if a.outcome == "failed"]
    if len(tried) == 1 and len(attempts) == 1:
        body = tried[0].reason
    else:
        body = "no export strategy produced a verified artifact:\n" + "\n".join(
            f"  - {a.strategy} ({a.outcome}): {_indent(a.reason)}" for a in attempts)
    message = f"{what}: {body}\n"
    if "verification_failed" in reasons:
        message += _declare_a_tolerance(sorted({dtype for a in tried for dtype in a.tolerance_dtypes}))
    message += f"Nothing was written at '{filepath}'."
    # A type problem Keras's own road ran into stays a TypeError, as in Keras.
    cls = errors.ExportError
    if any(a.error_class is not None and issubclass(a.error_class, TypeError) for a in tried):
        cls = errors.ExportTypeError
    elif any(a.error_class is not None and issubclass(a.error_class, RuntimeError) for a in tried):
        cls = errors.ExportRuntimeError
    layer = next((a.layer for a in attempts if a.layer), None)
    reason = reasons[-1] if reasons else "no_strategy"
    error = cls(message, layer=layer, reason=reason)
    localized = [a.localization for a in attempts if a.localization]
    if localized:
        error.details["localization"] = localized
        first = next((d for d in localized if d.get("localized")), None)
        if first:
            error.details["first_diverging_layer"] = first
    return error


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def describe(attempts: Sequence[Attempt]) -> str:
    """One line for the verbose summary: which strategy won and why earlier ones did not."""
    used = next((a.strategy for a in attempts if a.outcome == "used"), "none")
    earlier = [f"{a.strategy} {a.outcome}: {a.reason.splitlines()[0] if a.reason else ''}"
               for a in attempts if a.outcome != "used"]
    return f"strategy {used}" + (f" ({'; '.join(earlier)})" if earlier else "")
