"""bfloat16 and float16 models through the build tool, verified by the native verifier.

`.npy` has no bfloat16: the reference data hold its values as float32 (exactly),
and the verifier narrows them back where the signature says bfloat16, to feed
the model and to compare its outputs at bfloat16's tolerance. A model whose
input is bfloat16 is fed bfloat16 by every runtime the verifier loads.
"""

import json
import os
import pathlib
import subprocess
import textwrap

import numpy as np
import pytest

from servekit import native
from servekit.build import build_tool

MODEL_FILE = textwrap.dedent("""\
    import keras


    def build_model():
        keras.mixed_precision.set_dtype_policy("bfloat16")
        try:
            keras.utils.set_random_seed(0)
            inputs = keras.Input((8,), name="features")
            hidden = keras.layers.Dense(16, activation="gelu", name="mlp")(inputs)
            return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden), name="bfloat16_mlp")
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
    """)


def _build_tool_export(tmp_path_factory, name: str, model_file: str, formats) -> pathlib.Path:
    """Exports `model_file`'s model from TensorFlow through the build tool; returns the export directory."""
    work = tmp_path_factory.mktemp(name)
    (work / f"{name}.py").write_text(model_file)
    manifest = build_tool.run(["--model_file", str(work / f"{name}.py"), "--name", name, "--backend", "tensorflow",
                               "--formats", ",".join(formats), "--out_dir", str(work / "export")])
    return manifest.parent


# LiteRT computes the bfloat16 model in float32 (`servekit.source_model.precision`).
BFLOAT16_FORMATS = ("tf_saved_model", "onnx", "litert")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> pathlib.Path:
    return _build_tool_export(tmp_path_factory, "bfloat16_mlp", MODEL_FILE, BFLOAT16_FORMATS)


def test_bfloat16_tensors_are_stored_as_float32(export):
    manifest = json.loads((export / "manifest.json").read_text())
    (endpoint,) = [e for e in manifest["endpoints"] if e["name"] == "serving_default"]
    assert endpoint["outputs"][0]["dtype"] == "bfloat16"
    for case in manifest["reference"]:
        logits = np.load(export / case["outputs"]["logits"])
        assert logits.dtype == np.float32
        # Exactly bfloat16 values: the low 16 bits of every float32 are zero.
        assert not np.any(logits.view(np.uint32) & 0xFFFF)


def test_every_format_verifies_natively(export):
    report = native.validate(str(export / "manifest.json"))
    assert report.passed, report.to_text()
    assert {a.format.name for a in report.artifacts} == set(BFLOAT16_FORMATS)


MIXED_FLOAT16_FILE = textwrap.dedent("""\
    import keras


    def build_model():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,), name="features")
        hidden = keras.layers.Dense(16, activation="gelu", dtype="mixed_float16", name="mlp")(inputs)
        normalized = keras.layers.LayerNormalization(dtype="mixed_float16", name="norm")(hidden)
        return keras.Model(inputs, {"logits": keras.layers.Dense(3, dtype="float32", name="logits")(normalized),
                                    "hidden": keras.layers.Dense(4, dtype="float16", name="hidden")(normalized)},
                           name="mixed_float16_mlp")
    """)


def test_float16_compute_verifies_natively_in_litert_and_openvino(tmp_path_factory):
    # LiteRT has no float16 kernels: its model computes in float32 and returns the float16
    # output as float16, which LiteRT's C API hands the verifier as such.
    export = _build_tool_export(tmp_path_factory, "mixed_float16_mlp", MIXED_FLOAT16_FILE, ("litert", "openvino"))
    manifest = json.loads((export / "manifest.json").read_text())
    (endpoint,) = [e for e in manifest["endpoints"] if e["name"] == "serving_default"]
    assert {o["name"]: o["dtype"] for o in endpoint["outputs"]} == {"logits": "float32", "hidden": "float16"}
    report = native.validate(str(export / "manifest.json"))
    assert report.passed, report.to_text()
    assert {a.format.name for a in report.artifacts} == {"litert", "openvino"}


BFLOAT16_INPUT_FILE = textwrap.dedent("""\
    import keras


    def build_model():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,), dtype="bfloat16", name="features")
        hidden = keras.layers.Dense(16, activation="gelu", name="mlp")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden), name="bfloat16_input")
    """)
# Every format the native verifier loads.
NATIVE_FORMATS = ("tf_saved_model", "onnx", "openvino", "litert", "torch_aoti")


@pytest.fixture(scope="module")
def bfloat16_input_export(tmp_path_factory) -> pathlib.Path:
    return _build_tool_export(tmp_path_factory, "bfloat16_input", BFLOAT16_INPUT_FILE, NATIVE_FORMATS)


def test_bfloat16_inputs_are_stored_as_float32(bfloat16_input_export):
    manifest = json.loads((bfloat16_input_export / "manifest.json").read_text())
    (endpoint,) = [e for e in manifest["endpoints"] if e["name"] == "serving_default"]
    assert endpoint["inputs"][0]["dtype"] == "bfloat16"
    assert sorted(endpoint["formats"]) == sorted(NATIVE_FORMATS)
    for case in manifest["reference"]:
        features = np.load(bfloat16_input_export / case["inputs"]["features"])
        assert features.dtype == np.float32 and features.size
        assert not np.any(features.view(np.uint32) & 0xFFFF)


def test_bfloat16_inputs_verify_natively_in_every_format(bfloat16_input_export):
    report = native.validate(str(bfloat16_input_export / "manifest.json"))
    assert report.passed, report.to_text()
    assert {a.format.name for a in report.artifacts} == set(NATIVE_FORMATS)


@pytest.mark.parametrize("fmt", NATIVE_FORMATS)
def test_a_bfloat16_input_fed_as_float32_is_refused_natively(bfloat16_input_export, fmt):
    # The premise of the check above: each runtime types the input bfloat16, so the
    # reference inputs only run once narrowed back.
    manifest = json.loads((bfloat16_input_export / "manifest.json").read_text())
    (artifact,) = [a for a in manifest["artifacts"] if a["format"] == fmt]
    model = native.load(str(bfloat16_input_export / artifact["path"]), format=fmt)
    features = np.load(bfloat16_input_export / manifest["reference"][0]["inputs"]["features"])
    with pytest.raises(ValueError, match="bfloat16"):
        model.run("serving_default", {"features": features})


VERIFY = (pathlib.Path(os.environ.get("TEST_SRCDIR", ".")) / os.environ.get("TEST_WORKSPACE", "servekit")
          / "cc/cli/servekit_verify")


@pytest.mark.parametrize("fmt", NATIVE_FORMATS)
def test_servekit_verify_runs_a_bfloat16_input_from_its_reference_npy(bfloat16_input_export, fmt, tmp_path):
    manifest = json.loads((bfloat16_input_export / "manifest.json").read_text())
    (artifact,) = [a for a in manifest["artifacts"] if a["format"] == fmt]
    case = manifest["reference"][0]
    run = subprocess.run([str(VERIFY), "run", str(bfloat16_input_export / artifact["path"]),
                          "--input", f"features={bfloat16_input_export / case['inputs']['features']}",
                          "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    expected = np.load(bfloat16_input_export / case["outputs"]["logits"])
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-5, rtol=1e-5)
