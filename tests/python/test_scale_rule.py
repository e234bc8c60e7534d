"""The scale rule, end to end: an output's check follows its size at both ends.

- Tiny outputs: float32's absolute tolerance (1e-5) alone would accept nearly
  anything from a model whose outputs are about 3e-5, as keras_hub's MobileNet
  backbone's are with random weights. The native verifier refuses an artifact
  that is 30% off there, although every element of it is within the absolute
  tolerance of the reference.
- Large outputs: a model whose outputs are about 1e4 differs from its own
  SavedModel, run as a graph, by about 1e-2, where float32 values are 1e-3 apart;
  an absolute 1e-5 refused to export it at all. Held to 1e-5 per unit of its
  scale, it exports and verifies natively, and an artifact 0.1% off is refused.

Both record their checks as "scaled" in the manifest.
"""

import dataclasses
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

ABSOLUTE_FLOAT32_ATOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    hidden_stddev: float
    logits_stddev: float  # of the kernel the wrong artifact changes
    units: int
    scale_range: tuple[float, float]  # the premise: the reference outputs' largest |value|
    error: float  # the relative error of the wrong artifact's kernel


TINY = Case("tiny_outputs", hidden_stddev=0.1, logits_stddev=5e-6, units=8,
            scale_range=(0.0, 10 * ABSOLUTE_FLOAT32_ATOL), error=0.3)
LARGE = Case("large_outputs", hidden_stddev=3.0, logits_stddev=3.0, units=512, scale_range=(1e3, 1e6), error=1e-3)


def _model_file(case: Case) -> str:
    return textwrap.dedent(f"""\
        import keras


        def build_model():
            keras.utils.set_random_seed(0)
            inputs = keras.Input(shape=(64,), name="features")
            hidden = keras.layers.Dense({case.units}, name="hidden",
                                        kernel_initializer=keras.initializers.RandomNormal(stddev={case.hidden_stddev}, seed=1))
            logits = keras.layers.Dense(3, name="logits",
                                        kernel_initializer=keras.initializers.RandomNormal(stddev={case.logits_stddev}, seed=2))
            return keras.Model(inputs, logits(hidden(inputs)), name="{case.name}")
        """)


@pytest.fixture(scope="module", params=[TINY, LARGE], ids=lambda case: case.name)
def export(request, tmp_path_factory) -> tuple[Case, pathlib.Path]:
    case = request.param
    work = tmp_path_factory.mktemp(case.name)
    (work / f"{case.name}.py").write_text(_model_file(case))
    manifest = build_tool.run(["--model_file", str(work / f"{case.name}.py"), "--name", case.name,
                               "--backend", "tensorflow", "--formats", "tf_saved_model,onnx",
                               "--out_dir", str(work / "export")])
    return case, manifest.parent


def _manifest(export_dir: pathlib.Path) -> dict:
    return json.loads((export_dir / "manifest.json").read_text())


def test_the_manifest_says_the_check_is_scaled(export):
    case, export_dir = export
    manifest = _manifest(export_dir)
    assert manifest["reference"], "no reference cases"
    for reference in manifest["reference"]:
        expected = np.load(export_dir / reference["outputs"]["logits"])
        low, high = case.scale_range
        assert low <= np.abs(expected).max() < high
        assert reference["checks"] == {"logits": "scaled"}


@pytest.mark.parametrize("fmt", ["tf_saved_model", "onnx"])
def test_the_true_artifacts_pass_natively(export, fmt):
    _, export_dir = export
    report = native.validate(str(export_dir / "manifest.json"), fmt)
    assert report.passed, report.to_text()


def test_an_artifact_off_by_more_than_the_scaled_tolerance_is_refused_natively(export, tmp_path):
    case, export_dir = export
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for item in export_dir.iterdir():
        if item.is_dir():
            (wrong / item.name).symlink_to(item)
    model = onnx.load(str(export_dir / "model.onnx"))
    (kernel,) = [t for t in model.graph.initializer if numpy_helper.to_array(t).shape == (case.units, 3)]
    values = numpy_helper.to_array(kernel) * np.float32(1 + case.error)
    kernel.CopyFrom(numpy_helper.from_array(values, kernel.name))
    onnx.save(model, str(wrong / "model.onnx"))
    # A consistent manifest: only the values can tell this artifact is wrong.
    manifest = _manifest(export_dir)
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] == "onnx"]
    manifest["artifacts"][0]["files"] = {
        "model.onnx": "sha256:" + hashlib.sha256((wrong / "model.onnx").read_bytes()).hexdigest()}
    (wrong / "manifest.json").write_text(json.dumps(manifest))

    runner = native.load(str(wrong / "model.onnx"))
    for reference in manifest["reference"]:
        inputs = {name: np.load(export_dir / path) for name, path in reference["inputs"].items()}
        got = runner.run("serving_default", inputs)["logits"]
        expected = np.load(export_dir / reference["outputs"]["logits"])
        error = np.abs(got - expected).max()
        if case is TINY:  # the premise: an absolute check alone would accept it, in every case
            assert 0 < error < ABSOLUTE_FLOAT32_ATOL
        else:  # the premise: the error is the kernel's, far above the numerics' own
            assert error > 10 * ABSOLUTE_FLOAT32_ATOL * np.abs(expected).max()

    report = native.validate(str(wrong / "manifest.json"), "onnx")
    assert not report.passed
    assert any("logits" in failure for failure in report.failures), report.to_text()
