"""ONNX from JAX and torch: the rebuild under TensorFlow, Keras's own converters in
process, and servekit's default order, side by side.

    bazel run //python/servekit/bench:onnx_converters -- --repeats 3
    bazel run //python/servekit/bench:onnx_converters -- --models mlp,vit --backends jax

The three roads, each an `export` strategy:

- `portable_rebuild`: the model saved as `.keras`, rebuilt under TensorFlow in the
  warm export worker, converted with tf2onnx;
- `in_process`: converted in the calling process as Keras's `model.export` converts
  it: jax2onnx on JAX; torch.onnx on torch (TorchScript, then dynamo);
- `auto`, the default: the in-process quick converters first on a small model
  (jax2onnx, TorchScript), the rebuild when they fail
  (`servekit.strategies.in_process.converts_before_rebuild`).

Measured on the zoo's real architectures as well as its small models:

- export time: one process per backend exports each model with every road once
  untimed (the first export pays the converters' imports and the worker's start),
  then `repeats` more times, the roads taking turns; a failure's time is the time it
  took to fail (every converter it tried, each verified);
- serving latency: the rebuild's and the in-process artifacts run in ONNX Runtime
  (CPU, one thread) on the export's own largest verification case, median
  milliseconds per call.

Writes onnx_converters.json, .md and .png (`servekit.bench.report_files`), and with
`--readme README.md` the table between `README_BEGIN` and `README_END`. Speed is
only ever measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Mapping, Optional, Sequence

# Run as a script in its children (one per backend): the package root on the path.
if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from servekit.bench import export_speed, machine, report_files  # noqa: E402

BACKENDS = ("jax", "torch")
# The rebuild under TensorFlow (tf2onnx), Keras's converters in process, and the default order.
ROADS = ("portable_rebuild", "in_process", "auto")
DEFAULT_MODELS = ("mlp", "cnn", "rnn", "transformer", "dict_inputs", "vit", "bert", "llama", "convnext")
README_BEGIN = "<!-- onnx-converters:begin -->"
README_END = "<!-- onnx-converters:end -->"
LATENCY_CALLS = 30
LATENCY_ROUNDS = 7
# Marks the lines of a child's stderr that the driver shows as they come.
PROGRESS = "onnx_converters: "


# ---------------------------------------------------------------- child side


def _export(model: Any, road: str, signature: Any, path: str) -> tuple[dict[str, Any], list[Any]]:
    """One timed export; returns its outcome and the verification cases."""
    from servekit.errors import ExportError
    from servekit.exporter import export_formats_with_cases

    start = time.perf_counter()
    try:
        artifacts, cases = export_formats_with_cases(model, {"onnx": path}, verbose=False,
                                                     input_signature=signature, strategy=road)
    except ExportError as e:  # a refusal is a result here, reported with its first line
        return {"status": "failed", "seconds": time.perf_counter() - start,
                "error": str(e).strip().splitlines()[0]}, []
    artifact = artifacts["onnx"]
    return {"status": "ok", "seconds": time.perf_counter() - start, "converter": artifact.converter,
            "strategy": artifact.strategy, "bytes": os.path.getsize(path)}, cases


def _latency_ms(path: str, feeds: Mapping[str, Any]) -> float:
    """Median milliseconds per ONNX Runtime call of the model at `path` on `feeds`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(LATENCY_CALLS):
        session.run(None, feeds)
    rounds = []
    for _ in range(LATENCY_ROUNDS):
        start = time.perf_counter()
        for _ in range(LATENCY_CALLS):
            session.run(None, feeds)
        rounds.append((time.perf_counter() - start) / LATENCY_CALLS)
    return statistics.median(rounds) * 1e3


def child(model_files: Sequence[pathlib.Path], repeats: int, scratch: str) -> list[dict[str, Any]]:
    """Both roads on every model, on this process' backend."""
    import keras

    cells = []
    for model_file in model_files:
        export_speed.progress(f"{PROGRESS}{os.environ['KERAS_BACKEND']}: {model_file.stem}")
        model, signature, _ = export_speed.prepare(model_file)
        sides: dict[str, dict[str, Any]] = {}
        feeds = None
        for road in ROADS:  # untimed: imports, the worker's start, each road's first trace
            path = os.path.join(scratch, f"{model_file.stem}.{road}.onnx")
            first, cases = _export(model, road, signature, path)
            sides[road] = {"first": first, "seconds": []}
            if cases and feeds is None:
                largest = max(cases, key=lambda c: c.batch)
                feeds = {name: value for name, value in largest.inputs.items()
                         if getattr(value, "dtype", None) is not None and value.dtype.kind != "O"}
                feeds = feeds if len(feeds) == len(largest.inputs) else None  # string inputs: no latency
        for round_index in range(repeats):
            order = ROADS[round_index % len(ROADS):] + ROADS[:round_index % len(ROADS)]
            for road in order:
                outcome, _ = _export(model, road, signature, os.path.join(scratch, f"{model_file.stem}.{road}.onnx"))
                sides[road]["seconds"].append(outcome["seconds"])
                sides[road]["last"] = outcome
        for road in ROADS:
            side = sides[road]
            side["status"] = side["last"]["status"]
            side["median_s"] = statistics.median(side["seconds"])
            side.update({k: v for k, v in side["last"].items() if k not in ("seconds", "status")})
            path = os.path.join(scratch, f"{model_file.stem}.{road}.onnx")
            if side["status"] == "ok" and feeds is not None and road != "auto":  # auto's is one of the two
                side["latency_ms"] = _latency_ms(path, feeds)
        cells.append({"model": model_file.stem, "backend": os.environ["KERAS_BACKEND"], **sides})
        keras.backend.clear_session()
    return cells


