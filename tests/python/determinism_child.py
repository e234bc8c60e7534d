"""Exports a fixed set of artifacts into a directory (used by test_determinism).

    python determinism_child.py OUT_DIR

Run in a separate process, from another working directory, with the same
KERAS_BACKEND as the test process, which runs `export_all` itself too.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

import matrix_models as mm  # noqa: E402
import servekit  # noqa: E402

MODELS = ("mlp", "text_classifier")


def export_all(out_dir: str) -> list[str]:
    """Exports the MLP (SavedModel), the text classifier (ONNX: lookup tables),
    an ExportArchive with a training-mode endpoint (portable rebuild) and a
    subclassed model without get_config in both formats (in-process); returns
    the paths."""
    keras.utils.set_random_seed(5)  # Dropout's seed state is part of the model
    paths = []
    for name in MODELS:
        model = mm.build(name, seed=99)
        formats = (("onnx", ".onnx"),) if name == "text_classifier" else (("tf_saved_model", ""),)
        for fmt, suffix in formats:
            path = os.path.join(out_dir, name + suffix)
            servekit.export(model, path, format=fmt, verbose=True)
            paths.append(path)
    model = mm.build("mlp", seed=98)
    archive = servekit.ExportArchive()
    archive.track(model)
    spec = keras.InputSpec(shape=(None, 3), dtype="float32")
    archive.add_endpoint("serve", model.call, input_signature=[spec])
    archive.add_endpoint("call_training", lambda x: model(x, training=True), input_signature=[spec])
    path = os.path.join(out_dir, "archive")
    archive.write_out(path, verbose=True)
    paths.append(path)
    # The in-process strategy, pinned (on torch it writes ONNX only; its SavedModel
    # is the portable rebuild tracing the model's call): a subclassed model without
    # get_config, both formats.
    model = mm.build("subclassed", seed=97)
    for fmt, suffix in (("tf_saved_model", ""), ("onnx", ".onnx")):
        strategy = "portable_rebuild" if (fmt, keras.backend.backend()) == ("tf_saved_model", "torch") else "in_process"
        path = os.path.join(out_dir, "subclassed" + suffix)
        artifact = servekit.export(model, path, format=fmt, verbose=True, strategy=strategy)
        assert artifact.strategy == strategy, artifact.strategy
        paths.append(path)
    return paths


if __name__ == "__main__":
    export_all(sys.argv[1])
