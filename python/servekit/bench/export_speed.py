"""Export speed: `servekit.export` against Keras's own `model.export`, side by side.

    bazel run //python/servekit/bench:export_speed -- --models mlp,cnn --repeats 3
    python python/servekit/bench/export_speed.py --out_dir /tmp/es --models mlp \\
        --backends tensorflow --formats onnx --repeats 1

For every zoo model (`models/<name>.py`: `build_model()`, optionally
`sample_inputs(batch, rng)` and `input_signature()`) x backend x format, it times
both libraries in the same process states:

  cold   one fresh process per export: the wall time of the whole process
         (interpreter start, `import keras` [+ `import servekit`], building the
         model, one call, the export), and the export call alone.
  warm   one process per backend: every (model, format, library) is exported
         once untimed, then `repeats` more times, timed; the libraries take
         turns, starting with a different one each round. servekit keeps one
         warm export worker (`servekit.worker.launch.warm_worker`), as the
         build tool does.

  script one process per backend that calls `servekit.export` and `model.export`
         as a user's script or notebook does, with no `warm_worker()` block:
         servekit's own lingering worker (`launch.lingering_worker`) serves
         its calls. Every (model, format) is exported `repeats + 1` times
         by each library, the libraries alternating call by call; the first
         export of each (model, format) is reported apart (the very first
         one pays the worker's start, Keras's first JAX -> ONNX its
         converter's import), the ratio is over the 2nd and later ones,
         verification included. The report says how many worker processes
         the script started (the goal: one).

servekit is also timed warm with `verify=False` (an `export` keyword): the
verification share is `1 - t(verify=False) / t(verify=True)`, the part of a
servekit export spent generating cases, reloading the artifact and comparing.

Both libraries get the same model object, already called once on sample inputs
(Keras's ONNX export requires a called model), `verbose=False`, and the model
file's `input_signature()` if it has one. Cold runs of servekit and Keras alternate
cell by cell, and every child inherits the same environment (only KERAS_BACKEND
differs), so load on the machine lands on both alike. Reported times are medians
over the repeats; each ratio is servekit's median over Keras's. A cell Keras
cannot export (e.g. torch -> SavedModel) is reported as `keras: unsupported` with
the first line of its error, never dropped. Keras checks nothing it writes: after
the warm timings, each of its artifacts is exported once more (untimed), run in
onnxruntime or TensorFlow and compared with the model; one that fails or differs
is marked in the report (e.g. JAX -> ONNX with MaxPooling2D). Writes export_speed.json,
export_speed.md (a table) and export_speed.png, and with `--readme README.md` the
script mode's table into the README between `<!-- export-speed-script:begin -->` and
`<!-- export-speed-script:end -->`. Speed is only ever measured here, never asserted
in tests.

This file runs as a script in its children (not as `servekit.bench.export_speed`)
so that a Keras child never imports servekit: its cold time is Keras's alone.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from typing import Any, Mapping, Optional, Sequence

BACKENDS = ("tensorflow", "jax", "torch")
FORMATS = ("tf_saved_model", "onnx")
LIBRARIES = ("servekit", "keras")
MODES = ("cold", "warm", "script")
DEFAULT_MODELS = ("mlp", "cnn", "rnn", "transformer")
# servekit with verification off: timed warm only, for the verification share.
SERVEKIT_NO_VERIFY = "servekit_no_verify"
CHILD_TIMEOUT_S = 1800
# Marks the lines of a child's stderr that the driver shows as they come.
PROGRESS = "export_speed: "
# models/ of the checkout, or of the runfiles tree under `bazel run` (the py_binary's data).
_HERE = pathlib.Path(os.path.abspath(__file__))
DEFAULT_MODELS_DIR = _HERE.parents[3] / "models" if len(_HERE.parents) > 3 else pathlib.Path("models")
# The measures whose servekit / Keras ratio is reported, with their table titles.
MEASURES = (
    ("cold_wall_s", "cold process, wall"),
    ("cold_export_s", "cold process, export call"),
    ("warm_export_s", "warm process, export call"),
    ("script_export_s", "one script, 2nd+ export call"),
)
# The README's lines the script mode rewrites (`--readme`).
README_BEGIN = "<!-- export-speed-script:begin -->"
README_END = "<!-- export-speed-script:end -->"


def readme_markers(strategy: str = "auto") -> tuple[str, str]:
    """The lines around the script mode's README section for servekit's
    `strategy` ("auto": `README_BEGIN`, `README_END`)."""
    if strategy == "auto":
        return README_BEGIN, README_END
    return f"<!-- export-speed-script-{strategy}:begin -->", f"<!-- export-speed-script-{strategy}:end -->"

# The arguments //python/servekit/bench:export_speed_script passes first (its BUILD `args`).
SCRIPT_TARGET_ARGS = ("--modes", "script", "--readme", "README.md")


# ---------------------------------------------------------------- child side


def _load_model_file(path: pathlib.Path) -> types.ModuleType:
    """Imports a zoo model file by path (like `servekit.build.build_tool`, without
    importing servekit, so that a Keras child stays free of it)."""
    spec = importlib.util.spec_from_file_location(f"servekit_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"Cannot import model file {path}: not a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the portable rebuild re-imports its classes by module name
    if str(path.parent) not in sys.path:  # its helper modules (models/calibration.py), as the build tool finds them
        sys.path.insert(0, str(path.parent))
    spec.loader.exec_module(module)
    if not hasattr(module, "build_model"):
        raise ValueError(f"Model file {path} defines no build_model(). Add `def build_model() -> keras.Model`.")
    return module


def _sample_inputs(module: types.ModuleType, model: Any, batch: int = 2) -> Any:
    """The model file's `sample_inputs`, else N(0, 1) floats and integers in
    the model file's `input_ranges()` for that input, or in [0, 2): valid ids
    for any embedding and any mask."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    if hasattr(module, "sample_inputs"):
        return module.sample_inputs(batch, rng)
    ranges = module.input_ranges() if hasattr(module, "input_ranges") else {}

    def make(tensor: Any) -> Any:
        shape = [batch] + [4 if d is None else int(d) for d in tensor.shape[1:]]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if dtype == "string":
            raise ValueError(f"Model '{model.name}' input '{tensor.name}' is a string tensor: define "
                             "sample_inputs(batch, rng) in its model file.")
        if dtype.startswith("float"):
            return rng.standard_normal(shape).astype(dtype)
        low, high = ranges.get(tensor.name, (0, 2))
        return rng.integers(low, high, shape).astype(dtype)

    return keras.tree.map_structure(make, model.input)


