"""Benchmarks an export's artifacts natively and in Python, side by side.

    bazel run //models:mlp_tensorflow_benchmark
    python -m servekit.bench.benchmark --manifest bazel-bin/models/mlp_tensorflow/manifest.json \\
        --out_dir /tmp/bench --batches 1,8,32,128 --threads 1

For every artifact of the export and every batch size, on the same inputs (the
reference inputs, tiled to the batch) and with the same thread settings, it
measures:

  native           the C++ runner's own loop (TF C API, ORT C++ API, OpenVINO, LiteRT,
                   AOTInductor), no Python
  native_python    the same runner called once per iteration from Python
                   through the pybind11 module (what a Python server would see)
  bare_cpp         the runtime's bare C/C++ call loop, alternating call by call
                   with `native` (every format but the SavedModel): a bare
                   `Ort::Session::Run` over prebuilt values on the runner's own
                   session (what onnxruntime_perf_test measures), OpenVINO's
                   `InferRequest::infer()` (what benchmark_app measures),
                   `LiteRtRunCompiledModel` over buffers made once,
                   `AOTIModelPackageLoader::run` on prebuilt at::Tensors
  python_runtime   `onnxruntime.InferenceSession.run`,
                   `tf.saved_model.load(path).signatures["serving_default"]`,
                   OpenVINO's `InferRequest.infer`, `ai_edge_litert`'s signature
                   runner, or `torch._inductor.aoti_load_package`

The runners take turns in rounds (`measure_interleaved`), so that load on the
machine is shared by all of them rather than skewing one. It then writes
benchmark.json, benchmark.md (a table with ratios) and benchmark.png (p50 latency
against batch size, per runner). Speed is only ever measured here, never
asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from servekit import native
from servekit.bench import report_files
from servekit.bench.machine import machine_info

DEFAULT_BATCHES = (1, 8, 32, 128)


def latency_stats(latencies_ns: Sequence[float], batch: int) -> dict[str, float]:
    """p50/p90/p99/max latency in microseconds and throughput in samples/s.

    Percentiles are nearest-rank (the p-th percentile of n samples is the
    ceil(p/100 * n)-th smallest), computed by the same C++ function as
    `servekit_verify bench` (`native.summarize_latencies`)."""
    stats = native.summarize_latencies([int(t) for t in latencies_ns])
    return {
        "iterations": stats.iterations,
        "p50_us": stats.p50_us,
        "p90_us": stats.p90_us,
        "p99_us": stats.p99_us,
        "max_us": stats.max_us,
        "mean_us": stats.mean_us,
        "throughput_per_s": batch / (stats.mean_us / 1e6),
    }


def time_python_loop(call: Callable[[], Any], iterations: int, seconds: float) -> list[int]:
    """Per-call latencies (ns) of `call`: at least `iterations` calls and `seconds`
    of calls, whichever ends later."""
    latencies = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < iterations or time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        call()
        latencies.append(time.perf_counter_ns() - start)
    return latencies


# A runner times calls: (min_iterations, min_seconds) -> {series: per-call latencies
# in ns}. Most runners time one series; the native runner times itself and the
# runtime's bare C/C++ loop alternating call by call, as two series.
Runner = Callable[[int, float], Mapping[str, list[int]]]


def measure_interleaved(runners: Mapping[str, Runner], warmup: int, iterations: int, seconds: float,
                        rounds: int) -> dict[str, list[int]]:
    """Latencies of each runner's series, measured in `rounds` interleaved slices.

    Every runner gets `warmup` untimed calls, then each round runs every runner
    for its share (iterations / rounds calls and seconds / rounds), starting with
    a different runner each round. Load that comes and goes during the
    measurement then lands on all runners alike instead of on whichever ran at
    that moment, so the ratios between runners stay meaningful on a busy machine.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(runners)
    if warmup > 0:
        for name in names:
            runners[name](warmup, 0.0)
    latencies: dict[str, list[int]] = {}
    per_round_iterations = -(-iterations // rounds)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            for series, values in runners[name](per_round_iterations, seconds / rounds).items():
                latencies.setdefault(series, []).extend(values)
    return latencies


def tile_to_batch(array: np.ndarray, batch: int) -> np.ndarray:
    """The first `batch` rows of `array` repeated along axis 0 (a fresh C array)."""
    reps = -(-batch // array.shape[0])
    return np.ascontiguousarray(np.concatenate([array] * reps, axis=0)[:batch])


def reference_inputs(manifest: Mapping[str, Any], root: pathlib.Path, endpoint: str) -> dict[str, np.ndarray]:
    """The largest reference case's inputs of `endpoint`, keyed by input name."""
    cases = [c for c in manifest["reference"] if c["endpoint"] == endpoint]
    if not cases:
        raise ValueError(f"Export '{manifest['model']}' has no reference case for endpoint '{endpoint}'.")
    case = max(cases, key=lambda c: c["batch"])
    return {name: np.load(root / path) for name, path in case["inputs"].items()}


# Formats without a native runtime: a torch ExportedProgram runs only under Python.
NO_NATIVE_RUNTIME = ("torch",)
# Formats whose runtime has a bare C/C++ loop to compare the native runner with (a
# TensorFlow session's run has no cheaper form).
BARE_LOOP_FORMATS = ("onnx", "openvino", "litert", "torch_aoti")


def _python_runner(fmt: str, path: pathlib.Path, endpoint: str, threads: int, artifact: Mapping[str, Any],
                   input_names: Sequence[str]):
    """A callable running `inputs` through the Python runtime of `fmt`, with
    `threads` intra-op threads and ops run in the calling thread, like the
    native runners: onnxruntime, TensorFlow, OpenVINO's `CompiledModel`,
    `ai_edge_litert`'s signature runner, `torch._inductor.aoti_load_package`."""
    if fmt == "openvino":
        import openvino as ov

        precision = "bf16" if artifact.get("precision") == "bfloat16" else "f32"
        compiled = ov.Core().compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
        request = compiled.create_infer_request()
        return lambda inputs: request.infer(dict(inputs))
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner(endpoint)
        return lambda inputs: runner(**inputs)
    if fmt == "torch_aoti":
        import torch

        torch.set_num_threads(threads)
        package = torch._inductor.aoti_load_package(str(path))

        def run_package(inputs: Mapping[str, np.ndarray]) -> Any:
            with torch.no_grad():
                return package(*[torch.from_numpy(inputs[n]) for n in input_names])

        return run_package
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda inputs: session.run(None, inputs)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(native.CALLER_THREAD)
    loaded = tf.saved_model.load(str(path))
    function = loaded.signatures[endpoint]

    def run(inputs: Mapping[str, np.ndarray]) -> Any:
        return function(**{k: tf.constant(v) for k, v in inputs.items()})

    run.keep_alive = loaded  # the signature needs its SavedModel object alive
    return run


def benchmark_export(
    manifest_path: pathlib.Path,
    batches: Sequence[int] = DEFAULT_BATCHES,
    threads: int = 1,
    warmup: int = 20,
    iterations: int = 200,
    seconds: float = 1.0,
    rounds: int = 5,
    formats: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
    """Runs the side-by-side benchmark of one export; returns the report.

    Args:
        manifest_path: the export's manifest.json.
        batches: batch sizes of the sweep.
        threads: intra-op threads for every runtime (inter-op: the caller's thread).
        warmup: untimed runs per runner before each measurement.
        iterations: minimum timed runs per runner and batch.
        seconds: minimum time per runner and batch.
        rounds: slices the runners take turns in (see `measure_interleaved`).
        formats: artifacts to measure; all of the export's by default.

    Returns:
        A JSON-serialisable dict: machine, settings, one row per (format,
        runner, batch) with latency percentiles and throughput, and the ratios
        between runners (see `runner_ratios`).

    Raises:
        ValueError: the export has no reference inputs for `serving_default`,
            or `rounds` < 1.

    Example:

    >>> report = benchmark_export(pathlib.Path("bazel-bin/models/mlp_tensorflow/manifest.json"),
    ...                           batches=[1, 32], seconds=0.5)
    >>> write_report(report, pathlib.Path("/tmp/mlp_bench"))
    """
    manifest = json.loads(manifest_path.read_text())
    root = manifest_path.parent
    endpoint = "serving_default"
    base_inputs = reference_inputs(manifest, root, endpoint)
    rows, skipped = [], []
    serving = next(e for e in manifest["endpoints"] if e["name"] == endpoint)
    input_names = [t["name"] for t in serving["inputs"]]
    for artifact in manifest["artifacts"]:
        fmt = artifact["format"]
        if formats and fmt not in formats:
            continue
        if fmt in NO_NATIVE_RUNTIME:
            skipped.append({"format": fmt, "reason": "no native runtime (a torch ExportedProgram runs under Python)"})
            continue
        path = root / artifact["path"]
        model = native.load(str(path), intra_op_threads=threads, inter_op_threads=native.CALLER_THREAD)
        python_run = _python_runner(fmt, path, endpoint, threads, artifact, input_names)
        for batch in batches:
            inputs = {k: tile_to_batch(v, batch) for k, v in base_inputs.items()}
            if fmt in BARE_LOOP_FORMATS:  # the native loop and the bare C/C++ loop, call by call
                native_runner: Runner = lambda n, s: dict(zip(
                    ("native", "bare_cpp"), native.runner_and_bare_loops(model, inputs, 0, n, s)))
            else:
                native_runner = lambda n, s: {"native": native.benchmark_loop(model, endpoint, inputs, 0, n, s)}
            runners: dict[str, Runner] = {
                "native": native_runner,
                "native_python": lambda n, s: {
                    "native_python": time_python_loop(lambda: model.run(endpoint, inputs), n, s)},
                "python_runtime": lambda n, s: {
                    "python_runtime": time_python_loop(lambda: python_run(inputs), n, s)},
            }
            measured = measure_interleaved(runners, warmup, iterations, seconds, rounds)
            for runner, latencies in measured.items():
                rows.append({"format": fmt, "runner": runner, "batch": batch,
                             **latency_stats(latencies, batch)})
        del model, python_run
    return {
        "model": manifest["model"],
        "source_backend": manifest["source_backend"],
        "machine": machine_info(),
        "settings": {"threads": threads, "inter_op": "caller thread", "warmup": warmup,
                     "min_iterations": iterations, "min_seconds": seconds, "rounds": rounds,
                     "batches": list(batches)},
        "results": rows,
        "ratios": runner_ratios(rows),
        "skipped": skipped,
    }


def runner_ratios(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The comparisons the benchmark exists for, one entry per (format, batch).

    - `native_speedup_vs_python`: the Python runtime's p50 over the native loop's;
    - `native_python_speedup_vs_python`: the same for the module called from Python;
    - `native_overhead_vs_bare_cpp`: the native loop's p50 over the runtime's bare
      C/C++ loop's (1.0 = no overhead; not for the SavedModel);
    - `native_throughput_vs_fastest_python`: the native loop's samples/s over the
      faster Python runtime's (of either format) at that batch.
    """
    by_key = {(r["format"], r["runner"], r["batch"]): r for r in rows}
    fastest_python: dict[int, float] = {}
    for r in rows:
        if r["runner"] == "python_runtime":
            fastest_python[r["batch"]] = max(fastest_python.get(r["batch"], 0.0), r["throughput_per_s"])
    ratios = []
    for (fmt, runner, batch), native_row in by_key.items():
        if runner != "native":
            continue
        python_row = by_key.get((fmt, "python_runtime", batch))
        module_row = by_key.get((fmt, "native_python", batch))
        bare_row = by_key.get((fmt, "bare_cpp", batch))
        entry: dict[str, Any] = {"format": fmt, "batch": batch}
        if python_row:
            entry["native_speedup_vs_python"] = python_row["p50_us"] / native_row["p50_us"]
            if module_row:
                entry["native_python_speedup_vs_python"] = python_row["p50_us"] / module_row["p50_us"]
        if bare_row:
            entry["native_overhead_vs_bare_cpp"] = native_row["p50_us"] / bare_row["p50_us"]
        if fastest_python.get(batch):
            entry["native_throughput_vs_fastest_python"] = native_row["throughput_per_s"] / fastest_python[batch]
        ratios.append(entry)
    return ratios


_RATIO_COLUMNS = (
    ("native_speedup_vs_python", "native vs python p50"),
    ("native_python_speedup_vs_python", "module from Python vs python p50"),
    ("native_overhead_vs_bare_cpp", "native / bare C/C++ loop p50"),
    ("native_throughput_vs_fastest_python", "native / fastest python samples/s"),
)


def render_table(report: Mapping[str, Any]) -> str:
    """Markdown: the machine, one row per measurement, then the ratios between runners."""
    machine = report["machine"]
    settings = report["settings"]
    lines = [
        f"Model `{report['model']}` (source backend {report['source_backend']}); "
        f"{machine['cpu']}, {machine['cores']} cores"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU")
        + f"; {settings['threads']} intra-op thread(s); runners interleaved in "
        f"{settings['rounds']} rounds.",
        "",
        "| format | runner | batch | p50 µs | p90 µs | p99 µs | max µs | samples/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['format']} | {row['runner']} | {row['batch']} | {row['p50_us']:.1f} | "
            f"{row['p90_us']:.1f} | {row['p99_us']:.1f} | {row['max_us']:.1f} | "
            f"{row['throughput_per_s']:.0f} |"
        )
    lines += [
        "",
        "| format | batch | " + " | ".join(title for _, title in _RATIO_COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(_RATIO_COLUMNS),
    ]
    for entry in report["ratios"]:
        cells = [f"{entry[key]:.2f}×" if key in entry else "" for key, _ in _RATIO_COLUMNS]
        lines.append(f"| {entry['format']} | {entry['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: pathlib.Path) -> None:
    """Writes a PNG of p50 latency against batch size, one line per format and runner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=110)
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in report["results"]:
        series.setdefault((row["format"], row["runner"]), []).append((row["batch"], row["p50_us"]))
    for (fmt, runner), points in sorted(series.items()):
        points.sort()
        axis.plot([b for b, _ in points], [p for _, p in points], marker="o",
                  linestyle="-" if fmt == "onnx" else "--", label=f"{fmt} · {runner}")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("batch size")
    axis.set_ylabel("p50 latency (µs)")
    axis.set_title(f"{report['model']}: latency vs batch ({report['machine']['cpu']})", fontsize=9)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(report: Mapping[str, Any], out_dir: pathlib.Path) -> None:
    """Writes benchmark.json, benchmark.md and benchmark.png into `out_dir`."""
    report_files.write(report, out_dir, "benchmark", render_table, plot)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark a servekit export natively and in Python.")
    parser.add_argument("--manifest", required=True, type=pathlib.Path)
    parser.add_argument("--out_dir", required=True, type=pathlib.Path)
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved slices per measurement")
    parser.add_argument("--formats", default=None, help="comma-separated; default: all")
    args = parser.parse_args(argv)
    report = benchmark_export(
        args.manifest,
        batches=[int(b) for b in args.batches.split(",")],
        threads=args.threads,
        warmup=args.warmup,
        iterations=args.iterations,
        seconds=args.seconds,
        rounds=args.rounds,
        formats=args.formats.split(",") if args.formats else None,
    )
    write_report(report, args.out_dir)
    sys.stdout.write(render_table(report))
    print(f"\nreport: {args.out_dir}/benchmark.json, benchmark.md, benchmark.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
