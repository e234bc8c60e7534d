"""Exports a multi-GB Llama-style decoder with servekit and with Keras, side by side.

    bazel run //tools:decoder_at_scale -- --backend jax --formats onnx [--dtype bfloat16|mixed_bfloat16] [--json out.json]

The model is `keras_hub.models.LlamaBackbone` with random (seeded) weights,
built here, nothing downloaded. The default configuration is shaped like
Llama 3.2 1B with 24 layers: 2048 hidden, 8192 feed-forward, 32 query and 8
key/value heads, a 32,000-token vocabulary with untied input and output
embeddings: 1.59B parameters, 6.4 GB in float32 (3.2 GB in bfloat16). Inputs
are 16 token ids and a padding mask (the batch dim dynamic).

For each format it runs, one after the other, each in a fresh process so that
their peaks do not add up:
- Keras's own `model.export(path, format=...)` (its time, peak resident memory
  of its process tree, and its error when it fails);
- servekit's export through the build tool (the same call as a `model_export`
  Bazel action: probe, reference cases, the export worker's conversion and
  verification), with the peak resident memory of all servekit processes
  together (sampled), then the native verifier's validation of the artifact
  against the manifest (digests, signatures, reference outputs).

Prints one JSON document with every figure and a Markdown table, as the
README's "A 1.5B-parameter decoder" section shows them. `--layers`,
`--hidden` and the like make a smaller model of the same shape (a tiny one runs
in about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

SEQUENCE_LENGTH = 16
# The decoder's declared tolerance (atol, rtol) for float32 outputs. Its hidden
# states pass through every layer's matmuls and RMS norms, whose rounding differs
# between XLA's and TensorFlow's kernels: 1.35e-5 apart at 8 layers (measured,
# JAX source against the TensorFlow rebuild), over servekit's default 1e-5.
# bfloat16 outputs: the ONNX model computes in float32 and rounds to bfloat16 only
# where the model casts (`servekit.onnx_bfloat16`), so its outputs drift from
# TensorFlow's bfloat16 compute over 24 layers: 0.14 at most (measured 2026-12-02,
# TensorFlow source, 24 layers), over the default 1e-2; the SavedModel reproduced
# them exactly.
TOLERANCES = {"float32": (1e-4, 1e-4), "bfloat16": (0.25, 0.02)}


def build_model(args: argparse.Namespace):
    """The decoder, on the current Keras backend, with seeded random weights."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=args.vocabulary, num_layers=args.layers, num_query_heads=args.query_heads,
        num_key_value_heads=args.key_value_heads, hidden_dim=args.hidden, intermediate_dim=args.intermediate,
        dtype=args.dtype, name="llama_backbone")
    inputs = {name: keras.Input((SEQUENCE_LENGTH,), dtype="int32", name=name) for name in ("token_ids", "padding_mask")}
    return keras.Model(inputs, backbone(inputs), name="decoder")


def weight_bytes(model) -> int:
    import numpy as np

    return sum(int(np.prod(w.shape)) * np.dtype(str(w.dtype)).itemsize for w in model.weights)


def parameter_count(model) -> int:
    import numpy as np

    return sum(int(np.prod(w.shape)) for w in model.weights)


# ---- one export, in its own process --------------------------------------------------


