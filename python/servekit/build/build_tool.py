"""Builds one export directory from a model file: the action behind `model_export`.

    python -m servekit.build.build_tool --model_file models/mlp.py --name mlp_tensorflow \\
        --backend tensorflow --formats tf_saved_model,onnx --out_dir OUT

A model file defines `build_model() -> keras.Model` with seeded weights, and may
define `sample_inputs(batch: int, rng: numpy.random.Generator)` returning the
model's inputs (an array, a list or a dict, as the model takes them) and
`input_signature()` returning what `servekit.export` takes as `input_signature`,
`input_ranges()` returning the value range of inputs whose values have a
meaning (`{"padding_mask": (1, 2)}`; see `servekit.export`'s `input_ranges`),
and `dim_names()` naming dynamic dimensions (`{"token_ids": "(batch, sequence)"}`;
`servekit.export`'s `dim_names`; `--dim_names INPUT=SHAPE`, from the rule's
`dim_names`, overrides it input by input).
The Keras backend is the one in KERAS_BACKEND; it must equal --backend.

The reference data are the export's own verification cases (inputs and the
outputs the source backend computed): every dynamic dimension at the sizes it
was verified at. A model file's `sample_inputs` replaces the inputs, called
at the cases' batch sizes (or at `--reference_batches`).

With `--persistent_worker` the tool is a Bazel persistent worker
(`servekit.build.persistent_worker`): Bazel keeps one process per source
backend and sends it every export action, so Keras, the backend and
TensorFlow are imported once per build. Its artifacts are byte-identical to
those of a fresh process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import pathlib
import shutil
import sys
import tempfile
import time
import types
from typing import Any, BinaryIO, Iterator, Mapping, Optional, Sequence
from xml.sax.saxutils import escape as xml_escape

import numpy as np

from servekit import peak_memory
from servekit import verification
from servekit.build import manifest as manifest_lib
from servekit.signature import ExportedArtifact, Signature

# Every random choice of an export derives from this seed.
SEED = 1337


def source_roots(model_file: pathlib.Path) -> list[str]:
    """Where the model file's own imports are found: its directory (sibling
    modules, `import layers`, as for a script) and the root of its Bazel
    repository (`from models.layers import Scale`, as `py_library` code
    imports). Both must be among the action's inputs (`data`).

    Relative paths are resolved from the working directory, the execution
    root of the action: `external/<repo>/...` and `../<repo>/...` are files of
    another repository, whose root is that directory.
    """
    base = pathlib.Path(os.getcwd())
    parts = model_file.parts
    other_repository = not model_file.is_absolute() and len(parts) > 2 and parts[0] in ("external", "..")
    root = base / parts[0] / parts[1] if other_repository else base
    here = (base / model_file).parent
    return list(dict.fromkeys(os.path.normpath(p) for p in (here, root)))


@contextlib.contextmanager
def model_imports(model_file: pathlib.Path) -> Iterator[None]:
    """`source_roots(model_file)` first on `sys.path` in the block: the model
    file's imports resolve there, and the export worker, which gets this
    `sys.path`, imports the custom classes of those modules the same way."""
    saved = list(sys.path)
    sys.path[:0] = [p for p in source_roots(model_file) if p not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = saved


def load_model_file(path: pathlib.Path) -> types.ModuleType:
    """Imports a model file as a module, by path."""
    spec = importlib.util.spec_from_file_location(f"servekit_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"Cannot import model file {path}.")
    module = importlib.util.module_from_spec(spec)
    # Registered, so that its classes can be found (and re-imported by path in
    # the export worker) like those of any module.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "build_model"):
        raise ValueError(
            f"Model file {path} defines no build_model(). Add `def build_model() -> keras.Model`."
        )
    return module


def default_sample_inputs(model: Any, batch: int, rng: np.random.Generator,
                          input_ranges: Optional[Mapping[str, tuple]] = None) -> Any:
    """Random inputs for the model's declared inputs: floats ~ N(0,1), ints in [0, 10).

    Dynamic dimensions other than the batch get size 4. An input with a range
    (declared in `input_ranges`, or inferred: ids that index an `Embedding`
    stay below its `input_dim`) draws from `range(low, high)`.

    Raises:
        ValueError: for string inputs, which need the model file's `sample_inputs`.
    """
    import keras

    from servekit.source_model.sample_inputs import input_ranges_for

    ranges = input_ranges_for(model, dict(input_ranges or {}))

    def make(tensor: Any) -> np.ndarray:
        shape = [batch] + [4 if d is None else int(d) for d in tensor.shape[1:]]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if dtype == "string":
            raise ValueError(
                f"Model '{model.name}' input '{tensor.name}' is a string tensor; random data "
                "cannot fill it. Define sample_inputs(batch, rng) in the model file."
            )
        if tensor.name in ranges:
            low, high = ranges[tensor.name]
            if dtype.startswith("float") or dtype == "bfloat16":
                return rng.uniform(low, high, shape).astype(dtype)
            return rng.integers(int(low), int(high), shape).astype(dtype)
        if dtype.startswith("float") or dtype == "bfloat16":
            return rng.standard_normal(shape).astype(dtype)
        if dtype == "bool":
            return rng.integers(0, 2, shape).astype(bool)
        return rng.integers(0, 10, shape).astype(dtype)

    return keras.tree.map_structure(make, model.input)


def _named(values: Any, tensors: Sequence[Any], what: str, model_name: str) -> dict[str, Any]:
    """Keys a model's inputs or outputs (array, list or dict) by signature tensor name."""
    names = [t.name for t in tensors]
    if isinstance(values, Mapping):
        return dict(values)
    if isinstance(values, (list, tuple)):
        if len(values) != len(names):
            raise ValueError(
                f"Model '{model_name}' has {len(values)} {what}, its signature {len(names)}: {names}."
            )
        return dict(zip(names, values))
    if len(names) != 1:
        raise ValueError(f"Model '{model_name}' gave one {what[:-1]}, its signature has {names}.")
    return {names[0]: values}


