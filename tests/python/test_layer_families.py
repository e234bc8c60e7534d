"""The op and layer long tail: this backend x formats x one model per family.

Run once per backend (KERAS_BACKEND=tensorflow|jax|torch), for SavedModel and ONNX,
and (SERVEKIT_FAMILY_FORMATS=openvino,litert,torch, the manual Bazel targets
`layer_families_more_formats_<backend>`) for the other formats. Each cell exports a family's
model (tests/python/layer_families.py) with `servekit.export`, which verifies it against
the model before committing; the test then reloads the artifact as a server would and
compares it, on inputs of its own (batch 3, padded masks, out-of-vocabulary ids and
words), with the model run on this backend. A cell either passes both or is an expected
refusal: an `ExportError` that says why, listed in `EXPECTED_REFUSALS`, with nothing
written. A refusal that starts to pass fails too, so the list stays true.

When TEST_UNDECLARED_OUTPUTS_DIR is set (Bazel), the results are written to
`layer_families.<backend>.json` there (`layer_families_more.<backend>.json`
for the other formats), for the README's tables (tools/update_support_matrix.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import artifact_checks as checks
import keras
import layer_families as lf
import servekit
from servekit import support_matrix
from servekit.source_model import reference_outputs

BACKEND = keras.backend.backend()
CLASSIC_FORMATS = ("tf_saved_model", "onnx")
FORMATS = tuple(os.environ.get("SERVEKIT_FAMILY_FORMATS", ",".join(CLASSIC_FORMATS)).split(","))
RESULTS_PREFIX = "layer_families" if FORMATS == CLASSIC_FORMATS else "layer_families_more"
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite", "torch": ".pt2"}

# (backend, format, family) -> the words the refusal must contain. The same on every backend:
# the other formats are written from the TensorFlow rebuild (OpenVINO, LiteRT) or the torch
# one (torch), whichever backend the model comes from.
_REFUSED_EVERYWHERE = {
    ("openvino", "string_lookup"): "failed to convert HashTableV2, LookupTableFindV2",
    ("torch", "string_lookup"): "PyTorch programs hold no strings",
    # A loop over a sequence of unknown length: Keras's torch RNNs loop in Python, which
    # torch.export unrolls at the traced length.
    ("torch", "variable_length_rnn"): "torch.export fixes the dynamic dimension(s)",
}
EXPECTED_REFUSALS: dict[tuple[str, str, str], str] = {
    (backend, fmt, family): words for (fmt, family), words in _REFUSED_EVERYWHERE.items()
    for backend in ("tensorflow", "jax", "torch")}

# Float outputs: |artifact - model| <= ATOL + RTOL * |model| (a converter's kernels
# round differently); the int8-quantized family dequantizes, so its bound is relative
# to the output's scale.
ATOL, RTOL = 1e-4, 1e-3
QUANTIZED_SCALE_FRACTION = 0.05


@pytest.fixture(scope="module")
def results():
    rows: list[dict] = []
    yield rows
    out_dir = os.environ.get("TEST_UNDECLARED_OUTPUTS_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"{RESULTS_PREFIX}.{BACKEND}.json"), "w") as f:
            json.dump(rows, f, indent=1)


def _reload_outputs(fmt: str, path: str, model, inputs: dict, output_names: list[str]) -> dict:
    if fmt == "onnx":
        return checks.onnx_outputs(path, inputs)
    if fmt == "openvino":
        return checks.openvino_outputs(path, inputs)
    if fmt == "litert":
        return checks.litert_outputs(path, inputs)
    if fmt == "torch":
        return checks.torch_program_outputs(path, [t.name for t in model.inputs], output_names, inputs)
    return checks.saved_model_outputs(path, inputs)


def _worst_excess(family: str, expected: dict, actual: dict) -> float:
    """The largest error over the family's bound (<= 0 when every element is within it);
    integer and string outputs must be equal."""
    assert sorted(expected) == sorted(actual), f"outputs {sorted(actual)}, expected {sorted(expected)}"
    worst = -np.inf
    for name, want in expected.items():
        got = np.asarray(actual[name])
        want = np.asarray(want)
        assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
        if want.dtype.kind not in "fc":
            assert np.array_equal(got, want), f"{name}: {got} != {want}"
            worst = max(worst, 0.0)
            continue
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        if family == "quantized_dense":
            bound = QUANTIZED_SCALE_FRACTION * max(float(np.max(np.abs(want))), 1e-6)
        else:
            bound = ATOL + RTOL * np.abs(want.astype(np.float64))
        worst = max(worst, float(np.max(err - bound)))
    return worst


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", list(lf.FAMILIES))
def test_family(family, fmt, tmp_path, results):
    cell = (BACKEND, fmt, family)
    model = lf.FAMILIES[family]()
    path = str(tmp_path / (family + SUFFIXES.get(fmt, "")))
    try:
        servekit.export(model, path, format=fmt, verbose=False)
    except servekit.ExportError as e:
        if cell in EXPECTED_REFUSALS:
            assert EXPECTED_REFUSALS[cell] in str(e), f"the refusal must say why: {e}"
            assert os.listdir(tmp_path) == [], "a refused export must write nothing"
            results.append(support_matrix.make_row(BACKEND, fmt, family, "unsupported", None, str(e)))
            return
        results.append(support_matrix.make_row(BACKEND, fmt, family, "fail", None, str(e)))
        raise
    assert cell not in EXPECTED_REFUSALS, "an expected refusal now exports: remove it from EXPECTED_REFUSALS"
    rng = np.random.default_rng(2026)
    inputs = lf.sample_inputs(model, 3, rng)
    expected = reference_outputs(model, inputs)
    actual = _reload_outputs(fmt, path, model, inputs, list(expected))
    excess = _worst_excess(family, expected, actual)
    status = "pass" if excess <= 0 else "fail"
    results.append(support_matrix.make_row(BACKEND, fmt, family, status, None, "" if excess <= 0 else
                                           f"beyond tolerance by {excess:.3g}"))
    assert excess <= 0, f"{family} as {fmt}: the reloaded artifact differs beyond tolerance by {excess:.3g}"
