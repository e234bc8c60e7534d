"""Keras's own export test suite, run against servekit (one backend per process).

The installed keras ships the tests of its export API
(`keras/src/export/saved_model_test.py` and `onnx_test.py`). This test copies
them unchanged into a scratch directory, except for one skip: Keras skips its
SavedModel tests on torch with NumPy 2 (its torch SavedModel road needs
torch_xla); servekit exports torch SavedModels, so here they run. A pytest
plugin then routes every export entry point the tests call
(`export_saved_model`, `ExportArchive`, `export_onnx`, `Model.export`) to
servekit, and pytest runs them in one warm export worker
(`servekit.worker.launch.warm_worker`, byte-identical to fresh processes). Any
failure fails the Bazel test; each case is reported in the JUnit XML Bazel
collects.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

import pytest

SUITE_FILES = ("saved_model_test.py", "onnx_test.py")
# Keras's class-level skip of its torch SavedModel tests (NumPy 2 + torch_xla).
_TORCH_SKIP = re.compile(r'backend\.backend\(\) == "torch" and np\.version\.version\.startswith\("2\."\)')


class RouteToServekit:
    """A pytest plugin: Keras's export entry points become servekit's."""

    def pytest_configure(self, config):
        for marker in ("requires_trainable_backend", "skip_if_backend", "large"):
            config.addinivalue_line("markers", marker)
        import servekit
        from keras.src.export import onnx as keras_onnx
        from keras.src.export import saved_model as keras_saved_model
        from keras.src.models import model as keras_model

        def export_saved_model(model, filepath, verbose=None, input_signature=None, **kwargs):
            return servekit.export(model, filepath, format="tf_saved_model", verbose=verbose,
                                   input_signature=input_signature, **kwargs)

        def export_onnx(model, filepath, verbose=None, input_signature=None, **kwargs):
            return servekit.export(model, filepath, format="onnx", verbose=verbose,
                                   input_signature=input_signature, **kwargs)

        def model_export(model, filepath, format="tf_saved_model", verbose=None, input_signature=None,
                         **kwargs):
            return servekit.export(model, filepath, format=format, verbose=verbose,
                                   input_signature=input_signature, **kwargs)

        keras_saved_model.export_saved_model = export_saved_model
        keras_saved_model.ExportArchive = servekit.ExportArchive
        keras_onnx.export_onnx = export_onnx
        keras_model.Model.export = model_export


def copy_suite(dest: str) -> list[str]:
    """Copies Keras's export tests to `dest`; returns their paths."""
    import keras

    source = os.path.join(os.path.dirname(keras.__file__), "src", "export")
    paths = []
    for name in SUITE_FILES:
        with open(os.path.join(source, name)) as f:
            text = f.read()
        if name == "saved_model_test.py":
            text, count = _TORCH_SKIP.subn("False", text)
            if count != 1:
                raise RuntimeError(f"keras {keras.__version__}: the torch SavedModel skip in {name} changed; "
                                   "update tests/keras_suite/keras_export_suite.py")
        path = os.path.join(dest, name)
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    scratch = tempfile.mkdtemp(prefix="keras-suite-", dir=os.environ.get("TEST_TMPDIR"))
    try:
        paths = copy_suite(scratch)
        args = paths + ["-p", "no:cacheprovider", "-q", "-W", "ignore", "-rfE", "--rootdir", scratch] + argv
        xml = os.environ.get("XML_OUTPUT_FILE")
        if xml:
            args += ["--junitxml", xml, "-o", "junit_family=xunit2"]
        from servekit.worker.launch import warm_worker

        with warm_worker():
            return pytest.main(args, plugins=[RouteToServekit()])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