def reference_case(
    model: Any, signature: Signature, inputs: Any, input_signature: Optional[Any] = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Runs the model on its source backend; returns named inputs and outputs."""
    from servekit.source_model.calls import reference_outputs

    named_inputs = _named(inputs, signature.inputs, "inputs", model.name)
    return named_inputs, reference_outputs(model, inputs, input_signature)


def build_export(
    model: Any,
    out_dir: pathlib.Path,
    name: str,
    source_backend: str,
    formats: Sequence[str] = ("tf_saved_model", "onnx"),
    reference_batches: Optional[Sequence[int]] = None,
    sample_inputs: Optional[Any] = None,
    input_signature: Optional[Any] = None,
    opset: Optional[int] = None,
    tolerances: Optional[Mapping[str, tuple[float, float]]] = None,
    verbose: bool = False,
    input_ranges: Optional[Mapping[str, tuple]] = None,
    dim_names: Optional[Mapping[str, Any]] = None,
) -> pathlib.Path:
    """Exports `model` to every format and writes manifest and reference data.

    Args:
        model: a Keras model on the current backend.
        out_dir: the export directory; created, and filled only on success.
        name: the export's name, recorded in the manifest.
        source_backend: the current Keras backend, recorded in the manifest.
        formats: some of "tf_saved_model" and "onnx".
        reference_batches: batch sizes of the reference cases; default: the
            export's verification cases themselves (every dynamic dim at each
            size it was verified at).
        sample_inputs: `f(batch, rng)` returning model inputs, instead of
            the verification cases' inputs.
        input_signature: passed to `servekit.export`.
        opset: ONNX opset, or None for the library's default.
        tolerances: per-dtype `(atol, rtol)` recorded in the manifest.
        verbose: print the export library's summaries.
        input_ranges: value ranges of inputs, by name (`servekit.export`).
        dim_names: names of dynamic dims, by input (`servekit.export`).

    Returns:
        The path of the written manifest.json.

    Raises:
        servekit.ExportError: when a format cannot be exported or fails its self-check.

    Example:

    ```python
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    servekit.build.build_tool.build_export(model, pathlib.Path("out/mlp"), "mlp", "tensorflow")
    ```
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir.parent))
    try:
        from servekit.exporter import export_formats_with_cases

        kwargs: dict[str, Any] = {"opset_version": opset} if opset and "onnx" in formats else {}
        if input_ranges:
            kwargs["input_ranges"] = dict(input_ranges)
        if dim_names:
            kwargs["dim_names"] = dict(dim_names)
        # The export's own check and the manifest's (the native verifier's) agree.
        tolerances = verification.tolerances_for(model, tolerances)
        if tolerances:
            kwargs["tolerances"] = dict(tolerances)
        # Both formats in one go: one probe of the model, one worker job. The rebuild
        # first for every format, ONNX from JAX and torch included: tf2onnx's graphs serve
        # as fast or faster, and a build caches its export time.
        exported, verified = export_formats_with_cases(
            model,
            {fmt: str(staging / manifest_lib.ARTIFACT_PATHS[fmt]) for fmt in formats},
            verbose=verbose,
            input_signature=input_signature,
            strategy="rebuild_first",
            **kwargs,
        )
        artifacts: list[ExportedArtifact] = [exported[fmt] for fmt in formats]

        default = artifacts[0].endpoint("serving_default")
        verified = [c for c in verified if c.endpoint == "serving_default"]
        cases = []
        if sample_inputs is None and not reference_batches:
            # The cases the export verified every artifact on: the source's own outputs.
            labels = manifest_lib.case_labels([c.batch for c in verified])
            for case, label in zip(verified, labels):
                cases.append(manifest_lib.write_reference_case(staging, default, case.batch, case.inputs,
                                                               case.expected, label=label))
        else:
            sample = sample_inputs or (lambda b, r: default_sample_inputs(model, b, r, input_ranges))
            batches = list(reference_batches or [c.batch for c in verified] or [1])
            for batch, label in zip(batches, manifest_lib.case_labels(batches)):
                rng = np.random.default_rng([SEED, batch])
                named_in, named_out = reference_case(model, default, sample(batch, rng), input_signature)
                cases.append(manifest_lib.write_reference_case(staging, default, batch, named_in, named_out,
                                                               label=label))

        document = manifest_lib.build_manifest(
            name, source_backend, artifacts, staging, cases, tolerances
        )
        manifest_lib.write_manifest(staging, document)
        peak_memory.mark("reference data and manifest")
        for entry in staging.iterdir():
            target = out_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / manifest_lib.MANIFEST_NAME