def prepare(model_file: pathlib.Path) -> tuple[Any, Any, Any]:
    """Builds the model and calls it once; returns (model, input_signature or None, the inputs)."""
    module = _load_model_file(model_file)
    model = module.build_model()
    inputs = _sample_inputs(module, model)
    model(inputs)  # Keras's ONNX export needs a called model
    signature = module.input_signature() if hasattr(module, "input_signature") else None
    return model, signature, inputs


def check_keras_artifact(model: Any, fmt: str, signature: Any, inputs: Any) -> str:
    """Exports with Keras once more (untimed), runs the artifact, compares with the model.

    Keras does not check what it writes; a time measured for an artifact that
    does not run (e.g. JAX -> ONNX with MaxPooling2D) is marked in the report.

    Returns:
        "ok" (outputs within 1e-4 of the model's), "wrong outputs: ...",
        "fails: <first line of the runtime's error>", or "not checked: <why>".
    """
    import keras
    import numpy as np

    flat_inputs = [np.asarray(x) for x in keras.tree.flatten(inputs)]
    if isinstance(inputs, dict) or len(flat_inputs) != 1:
        return "not checked: the check feeds single-input models only"
    expected = [np.asarray(keras.ops.convert_to_numpy(y)) for y in keras.tree.flatten(model(inputs))]
    with tempfile.TemporaryDirectory(prefix="export_speed_check.") as scratch:
        path = os.path.join(scratch, "model.onnx" if fmt == "onnx" else "saved_model")
        model.export(path, format=fmt, verbose=False, input_signature=signature)
        try:
            if fmt == "onnx":
                import onnxruntime

                session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
                actual = session.run(None, {session.get_inputs()[0].name: flat_inputs[0]})
            else:
                import tensorflow as tf

                loaded = tf.saved_model.load(path)  # kept alive while `serve` runs
                actual = [np.asarray(y) for y in tf.nest.flatten(loaded.serve(tf.constant(flat_inputs[0])))]
        # The runtime's own error is the finding (onnxruntime and TensorFlow raise their own types).
        except Exception as e:  # noqa: BLE001
            lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            return f"fails: {type(e).__name__}: {lines[0][:200]}"
    if len(actual) != len(expected):
        return f"wrong outputs: {len(actual)} outputs, the model has {len(expected)}"
    worst = max(float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))
                for a, b in zip(actual, expected))
    return "ok" if worst <= 1e-4 else f"wrong outputs: max abs diff {worst:.3g}"


def _export_once(library: str, model: Any, fmt: str, signature: Any,
                 tolerances: Optional[Mapping[str, Sequence[float]]] = None, strategy: str = "auto") -> dict[str, Any]:
    """One export into a scratch directory; its duration, or why it failed.
    `tolerances` (dtype -> (atol, rtol)) are servekit's verification
    tolerances for the model, as its BUILD target declares them; `strategy`
    is servekit's `strategy` argument.

    Returns:
        {"status": "ok", "seconds": s}, or {"status": "unsupported" (Keras) |
        "failed" (servekit), "error": first line, "error_type": class name}.
    """
    with tempfile.TemporaryDirectory(prefix="export_speed.") as scratch:
        path = os.path.join(scratch, "model.onnx" if fmt == "onnx" else "saved_model")
        start = time.perf_counter()
        try:
            if library == "keras":
                model.export(path, format=fmt, verbose=False, input_signature=signature)
            else:
                import servekit

                servekit.export(model, path, format=fmt, verbose=False, input_signature=signature,
                                verify=library != SERVEKIT_NO_VERIFY, strategy=strategy,
                                tolerances={k: tuple(v) for k, v in (tolerances or {}).items()} or None)
        # Any error is a result of the benchmark (Keras raises many types: NotImplementedError,
        # ImportError, ValueError, ...); it is recorded in the report, never swallowed.
        except Exception as e:  # noqa: BLE001
            lines = [line for line in f"{type(e).__name__}: {e}".splitlines() if line.strip()]
            return {"status": "unsupported" if library == "keras" else "failed",
                    "error_type": type(e).__name__, "error": lines[0][:300]}
        return {"status": "ok", "seconds": time.perf_counter() - start}


def child_cold(library: str, model_file: pathlib.Path, fmt: str,
               tolerances: Optional[Mapping[str, Sequence[float]]] = None, strategy: str = "auto") -> dict[str, Any]:
    """A cold process' whole life: imports, model, one export. Times each stage."""
    start = time.perf_counter()
    import keras  # noqa: F401  (timed: part of a cold export)

    if library == "servekit":
        import servekit  # noqa: F401

    imported = time.perf_counter()
    model, signature, _ = prepare(model_file)
    prepared = time.perf_counter()
    result = _export_once(library, model, fmt, signature, tolerances, strategy)
    return {"import_s": imported - start, "setup_s": prepared - imported, **result}