def _run_keras_export(args: argparse.Namespace) -> dict:
    """Keras's `model.export` in this process: its time and outcome."""
    t0 = time.monotonic()
    model = build_model(args)
    built = time.monotonic()
    path = pathlib.Path(args.out)
    result: dict[str, Any] = {"build_model_s": round(built - t0, 1)}
    # Keras's ONNX export on JAX refuses a model that has never been called; a user
    # calls it once, untimed here as servekit's own probe is timed.
    import numpy as np

    model({"token_ids": np.zeros((1, SEQUENCE_LENGTH), "int32"), "padding_mask": np.ones((1, SEQUENCE_LENGTH), "int32")})
    built = time.monotonic()
    # Keras writes these formats to one named file (its OpenVINO and torch exports refuse other suffixes).
    file_name = {"openvino": "model.xml", "litert": "model.tflite", "torch": "model.pt2"}.get(args.child_format)
    if file_name:
        path.mkdir(parents=True, exist_ok=True)
    try:
        model.export(str(path / file_name if file_name else path), format=args.child_format, verbose=False)
    except Exception as e:  # noqa: BLE001 - reported, not hidden: this is the comparison's outcome
        result["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:600]}"
    result["export_s"] = round(time.monotonic() - built, 1)
    result["files_bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else (
        path.stat().st_size if path.exists() else 0)
    return result


def _run_servekit_export(args: argparse.Namespace) -> dict:
    """servekit's build-tool export and the native validation, in this process."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from onnx_over_2gb import memory_report, TreeSampler  # the over-2 GB proof's measurement

    from servekit import formats, native, peak_memory
    from servekit.build import build_tool

    trace = pathlib.Path(args.out).with_name(pathlib.Path(args.out).name + ".memory.jsonl")
    os.environ[peak_memory.TRACE_ENV] = str(trace)  # the export worker inherits it
    peak_memory.mark("imports")
    t0 = time.monotonic()
    model = build_model(args)
    built = time.monotonic()
    peak_memory.mark("build the model")
    sampler = TreeSampler()
    sampler.start()
    out = pathlib.Path(args.out)
    result: dict[str, Any] = {"build_model_s": round(built - t0, 1), "parameters": parameter_count(model),
                              "weights_bytes": weight_bytes(model)}
    try:
        manifest = build_tool.build_export(model, out, "decoder", args.backend, formats=(args.child_format,),
                                           input_ranges={"padding_mask": (1, 2)},
                                           tolerances={**TOLERANCES, **_tolerances(args.tolerance)})
    finally:
        sampler.stop()
    exported = time.monotonic()
    result["export_s"] = round(exported - built, 1)
    result["all_processes_peak_gib"] = round(sampler.peak / 2**30, 2)
    result["stages"] = memory_report(str(trace), weight_bytes(model), sampler.peak)["stages"]
    result["by_process_at_peak_gib"] = {command: round(rss / 2**30, 2) for command, rss in sampler.at_peak.items()}
    del model  # the native validation's memory is its own
    report = native.validate(str(manifest))
    result["native_validate_s"] = round(time.monotonic() - exported, 1)
    result["native_validation"] = "passed" if report else report.to_text()
    # How close the artifact came to the source, beside the tolerance it was held to.
    result["max_abs_error"] = max((o.max_abs_error for a in report.artifacts for c in a.parity for o in c.outputs),
                                  default=None)
    artifact = json.loads(manifest.read_text())["artifacts"][0]
    result["converter"] = artifact.get("converter")
    result["files_bytes"] = sum(formats.artifact_files(artifact["format"], str(out / artifact["path"])).values())
    return result


def _child_main(args: argparse.Namespace) -> int:
    run = _run_keras_export if args.child == "keras" else _run_servekit_export
    try:
        result = run(args)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which prints it as this export's outcome
        result = {"error": f"{type(e).__name__}: {str(e)[:2000]}"}
    # The peak of this process and of the children it waited for (the export worker).
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    result["process_peak_gib"] = round(self_peak / 2**30, 2)
    result["children_peak_gib"] = round(children_peak / 2**30, 2)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def _spawn(args: argparse.Namespace, who: str, fmt: str, out: pathlib.Path) -> dict:
    """Runs one export in a fresh process and returns what it reported."""
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", who, "--child-format", fmt,
               "--out", str(out)] + _model_flags(args)
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    t0 = time.monotonic()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    wall = time.monotonic() - t0
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        if done.returncode == -9:  # SIGKILL: on this machine, the kernel's out-of-memory killer
            why = "was killed (SIGKILL: out of memory, see dmesg)"
        else:
            why = f"exited with {done.returncode}"
        tail = "\n".join(line for line in done.stderr.splitlines()[-15:] if not line.startswith(("I0000", "W0000")))
        return {"error": f"the {who} export process {why} before reporting:\n{tail}", "wall_s": round(wall, 1)}
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = round(wall, 1)
    return result


def _model_flags(args: argparse.Namespace) -> list[str]:
    return ["--backend", args.backend, "--layers", str(args.layers), "--hidden", str(args.hidden),
            "--intermediate", str(args.intermediate), "--query-heads", str(args.query_heads),
            "--key-value-heads", str(args.key_value_heads), "--vocabulary", str(args.vocabulary),
            "--dtype", args.dtype] + [flag for t in args.tolerance for flag in ("--tolerance", t)]


def _tolerances(flags: list[str]) -> dict[str, tuple[float, float]]:
    """`--tolerance DTYPE=ATOL,RTOL` flags, by dtype."""
    found = {}
    for flag in flags:
        dtype, _, values = flag.partition("=")
        atol, _, rtol = values.partition(",")
        try:
            found[dtype] = (float(atol), float(rtol))
        except ValueError:
            raise SystemExit(f"--tolerance {flag!r}: expected DTYPE=ATOL,RTOL, e.g. bfloat16=0.1,0.02") from None
    return found


def _describe(args: argparse.Namespace) -> dict:
    """Parameters and weight bytes, counted from the configuration's shapes."""
    h, f, v, layers = args.hidden, args.intermediate, args.vocabulary, args.layers
    head_dim = h // args.query_heads
    per_layer = (2 * h * h + 2 * h * head_dim * args.key_value_heads  # query, output; key, value
                 + 3 * h * f + 2 * h)  # gate, up, down; two norms
    parameters = 2 * v * h + layers * per_layer + h  # untied embeddings, final norm
    return {"parameters": parameters, "weights_bytes": parameters * (2 if args.dtype == "bfloat16" else 4)}  # mixed: f32


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--formats", default="tf_saved_model,onnx")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "mixed_bfloat16"),
                        help="the Keras dtype policy; mixed_bfloat16: float32 weights, bfloat16 compute")
    parser.add_argument("--tolerance", action="append", default=[], metavar="DTYPE=ATOL,RTOL",
                        help="declare a tolerance over the tool's own (TOLERANCES), e.g. bfloat16=0.1,0.02")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=8192)
    parser.add_argument("--query-heads", type=int, default=32)
    parser.add_argument("--key-value-heads", type=int, default=8)
    parser.add_argument("--vocabulary", type=int, default=32000)
    parser.add_argument("--no-keras", action="store_true", help="skip Keras's own export")
    parser.add_argument("--keep", action="store_true", help="keep the export directories")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the results here")
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("keras", "servekit"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-format", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child_main(args)

    work = pathlib.Path(tempfile.mkdtemp(prefix="servekit-decoder-"))
    results: dict[str, Any] = {"model": {**_describe(args), "backend": args.backend, "dtype": args.dtype,
                                         "layers": args.layers, "hidden": args.hidden,
                                         "intermediate": args.intermediate, "vocabulary": args.vocabulary},
                               "exports": []}
    failed = False
    for fmt in (f.strip() for f in args.formats.split(",") if f.strip()):
        for who in (("keras",) if not args.no_keras else ()) + ("servekit",):
            out = work / f"{who}_{fmt}"
            print(f"[decoder] {who} export to {fmt} ({args.backend}, {args.dtype}) ...", file=sys.stderr, flush=True)
            result = {"library": who, "format": fmt, **_spawn(args, who, fmt, out)}
            results["exports"].append(result)
            print(f"[decoder] {json.dumps(result)}", file=sys.stderr, flush=True)
            if who == "servekit" and (result.get("error") or result.get("native_validation") != "passed"):
                failed = True
            if not args.keep:
                subprocess.run(["rm", "-rf", str(out)], check=False)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print(json.dumps(results, indent=2))
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


def _table(results: dict) -> str:
    gib = results["model"]["weights_bytes"] / 2**30
    lines = ["| format | library | export | peak resident memory | x weights | native validation |",
             "|---|---|---:|---:|---:|---|"]
    for r in results["exports"]:
        peak = r.get("all_processes_peak_gib") or max(r.get("process_peak_gib", 0), r.get("children_peak_gib", 0))
        outcome = r.get("native_validation", "") if r["library"] == "servekit" else ""
        if r.get("error"):
            outcome = "failed: " + r["error"].splitlines()[0][:120]
        lines.append(f"| {r['format']} | {r['library']} | {r.get('export_s', '')} s | {peak} GiB | "
                     f"{round(peak / gib, 2) if peak else ''} | {outcome} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
