"""The support matrix: result rows from the matrix tests, rendered as Markdown.

A result row is a dict (one per backend x format x model), as the matrix test
writes to `support_matrix.<backend>.json`:

    {"backend": "jax", "format": "onnx", "model": "cnn",
     "status": "pass" | "fail" | "unsupported",
     "max_abs_err": 2.4e-07 | None, "message": "...",
     "converter": "tf2onnx" (optional: the tool that made an ONNX model)}

`render_markdown` depends on nothing but the standard library.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

BACKENDS = ("tensorflow", "jax", "torch")
FORMATS = ("tf_saved_model", "onnx", "openvino", "litert", "torch", "torch_aoti")
STATUSES = ("pass", "fail", "unsupported")
_MARK = {"pass": "✅", "fail": "❌", "unsupported": "➖"}


def make_row(backend: str, format: str, model: str, status: str, max_abs_err: Optional[float] = None,
             message: str = "", converter: Optional[str] = None) -> dict[str, Any]:
    """One result row (validates `status`)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}; got {status!r}")
    row = {"backend": backend, "format": format, "model": model, "status": status,
           "max_abs_err": None if max_abs_err is None else float(max_abs_err), "message": message}
    if converter:
        row["converter"] = converter
    return row


def _ordered(values: Iterable[str], preferred: tuple[str, ...]) -> list[str]:
    values = set(values)
    return [v for v in preferred if v in values] + sorted(values - set(preferred))


def _cell(row: Optional[Mapping[str, Any]]) -> str:
    if row is None:
        return "·"
    status = row.get("status", "fail")
    mark = _MARK.get(status, "?")
    if status == "pass" and row.get("max_abs_err") is not None:
        mark = f"{mark} {row['max_abs_err']:.0e}"
    if status == "pass" and row.get("converter"):
        mark = f"{mark} ({row['converter']})"
    return mark


_LEGEND = ("✅ = artifact reloads and reproduces the source backend's outputs at batch 1 and 7 (max abs error "
           "shown); ➖ = export refuses before writing anything.")


def render_markdown(results: Iterable[Mapping[str, Any]], legend: str = _LEGEND) -> str:
    """Renders result rows as a Markdown table plus notes.

    One table row per model; one column per backend and format. A cell is
    ✅ with the max abs error, ❌ (fail) or ➖ (unsupported: export refused
    before writing anything); the messages of failed and unsupported cells
    follow as notes. When the same cell appears twice, the last row wins.
    A passing cell with a `converter` names it in parentheses.

    Args:
        results: rows as made by `make_row` (e.g. loaded from the JSON files).
        legend: what the marks mean, after the counts.

    Returns:
        Markdown text ending with a newline.

    Example:

    ```python
    render_markdown([make_row("jax", "onnx", "cnn", "pass", 3e-7)])
    ```
    """
    cells: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for row in results:
        cells[(row["model"], row["backend"], row["format"])] = row
    if not cells:
        return "_No results._\n"
    models = sorted({k[0] for k in cells}, key=lambda m: min(i for i, k in enumerate(cells) if k[0] == m))
    backends = _ordered((k[1] for k in cells), BACKENDS)
    formats = _ordered((k[2] for k in cells), FORMATS)
    columns = [(b, f) for b in backends for f in formats]
    lines = ["| model | " + " | ".join(f"{b} → {f}" for b, f in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(_cell(cells.get((model, b, f))) for b, f in columns) + " |")
    notes = []
    for (model, b, f), row in cells.items():
        if row.get("status") != "pass" and row.get("message"):
            message = " ".join(str(row["message"]).split())
            notes.append(f"- {model}, {b} → {f} ({row.get('status')}): {message}")
    counts = {s: sum(1 for r in cells.values() if r.get("status") == s) for s in STATUSES}
    lines.append("")
    lines.append(f"{counts['pass']} pass, {counts['fail']} fail, {counts['unsupported']} unsupported. {legend}")
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"