def child_warm(model_files: Sequence[pathlib.Path], formats: Sequence[str], repeats: int,
               tolerances: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None,
               strategy: str = "auto") -> list[dict[str, Any]]:
    """Every (model, format, library) once untimed, then `repeats` timed rounds.

    The libraries take turns, each round starting with a different one. A
    library whose first export fails is not timed again. servekit runs in its
    warm mode (`servekit.worker.launch.warm_worker`): one TensorFlow export
    worker for the whole process, as the build tool and its Bazel persistent
    workers run it.
    """
    import keras  # noqa: F401
    import servekit  # noqa: F401
    from servekit.worker.launch import warm_worker

    with warm_worker():
        return _warm_cells(model_files, formats, repeats, tolerances or {}, strategy)


def _warm_cells(model_files: Sequence[pathlib.Path], formats: Sequence[str], repeats: int,
                tolerances: Mapping[str, Mapping[str, Sequence[float]]],
                strategy: str = "auto") -> list[dict[str, Any]]:
    variants = ("servekit", "keras", SERVEKIT_NO_VERIFY)
    cells = []
    for model_file in model_files:
        try:
            model, signature, inputs = prepare(model_file)
        # The model file's own error: that model's cells fail, the others are still timed.
        except Exception as e:  # noqa: BLE001
            error = f"building or calling the model failed: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
            progress(f"{PROGRESS}  warm {model_file.stem}: {error}")
            cells += [{"model": model_file.stem, "format": fmt, "variants": {
                v: {"status": "failed", "first_s": None, "seconds": [], "error": error[:300],
                    "error_type": type(e).__name__} for v in variants}} for fmt in formats]
            continue
        model_tolerances = tolerances.get(model_file.stem)
        for fmt in formats:
            cell: dict[str, Any] = {"model": model_file.stem, "format": fmt, "variants": {}}
            for variant in variants:
                first = _export_once(variant, model, fmt, signature, model_tolerances, strategy)
                entry = {"status": first["status"], "first_s": first.get("seconds"), "seconds": []}
                if first["status"] != "ok":
                    entry.update(error=first["error"], error_type=first["error_type"])
                cell["variants"][variant] = entry
                progress(f"{PROGRESS}  warm first {model_file.stem} {fmt} {variant}: {_describe(first)}")
            for round_index in range(repeats):
                shift = round_index % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    entry = cell["variants"][variant]
                    if entry["status"] != "ok":
                        continue
                    result = _export_once(variant, model, fmt, signature, model_tolerances, strategy)
                    if result["status"] != "ok":  # worked once, then failed: a finding, recorded
                        entry.update(status=result["status"], error=result["error"],
                                     error_type=result["error_type"])
                        continue
                    entry["seconds"].append(result["seconds"])
                    progress(f"{PROGRESS}  warm {round_index + 1}/{repeats} {model_file.stem} {fmt} {variant}: "
                              f"{_describe(result)}")
            keras_entry = cell["variants"]["keras"]
            if keras_entry["status"] == "ok":
                keras_entry["artifact_check"] = check_keras_artifact(model, fmt, signature, inputs)
                progress(f"{PROGRESS}  keras artifact {model_file.stem} {fmt}: {keras_entry['artifact_check']}")
            cells.append(cell)
    return cells


def child_script(model_files: Sequence[pathlib.Path], formats: Sequence[str], repeats: int,
                 tolerances: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None,
                 strategy: str = "auto") -> dict[str, Any]:
    """A user's script: builds the models, then exports each (model, format)
    `repeats + 1` times with each library, in rounds over every model and
    format, the libraries alternating which goes first call by call. No
    `warm_worker()` block: `servekit.export` keeps its own worker warm
    (`servekit.worker.launch.lingering_worker`).

    Returns:
        {"cells": [{"model", "format", "variants": {library: {"status",
        "seconds": [every export, the first one first], "error"?}}}],
        "worker_pids": the distinct worker processes servekit's calls used,
        "seconds": the whole script after its imports}.
    """
    import keras  # noqa: F401
    import servekit  # noqa: F401
    from servekit.worker import launch

    tolerances = tolerances or {}
    start = time.perf_counter()
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    prepared = []
    for model_file in model_files:
        try:
            prepared.append((model_file.stem, *prepare(model_file)))
        # The model file's own error: that model's cells fail, the others are still timed.
        except Exception as e:  # noqa: BLE001
            error = f"building or calling the model failed: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
            progress(f"{PROGRESS}  script {model_file.stem}: {error}")
            for fmt in formats:
                cells[(model_file.stem, fmt)] = {"model": model_file.stem, "format": fmt, "variants": {
                    library: {"status": "failed", "seconds": [], "error": error[:300],
                              "error_type": type(e).__name__} for library in LIBRARIES}}
    for name, _, _, _ in prepared:
        for fmt in formats:
            cells[(name, fmt)] = {"model": name, "format": fmt, "variants": {
                library: {"status": "ok", "seconds": []} for library in LIBRARIES}}
    worker_pids: list[int] = []
    calls = 0
    for round_index in range(repeats + 1):
        for name, model, signature, _ in prepared:
            for fmt in formats:
                variants = cells[(name, fmt)]["variants"]
                order = LIBRARIES if calls % 2 == 0 else LIBRARIES[::-1]
                calls += 1
                for library in order:
                    entry = variants[library]
                    if entry["status"] != "ok":  # failed once: not timed again
                        continue
                    result = _export_once(library, model, fmt, signature, tolerances.get(name), strategy)
                    if library == "servekit":
                        worker = getattr(launch._local, "lingering", None)
                        pid = worker.pid if worker is not None else None
                        if pid is not None and pid not in worker_pids:
                            worker_pids.append(pid)
                    if result["status"] != "ok":
                        entry.update(status=result["status"], error=result["error"], error_type=result["error_type"])
                    else:
                        entry["seconds"].append(result["seconds"])
                    progress(f"{PROGRESS}  script {round_index + 1}/{repeats + 1} {name} {fmt} {library}: "
                              f"{_describe(result)}")
    seconds = time.perf_counter() - start
    for name, model, signature, inputs in prepared:
        for fmt in formats:
            entry = cells[(name, fmt)]["variants"]["keras"]
            if entry["status"] == "ok":
                entry["artifact_check"] = check_keras_artifact(model, fmt, signature, inputs)
    return {"cells": list(cells.values()), "worker_pids": worker_pids, "seconds": seconds}


