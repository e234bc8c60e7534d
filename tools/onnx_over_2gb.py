"""Exports a Keras model with > 2 GB of float32 weights to ONNX, end to end,
and measures the export's memory stage by stage.

    bazel run //tools:onnx_over_2gb [-- --rows 540000 --width 1000 --formats onnx --out /tmp/over_2gb]

The model is an `Embedding` table of `rows x width` float32 weights (default
540,000 x 1,000 = 2.16 GB) followed by average pooling and a Dense layer,
built with seeded random weights on the TensorFlow backend; `--vocabulary
10000` puts a `StringLookup` table in front of it (string inputs). The build tool
exports it (the same call as `model_export`; `--formats tf_saved_model,onnx`
for both); the ONNX model is then a directory with `model.onnx` and
`model.onnx.data` (servekit.onnx), which the native verifier validates against
the manifest (digests of both files, signatures, reference outputs) and
`servekit.load` reloads and runs in Python.

Prints the time of each step, the peak resident memory of the exporting
process and of the export worker at each stage (`servekit.peak_memory`), and
the peak of both together (sampled), each also as a multiple of the weights.
A smaller table (`--rows 135000`) with `SERVEKIT_ONNX_EXTERNAL_DATA_BYTES`
below its size takes the same roads at a quarter of the memory.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

import numpy as np

from servekit import peak_memory


def build_model(rows: int, width: int, vocabulary: int = 0):
    """The model; with `vocabulary` > 0 its input is 4 words, looked up in a
    `StringLookup` table of that many tokens ("token0", ...) before the
    embedding (a lookup table in a model over 2 GB)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    if vocabulary:
        words = keras.Input((4,), dtype="string", name="words")
        lookup = keras.layers.StringLookup(vocabulary=[f"token{i}" for i in range(vocabulary)], name="lookup")
        ids = lookup(words)
    else:
        words = ids = keras.Input((4,), dtype="int32", name="ids")
    # Zeros, then seeded NumPy values: Keras's random initializer holds about
    # two more copies of a 2 GB table while it draws it.
    embedding = keras.layers.Embedding(rows, width, embeddings_initializer="zeros", name="table")
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(embedding(ids))
    scores = keras.layers.Dense(4, name="scores")(pooled)
    # Drawn and assigned block by block of rows (the same values as one draw of
    # the whole table), into the variable's buffer: the table is in memory once.
    rng = np.random.default_rng(0)
    table = embedding.embeddings.value
    block = max(1, 2**26 // (4 * width))
    for start in range(0, rows, block):
        values = rng.random((min(block, rows - start), width), dtype=np.float32)
        values -= 0.5
        values *= 0.1
        tf.raw_ops.ResourceStridedSliceAssign(ref=table.handle, begin=[start], end=[start + len(values)], strides=[1],
                                              value=values)
    tf.raw_ops.DisableCopyOnRead(resource=table.handle)  # reads share the buffer again
    return keras.Model(words, scores, name="over_2gb")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=540_000)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--vocabulary", type=int, default=0,
                        help="string inputs looked up in a table of this many tokens (0: int ids)")
    parser.add_argument("--formats", default="onnx", help="comma-separated, e.g. tf_saved_model,onnx")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="export directory (default: a temporary one)")
    parser.add_argument("--memory_json", type=pathlib.Path, default=None,
                        help="also write the per-stage peak memory here (JSON)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="servekit-over-2gb-")) / "over_2gb_tensorflow"
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    trace = tempfile.NamedTemporaryFile(prefix="servekit-memory-", suffix=".jsonl", delete=False).name
    os.environ[peak_memory.TRACE_ENV] = trace  # the export worker inherits it

    from servekit import native
    from servekit.build import build_tool

    sampler = TreeSampler()
    sampler.start()
    peak_memory.mark("imports")
    t0 = time.monotonic()
    model = build_model(args.rows, args.width, args.vocabulary)
    weight_bytes = sum(4 * int(np.prod(w.shape)) for w in model.weights)  # float32
    t1 = time.monotonic()
    peak_memory.mark("build the model")
    sampler.reset()
    manifest_path = build_tool.build_export(model, out, "over_2gb_tensorflow", "tensorflow", formats=formats,
                                            verbose=True)
    t2 = time.monotonic()
    export_peak, at_peak = sampler.peak, dict(sampler.at_peak)
    report = native.validate(str(manifest_path))
    t3 = time.monotonic()
    peak_memory.mark("native validation")
    manifest = json.loads(manifest_path.read_text())
    python_error = _python_reload_error(out, manifest)
    t4 = time.monotonic()
    peak_memory.mark("Python reload")
    sampler.stop()
    memory = memory_report(trace, weight_bytes, export_peak)
    memory["export_peak_by_process_gib"] = {command: round(rss / 2**30, 2) for command, rss in at_peak.items()}
    os.unlink(trace)
    result = {
        "weights_bytes": weight_bytes,
        "artifacts": {a["format"]: {"path": a["path"], "converter": a.get("converter"), "strategy": a.get("strategy"),
                                    "files": {name: {"bytes": _file_bytes(out / a["path"], name), "digest": digest}
                                              for name, digest in a["files"].items()}}
                      for a in manifest["artifacts"]},
        "build_model_s": round(t1 - t0, 1), "export_s": round(t2 - t1, 1), "native_validate_s": round(t3 - t2, 1),
        "python_reload_s": round(t4 - t3, 2),  # onnxruntime maps the data file
        "memory": memory,
        "native_validation": "passed" if report else "failed",
        "python_reload": python_error or "passed",
        "export_dir": str(out),
    }
    print(json.dumps(result, indent=2))
    print(_memory_table(memory))
    if args.memory_json:
        args.memory_json.write_text(json.dumps(result, indent=2) + "\n")
    if not report:
        print(report.to_text(), file=sys.stderr)
    return 0 if report and not python_error else 1


def _file_bytes(artifact: pathlib.Path, name: str) -> int:
    """Size of one of an artifact's files (`name` is the artifact itself for a single file)."""
    return (artifact / name if artifact.is_dir() else artifact).stat().st_size


class TreeSampler:
    """Samples the resident memory of this process and its descendants (the
    export worker) together, every `interval` seconds, in a thread: the peak
    of all servekit processes at once, which per-process peaks only bound.
    (Resident memory counts the pages of shared libraries in each process.)"""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self.at_peak: dict[str, int] = {}  # each process' resident memory then
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def reset(self) -> None:
        """Forgets the peak so far: the next one is the next step's."""
        self.peak, self.at_peak = 0, {}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids, listed = [os.getpid()], 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - listed > 1.0:  # a scan of /proc costs more than a sample: once a second
                pids, listed = _tree(os.getpid()), now
            resident = {}
            for pid in pids:
                status = peak_memory.status_bytes(pid)
                if status:
                    resident[pid] = status["VmRSS"]
            if sum(resident.values()) > self.peak:
                self.peak, self.at_peak = sum(resident.values()), {_command(pid): rss for pid, rss in resident.items()}
            self._stop.wait(self.interval)


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"{pid} " + f.read().replace(b"\0", b" ").decode(errors="replace").strip()[-80:]
    except OSError:
        return str(pid)


def _tree(root: int) -> list[int]:
    """`root` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def memory_report(trace: str, weight_bytes: int, export_peak: int) -> dict:
    """The stages `servekit.peak_memory` recorded, by process, with their peaks
    in GiB and as a multiple of the weights."""
    me = os.getpid()
    stages = []
    with open(trace) as f:
        for line in f:
            r = json.loads(line)
            stages.append({"process": "exporting process" if r["pid"] == me else "export worker",
                           "stage": r["stage"], "peak_gib": round(r["peak_bytes"] / 2**30, 2),
                           "peak_x_weights": round(r["peak_bytes"] / weight_bytes, 2),
                           "resident_after_gib": round(r["rss_bytes"] / 2**30, 2)})
    per_process: dict[str, float] = {}
    for s in stages:
        per_process[s["process"]] = max(per_process.get(s["process"], 0), s["peak_gib"])
    return {"export_all_processes_peak_gib": round(export_peak / 2**30, 2),
            "export_all_processes_peak_x_weights": round(export_peak / weight_bytes, 2),
            "per_process_peak_gib": per_process, "stages": stages}


def _memory_table(memory: dict) -> str:
    lines = ["| process | stage | peak GiB | x weights | resident after, GiB |", "|---|---|---:|---:|---:|"]
    for s in memory["stages"]:
        lines.append(f"| {s['process']} | {s['stage']} | {s['peak_gib']} | {s['peak_x_weights']} | "
                     f"{s['resident_after_gib']} |")
    lines.append(f"export, all servekit processes together (sampled every 50 ms): "
                 f"{memory['export_all_processes_peak_gib']} GiB = "
                 f"{memory['export_all_processes_peak_x_weights']}x the weights")
    return "\n".join(lines)


def _python_reload_error(out: pathlib.Path, manifest: dict) -> str:
    """Reloads every artifact with `servekit.load` and runs the reference
    cases; returns what went wrong, or "" when every output matches."""
    import servekit

    for artifact in manifest["artifacts"]:
        loaded = servekit.load(str(out / artifact["path"]))
        for case in manifest["reference"]:
            inputs = {name: np.load(out / path) for name, path in case["inputs"].items()}
            got = loaded.call_endpoint(case["endpoint"], **inputs)
            for name, path in case["outputs"].items():
                want = np.load(out / path)
                if not np.allclose(got[name], want, atol=1e-5, rtol=0):
                    return (f"{artifact['format']}: output '{name}' at batch {case['batch']}: max abs error "
                            f"{np.max(np.abs(got[name] - want))}")
        del loaded
    return ""


if __name__ == "__main__":
    sys.exit(main())
