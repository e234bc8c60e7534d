"""servekit: export Keras 3 models (TensorFlow, JAX or PyTorch backend) to
TensorFlow SavedModel and ONNX, and prove each artifact.

Public API:

- `export(model, filepath, format="tf_saved_model", ...)`
- `ExportArchive`: several endpoints, variable collections, lookup tables
- `load(path)`: call a SavedModel or ONNX artifact's endpoints by name
- `ExportError`
"""

from servekit.errors import ExportError
from servekit.exporter import export

from servekit.version import __version__

__all__ = ["ExportArchive", "ExportError", "export", "load", "__version__"]


def __getattr__(name):
    # Imported lazily: ExportArchive and load may import TensorFlow.
    if name == "ExportArchive":
        from servekit.export_archive import ExportArchive

        return ExportArchive
    if name == "load":
        from servekit.runtime.loader import load

        return load
    raise AttributeError(f"module 'servekit' has no attribute {name!r}")