# --------------------------------------------------------------- parent side


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe(result: Mapping[str, Any]) -> str:
    return f"{result['seconds']:.2f} s" if result["status"] == "ok" else f"{result['status']}: {result['error']}"


def child_env(backend: str) -> dict[str, str]:
    """The caller's environment with KERAS_BACKEND set, and this process' import
    path (under `bazel run`, the runfiles' Python roots) as PYTHONPATH."""
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [p for p in sys.path if p and os.path.isdir(p) and os.path.abspath(p) != here]
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _run_child(backend: str, args: Sequence[str], what: str) -> tuple[Optional[Any], float, str]:
    """Runs this file as a child on `backend`; returns (its result or None, wall s, stderr tail).

    The child's progress lines (`PROGRESS` prefix) are shown as they come; the
    rest of its stderr is kept, and its tail shown if the child fails.
    """
    with tempfile.TemporaryDirectory(prefix="export_speed_child.") as scratch:
        result_path = os.path.join(scratch, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--child_result", result_path, *args]
        start = time.perf_counter()
        process = subprocess.Popen(command, env=child_env(backend), cwd=scratch, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        other: list[str] = []
        # A hung child is killed (and then reported as failed with its stderr's tail).
        watchdog = threading.Timer(CHILD_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            for line in process.stderr or ():
                if line.startswith(PROGRESS):
                    progress(line[len(PROGRESS):].rstrip())
                else:
                    other.append(line.rstrip())
            returncode = process.wait()
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
        tail = "\n".join(line for line in other[-5:] if line.strip())
        if returncode != 0 or not os.path.exists(result_path):
            progress(f"{what}: child exited with {returncode}:\n{tail}")
            return None, wall, tail
        with open(result_path) as f:
            return json.load(f), wall, tail


def _median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _new_side() -> dict[str, Any]:
    return {"status": "ok", "cold_wall_s": [], "cold_export_s": [], "cold_import_s": [], "warm_export_s": [],
            "warm_first_s": None, "script_export_s": [], "script_first_s": None}


def _record_failure(side: dict[str, Any], result: Mapping[str, Any]) -> None:
    # The first failure's message is kept; later repeats fail the same way.
    if side["status"] == "ok":
        side.update(status=result["status"], error=result["error"], error_type=result.get("error_type"))


def run_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    backends: Sequence[str] = BACKENDS,
    formats: Sequence[str] = FORMATS,
    repeats: int = 3,
    modes: Sequence[str] = MODES,
    models_dir: pathlib.Path = DEFAULT_MODELS_DIR,
    tolerances: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None,
    strategy: str = "auto",
) -> dict[str, Any]:
    """Times servekit and Keras exports of `models` on every backend and format.

    Args:
        models: zoo model names (files `<models_dir>/<name>.py`).
        backends: Keras backends; each runs in its own processes.
        formats: some of "tf_saved_model" and "onnx".
        repeats: cold processes per (cell, library), timed warm exports
            per (cell, library) after the untimed first one, and a script's
            exports per (cell, library) after its first one.
        modes: some of "cold", "warm" and "script".
        models_dir: where the model files are.
        tolerances: model name -> dtype -> (atol, rtol): servekit's
            verification tolerances for models whose BUILD target declares
            some (e.g. the MobileNets'); other models use the defaults.
        strategy: servekit's `strategy` argument ("auto": every strategy in
            its default order; "in_process": the source backend's own
            converters in the calling process).

    Returns:
        A JSON-serialisable report: machine, versions, settings, one entry
        per (model, backend, format) with every raw time, medians, the
        servekit / Keras ratios and the verification share, a summary
        (per measure: overall, by backend, model and format), and per
        backend what its script process did (`scripts`: worker processes
        its servekit exports used, seconds).

    Raises:
        ValueError: an unknown backend, format or mode, a missing model
            file, or `repeats` < 1.

    Example:

    >>> report = run_benchmark(models=["mlp"], backends=["tensorflow"], formats=["onnx"], repeats=1)
    >>> write_report(report, pathlib.Path("/tmp/export_speed"))
    """
    for value, allowed, what in ((backends, BACKENDS, "backend"), (formats, FORMATS, "format"),
                                 (modes, MODES, "mode")):
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(f"Unknown {what}(s) {unknown}; expected some of {list(allowed)}.")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    model_files = [models_dir / f"{name}.py" for name in models]
    missing = [str(p) for p in model_files if not p.is_file()]
    if missing:
        raise ValueError(f"No model file {missing}; pass --models_dir, or name models of {models_dir}.")

    from servekit.bench.machine import load_average, machine_info, package_versions

    child_args = ["--tolerances_json", json.dumps(dict(tolerances))] if tolerances else []
    child_args += ["--strategy", strategy]
    load_start = load_average()
    started = time.monotonic()
    sides: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {
        (m, b, f): {lib: _new_side() for lib in LIBRARIES} | {SERVEKIT_NO_VERIFY: _new_side()}
        for m in models for b in backends for f in formats}

    if "warm" in modes:
        for backend in backends:
            progress(f"warm: {backend} ({len(models)} model(s) x {len(formats)} format(s))")
            args = ["--child", "warm", "--models", ",".join(str(p) for p in model_files),
                    "--formats", ",".join(formats), "--repeats", str(repeats), *child_args]
            cells, _, tail = _run_child(backend, args, f"warm {backend}")
            if cells is None:
                for model in models:
                    for fmt in formats:
                        for side in sides[(model, backend, fmt)].values():
                            _record_failure(side, {"status": "failed", "error": f"warm process crashed: {tail}"})
                continue
            for cell in cells:
                for variant, entry in cell["variants"].items():
                    side = sides[(cell["model"], backend, cell["format"])][variant]
                    side["warm_first_s"] = entry["first_s"]
                    side["warm_export_s"] = entry["seconds"]
                    if "artifact_check" in entry:
                        side["artifact_check"] = entry["artifact_check"]
                    if entry["status"] != "ok":
                        _record_failure(side, entry)

    scripts: dict[str, dict[str, Any]] = {}
    if "script" in modes:
        for backend in backends:
            progress(f"script: {backend} ({len(models)} model(s) x {len(formats)} format(s) x {repeats + 1} exports)")
            args = ["--child", "script", "--models", ",".join(str(p) for p in model_files),
                    "--formats", ",".join(formats), "--repeats", str(repeats), *child_args]
            result, wall, tail = _run_child(backend, args, f"script {backend}")
            if result is None:
                scripts[backend] = {"status": "failed", "error": f"script process crashed: {tail}"}
                for model in models:
                    for fmt in formats:
                        for library in LIBRARIES:
                            _record_failure(sides[(model, backend, fmt)][library],
                                            {"status": "failed", "error": f"script process crashed: {tail}"})
                continue
            scripts[backend] = {"status": "ok", "worker_processes": len(result["worker_pids"]),
                                "exports_s": round(result["seconds"], 2), "process_wall_s": round(wall, 2)}
            for cell in result["cells"]:
                for library, entry in cell["variants"].items():
                    side = sides[(cell["model"], backend, cell["format"])][library]
                    times = entry["seconds"]
                    side["script_first_s"] = times[0] if times else None
                    side["script_export_s"] = times[1:]
                    if "artifact_check" in entry:
                        side["artifact_check"] = entry["artifact_check"]
                    if entry["status"] != "ok":
                        _record_failure(side, entry)

    if "cold" in modes:
        cell_index = 0
        for repeat in range(repeats):
            for backend in backends:
                for model_file in model_files:
                    for fmt in formats:
                        # Alternate which library goes first, cell by cell and repeat by repeat.
                        order = LIBRARIES if (cell_index + repeat) % 2 == 0 else LIBRARIES[::-1]
                        cell_index += 1
                        for library in order:
                            side = sides[(model_file.stem, backend, fmt)][library]
                            what = f"cold {repeat + 1}/{repeats} {model_file.stem} {backend} {fmt} {library}"
                            result, wall, tail = _run_child(
                                backend, ["--child", "cold", "--library", library, "--models", str(model_file),
                                          "--formats", fmt, *child_args], what)
                            if result is None:
                                _record_failure(side, {"status": "failed", "error": f"cold process crashed: {tail}"})
                                continue
                            progress(f"{what}: {_describe(result)} (process {wall:.1f} s)")
                            if result["status"] != "ok":
                                _record_failure(side, result)
                                continue
                            side["cold_wall_s"].append(wall)
                            side["cold_export_s"].append(result["seconds"])
                            side["cold_import_s"].append(result["import_s"])

    cells = [summarize_cell(model, backend, fmt, cell_sides) for (model, backend, fmt), cell_sides in sides.items()]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "load_average_start": load_start, "load_average_end": load_average()},
        "versions": package_versions(["keras", "tensorflow|tensorflow-cpu", "jax", "jaxlib", "torch", "onnx",
                                      "onnxruntime", "tf2onnx", "jax2onnx", "numpy"]) | {"python": sys.version.split()[0]},
        "settings": {"models": list(models), "backends": list(backends), "formats": list(formats),
                     "repeats": repeats, "modes": list(modes), "tolerances": dict(tolerances or {}),
                     "strategy": strategy,
                     "duration_s": round(time.monotonic() - started, 1)},
        "cells": cells,
        "summary": summarize(cells),
        "scripts": scripts,
    }


