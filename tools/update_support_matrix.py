#!/usr/bin/env python3
"""Regenerates the README's support matrix from the matrix tests' results.

The matrix tests (tests/python, one Bazel target per backend) write
`support_matrix.<backend>.json` into their undeclared outputs. After
`bazel test //tests/python/...`, run:

    .setup/venv/bin/python tools/update_support_matrix.py

It reads those files from bazel-testlogs and rewrites the README between the
`<!-- support-matrix:begin -->` and `<!-- support-matrix:end -->` markers with
`servekit.support_matrix.render_markdown`. The README's matrix is therefore only
ever what the tests measured.
"""

from __future__ import annotations

import json
import pathlib
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- support-matrix:begin -->", "<!-- support-matrix:end -->"


def collect(testlogs: pathlib.Path) -> list[dict]:
    """Every result row of every support_matrix.*.json under `testlogs`."""
    rows: list[dict] = []
    for outputs in sorted(testlogs.rglob("test.outputs")):
        for path in sorted(outputs.glob("support_matrix.*.json")):
            rows += json.loads(path.read_text())
        archive = outputs / "outputs.zip"
        if archive.exists():
            with zipfile.ZipFile(archive) as zipped:
                for name in sorted(zipped.namelist()):
                    if pathlib.PurePath(name).name.startswith("support_matrix."):
                        rows += json.loads(zipped.read(name))
    return rows


def main() -> int:
    sys.path.insert(0, str(ROOT / "python"))
    from servekit.support_matrix import render_markdown

    rows = collect(ROOT / "bazel-testlogs")
    if not rows:
        print("No support_matrix.*.json in bazel-testlogs: run `bazel test //tests/python/...` first.")
        return 1
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        print(f"README.md has no {BEGIN} marker.")
        return 1
    readme.write_text(f"{head}{BEGIN}\n{render_markdown(rows)}{END}{tail}")
    print(f"README support matrix: {len(rows)} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
