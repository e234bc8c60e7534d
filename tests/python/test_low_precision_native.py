"""A bfloat16 model through the build tool, verified by the native verifier.

`.npy` has no bfloat16: the reference data hold its values as float32 (exactly),
and the verifier narrows them back where the signature says bfloat16, to feed
the model and to compare its outputs at bfloat16's tolerance.
"""

import json
import pathlib
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


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> pathlib.Path:
    work = tmp_path_factory.mktemp("bfloat16")
    (work / "bfloat16_mlp.py").write_text(MODEL_FILE)
    manifest = build_tool.run(["--model_file", str(work / "bfloat16_mlp.py"), "--name", "bfloat16_mlp",
                               "--backend", "tensorflow", "--formats", "tf_saved_model,onnx",
                               "--out_dir", str(work / "export")])
    return manifest.parent


def test_bfloat16_tensors_are_stored_as_float32(export):
    manifest = json.loads((export / "manifest.json").read_text())
    (endpoint,) = [e for e in manifest["endpoints"] if e["name"] == "serving_default"]
    assert endpoint["outputs"][0]["dtype"] == "bfloat16"
    for case in manifest["reference"]:
        logits = np.load(export / case["outputs"]["logits"])
        assert logits.dtype == np.float32
        # Exactly bfloat16 values: the low 16 bits of every float32 are zero.
        assert not np.any(logits.view(np.uint32) & 0xFFFF)


def test_both_formats_verify_natively(export):
    report = native.validate(str(export / "manifest.json"))
    assert report.passed, report.to_text()
    assert {a.format for a in report.artifacts} == {native.Format.tf_saved_model, native.Format.onnx}
