"""The short summary `verbose=True` prints (never a variable dump)."""

from __future__ import annotations

from typing import Any, Mapping

from servekit import signature as sig


def _shape(t: sig.TensorSignature) -> str:
    dims = ",".join("?" if d is None else str(d) for d in t.shape)
    return f"{t.name} {t.dtype}[{dims}]"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def format_summary(artifact: sig.ExportedArtifact, name: str, backend: str, report: Mapping[str, Any],
                   seconds: float) -> str:
    lines = [f"servekit: exported '{name}' ({backend} backend) as {artifact.format} to '{artifact.path}' "
             f"in {seconds:.1f} s"]
    for ep in artifact.endpoints:
        ins = ", ".join(_shape(t) for t in ep.inputs)
        outs = ", ".join(_shape(t) for t in ep.outputs)
        marks = [m for m, on in (("stochastic", ep.stochastic), ("stateful", ep.stateful)) if on]
        lines.append(f"  endpoint {ep.name}: ({ins}) -> ({outs})" + (f" [{', '.join(marks)}]" if marks else ""))
    if report.get("strategy_line"):
        lines.append(f"  {report['strategy_line']}")
    files = report.get("files") or {}
    if files:
        total = sum(files.values())
        listed = ", ".join(f"{k} {_size(v)}" for k, v in files.items())
        lines.append(f"  files ({_size(total)}): {listed}")
    comps = report.get("comparisons") or []
    if comps:
        batches = sorted({c["batch"] for c in comps})
        worst = max(c["max_abs_err"] for c in comps)
        how = []
        if any(ep.stochastic for ep in artifact.endpoints):
            how.append("stochastic outputs by statistics over repeated calls")
        if any(ep.stateful for ep in artifact.endpoints):
            how.append("stateful endpoints call by call from the export-time state")
        sizes = "".join(f"; {_dim_sizes(name, entry)}" for ep in artifact.endpoints[:1]
                        for name, entry in getattr(ep, "dims", {}).items() if name != "batch")
        lines.append(f"  verified: batch {', '.join(map(str, batches))}{sizes}; max abs err {worst:.2g}"
                     + (f" ({'; '.join(how)})" if how else ""))
    else:
        lines.append("  not verified")
    return "\n".join(lines)


def _dim_sizes(name: str, entry: dict) -> str:
    """"sequence 1, 5, 11 (past window 8)", or the plan's note."""
    text = f"{name} {', '.join(map(str, entry.get('verified', [])))}"
    window = entry.get("window")
    if window is not None and max(entry.get("verified", [0])) > window:
        text += f" (past window {window})"
    if entry.get("note"):
        text += f" ({entry['note']})"
    return text


def print_summary(artifact, name, backend, report, seconds) -> None:
    print(format_summary(artifact, name, backend, report, seconds), flush=True)
