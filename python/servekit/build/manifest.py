"""Writes an export directory: artifacts, `manifest.json` and reference data.

The layout and the manifest's fields are specified in docs/manifest.md; the
native verifier (cc/manifest.h) reads what this module writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
from importlib import metadata
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from servekit import formats
from servekit.pipeline.cases import storable
from servekit.signature import ExportedArtifact, Signature

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
REFERENCE_DIR = "reference"
ARTIFACT_PATHS = {name: fmt.build_path for name, fmt in formats.FORMATS.items()}

DEFAULT_TOLERANCES = {
    "float16": (1e-2, 1e-2),
    "bfloat16": (1e-2, 1e-2),
    "float32": (1e-5, 0.0),
    "float64": (1e-7, 0.0),
}

_TOOL_PACKAGES = ("keras", "tensorflow-cpu", "jax", "torch", "onnx", "onnxruntime", "tf2onnx", "openvino",
                  "ai-edge-litert", "numpy")


def tool_versions() -> dict[str, str]:
    """Returns the versions of the packages an export depends on."""
    versions = {"servekit": _servekit_version(), "python": "%d.%d.%d" % sys.version_info[:3]}
    for package in _TOOL_PACKAGES:
        try:
            versions[package.replace("-cpu", "")] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _servekit_version() -> str:
    from servekit.version import __version__

    return __version__


def file_digests(path: pathlib.Path) -> dict[str, str]:
    """Maps every file of an artifact to `sha256:<hex>`, sorted by relative path."""
    if path.is_file():
        return {path.name: _sha256(path)}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path).as_posix(): _sha256(p) for p in files}


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def case_labels(batches: Sequence[int]) -> list[str]:
    """File labels of reference cases: `b<batch>`, and `b<batch>-<case>` for
    a batch size that an earlier case already has (a static batch)."""
    seen: set[int] = set()
    labels = []
    for i, batch in enumerate(batches):
        labels.append(f"b{batch}" if batch not in seen else f"b{batch}-{i}")
        seen.add(batch)
    return labels


def write_reference_case(
    export_dir: pathlib.Path,
    signature: Signature,
    batch: int,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    label: Optional[str] = None,
) -> dict[str, Any]:
    """Writes one reference case's .npy files and returns its manifest entry.

    Files are named `<endpoint>.<label>.<in|out>.<tensor>.npy`, the label
    `b<batch>` unless given (`case_labels`).

    Raises:
        ValueError: if `inputs` or `outputs` do not name exactly the signature's tensors.
    """
    label = label or f"b{batch}"
    entry: dict[str, Any] = {"endpoint": signature.name, "batch": batch, "inputs": {}, "outputs": {}}
    for kind, tensors, values in (("in", signature.inputs, inputs), ("out", signature.outputs, outputs)):
        expected = [t.name for t in tensors]
        if sorted(values) != sorted(expected):
            raise ValueError(
                f"Reference {kind}puts of endpoint '{signature.name}' are named {sorted(values)}, "
                f"but the signature has {expected}."
            )
        for tensor in tensors:
            relative = f"{REFERENCE_DIR}/{signature.name}.{label}.{kind}.{tensor.name}.npy"
            target = export_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, np.ascontiguousarray(storable(values[tensor.name])), allow_pickle=False)
            entry["inputs" if kind == "in" else "outputs"][tensor.name] = relative
    return entry


def build_manifest(
    name: str,
    source_backend: str,
    artifacts: Sequence[ExportedArtifact],
    export_dir: pathlib.Path,
    reference_cases: Sequence[dict[str, Any]],
    tolerances: Optional[Mapping[str, tuple[float, float]]] = None,
) -> dict[str, Any]:
    """Returns the manifest of an export directory whose files are all written."""
    endpoints: dict[str, dict[str, Any]] = {}
    for artifact in artifacts:
        for signature in artifact.endpoints:
            entry = endpoints.setdefault(signature.name, {**signature.to_json(), "formats": []})
            entry.pop("dims", None)
            if entry["inputs"] != signature.to_json()["inputs"] or entry["outputs"] != signature.to_json()["outputs"]:
                raise ValueError(
                    f"Export '{name}': endpoint '{signature.name}' differs between formats: "
                    f"{entry} vs {artifact.format} {signature.to_json()}"
                )
            entry["formats"].append(artifact.format)

    artifact_entries = []
    for artifact in artifacts:
        relative = ARTIFACT_PATHS[artifact.format]
        entry: dict[str, Any] = {"format": artifact.format, "path": relative}
        if artifact.format == "tf_saved_model":
            entry["tags"] = ["serve"]
            # Its signature_def names every dynamic dim, as the endpoints below do.
            entry["dim_names"] = True
        if artifact.opset is not None:
            entry["opset"] = artifact.opset
        if artifact.strategy:
            entry["strategy"] = artifact.strategy
        if getattr(artifact, "converter", None):
            entry["converter"] = artifact.converter
        if getattr(artifact, "precision", None):
            entry["precision"] = artifact.precision
        files: dict[str, str] = {}
        for member in formats.member_paths(artifact.format, str(export_dir / relative)):
            files.update(file_digests(pathlib.Path(member)))
        entry["files"] = dict(sorted(files.items()))
        artifact_entries.append(entry)

    for signature in (s for a in artifacts for s in a.endpoints):
        entry = endpoints[signature.name]
        dims = verified_dims(export_dir, entry, [c for c in reference_cases if c["endpoint"] == signature.name],
                             signature.dims)
        if dims:
            entry["dims"] = dims
            # "dims" after the tensors, before "formats": the order a reader expects.
            entry["formats"] = entry.pop("formats")

    merged = dict(DEFAULT_TOLERANCES)
    merged.update(tolerances or {})
    return {
        "servekit_manifest": MANIFEST_VERSION,
        "model": name,
        "source_backend": source_backend,
        "tools": tool_versions(),
        "artifacts": artifact_entries,
        "endpoints": list(endpoints.values()),
        "tolerances": {dtype: {"atol": a, "rtol": r} for dtype, (a, r) in sorted(merged.items())},
        "reference": [_with_checks(export_dir, case, merged) for case in reference_cases],
    }


def verified_dims(export_dir: pathlib.Path, endpoint: Mapping[str, Any], cases: Sequence[Mapping[str, Any]],
                  planned: Optional[Mapping[str, Mapping[str, Any]]] = None) -> dict[str, dict[str, Any]]:
    """The endpoint's `dims` entry: per dynamic dim symbol, the sizes the
    reference cases exercise (`verified`), and the window, bound and note the
    export's plan recorded (`planned`, `Signature.dims`).

    Raises:
        ValueError: a reference case gives one symbol two sizes (the data
            contradict the signature's shared dims).
    """
    sizes: dict[str, set[int]] = {}
    for case in cases:
        bound: dict[str, int] = {}
        for kind, tensors in (("inputs", endpoint["inputs"]), ("outputs", endpoint["outputs"])):
            for tensor in tensors:
                path = case[kind].get(tensor["name"])
                if path is None:
                    continue
                shape = np.load(export_dir / path, mmap_mode="r", allow_pickle=False).shape
                for dim, size in zip(tensor["shape"], shape):
                    if isinstance(dim, str):
                        if bound.setdefault(dim, int(size)) != int(size):
                            raise ValueError(
                                f"Reference case {path}: dim '{dim}' is {size}, but {bound[dim]} elsewhere in the "
                                "same case; dims with one name must have one size.")
        for dim, size in bound.items():
            sizes.setdefault(dim, set()).add(size)
    out: dict[str, dict[str, Any]] = {}
    for dim in sizes:
        entry = {k: v for k, v in (planned or {}).get(dim, {}).items() if k != "verified"}
        out[dim] = {"verified": sorted(sizes[dim]), **entry}
    return out


def _with_checks(export_dir: pathlib.Path, case: dict[str, Any],
                 tolerances: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """A reference case with `checks`: per floating output, how strong its
    comparison is ("absolute", or "scaled" when the output is too small for
    the absolute tolerance to mean anything; `servekit.verification`)."""
    from servekit import verification

    checks = {}
    for name, relative in case["outputs"].items():
        expected = np.load(export_dir / relative, allow_pickle=False)
        if expected.dtype.kind == "f":
            atol = tolerances.get(str(expected.dtype), tolerances["float32"])[0]
            checks[name] = verification.check_kind(expected, atol)
    return {**case, "checks": checks} if checks else dict(case)


def write_manifest(export_dir: pathlib.Path, manifest: Mapping[str, Any]) -> pathlib.Path:
    """Writes manifest.json (stable key order, trailing newline) and returns its path."""
    path = export_dir / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path