def summarize_cell(model: str, backend: str, fmt: str, sides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One (model, backend, format): each library's status, raw times and medians,
    the servekit / Keras ratio of each measure, and the verification share."""
    cell: dict[str, Any] = {"model": model, "backend": backend, "format": fmt}
    for library, side in sides.items():
        entry = dict(side)
        for measure in ("cold_wall_s", "cold_export_s", "cold_import_s", "warm_export_s", "script_export_s"):
            entry[f"median_{measure}"] = _median(side[measure])
        cell[library] = entry
    servekit, keras = cell["servekit"], cell["keras"]
    cell["ratios"] = {}
    for measure, _ in MEASURES:
        mine, theirs = servekit[f"median_{measure}"], keras[f"median_{measure}"]
        if mine is not None and theirs:
            cell["ratios"][measure] = mine / theirs
    with_check = servekit["median_warm_export_s"]
    without = cell[SERVEKIT_NO_VERIFY]["median_warm_export_s"]
    # Negative when noise outweighs verification; reported as measured.
    cell["verification_share"] = 1.0 - without / with_check if with_check and without is not None else None
    return cell


def summarize(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median ratio per measure over the cells both libraries exported, how many
    of those are within the 2x goal, and which cells Keras could not export."""
    out: dict[str, Any] = {}
    for measure, _ in MEASURES:
        rated = [c for c in cells if measure in c["ratios"]]
        ratios = [c["ratios"][measure] for c in rated]
        out[measure] = {"cells": len(ratios), "median_ratio": _median(ratios),
                        "within_2x": sum(r <= 2.0 for r in ratios), "max_ratio": max(ratios) if ratios else None}
        for key in ("backend", "model", "format"):
            groups: dict[str, list[float]] = {}
            for c in rated:
                groups.setdefault(c[key], []).append(c["ratios"][measure])
            out[measure][f"by_{key}"] = {k: {"cells": len(v), "median_ratio": _median(v),
                                             "within_2x": sum(r <= 2.0 for r in v)} for k, v in groups.items()}
    shares = [c["verification_share"] for c in cells if c["verification_share"] is not None]
    out["median_verification_share"] = _median(shares)
    out["keras_unsupported"] = [f"{c['model']}/{c['backend']}/{c['format']}" for c in cells
                                if c["keras"]["status"] != "ok"]
    out["keras_artifact_not_ok"] = [f"{c['model']}/{c['backend']}/{c['format']}: {c['keras']['artifact_check']}"
                                    for c in cells if c["keras"].get("artifact_check", "ok") != "ok"]
    out["servekit_failed"] = [f"{c['model']}/{c['backend']}/{c['format']}" for c in cells
                              if c["servekit"]["status"] != "ok"]
    return out


def _seconds(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}"


def _ratio(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f}×"


def render_table(report: Mapping[str, Any]) -> str:
    """Markdown: machine and settings, then one row per cell, then the summary."""
    machine, settings, summary = report["machine"], report["settings"], report["summary"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    # The measures of the modes that ran (a measure no cell has is not a column).
    measures = [(m, t) for m, t in MEASURES
                if any(c[lib].get(f"median_{m}") is not None for c in report["cells"] for lib in LIBRARIES)]
    lines = [
        f"servekit vs Keras `model.export`, {report['date']}; {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB; load average {machine['load_average_start']} at start, "
        f"{machine['load_average_end']} at end; {settings['repeats']} repeat(s), medians in seconds. {versions}.",
        "",
        "| model | backend | format | " + " | ".join(
            f"{title}: servekit / keras / ratio" for _, title in measures) + " | verification share | note |",
        "|---|---|---|" + "---:|" * len(measures) + "---:|---|",
    ]
    for cell in report["cells"]:
        servekit, keras = cell["servekit"], cell["keras"]
        cells = []
        for measure, _ in measures:
            ratio = cell["ratios"].get(measure)
            cells.append(f"{_seconds(servekit[f'median_{measure}'])} / {_seconds(keras[f'median_{measure}'])} / "
                         + ("–" if ratio is None else f"**{ratio:.2f}×**"))
        share = cell["verification_share"]
        notes = []
        if keras["status"] != "ok":
            notes.append(f"keras: {keras['status']} ({keras['error']})")
        elif keras.get("artifact_check", "ok") != "ok":
            notes.append(f"keras's artifact: {keras['artifact_check']}")
        if servekit["status"] != "ok":
            notes.append(f"servekit: {servekit['status']} ({servekit['error']})")
        lines.append(f"| {cell['model']} | {cell['backend']} | {cell['format']} | " + " | ".join(cells)
                     + f" | {'–' if share is None else f'{share:.0%}'} | {'; '.join(notes)} |")
    lines += ["", "| measure | cells | median servekit / keras | max | within 2× |", "|---|---:|---:|---:|---:|"]
    for measure, title in measures:
        entry = summary[measure]
        median = entry["median_ratio"]
        lines.append(f"| {title} | {entry['cells']} | {_ratio(median)} | "
                     f"{_ratio(entry['max_ratio'])} | {entry['within_2x']} |")
    share = summary["median_verification_share"]
    lines.append("")
    lines.append(f"Median verification share of a warm servekit export: {'–' if share is None else f'{share:.0%}'}.")
    for backend, script in report.get("scripts", {}).items():
        if script["status"] != "ok":
            lines.append(f"Script on {backend}: {script['error']}.")
        else:
            lines.append(f"Script on {backend}: its servekit exports used {script['worker_processes']} worker "
                         f"process(es); its exports took {script['exports_s']:.1f} s, the process "
                         f"{script['process_wall_s']:.1f} s.")
    if summary["keras_unsupported"]:
        lines.append(f"Keras could not export: {', '.join(summary['keras_unsupported'])}.")
    if summary.get("keras_artifact_not_ok"):
        lines.append("Keras exported, but its artifact did not reproduce the model (warm check, untimed): "
                     + "; ".join(summary["keras_artifact_not_ok"]).rstrip(".") + ".")
    return "\n".join(lines) + "\n"


def render_script_section(report: Mapping[str, Any]) -> str:
    """Markdown for the README: the script mode's cells, its summary per
    backend, model and format, and the machine it ran on."""
    machine, settings = report["machine"], report["settings"]
    summary = report["summary"]["script_export_s"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    exports = settings["repeats"] + 1
    lines = [
        f"Measured {report['date'].replace('T', ' ')[:16]} UTC by `{settings.get('command') or 'export_speed'}`, on "
        f"{machine['cpu']} ({machine['cores']} cores, {machine['memory_gib']} GiB"
        f"{', ' + machine['gpu'] if machine.get('gpu') else ', no GPU'}); load average "
        f"{load_text(machine['load_average_start'])} at the start, {load_text(machine['load_average_end'])} at the end. "
        f"{versions}. One process per backend exports each model to each format {exports} times with each "
        "library, the libraries alternating call by call; seconds, median of the 2nd and later exports of each "
        "(model, format), verification included"
        + ("" if settings.get("strategy", "auto") == "auto"
           else f"; servekit called with strategy='{settings['strategy']}'") + ":",
        "",
        "| model | backend | format | servekit 1st | Keras 1st | servekit 2nd+ | Keras 2nd+ | ratio | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for cell in report["cells"]:
        servekit, keras = cell["servekit"], cell["keras"]
        if servekit.get("median_script_export_s") is None and keras.get("median_script_export_s") is None:
            if servekit["status"] == "ok" and keras["status"] == "ok":
                continue
        ratio = cell["ratios"].get("script_export_s")
        notes = []
        if keras["status"] != "ok":
            notes.append(f"Keras: {keras['status']} (`{short(keras['error'])}`)")
        elif keras.get("artifact_check", "ok") != "ok":
            notes.append(f"Keras's artifact {short(keras['artifact_check'])}")
        if servekit["status"] != "ok":
            notes.append(f"servekit: {servekit['status']} (`{short(servekit['error'])}`)")
        fmt = {"tf_saved_model": "SavedModel", "onnx": "ONNX"}.get(cell["format"], cell["format"])
        lines.append(f"| {cell['model']} | {cell['backend']} | {fmt} | {_seconds(servekit.get('script_first_s'))} | "
                     f"{_seconds(keras.get('script_first_s'))} | {_seconds(servekit.get('median_script_export_s'))} | "
                     f"{_seconds(keras.get('median_script_export_s'))} | {_ratio(ratio)} | {'; '.join(notes)} |")
    lines += ["", "| median servekit ÷ Keras, 2nd+ exports | cells | median | within 2× |", "|---|---:|---:|---:|"]
    for key in ("backend", "model", "format"):
        for name, entry in summary[f"by_{key}"].items():
            label = {"tf_saved_model": "SavedModel", "onnx": "ONNX"}.get(name, name)
            lines.append(f"| {key} {label} | {entry['cells']} | {_ratio(entry['median_ratio'])} | "
                         f"{entry['within_2x']} |")
    lines.append(f"| **all** | {summary['cells']} | **{_ratio(summary['median_ratio'])}** | {summary['within_2x']} |")
    lines.append("")
    workers = [f"{b} {s['worker_processes']}" if s["status"] == "ok" else f"{b}: failed"
               for b, s in report.get("scripts", {}).items()]
    lines.append(f"Worker processes each script's servekit exports used: {', '.join(workers)}.")
    return "\n".join(lines) + "\n"


def short(message: str, limit: int = 100) -> str:
    """A message for a table cell: no backquotes or pipes (they would end the
    cell's code span or the cell), at most `limit` characters."""
    text = " ".join(message.replace("`", "'").replace("|", "/").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def load_text(values: Optional[Sequence[float]]) -> str:
    return "–" if not values else " / ".join(f"{v:.1f}" for v in values)


def update_readme(report: Mapping[str, Any], readme: pathlib.Path) -> None:
    """Rewrites the script mode's section of `readme` between the markers of
    the report's strategy (`readme_markers`).

    Raises:
        ValueError: the README has no such markers.
    """
    from servekit.bench import report_files

    begin_line, end_line = readme_markers(report["settings"].get("strategy", "auto"))
    report_files.replace_between(readme, begin_line, end_line, render_script_section(report))


def plot(report: Mapping[str, Any], path: pathlib.Path) -> None:
    """Writes a PNG: per cell, servekit and Keras times (cold wall, warm
    export, script's 2nd+ export: those of the modes that ran), and below,
    the servekit / Keras ratio of each measure against the 2× goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = report["cells"]
    labels = [f"{c['model']}\n{c['backend'][:5]}\n{'SM' if c['format'] == 'tf_saved_model' else 'ONNX'}"
              for c in cells]
    x = np.arange(len(cells))
    figure, (times, ratios) = plt.subplots(2, 1, figsize=(max(8.0, 0.7 * len(cells) + 2), 8), dpi=110,
                                           sharex=True)
    shown = {"cold_wall_s": ("cold process wall", 0.35), "warm_export_s": ("warm export", 0.7),
             "script_export_s": ("script, 2nd+ export", 1.0)}
    # The measures of the modes that ran.
    shown = {m: v for m, v in shown.items() if any(c[lib].get(f"median_{m}") for c in cells for lib in LIBRARIES)}
    bars = [(library, measure, color, alpha, title) for measure, (title, alpha) in shown.items()
            for library, color in (("servekit", "tab:blue"), ("keras", "tab:orange"))]
    width = 0.8 / max(1, len(bars))
    for index, (library, measure, color, alpha, title) in enumerate(bars):
        values = [c[library][f"median_{measure}"] or 0.0 for c in cells]
        times.bar(x + (index - (len(bars) - 1) / 2) * width, values, width, color=color, alpha=alpha,
                  label=f"{library}, {title}")
    for i, cell in enumerate(cells):
        if cell["keras"]["status"] != "ok":
            # x in data units, y in axes units: visible whatever the log scale's range.
            times.annotate("keras:\nunsupported", (x[i] + 0.1, 0.03), xycoords=times.get_xaxis_transform(),
                           ha="center", fontsize=6, color="tab:red")
    times.set_yscale("log")
    times.set_ylabel("median seconds")
    times.legend(fontsize=7, ncol=2)
    times.grid(True, axis="y", which="both", alpha=0.3)
    rated = [(index, measure, title) for index, (measure, title) in enumerate(MEASURES)
             if any(measure in c["ratios"] for c in cells)]
    for position, (index, measure, title) in enumerate(rated):
        values = [c["ratios"].get(measure, np.nan) for c in cells]
        ratios.scatter(x + (position - (len(rated) - 1) / 2) * 0.2, values, label=title, marker="os^D"[index])
    ratios.axhline(2.0, color="tab:red", linestyle="--", linewidth=1, label="goal: ≤ 2×")
    ratios.axhline(1.0, color="grey", linewidth=0.8)
    ratios.set_yscale("log")  # ratios span 1x to hundreds of x; the 2x line must stay visible
    ratios.set_ylabel("servekit / keras (log)")
    ratios.set_xticks(x)
    ratios.set_xticklabels(labels, fontsize=7)
    ratios.legend(fontsize=7)
    ratios.grid(True, axis="y", alpha=0.3)
    machine = report["machine"]
    figure.suptitle(f"Export time, servekit vs Keras model.export ({machine['cpu']}, {machine['cores']} cores, "
                    f"{report['date'][:10]})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(report: Mapping[str, Any], out_dir: pathlib.Path) -> None:
    """Writes export_speed.json, export_speed.md and export_speed.png into `out_dir`."""
    from servekit.bench import report_files

    report_files.write(report, out_dir, "export_speed", render_table, plot)


def _default_out_dir() -> pathlib.Path:
    from servekit.bench import report_files

    return report_files.workspace_dir() / "benchmarks" / "export_speed"


def _split(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def _parse_tolerance(text: str) -> tuple[str, str, tuple[float, float]]:
    """`MODEL:DTYPE=ATOL[,RTOL]` (the build tool's `--tolerance`, per model)."""
    from servekit.verification import parse_tolerance

    malformed = argparse.ArgumentTypeError(f"expected MODEL:DTYPE=ATOL[,RTOL], got {text!r}")
    model, sep, rest = text.partition(":")
    if not (sep and model):
        raise malformed
    try:
        dtype, values = parse_tolerance(rest)
    except ValueError:
        raise malformed from None
    return model, dtype, values


def _tolerances_by_model(parsed: Sequence[tuple[str, str, tuple[float, float]]]) -> dict[str, dict[str, Any]]:
    by_model: dict[str, dict[str, Any]] = {}
    for model, dtype, values in parsed:
        by_model.setdefault(model, {})[dtype] = values
    return by_model


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Export time of servekit.export vs Keras's model.export.")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="zoo model names, comma-separated")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--modes", default=",".join(MODES), help="some of cold, warm, script")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models_dir", type=pathlib.Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--out_dir", type=pathlib.Path, default=None,
                        help="default: $BUILD_WORKSPACE_DIRECTORY/benchmarks/export_speed")
    parser.add_argument("--tolerance", action="append", default=[], type=_parse_tolerance,
                        help="MODEL:DTYPE=ATOL[,RTOL], servekit's verification tolerance for a model whose "
                             "BUILD target declares one (e.g. mobilenet_v2:float32=1e-5,1e-4); repeatable")
    parser.add_argument("--strategy", default="auto",
                        help="servekit's strategy argument (auto, portable_rebuild, in_process, "
                             "cross_backend_rebuild); a README section per strategy")
    parser.add_argument("--readme", type=pathlib.Path, default=None,
                        help="also write the script mode's table into this README, between its "
                             f"{README_BEGIN} and {README_END} lines (for --strategy S other than auto: "
                             "<!-- export-speed-script-S:begin/end -->; relative to the workspace under bazel run)")
    # Internal: how the driver runs its children (--models then holds model file paths).
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--child_result", help=argparse.SUPPRESS)
    parser.add_argument("--library", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--tolerances_json", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        paths = [pathlib.Path(p) for p in _split(args.models)]
        tolerances = json.loads(args.tolerances_json)
        if args.child == "cold":
            result: Any = child_cold(args.library, paths[0], args.formats, tolerances.get(paths[0].stem),
                                     args.strategy)
        elif args.child == "script":
            result = child_script(paths, _split(args.formats), args.repeats, tolerances, args.strategy)
        else:
            result = child_warm(paths, _split(args.formats), args.repeats, tolerances, args.strategy)
        with open(args.child_result, "w") as f:
            json.dump(result, f)
        return 0

    modes = _split(args.modes)
    readme = args.readme
    if readme is not None:
        if "script" not in modes:
            parser.error("--readme writes the script mode's table: add script to --modes")
        if not readme.is_absolute() and "BUILD_WORKSPACE_DIRECTORY" in os.environ:
            readme = pathlib.Path(os.environ["BUILD_WORKSPACE_DIRECTORY"]) / readme
        begin_line, _ = readme_markers(args.strategy)
        if begin_line not in readme.read_text():  # before the run, not after an hour of it
            parser.error(f"{readme} has no {begin_line} line")
    report = run_benchmark(models=_split(args.models), backends=_split(args.backends),
                           formats=_split(args.formats), repeats=args.repeats, modes=modes,
                           models_dir=args.models_dir, tolerances=_tolerances_by_model(args.tolerance),
                           strategy=args.strategy)
    report["settings"]["command"] = _command(argv)
    out_dir = args.out_dir or _default_out_dir()
    write_report(report, out_dir)
    sys.stdout.write(render_table(report))
    print(f"\nreport: {out_dir}/export_speed.json, export_speed.md, export_speed.png")
    if readme is not None:
        update_readme(report, readme)
        print(f"README: {readme}, the script mode's section")
    return 0


def _command(argv: Optional[Sequence[str]]) -> str:
    """How this run was started, as a `bazel run` line (paths of this machine left out)."""
    args = list(sys.argv[1:] if argv is None else argv)
    target = "export_speed"
    if args[:len(SCRIPT_TARGET_ARGS)] == list(SCRIPT_TARGET_ARGS):  # the export_speed_script target's own
        target, args = "export_speed_script", args[len(SCRIPT_TARGET_ARGS):]
    shown, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--out_dir", "--models_dir"):
            skip = True
            continue
        if arg.startswith(("--out_dir=", "--models_dir=")):
            continue
        shown.append(arg)
    return f"bazel run //python/servekit/bench:{target}" + (" -- " + " ".join(shown) if shown else "")


if __name__ == "__main__":
    sys.exit(main())
