"""Exports a Keras model with > 2 GB of float32 weights to ONNX, end to end.

    bazel run //tools:onnx_over_2gb [-- --rows 540000 --width 1000 --out /tmp/over_2gb]

The model is an `Embedding` table of `rows x width` float32 weights (default
540,000 x 1,000 = 2.16 GB) followed by average pooling and a Dense layer,
built with seeded random weights on the TensorFlow backend. The build tool
exports it (the same call as `model_export`); the ONNX model is then a
directory with `model.onnx` and `model.onnx.data` (servekit.onnx), which the
native verifier validates against the manifest (digests of both files,
signatures, reference outputs) and `servekit.load` reloads and runs in Python.
Prints the time of each step and the peak resident memory of this process and
of the export worker.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

import numpy as np

def _peak_gib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def build_model(rows: int, width: int):
    import keras

    keras.utils.set_random_seed(0)
    ids = keras.Input((4,), dtype="int32", name="ids")
    # Zeros, then seeded NumPy values: Keras's random initializer holds about
    # two more copies of a 2 GB table while it draws it.
    embedding = keras.layers.Embedding(rows, width, embeddings_initializer="zeros", name="table")
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(embedding(ids))
    scores = keras.layers.Dense(4, name="scores")(pooled)
    values = np.random.default_rng(0).random((rows, width), dtype=np.float32)
    values -= 0.5
    values *= 0.1
    embedding.embeddings.assign(values)
    return keras.Model(ids, scores, name="over_2gb")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=540_000)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="export directory (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="servekit-over-2gb-")) / "over_2gb_tensorflow"

    from servekit import native
    from servekit.build import build_tool

    t0 = time.monotonic()
    model = build_model(args.rows, args.width)
    weight_bytes = sum(4 * int(np.prod(w.shape)) for w in model.weights)  # float32
    t1 = time.monotonic()
    manifest_path = build_tool.build_export(model, out, "over_2gb_tensorflow", "tensorflow", formats=("onnx",),
                                            verbose=True)
    t2 = time.monotonic()
    report = native.validate(str(manifest_path))
    t3 = time.monotonic()
    manifest = json.loads(manifest_path.read_text())
    onnx_entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    python_error = _python_reload_error(out, onnx_entry["path"], manifest["reference"])
    t4 = time.monotonic()
    sizes = {name: (out / onnx_entry["path"] / name).stat().st_size for name in onnx_entry["files"]}
    result = {
        "weights_bytes": weight_bytes,
        "files": {name: {"bytes": sizes[name], "digest": digest} for name, digest in onnx_entry["files"].items()},
        "converter": onnx_entry.get("converter"), "strategy": onnx_entry.get("strategy"),
        "build_model_s": round(t1 - t0, 1), "export_s": round(t2 - t1, 1), "native_validate_s": round(t3 - t2, 1),
        "python_reload_s": round(t4 - t3, 2),  # onnxruntime maps the data file
        "peak_rss_gib": {"this_process": round(_peak_gib(resource.RUSAGE_SELF), 2),
                         "export_worker": round(_peak_gib(resource.RUSAGE_CHILDREN), 2)},
        "native_validation": "passed" if report else "failed",
        "python_reload": python_error or "passed",
        "export_dir": str(out),
    }
    print(json.dumps(result, indent=2))
    if not report:
        print(report.to_text(), file=sys.stderr)
    return 0 if report and not python_error else 1


def _python_reload_error(out: pathlib.Path, artifact: str, reference: list) -> str:
    """Reloads the ONNX artifact with `servekit.load` and runs the reference
    cases; returns what went wrong, or "" when every output matches."""
    import servekit

    loaded = servekit.load(str(out / artifact))
    for case in reference:
        inputs = {name: np.load(out / path) for name, path in case["inputs"].items()}
        got = loaded.call_endpoint(case["endpoint"], **inputs)
        for name, path in case["outputs"].items():
            want = np.load(out / path)
            if not np.allclose(got[name], want, atol=1e-5, rtol=0):
                return f"output '{name}' at batch {case['batch']}: max abs error {np.max(np.abs(got[name] - want))}"
    return ""


if __name__ == "__main__":
    sys.exit(main())
