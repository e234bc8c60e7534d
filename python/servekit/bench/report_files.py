"""The three files every benchmark driver of `servekit.bench` writes: JSON
for tools, a Markdown table for people, a PNG plot."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Mapping

Report = Mapping[str, Any]


def write(report: Report, out_dir: pathlib.Path, stem: str, render_table: Callable[[Report], str],
          plot: Callable[[Report, pathlib.Path], None]) -> None:
    """Writes `<stem>.json`, `<stem>.md` and `<stem>.png` into `out_dir` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(render_table(report))
    plot(report, out_dir / f"{stem}.png")
