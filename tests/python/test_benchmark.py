"""servekit.bench.benchmark, the side-by-side benchmark driver, on a real zoo export.

Only the report's shape and its arithmetic are checked here: speed itself is
measured by `bazel run //models:<export>_benchmark`, never asserted.
"""

import json
import os
import pathlib

import pytest

from servekit.bench import benchmark

RUNFILES = pathlib.Path(os.environ.get("TEST_SRCDIR", ".")) / os.environ.get("TEST_WORKSPACE", "servekit")
MANIFEST = RUNFILES / "models/mlp_tensorflow/manifest.json"


def test_runners_take_turns_and_each_gets_its_share():
    calls = []

    def runner(name, series=None):
        def run(iterations, seconds):
            calls.append((name, iterations, seconds))
            return {s: [1] * iterations for s in (series or [name])}
        return run

    latencies = benchmark.measure_interleaved(
        {"a": runner("a", ["a", "a_bare"]), "b": runner("b"), "c": runner("c")},
        warmup=2, iterations=10, seconds=0.3, rounds=3)

    assert calls[:3] == [("a", 2, 0.0), ("b", 2, 0.0), ("c", 2, 0.0)]  # warm-up, untimed
    assert [name for name, _, _ in calls[3:]] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(n == 4 and s == pytest.approx(0.1) for _, n, s in calls[3:])
    assert {name: len(values) for name, values in latencies.items()} == {"a": 12, "a_bare": 12, "b": 12, "c": 12}


def test_rounds_must_be_positive():
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        benchmark.measure_interleaved({"a": lambda n, s: {"a": [1]}}, warmup=0, iterations=1, seconds=0, rounds=0)


@pytest.fixture(scope="module")
def report():
    return benchmark.benchmark_export(MANIFEST, batches=[1, 3], threads=1, warmup=1, iterations=6, seconds=0.0,
                                      rounds=2)


def test_every_runner_measured_on_every_artifact_and_batch(report):
    measured = {(r["format"], r["runner"], r["batch"]) for r in report["results"]}
    every = ["native", "native_python", "python_runtime"]
    expected = {(fmt, runner, batch)
                for fmt, runners in {"tf_saved_model": every, "onnx": every + ["bare_cpp"],
                                     "openvino": every + ["bare_cpp"], "litert": every + ["bare_cpp"]}.items()
                for runner in runners for batch in (1, 3)}
    assert measured == expected
    # The ExportedProgram has no native runtime: listed, not measured.
    assert [s["format"] for s in report["skipped"]] == ["torch"]
    for row in report["results"]:
        assert row["iterations"] >= 6
        assert 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["max_us"]
        assert row["throughput_per_s"] == pytest.approx(row["batch"] / (row["mean_us"] / 1e6))
    assert report["settings"]["rounds"] == 2 and report["machine"]["cores"] >= 1


def test_ratios_follow_from_the_rows(report):
    row = {(r["format"], r["runner"], r["batch"]): r for r in report["results"]}
    fastest_python = max(r["throughput_per_s"] for r in report["results"]
                         if r["runner"] == "python_runtime" and r["batch"] == 3)
    onnx = next(e for e in report["ratios"] if (e["format"], e["batch"]) == ("onnx", 3))
    assert onnx["native_overhead_vs_bare_cpp"] == pytest.approx(
        row[("onnx", "native", 3)]["p50_us"] / row[("onnx", "bare_cpp", 3)]["p50_us"])
    litert = next(e for e in report["ratios"] if (e["format"], e["batch"]) == ("litert", 1))
    assert litert["native_overhead_vs_bare_cpp"] == pytest.approx(
        row[("litert", "native", 1)]["p50_us"] / row[("litert", "bare_cpp", 1)]["p50_us"])
    assert onnx["native_speedup_vs_python"] == pytest.approx(
        row[("onnx", "python_runtime", 3)]["p50_us"] / row[("onnx", "native", 3)]["p50_us"])
    assert onnx["native_python_speedup_vs_python"] == pytest.approx(
        row[("onnx", "python_runtime", 3)]["p50_us"] / row[("onnx", "native_python", 3)]["p50_us"])
    assert onnx["native_throughput_vs_fastest_python"] == pytest.approx(
        row[("onnx", "native", 3)]["throughput_per_s"] / fastest_python)
    saved_model = next(e for e in report["ratios"] if (e["format"], e["batch"]) == ("tf_saved_model", 1))
    assert "native_overhead_vs_bare_cpp" not in saved_model
    assert len(report["ratios"]) == 8  # 4 measured formats x 2 batches


def test_report_files(report, tmp_path):
    benchmark.write_report(report, tmp_path)
    assert json.loads((tmp_path / "benchmark.json").read_text()) == json.loads(json.dumps(report))
    table = (tmp_path / "benchmark.md").read_text()
    assert table.count("| onnx | bare_cpp |") == 2 and "native / bare C/C++ loop p50" in table
    assert table.count("| openvino | bare_cpp |") == 2
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
