"""Checks one artifact of an export in its runtime's Python API.

For the formats the native verifier (cc/) does not load yet, `artifact_test`
runs this instead: it reads the export's manifest, loads the artifact with the
runtime that serves it from Python (OpenVINO's `Core`, `ai_edge_litert`'s
interpreter, `torch.export.load`, `torch._inductor.aoti_load_package`),
checks the signature it finds against the manifest's, and reproduces every
reference case within the manifest's tolerances. Outputs the manifest marks
stochastic are compared by name, dtype and shape only, and the report says so.

    python -m servekit.build.check_artifact --manifest OUT/manifest.json --format litert

Exits 0 when every check passed, 1 on a failed check, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Sequence

import numpy as np

from servekit import formats
from servekit.pipeline.cases import Case


def _cases(export_dir: str, manifest: dict[str, Any], fmt: str) -> list[Case]:
    endpoints = {e["name"]: e for e in manifest["endpoints"]}
    tolerances = {d: (t["atol"], t["rtol"]) for d, t in manifest.get("tolerances", {}).items()}
    entry = next(a for a in manifest["artifacts"] if a["format"] == fmt)
    if fmt == "openvino" and entry.get("precision") == "bfloat16":
        tolerances["float32"] = tolerances.get("bfloat16", (1e-2, 1e-2))
    if fmt == "litert" and entry.get("precision") == "quantized":
        from servekit.formats.litert import quantized_tolerances

        tolerances.update(quantized_tolerances())
    cases = []
    for ref in manifest["reference"]:
        endpoint = endpoints[ref["endpoint"]]
        if fmt not in endpoint.get("formats", [fmt]):
            continue
        load = lambda rel: np.load(os.path.join(export_dir, rel), allow_pickle=False)  # noqa: E731
        inputs = {name: load(rel) for name, rel in ref["inputs"].items()}
        expected = {name: load(rel) for name, rel in ref["outputs"].items()}
        stochastic = endpoint.get("stochastic", False) or any(o.get("stochastic") for o in endpoint["outputs"])
        cases.append(Case(ref["endpoint"], ref["batch"], inputs, expected, values=not stochastic,
                          tolerances=tolerances))
    return cases


def check(manifest_path: str, fmt: str) -> list[str]:
    """Returns the problems found (empty: the artifact passed)."""
    with open(manifest_path) as f:
        manifest = json.load(f)
    export_dir = os.path.dirname(os.path.abspath(manifest_path))
    entries = [a for a in manifest["artifacts"] if a["format"] == fmt]
    if not entries:
        return [f"the manifest lists no {fmt} artifact (it has {[a['format'] for a in manifest['artifacts']]})"]
    path = os.path.join(export_dir, entries[0]["path"])
    serving = next(e for e in manifest["endpoints"] if e["name"] == "serving_default")
    input_names = [t["name"] for t in serving["inputs"]]
    output_names = [t["name"] for t in serving["outputs"]]
    cases = _cases(export_dir, manifest, fmt)
    if fmt == "openvino":
        from servekit.formats import openvino

        precision = "bf16" if entries[0].get("precision") == "bfloat16" else "f32"
        ir = openvino.compile_for_check(path, precision)
        found_in, found_out = ir.input_names, ir.output_names
        if (found_in, found_out) != (input_names, output_names):
            return [f"the IR has inputs {found_in} and outputs {found_out}; the manifest says {input_names} and "
                    f"{output_names}"]
        comparisons = openvino.check(path, cases, precision)
    elif fmt == "litert":
        from servekit.formats import litert
        from servekit.signature import Signature

        litert.read_signature(path, Signature.from_json(serving), manifest["model"])
        comparisons = litert.check(path, cases)
    elif fmt == "torch":
        from servekit.formats import torch_program

        comparisons = torch_program.check_program(path, input_names, output_names, cases)
    elif fmt == "torch_aoti":
        from servekit.formats import torch_program

        with tempfile.TemporaryDirectory() as scratch:
            comparisons = torch_program.check_aoti(path, input_names, output_names, cases, scratch)
    else:
        return [f"format {fmt!r} is checked natively (servekit_verify validate), not here"]
    problems = [f"{fmt} batch {c.batch}: {p}" for c in comparisons for p in c.problems]
    return problems


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--format", required=True, choices=sorted(formats.FORMATS))
    args = parser.parse_args(argv)
    problems = check(args.manifest, args.format)
    for problem in problems:
        print(problem)
    cases = len(json.load(open(args.manifest))["reference"])
    print(f"{args.format}: {'FAILED' if problems else 'passed'} ({cases} reference case(s), Python runtime)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