def quiet_fontconfig(scratch: str) -> None:
    """Gives fontconfig a writable cache directory under `scratch`.

    `import keras` imports matplotlib.pyplot, whose font manager runs `fc-list`
    to list the system fonts (its own font cache lives in the fresh
    MPLCONFIGDIR, so this happens in every export). In a Bazel sandbox no
    fontconfig cache directory is writable (no $HOME, a read-only
    /var/cache/fontconfig), and on a machine where no process has filled the
    system cache yet, `fc-list` prints "Fontconfig error: No writable cache
    directories" once per font directory (4 lines per export on Debian 12).

    The fix keeps the caller's configuration (FONTCONFIG_FILE, else the
    system's /etc/fonts/fonts.conf) and adds one cache directory in `scratch`,
    through a small configuration file that includes the original. Children
    (`fc-list`) inherit it through the environment.
    """
    base = os.environ.get("FONTCONFIG_FILE") or "/etc/fonts/fonts.conf"
    cache = os.path.join(scratch, "fontconfig-cache")
    config = os.path.join(scratch, "fonts.conf")
    with open(config, "w") as f:
        f.write(
            '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">\n<fontconfig>\n'
            f'  <include ignore_missing="yes">{xml_escape(base)}</include>\n'
            f"  <cachedir>{xml_escape(cache)}</cachedir>\n</fontconfig>\n"
        )
    os.environ["FONTCONFIG_FILE"] = config


