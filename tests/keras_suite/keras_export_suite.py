"""Keras's own export test suite, run against servekit (one backend per process).

The installed keras ships the tests of its export API
(`keras/src/export/*_test.py`). This test copies the files named by
`KERAS_SUITE_FILES` (default: `saved_model_test.py onnx_test.py`) into a
scratch directory unchanged, except for the skips that say Keras cannot
export on this backend (`_BACKEND_SKIPS`): servekit exports torch
SavedModels and LiteRT from every backend (from torch without litert-torch),
so those tests run. A test that cannot apply to servekit skips itself, and is
listed, with why, in `_EXPECTED_SKIPS`. A pytest plugin
then routes every export entry point the tests call (`export_saved_model`,
`ExportArchive`, `export_onnx`, `export_openvino`, `export_litert`,
`export_torch`, `Model.export`) to servekit, and pytest runs them in one warm
export worker (`servekit.worker.launch.warm_worker`, byte-identical to fresh
processes). Any failure fails the Bazel test; each case is reported in the
JUnit XML Bazel collects.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

import pytest

DEFAULT_FILES = ("saved_model_test.py", "onnx_test.py")
# Keras's skips that say "Keras cannot export this on this backend", which servekit
# can: each is replaced by False, and must be found as often as listed (a change in
# Keras's tests then fails here instead of silently running fewer tests).
_BACKEND_SKIPS = {
    # The torch SavedModel road (NumPy 2 + torch_xla).
    "saved_model_test.py": [(r'backend\.backend\(\) == "torch" and np\.version\.version\.startswith\("2\."\)', 1)],
    # "LiteRT export requires the TensorFlow backend": the interpreter import and the class skips.
    "litert_test.py": [(r'backend\.backend\(\) != "tensorflow"', 3)],
    # "Requires litert-torch and torch": Keras's torch road to LiteRT; servekit's is the
    # portable TensorFlow rebuild, which takes Keras's arguments there (formats/litert.py).
    "litert_torch_test.py": [(r'not _has_litert_torch\(\)', 1)],
}
# Tests that cannot apply to servekit, skipped by the test itself: file -> {test: why}. Each
# must skip (nothing else in the file may), and its skip is pinned by a pattern count.
_EXPECTED_SKIPS = {
    "litert_torch_test.py": {
        # It builds a litert-torch `QuantConfig` (a PT2E quantizer) and passes it as
        # `quant_config`: without litert-torch the object cannot exist, and the test skips
        # itself on the ImportError. servekit quantizes with the TFLite converter
        # (`optimizations`, `representative_dataset`: test_export_with_optimizations_default,
        # test_export_with_multiple_kwargs) and refuses `quant_config` with that advice
        # (tests/python/test_formats.py::test_litert_takes_keras_torch_arguments).
        "test_export_with_direct_quant_config": (
            r'except ImportError:\n\s+self\.skipTest\("litert_torch quantization modules unavailable"\)', 1),
    },
}
# Test helpers that assume TensorFlow tensors, made backend-neutral where the skips above
# let their tests run on JAX and torch: (pattern, replacement, count).
_NEUTRAL_HELPERS = {
    # `x.numpy()` on a torch tensor that requires grad fails; Keras's own converter does not.
    "litert_test.py": [(r'lambda x: x\.numpy\(\) if hasattr\(x, "numpy"\) else np\.array\(x\)',
                        "backend.convert_to_numpy", 1)],
}


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

        import importlib

        _openvino_at_f32()
        for module, function, fmt in (("openvino", "export_openvino", "openvino"),
                                      ("litert", "export_litert", "litert"), ("torch", "export_torch", "torch")):
            setattr(importlib.import_module("keras.src.export." + module), function, _routed(fmt))


def _openvino_at_f32() -> None:
    """Keras's OpenVINO tests compile the IR with OpenVINO's defaults and compare at
    1e-3; on CPUs with AMX/AVX512-BF16 the default is bfloat16 (and OpenVINO 2026.4
    ignores the precision the IR records), so the tests compile at float32, the
    precision servekit verified."""
    import openvino

    compile_model = openvino.Core.compile_model

    def at_f32(self, model, device_name="CPU", config=None, *args, **kwargs):
        return compile_model(self, model, device_name, {"INFERENCE_PRECISION_HINT": "f32", **(config or {})},
                             *args, **kwargs)

    openvino.Core.compile_model = at_f32


def _routed(fmt: str):
    """Keras's `export_<format>(model, filepath, ...)`, as servekit.export."""

    def export(model, filepath, verbose=None, input_signature=None, **kwargs):
        import servekit

        return servekit.export(model, filepath, format=fmt, verbose=verbose, input_signature=input_signature,
                               **kwargs)

    return export


def copy_suite(dest: str, files: list[str]) -> list[str]:
    """Copies Keras's export tests `files` to `dest`; returns their paths."""
    import keras

    source = os.path.join(os.path.dirname(keras.__file__), "src", "export")
    paths = []
    for name in files:
        with open(os.path.join(source, name)) as f:
            text = f.read()
        rewrites = ([(p, "False", n) for p, n in _BACKEND_SKIPS.get(name, [])] + _NEUTRAL_HELPERS.get(name, [])
                    + [(p, r"\g<0>", n) for p, n in _EXPECTED_SKIPS.get(name, {}).values()])
        for pattern, replacement, expected in rewrites:
            text, count = re.subn(pattern, replacement, text)
            if count != expected:
                raise RuntimeError(f"keras {keras.__version__}: the pattern {pattern!r} in {name} was found "
                                   f"{count} times, not {expected}; update tests/keras_suite/keras_export_suite.py")
        path = os.path.join(dest, name)
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    return paths


class ExpectedSkips:
    """A pytest plugin: fails the run when a file of `_EXPECTED_SKIPS` skips a test it
    does not list, or runs one it lists (the reason to skip it is then gone)."""

    def __init__(self, files: list[str]):
        self.expected = {(f, t) for f in files for t in _EXPECTED_SKIPS.get(f, {})}
        self.files = {f for f in files if f in _EXPECTED_SKIPS}
        self.skipped: set[tuple[str, str]] = set()
        self.ran: set[tuple[str, str]] = set()

    def pytest_runtest_logreport(self, report):
        name = os.path.basename(report.location[0])
        if name not in self.files:
            return
        test = report.location[2].split(".")[-1].split("[")[0]
        if report.skipped:
            self.skipped.add((name, test))
        elif report.when == "call":
            self.ran.add((name, test))

    def pytest_sessionfinish(self, session, exitstatus):
        wrong = sorted(self.skipped - self.expected) + sorted(self.expected & self.ran)
        if wrong:
            print(f"\nkeras_export_suite: unexpected skip or run (see _EXPECTED_SKIPS): {wrong}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def main(argv: list[str]) -> int:
    scratch = tempfile.mkdtemp(prefix="keras-suite-", dir=os.environ.get("TEST_TMPDIR"))
    try:
        files = os.environ.get("KERAS_SUITE_FILES", " ".join(DEFAULT_FILES)).split()
        paths = copy_suite(scratch, files)
        args = paths + ["-p", "no:cacheprovider", "-q", "-W", "ignore", "-rfE", "--rootdir", scratch] + argv
        xml = os.environ.get("XML_OUTPUT_FILE")
        if xml:
            args += ["--junitxml", xml, "-o", "junit_family=xunit2"]
        from servekit.worker.launch import warm_worker

        with warm_worker():
            return pytest.main(args, plugins=[RouteToServekit(), ExpectedSkips(files)])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
