"""A proof that cannot be vacuous: an artifact whose outputs are tiny is still checked.

float32's absolute tolerance (1e-5) alone would accept nearly anything from a model
whose outputs are about 3e-5, as keras_hub's MobileNet backbone's are with random
weights. The build tool records such an output's check as "scaled" in the manifest,
and the native verifier refuses an artifact that is 30% off there, although every
element of it is within the absolute tolerance of the reference.
"""

import hashlib
import json
import pathlib
import textwrap

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from servekit import native
from servekit.build import build_tool

MODEL_FILE = textwrap.dedent("""\
    import keras


    def build_model():
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape=(8,), name="features")
        small = keras.initializers.RandomNormal(stddev=3e-6, seed=1)
        dense = keras.layers.Dense(3, kernel_initializer=small, name="logits")
        return keras.Model(inputs, dense(inputs), name="tiny_outputs")
    """)
ABSOLUTE_FLOAT32_ATOL = 1e-5


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> pathlib.Path:
    work = tmp_path_factory.mktemp("tiny")
    (work / "tiny_outputs.py").write_text(MODEL_FILE)
    manifest = build_tool.run(["--model_file", str(work / "tiny_outputs.py"), "--name", "tiny_outputs",
                               "--backend", "tensorflow", "--formats", "onnx", "--out_dir", str(work / "export")])
    return manifest.parent


def _manifest(export: pathlib.Path) -> dict:
    return json.loads((export / "manifest.json").read_text())


def test_the_manifest_says_the_check_is_scaled(export):
    manifest = _manifest(export)
    assert manifest["reference"], "no reference cases"
    for case in manifest["reference"]:
        expected = np.load(export / case["outputs"]["logits"])
        assert np.abs(expected).max() < ABSOLUTE_FLOAT32_ATOL * 10  # the premise: tiny outputs
        assert case["checks"] == {"logits": "scaled"}


def test_the_true_artifact_passes_natively(export):
    report = native.validate(str(export / "manifest.json"), "onnx")
    assert report.passed, report.to_text()


def test_an_artifact_30_percent_off_is_refused_natively(export, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for item in export.iterdir():
        if item.is_dir():
            (wrong / item.name).symlink_to(item)
    model = onnx.load(str(export / "model.onnx"))
    (kernel,) = [t for t in model.graph.initializer if numpy_helper.to_array(t).shape == (8, 3)]
    kernel.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(kernel) * np.float32(1.3), kernel.name))
    onnx.save(model, str(wrong / "model.onnx"))
    # A consistent manifest: only the values can tell this artifact is wrong.
    manifest = _manifest(export)
    (artifact,) = [a for a in manifest["artifacts"] if a["format"] == "onnx"]
    artifact["files"] = {"model.onnx": "sha256:" + hashlib.sha256((wrong / "model.onnx").read_bytes()).hexdigest()}
    (wrong / "manifest.json").write_text(json.dumps(manifest))

    # The premise: an absolute check alone would accept it, in every case.
    runner = native.load(str(wrong / "model.onnx"))
    for case in manifest["reference"]:
        inputs = {name: np.load(export / path) for name, path in case["inputs"].items()}
        got = runner.run("serving_default", inputs)["logits"]
        expected = np.load(export / case["outputs"]["logits"])
        assert 0 < np.abs(got - expected).max() < ABSOLUTE_FLOAT32_ATOL

    report = native.validate(str(wrong / "manifest.json"), "onnx")
    assert not report.passed
    assert any("logits" in failure for failure in report.failures), report.to_text()