def _tolerance(text: str) -> tuple[str, tuple[float, float]]:
    try:
        return verification.parse_tolerance(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _dim_names(text: str) -> tuple[str, str]:
    name, sep, shape = text.partition("=")
    if not sep or not name or not shape:
        raise argparse.ArgumentTypeError(f"--dim_names {text!r}: expected INPUT=SHAPE, e.g. token_ids=(batch,sequence)")
    return name, shape


def _parser() -> argparse.ArgumentParser:
    # Bazel passes the arguments in a params file (`@file`, one per line), which
    # a persistent worker gets expanded in its WorkRequest instead.
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], fromfile_prefix_chars="@")
    parser.add_argument("--model_file", required=True, type=pathlib.Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--formats", default="tf_saved_model,onnx")
    parser.add_argument("--out_dir", required=True, type=pathlib.Path)
    parser.add_argument("--reference_batches", default="",
                        help="batch sizes of the reference cases (default: the export's verification cases)")
    parser.add_argument("--dim_names", action="append", default=[], type=_dim_names,
                        help="INPUT=SHAPE, e.g. token_ids=(batch,sequence): names of its dynamic dims")
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument("--weights", type=pathlib.Path, default=None)
    parser.add_argument("--tolerance", action="append", default=[], type=_tolerance, help="DTYPE=ATOL[,RTOL]")
    parser.add_argument("--verbose", action="store_true")
    return parser


def run(argv: Sequence[str]) -> pathlib.Path:
    """One export action: parses `argv`, exports, returns the manifest path.

    Raises:
        SystemExit: bad arguments (argparse's message is on stderr).
        servekit.ExportError: the model cannot be exported.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != args.backend:
        parser.error(f"--backend {args.backend} but KERAS_BACKEND={backend}")

    import keras

    start = time.monotonic()
    keras.backend.clear_session()  # layer names must not depend on earlier actions of a worker
    keras.utils.set_random_seed(SEED)
    with model_imports(args.model_file):
        manifest_path = _export_model_file(args, backend)
    if args.verbose:
        print(f"servekit: exported {args.name} ({backend}) in {time.monotonic() - start:.1f} s -> {manifest_path}")
    return manifest_path


def _export_model_file(args: argparse.Namespace, backend: str) -> pathlib.Path:
    module = load_model_file(args.model_file)
    model = module.build_model()
    if args.weights:
        model.load_weights(args.weights)
    return build_export(
        model,
        out_dir=args.out_dir,
        name=args.name,
        source_backend=backend,
        formats=args.formats.split(","),
        reference_batches=[int(b) for b in args.reference_batches.split(",") if b.strip()],
        sample_inputs=getattr(module, "sample_inputs", None),
        input_signature=module.input_signature() if hasattr(module, "input_signature") else None,
        opset=args.opset,
        tolerances=dict(args.tolerance),
        verbose=args.verbose,
        input_ranges=module.input_ranges() if hasattr(module, "input_ranges") else None,
        dim_names={**(module.dim_names() if hasattr(module, "dim_names") else {}), **dict(args.dim_names)},
    )


def _serve_bazel(protocol_out: BinaryIO) -> int:
    """The build tool as a Bazel persistent worker: one warm process per source
    backend runs every export action of a build."""
    import contextlib
    import io
    import traceback

    from servekit.build import persistent_worker
    from servekit.worker import isolation

    def handle(request: persistent_worker.WorkRequest) -> tuple[int, str]:
        output = io.StringIO()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output), isolation.one_job():
            cwd = os.getcwd()
            try:
                if request.sandbox_dir:
                    os.chdir(request.sandbox_dir)
                run(request.arguments)
                code = 0
            except SystemExit as e:  # argparse: its message is in the output
                code = e.code if isinstance(e.code, int) else 2
            except Exception:  # the action fails with the full error; the worker serves the next one
                traceback.print_exc(file=output)
                code = 1
            finally:
                os.chdir(cwd)
        return code, output.getvalue()

    return persistent_worker.serve(handle, sys.stdin.buffer, protocol_out, after_response=isolation.release_memory)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Keras and matplotlib (imported by converters) write config caches under
    # $HOME, which an export action does not have: give them a scratch directory.
    scratch = tempfile.mkdtemp(prefix="servekit-build-")
    os.environ.setdefault("KERAS_HOME", os.path.join(scratch, "keras"))
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(scratch, "matplotlib"))
    quiet_fontconfig(scratch)
    from servekit.worker.launch import warm_worker

    try:
        # Both formats of an action, and as a persistent worker every action,
        # share one TensorFlow export worker process.
        with warm_worker():
            if "--persistent_worker" in argv:
                protocol_out = os.fdopen(os.dup(1), "wb")
                os.dup2(2, 1)  # stray prints must not corrupt the protocol on stdout
                return _serve_bazel(protocol_out)
            run(argv)
            return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
