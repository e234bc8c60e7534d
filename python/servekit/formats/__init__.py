"""The artifact formats servekit writes, one module per format.

Each format says here what it is (its name, the file it is written to, what
runtime proves it) and has a module beside this one for what is particular to
it: how it is converted from what a strategy traced, how its bytes are made
canonical, and how it is loaded and checked against the source model's cases.

| format | file(s) | converted from | proved in (Python / native) |
|---|---|---|---|
| `tf_saved_model` | a directory | the traced `tf.function`s | `tf.saved_model.load` / TF C API |
| `onnx` | `.onnx` | the traced module (tf2onnx), jax2onnx, torch.onnx | onnxruntime / ORT C++ |
| `openvino` | `.xml` + `.bin` | the traced serving function (`ov.convert_model`) | OpenVINO Python / C++ |
| `litert` | `.tflite` | the traced serving function (TFLite converter) | `ai_edge_litert` / LiteRT C |
| `torch` | `.pt2` (ExportedProgram) | the model rebuilt under torch (`torch.export`) | `torch.export.load` |
| `torch_aoti` | `.pt2` (AOTInductor package) | the same ExportedProgram, compiled | `aoti_load_package` / libtorch |

The SavedModel and ONNX modules predate this package and live at
`servekit.saved_model` and `servekit.onnx`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from servekit.errors import ExportError


@dataclasses.dataclass(frozen=True)
class Format:
    """What one artifact format is.

    Args:
        name: the `format=` value and the manifest's name.
        suffix: the suffix `filepath` must end with (Keras's rule for that
            format), or None (a directory; ONNX, which Keras writes at any
            path).
        build_path: the artifact's path in a build's export directory.
        engine: "tensorflow" when the TensorFlow worker converts it from the
            traced module, "torch" when a torch process exports it.
        description: one line for errors and docs.
    """

    name: str
    suffix: Optional[str]
    build_path: str
    engine: str
    description: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("tf_saved_model", None, "saved_model", "tensorflow", "TensorFlow SavedModel"),
    Format("onnx", None, "model.onnx", "tensorflow", "ONNX model"),
    Format("openvino", ".xml", "model.xml", "tensorflow", "OpenVINO IR (.xml + .bin)"),
    Format("litert", ".tflite", "model.tflite", "tensorflow", "LiteRT (TFLite) flatbuffer"),
    Format("torch", ".pt2", "model.pt2", "torch", "PyTorch ExportedProgram"),
    Format("torch_aoti", ".pt2", "model_aoti.pt2", "torch", "PyTorch AOTInductor package"),
)}
ALIASES = {"saved_model": "tf_saved_model", "tflite": "litert", "aoti": "torch_aoti"}
# What a TensorFlow worker writes from one trace of the endpoints.
TENSORFLOW_FORMATS = tuple(n for n, f in FORMATS.items() if f.engine == "tensorflow")
TORCH_FORMATS = tuple(n for n, f in FORMATS.items() if f.engine == "torch")


def resolve(name: str) -> Format:
    """The `Format` named `name` (or one of its aliases).

    Raises:
        ExportError: no such format; the message lists the formats.
    """
    name = ALIASES.get(name, name)
    if name not in FORMATS:
        raise ExportError(f"Unknown format {name!r}; servekit exports {', '.join(repr(f) for f in FORMATS)}.",
                          reason="bad_argument")
    return FORMATS[name]


def check_filepath(fmt: str, filepath: str, model_name: str) -> None:
    """Refuses a `filepath` without the suffix the format's runtimes expect.

    Raises:
        ExportError: with the suffix to use (a `ValueError`, as Keras raises).
    """
    suffix = FORMATS[fmt].suffix
    if suffix and not os.fspath(filepath).endswith(suffix):
        raise ExportError(f"Model '{model_name}': the {FORMATS[fmt].description} export requires the filepath to "
                          f"end with '{suffix}'. Got: filepath={os.fspath(filepath)}", model=model_name,
                          reason="bad_argument")


def member_paths(fmt: str, path: str) -> list[str]:
    """Every path an artifact at `path` consists of (OpenVINO: the .xml and its .bin)."""
    if fmt == "openvino":
        return [path, os.path.splitext(path)[0] + ".bin"]
    return [path]


def commit(fmt: str, staged: str, filepath: str) -> None:
    """Moves a verified staged artifact into place (see `servekit.atomic`)."""
    from servekit import atomic

    if fmt == "openvino":
        from servekit.formats import openvino

        openvino.commit(staged, filepath)
    else:
        atomic.commit(staged, filepath)


def artifact_files(fmt: str, path: str) -> dict[str, int]:
    """File name -> size of a committed artifact (an IR: its .xml and .bin)."""
    from servekit import atomic

    files: dict[str, int] = {}
    for member in member_paths(fmt, path):
        files.update(atomic.artifact_files(member))
    return files


def precision_tolerances(fmt: str, precision: Optional[str]) -> dict[str, tuple[float, ...]]:
    """The tolerances, over the export's, an artifact is checked with at the
    `precision` its report and manifest name (OpenVINO "bfloat16": bfloat16's;
    LiteRT "quantized": the coarse check). Empty for the model's own precision."""
    if fmt == "openvino" and precision == "bfloat16":
        from servekit.formats import openvino

        return openvino.tolerances("bf16")
    if fmt == "litert" and precision == "quantized":
        from servekit.formats import litert

        return litert.quantized_tolerances()
    return {}
