"""Builds one export directory from a model file: the action behind `model_export`.

    python -m servekit.build_tool --model_file models/mlp.py --name mlp_tensorflow \\
        --backend tensorflow --formats tf_saved_model,onnx --out_dir OUT

A model file defines `build_model() -> keras.Model` with seeded weights, and may
define `sample_inputs(batch: int, rng: numpy.random.Generator)` returning the
model's inputs (an array, a list or a dict, as the model takes them) and
`input_signature()` returning what `servekit.export` takes as `input_signature`.
The Keras backend is the one in KERAS_BACKEND; it must equal --backend.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import shutil
import sys
import tempfile
import time
import types
from typing import Any, Mapping, Optional, Sequence

if __name__ == "__main__":
    # Run as a script (Bazel's py_binary), Python puts this file's directory, the
    # servekit package itself, first on sys.path, where servekit/onnx.py would be
    # found as the `onnx` package. The package is imported from its parent.
    _PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _PACKAGE_DIR]

import numpy as np

from servekit import manifest as manifest_lib
from servekit.signature import ExportedArtifact, Signature

# Every random choice of an export derives from this seed.
SEED = 1337


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


def default_sample_inputs(model: Any, batch: int, rng: np.random.Generator) -> Any:
    """Random inputs for the model's declared inputs: floats ~ N(0,1), ints in [0, 10).

    Dynamic dimensions other than the batch get size 4.

    Raises:
        ValueError: for string inputs, which need the model file's `sample_inputs`.
    """
    import keras

    def make(tensor: Any) -> np.ndarray:
        shape = [batch] + [4 if d is None else int(d) for d in tensor.shape[1:]]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if dtype == "string":
            raise ValueError(
                f"Model '{model.name}' input '{tensor.name}' is a string tensor; random data "
                "cannot fill it. Define sample_inputs(batch, rng) in the model file."
            )
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
    from servekit.export_utils import reference_outputs

    named_inputs = _named(inputs, signature.inputs, "inputs", model.name)
    return named_inputs, reference_outputs(model, inputs, input_signature)


def build_export(
    model: Any,
    out_dir: pathlib.Path,
    name: str,
    source_backend: str,
    formats: Sequence[str] = ("tf_saved_model", "onnx"),
    reference_batches: Sequence[int] = (1, 7),
    sample_inputs: Optional[Any] = None,
    input_signature: Optional[Any] = None,
    opset: Optional[int] = None,
    tolerances: Optional[Mapping[str, tuple[float, float]]] = None,
    verbose: bool = False,
) -> pathlib.Path:
    """Exports `model` to every format and writes manifest and reference data.

    Args:
        model: a Keras model on the current backend.
        out_dir: the export directory; created, and filled only on success.
        name: the export's name, recorded in the manifest.
        source_backend: the current Keras backend, recorded in the manifest.
        formats: some of "tf_saved_model" and "onnx".
        reference_batches: batch sizes of the reference cases.
        sample_inputs: `f(batch, rng)` returning model inputs; random by default.
        input_signature: passed to `servekit.export`.
        opset: ONNX opset, or None for the library's default.
        tolerances: per-dtype `(atol, rtol)` recorded in the manifest.
        verbose: print the export library's summaries.

    Returns:
        The path of the written manifest.json.

    Raises:
        servekit.ExportError: when a format cannot be exported or fails its self-check.

    Example:

    ```python
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    servekit.build_tool.build_export(model, pathlib.Path("out/mlp"), "mlp", "tensorflow")
    ```
    """
    import servekit

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir.parent))
    try:
        artifacts: list[ExportedArtifact] = []
        for fmt in formats:
            kwargs: dict[str, Any] = {}
            if fmt == "onnx" and opset:
                kwargs["opset_version"] = opset
            artifact = servekit.export(
                model,
                str(staging / manifest_lib.ARTIFACT_PATHS[fmt]),
                format=fmt,
                verbose=verbose,
                input_signature=input_signature,
                **kwargs,
            )
            artifacts.append(artifact)

        default = artifacts[0].endpoint("serving_default")
        sample = sample_inputs or (lambda b, r: default_sample_inputs(model, b, r))
        cases = []
        for batch in reference_batches:
            rng = np.random.default_rng([SEED, batch])
            named_in, named_out = reference_case(model, default, sample(batch, rng), input_signature)
            cases.append(manifest_lib.write_reference_case(staging, default, batch, named_in, named_out))

        document = manifest_lib.build_manifest(
            name, source_backend, artifacts, staging, cases, tolerances
        )
        manifest_lib.write_manifest(staging, document)
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


def _parse_tolerance(text: str) -> tuple[str, tuple[float, float]]:
    dtype, _, values = text.partition("=")
    atol, _, rtol = values.partition(",")
    return dtype, (float(atol), float(rtol or 0.0))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_file", required=True, type=pathlib.Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--backend", required=True, choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--formats", default="tf_saved_model,onnx")
    parser.add_argument("--out_dir", required=True, type=pathlib.Path)
    parser.add_argument("--reference_batches", default="1,7")
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument("--weights", type=pathlib.Path, default=None)
    parser.add_argument("--tolerance", action="append", default=[], help="DTYPE=ATOL[,RTOL]")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != args.backend:
        parser.error(f"--backend {args.backend} but KERAS_BACKEND={backend}")
    # Keras and matplotlib (imported by converters) write config caches under
    # $HOME, which an export action does not have: give them a scratch directory.
    scratch = tempfile.mkdtemp(prefix="servekit-build-")
    os.environ.setdefault("KERAS_HOME", os.path.join(scratch, "keras"))
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(scratch, "matplotlib"))

    import keras

    start = time.monotonic()
    keras.utils.set_random_seed(SEED)
    module = load_model_file(args.model_file)
    model = module.build_model()
    if args.weights:
        model.load_weights(args.weights)
    manifest_path = build_export(
        model,
        out_dir=args.out_dir,
        name=args.name,
        source_backend=backend,
        formats=args.formats.split(","),
        reference_batches=[int(b) for b in args.reference_batches.split(",")],
        sample_inputs=getattr(module, "sample_inputs", None),
        input_signature=module.input_signature() if hasattr(module, "input_signature") else None,
        opset=args.opset,
        tolerances=dict(_parse_tolerance(t) for t in args.tolerance),
        verbose=args.verbose,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    if args.verbose:
        print(f"servekit: exported {args.name} ({backend}) in {time.monotonic() - start:.1f} s -> {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
