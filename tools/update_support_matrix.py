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

The zoo's real architectures get a matrix of their own, between
`<!-- zoo-matrix:begin -->` and `<!-- zoo-matrix:end -->`, after
`bazel test //models:all`: one cell per export and format, passed when its
native `artifact_test` (`<model>_<backend>_test_<format>`, bazel-testlogs)
passed, with the converter that made each ONNX model (from the export's
manifest in bazel-bin). The zoo models exported to every format get the
3 backends x 6 formats matrix, between `<!-- formats-matrix:begin -->` and
`<!-- formats-matrix:end -->`, made the same way. The op and layer long tail
(tests/python/test_layer_families.py, `layer_families.<backend>.json`) goes between
`<!-- layer-families:begin -->` and `<!-- layer-families:end -->`, and its run in the
other formats (the manual targets `layer_families_more_formats_<backend>`,
`layer_families_more.<backend>.json`) between `<!-- layer-families-more:begin -->` and
`<!-- layer-families-more:end -->`.
"""

from __future__ import annotations

import json
import pathlib
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- support-matrix:begin -->", "<!-- support-matrix:end -->"
ZOO_BEGIN, ZOO_END = "<!-- zoo-matrix:begin -->", "<!-- zoo-matrix:end -->"
FORMATS_BEGIN, FORMATS_END = "<!-- formats-matrix:begin -->", "<!-- formats-matrix:end -->"
FAMILIES_BEGIN, FAMILIES_END = "<!-- layer-families:begin -->", "<!-- layer-families:end -->"
MORE_BEGIN, MORE_END = "<!-- layer-families-more:begin -->", "<!-- layer-families-more:end -->"
FAMILIES_LEGEND = ("✅ = exported and verified by servekit, then reloaded and reproduced within 1e-4 + 1e-3·|y| "
                   "(5% of the output's scale for int8) on inputs of the test's own; ➖ = an expected refusal, "
                   "named below, with nothing written.")
# The zoo models the README's real-architecture matrix lists (models/BUILD).
ZOO_MODELS = ("mobilenet_v3", "mobilenet_v2", "convnext", "vit", "bert", "llama")
# The zoo models exported to every format (models/BUILD: KERAS_FORMATS).
FORMAT_MODELS = ("mlp", "cnn", "transformer", "mobilenet_v2", "bert", "trained_mlp")
BACKENDS = ("tensorflow", "jax", "torch")


def collect(testlogs: pathlib.Path, prefix: str = "support_matrix.") -> list[dict]:
    """Every result row of every `<prefix>*.json` under `testlogs` (the matrix tests'
    `support_matrix.<backend>.json`, the layer families' `layer_families.<backend>.json`)."""
    rows: list[dict] = []
    for outputs in sorted(testlogs.rglob("test.outputs")):
        for path in sorted(outputs.glob(f"{prefix}*.json")):
            rows += json.loads(path.read_text())
        archive = outputs / "outputs.zip"
        if archive.exists():
            with zipfile.ZipFile(archive) as zipped:
                for name in sorted(zipped.namelist()):
                    if pathlib.PurePath(name).name.startswith(prefix):
                        rows += json.loads(zipped.read(name))
    return rows


def _test_passed(test_dir: pathlib.Path) -> bool | None:
    """The result of one Bazel test from its test.xml (None: not run)."""
    xml = test_dir / "test.xml"
    if not xml.exists():
        return None
    import xml.etree.ElementTree as ET

    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return all(int(t.get("failures", 0)) == 0 and int(t.get("errors", 0)) == 0 for t in suites) and bool(suites)


def collect_zoo(bin_dir: pathlib.Path, testlogs: pathlib.Path, models=ZOO_MODELS) -> list[dict]:
    """One row per zoo export (of `models`) and format that was built and tested."""
    from servekit.support_matrix import make_row

    rows = []
    for model in models:
        for backend in BACKENDS:
            export = f"{model}_{backend}"
            manifest_path = bin_dir / "models" / export / "manifest.json"
            if not manifest_path.exists():
                continue
            manifest = json.loads(manifest_path.read_text())
            for artifact in manifest.get("artifacts", []):
                fmt = artifact["format"]
                passed = _test_passed(testlogs / "models" / f"{export}_test_{fmt}")
                if passed is None:
                    continue
                rows.append(make_row(backend, fmt, model, "pass" if passed else "fail",
                                     message="" if passed else f"bazel test //models:{export}_test_{fmt} failed",
                                     converter=artifact.get("converter")))
    return rows


def _replace_between(text: str, begin: str, end: str, body: str) -> str | None:
    head, _, rest = text.partition(begin)
    if not rest:
        return None
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{body}{end}{tail}"


def main() -> int:
    sys.path.insert(0, str(ROOT / "python"))
    from servekit.support_matrix import render_markdown

    readme = ROOT / "README.md"
    text = readme.read_text()
    rows = collect(ROOT / "bazel-testlogs")
    families = collect(ROOT / "bazel-testlogs", "layer_families.")
    more_families = collect(ROOT / "bazel-testlogs", "layer_families_more.")
    zoo = collect_zoo(ROOT / "bazel-bin", ROOT / "bazel-testlogs")
    every_format = collect_zoo(ROOT / "bazel-bin", ROOT / "bazel-testlogs", FORMAT_MODELS)
    if not (rows or zoo or families or more_families):
        print("No results in bazel-testlogs: run `bazel test //tests/python/...` and/or "
              "`bazel test //models:all` first.")
        return 1
    for name, begin, end, found in (("support matrix", BEGIN, END, rows), ("zoo matrix", ZOO_BEGIN, ZOO_END, zoo),
                                    ("formats matrix", FORMATS_BEGIN, FORMATS_END, every_format),
                                    ("layer families", FAMILIES_BEGIN, FAMILIES_END, families),
                                    ("layer families, other formats", MORE_BEGIN, MORE_END, more_families)):
        if not found:
            print(f"README {name}: no results, left as it was")
            continue
        legend = {"legend": FAMILIES_LEGEND} if begin in (FAMILIES_BEGIN, MORE_BEGIN) else {}
        replaced = _replace_between(text, begin, end, render_markdown(found, **legend))
        if replaced is None:
            print(f"README.md has no {begin} marker.")
            return 1
        text = replaced
        print(f"README {name}: {len(found)} cells")
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