# ---------------------------------------------------------------- driver side


def summarize_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Adds the in-process artifact's latency over the rebuild's."""
    rebuild, native = cell["portable_rebuild"], cell["in_process"]
    if rebuild.get("latency_ms") and native.get("latency_ms"):
        cell["latency_ratio"] = native["latency_ms"] / rebuild["latency_ms"]
    return cell


def summarize(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    ok = {road: [c for c in cells if c[road]["status"] == "ok"] for road in ROADS}
    fallbacks = [c for c in ok["auto"] if c["auto"].get("strategy") != "in_process" and
                 c["in_process"]["status"] != "ok"]
    ratios = [c["latency_ratio"] for c in cells if "latency_ratio" in c]
    return {
        "cells": len(cells),
        "verified": {road: len(ok[road]) for road in ROADS},
        "median_default_over_rebuild": _median_ratio(ok["auto"], "auto", "portable_rebuild"),
        "median_default_over_rebuild_where_in_process_fails": _median_ratio(fallbacks, "auto", "portable_rebuild"),
        "median_latency_ratio": statistics.median(ratios) if ratios else None,
    }


def _median_ratio(cells: Sequence[Mapping[str, Any]], road: str, base: str) -> Optional[float]:
    ratios = [c[road]["median_s"] / c[base]["median_s"] for c in cells if c[base]["status"] == "ok"]
    return statistics.median(ratios) if ratios else None


def _seconds(side: Mapping[str, Any]) -> str:
    return f"{side['median_s']:.2f}" if side["status"] == "ok" else f"failed in {side['median_s']:.2f}"


def _latency(side: Mapping[str, Any]) -> str:
    return f"{side['latency_ms']:.3f}" if "latency_ms" in side else "–"


def _ratio(value: Optional[float]) -> str:
    return f"{value:.2f}×" if value else "–"


def render_table(report: Mapping[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {report['date']} by `{report['command']}`, on {m['cpu']} ({m['cores']} cores, "
        f"{m['memory_gib']} GiB); load average {export_speed.load_text(report['load_before'])} at the start, "
        f"{export_speed.load_text(report['load_after'])} at the end. "
        + ", ".join(f"{k} {v}" for k, v in report["packages"].items() if v)
        + f". Export seconds: median of {report['repeats']} exports after a first one, verification included "
        "(a failure: the time it took to fail); latency: ONNX Runtime, one thread, the export's largest "
        "verification case, ms per call:",
        "",
        "| model | backend | rebuild + tf2onnx s | in process s | default s | default's road | latency, tf2onnx "
        "| latency, in process | in process failed |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for c in report["cells"]:
        rebuild, native, auto = c["portable_rebuild"], c["in_process"], c["auto"]
        road = f"{auto.get('strategy', '–')}, {auto.get('converter', '–')}" if auto["status"] == "ok" \
            else export_speed.short(auto.get("error", ""), 60)
        failure = export_speed.short(native.get("error", ""), 80) if native["status"] != "ok" else ""
        lines.append(f"| {c['model']} | {c['backend']} | {_seconds(rebuild)} | {_seconds(native)} | "
                     f"{_seconds(auto)} | {road} | {_latency(rebuild)} | {_latency(native)} | {failure} |")
    s = report["summary"]
    verified = s["verified"]
    lines += ["", f"{s['cells']} cells: verified by the rebuild {verified['portable_rebuild']}, in process "
              f"{verified['in_process']}, by default {verified['auto']}. Default over rebuild, median: "
              f"{_ratio(s['median_default_over_rebuild'])} (where the in-process converter fails: "
              f"{_ratio(s['median_default_over_rebuild_where_in_process_fails'])}); latency of the in-process "
              f"artifact over tf2onnx's, median: {_ratio(s['median_latency_ratio'])}.", ""]
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: pathlib.Path) -> None:
    """Per cell: each road's export seconds (a failure hatched), and the
    in-process artifact's latency over tf2onnx's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = report["cells"]
    x = np.arange(len(cells))
    figure, (times, latency) = plt.subplots(2, 1, figsize=(max(8.0, 0.9 * len(cells) + 2), 7), dpi=110, sharex=True)
    colors = {"portable_rebuild": "tab:blue", "in_process": "tab:orange", "auto": "tab:green"}
    for index, road in enumerate(ROADS):
        for i, cell in enumerate(cells):
            side = cell[road]
            failed = side["status"] != "ok"
            times.bar(x[i] + (index - 1) * 0.27, side["median_s"], 0.27, color=colors[road],
                      hatch="//" if failed else None, alpha=0.4 if failed else 1.0, label=road if i == 0 else None)
    times.set_yscale("log")
    times.set_ylabel("median export seconds (hatched: failed)")
    times.legend(fontsize=8)
    latency.scatter(x, [c.get("latency_ratio", np.nan) for c in cells])
    latency.axhline(1.0, color="grey", linewidth=0.8)
    latency.set_ylabel("latency, in process / tf2onnx")
    latency.set_xticks(x)
    latency.set_xticklabels([f"{c['model']}\n{c['backend']}" for c in cells], fontsize=7)
    figure.suptitle(f"ONNX from JAX and torch: rebuild, in process, default ({report['machine']['cpu']})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _command(argv: Optional[Sequence[str]]) -> str:
    """How this run was started, as a `bazel run` line (this machine's paths left out)."""
    args = list(sys.argv[1:] if argv is None else argv)
    shown = [a for a, before in zip(args, [None] + args) if not a.startswith("--out_dir")
             and before not in ("--out_dir",)]
    return " ".join(["bazel run //python/servekit/bench:onnx_converters", *(["--"] if shown else []), *shown])


def _run_child(backend: str, model_files: Sequence[pathlib.Path], repeats: int) -> list[dict[str, Any]]:
    """This file as a child on `backend`; its progress lines shown as they come."""
    with tempfile.TemporaryDirectory(prefix="onnx_converters.") as scratch:
        result = os.path.join(scratch, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--child_result", result, "--repeats", str(repeats),
                   "--models", ",".join(str(p) for p in model_files)]
        process = subprocess.Popen(command, env=export_speed.child_env(backend), cwd=scratch,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        other = []
        for line in process.stderr or ():
            if line.startswith(PROGRESS):
                export_speed.progress(line[len(PROGRESS):].rstrip())
            else:
                other.append(line.rstrip())
        if process.wait() != 0 or not os.path.exists(result):
            tail = "\n".join(other[-8:])
            raise RuntimeError(f"The {backend} child exited with {process.returncode}:\n{tail}")
        with open(result) as f:
            return json.load(f)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="zoo model names (models/<name>.py), or model file paths in a child")
    parser.add_argument("--models_dir", type=pathlib.Path, default=export_speed.DEFAULT_MODELS_DIR)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out_dir", type=pathlib.Path, default=None,
                        help="default: benchmarks/onnx_converters in the workspace")
    parser.add_argument("--readme", type=pathlib.Path, default=None,
                        help="rewrite this README's section between the onnx-converters markers")
    parser.add_argument("--child_result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_result:
        with tempfile.TemporaryDirectory(prefix="onnx_converters_artifacts.") as scratch:
            cells = child([pathlib.Path(p) for p in args.models.split(",")], args.repeats, scratch)
        pathlib.Path(args.child_result).write_text(json.dumps(cells))
        return 0
    model_files = [args.models_dir / f"{name}.py" for name in args.models.split(",")]
    load_before = machine.load_average()
    cells = []
    for backend in args.backends.split(","):
        cells += [summarize_cell(c) for c in _run_child(backend, model_files, args.repeats)]
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": _command(argv),
        "machine": machine.machine_info(), "load_before": load_before, "load_after": machine.load_average(),
        "packages": machine.package_versions(("keras", "jax", "jax2onnx", "torch", "onnx", "onnxruntime",
                                              "tf2onnx", "tensorflow|tensorflow-cpu")),
        "repeats": args.repeats, "cells": cells, "summary": summarize(cells),
    }
    out_dir = args.out_dir or report_files.workspace_dir() / "benchmarks" / "onnx_converters"
    report_files.write(report, out_dir, "onnx_converters", render_table, plot)
    if args.readme:
        readme = args.readme if args.readme.is_absolute() else report_files.workspace_dir() / args.readme
        report_files.replace_between(readme, README_BEGIN, README_END, render_table(report))
    print(render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
