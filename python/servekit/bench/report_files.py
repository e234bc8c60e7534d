"""The three files every benchmark driver of `servekit.bench` writes: JSON
for tools, a Markdown table for people, a PNG plot."""

from __future__ import annotations

import json
import os
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


def workspace_dir() -> pathlib.Path:
    """The checkout under `bazel run` (BUILD_WORKSPACE_DIRECTORY), else the current
    directory: where reports and the README are written."""
    return pathlib.Path(os.environ.get("BUILD_WORKSPACE_DIRECTORY", "."))


def replace_between(path: pathlib.Path, begin_line: str, end_line: str, body: str) -> None:
    """Rewrites the lines of `path` between `begin_line` and `end_line` with `body`.

    Raises:
        ValueError: `path` has no such markers.
    """
    text = path.read_text()
    head, begin, rest = text.partition(begin_line)
    _, end, tail = rest.partition(end_line)
    if not begin or not end:
        raise ValueError(f"{path} has no {begin_line} ... {end_line} lines.")
    path.write_text(f"{head}{begin_line}\n{body}{end_line}{tail}")
