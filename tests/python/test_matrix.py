"""The support matrix: this process' backend x {SavedModel, ONNX} x 7 models.

Run once per backend (KERAS_BACKEND=tensorflow|jax|torch). Each cell exports
the model, reloads the artifact like a serving stack would (tf.saved_model.load
signatures / onnxruntime.InferenceSession) and compares it at batch 1 and 7
with the outputs of the model computed on this (source) backend: float32 max
abs diff <= 1e-5, ints and strings exact. The same artifacts are checked for
names, dynamic batch dims and path leaks.

When TEST_UNDECLARED_OUTPUTS_DIR is set (Bazel), the results are written to
`support_matrix.<backend>.json` there (see servekit.support_matrix).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import artifact_checks as checks
import keras
import matrix_models as mm
import servekit
from servekit import support_matrix

BACKEND = keras.backend.backend()
FORMATS = ("tf_saved_model", "onnx")

# Cells where export is expected to refuse (with an ExportError naming the
# layer, before writing anything): ONNX models have no variables, so a layer
# that updates its state on every call cannot be served from ONNX.
EXPECTED_UNSUPPORTED: set[tuple[str, str, str]] = {
    (backend, "onnx", "stateful_layer") for backend in ("tensorflow", "jax", "torch")}
# Repeated calls of a random model compared by statistics.
_RANDOM_CALLS = 16


@pytest.fixture(scope="module")
def results():
    rows: list[dict] = []
    yield rows
    out_dir = os.environ.get("TEST_UNDECLARED_OUTPUTS_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"support_matrix.{BACKEND}.json"), "w") as f:
            json.dump(rows, f, indent=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports each (model, format) once per module; returns a getter."""
    root = tmp_path_factory.mktemp("matrix")
    cache: dict[tuple[str, str], dict] = {}

    def get(model_name: str, fmt: str) -> dict:
        key = (model_name, fmt)
        if key not in cache:
            model = mm.build(model_name, seed=7)
            path = str(root / f"{model_name}.{'onnx' if fmt == 'onnx' else 'sm'}")
            entry = {"model": model, "path": path, "artifact": None, "error": None}
            try:
                entry["artifact"] = servekit.export(model, path, format=fmt, verbose=False)
            except Exception as e:  # recorded, asserted by the tests
                entry["error"] = e
            cache[key] = entry
        return cache[key]

    return get


def _reload_outputs(fmt, path, inputs):
    if fmt == "onnx":
        return checks.onnx_outputs(path, inputs)
    return checks.saved_model_outputs(path, inputs)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model_name", list(mm.MODELS))
def test_matrix_cell(model_name, fmt, exported, results):
    entry = exported(model_name, fmt)
    cell = (BACKEND, fmt, model_name)
    error = entry["error"]
    if error is not None:
        if cell in EXPECTED_UNSUPPORTED and isinstance(error, servekit.ExportError):
            results.append(support_matrix.make_row(BACKEND, fmt, model_name, "unsupported", None, str(error)))
            assert not os.path.exists(entry["path"]), "a refused export must write nothing"
            assert error.layer and error.layer in str(error), "the refusal must name the layer"
            return
        results.append(support_matrix.make_row(BACKEND, fmt, model_name, "fail", None, str(error)))
        raise error
    try:
        if model_name in mm.STOCHASTIC:
            worst = _check_random(entry, fmt)
        elif model_name in mm.STATEFUL:
            worst = _check_stateful(entry)
        else:
            worst = 0.0
            rng = np.random.default_rng(2024)
            for batch in (1, 7):
                inputs = mm.sample_inputs(model_name, batch, rng)
                expected = mm.source_outputs(model_name, entry["model"], inputs)
                actual = _reload_outputs(fmt, entry["path"], inputs)
                worst = max(worst, checks.max_abs_err(expected, actual))
    except Exception as e:
        results.append(support_matrix.make_row(BACKEND, fmt, model_name, "fail", None, str(e)))
        raise
    assert cell not in EXPECTED_UNSUPPORTED, "an expected-unsupported cell now passes: update the test"
    results.append(support_matrix.make_row(BACKEND, fmt, model_name, "pass", worst, ""))


def _check_random(entry, fmt) -> float:
    """The artifact's jitter is N(0, 0.5) around the deterministic part, and
    two calls differ. Returns the deterministic part's max abs error (the
    noise's mean over all calls, which must be near 0)."""
    x = np.random.default_rng(2024).standard_normal((64, 3)).astype("float32")
    hidden = np.asarray(keras.ops.convert_to_numpy(entry["model"].get_layer("hidden")(x)))
    if fmt == "onnx":
        session = checks.onnx_session(entry["path"])
        runs = [session.run(None, {"features": x})[0] for _ in range(_RANDOM_CALLS)]
    else:
        import tensorflow as tf

        loaded = tf.saved_model.load(entry["path"])
        runs = [loaded.signatures["serving_default"](features=tf.constant(x))["jitter"].numpy()
                for _ in range(_RANDOM_CALLS)]
    noise = np.stack(runs) - hidden
    assert not np.array_equal(runs[0], runs[1]), "an exported random layer must stay random"
    n = noise.size
    assert abs(noise.mean()) < 5 * 0.5 / np.sqrt(n), f"noise mean {noise.mean()}"
    assert 0.45 < noise.std() < 0.55, f"noise std {noise.std()} (expected 0.5)"
    return float(abs(noise.mean()))


def _check_stateful(entry) -> float:
    """A freshly loaded artifact's successive calls equal the source model's
    successive calls from the state it was exported in."""
    import tensorflow as tf

    from servekit.pipeline.behavior import VariableSnapshot

    model = entry["model"]
    x = np.random.default_rng(2024).standard_normal((7, 3)).astype("float32")
    with VariableSnapshot(model.variables):
        expected = [np.asarray(keras.ops.convert_to_numpy(model(x))) for _ in range(3)]
    loaded = tf.saved_model.load(entry["path"])
    actual = [loaded.signatures["serving_default"](features=tf.constant(x))["counter"].numpy() for _ in range(3)]
    worst = max(float(np.max(np.abs(e - a))) for e, a in zip(expected, actual))
    assert worst <= 1e-5, f"state advanced differently: max abs diff {worst}"
    assert not np.allclose(actual[0], actual[1]), "the artifact's state must advance"
    return worst


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model_name", list(mm.MODELS))
def test_signature_names_and_batch_dim(model_name, fmt, exported):
    entry = exported(model_name, fmt)
    if (BACKEND, fmt, model_name) in EXPECTED_UNSUPPORTED:
        assert entry["error"] is not None
        return
    if entry["error"] is not None:
        pytest.fail(f"export failed: {entry['error']}")
    artifact = entry["artifact"]
    assert artifact.format == fmt and artifact.path == entry["path"]
    default = artifact.endpoint("serving_default")
    assert artifact.endpoints[0].name == "serving_default"
    assert [t.name for t in default.inputs] == mm.INPUT_NAMES[model_name]
    assert [t.name for t in default.outputs] == mm.OUTPUT_NAMES[model_name]
    for t in default.inputs + default.outputs:
        assert t.shape[0] == "batch", f"{t.name}: {t.shape}"
        assert all(d is not None for d in t.shape), f"{t.name}: only the batch dim is dynamic here: {t.shape}"
    if fmt == "onnx":
        assert artifact.opset == 17 and len(artifact.endpoints) == 1
        session = checks.onnx_session(entry["path"])
        assert [i.name for i in session.get_inputs()] == mm.INPUT_NAMES[model_name]
        assert [o.name for o in session.get_outputs()] == mm.OUTPUT_NAMES[model_name]
        for value in list(session.get_inputs()) + list(session.get_outputs()):
            assert value.shape[0] == "batch", f"{value.name}: {value.shape}"
    else:
        assert {e.name for e in artifact.endpoints} == {"serving_default", "serve"}
        ins, outs = checks.saved_model_signature_keys(entry["path"])
        assert ins == sorted(mm.INPUT_NAMES[model_name])
        assert outs == sorted(mm.OUTPUT_NAMES[model_name])


@pytest.mark.parametrize("model_name", list(mm.MODELS))
def test_onnx_names_equal_saved_model_keys(model_name, exported):
    if (BACKEND, "onnx", model_name) in EXPECTED_UNSUPPORTED:
        return  # no ONNX artifact to compare (test_matrix_cell checks the refusal)
    sm, ox = exported(model_name, "tf_saved_model"), exported(model_name, "onnx")
    if sm["error"] or ox["error"]:
        pytest.fail(f"export failed: {sm['error'] or ox['error']}")
    sm_sig = sm["artifact"].endpoint("serving_default")
    ox_sig = ox["artifact"].endpoint("serving_default")
    assert sm_sig == ox_sig
    ins, outs = checks.saved_model_signature_keys(sm["path"])
    session = checks.onnx_session(ox["path"])
    assert sorted(i.name for i in session.get_inputs()) == ins
    assert sorted(o.name for o in session.get_outputs()) == outs


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model_name", list(mm.MODELS))
def test_no_path_leaks(model_name, fmt, exported):
    entry = exported(model_name, fmt)
    if (BACKEND, fmt, model_name) in EXPECTED_UNSUPPORTED:
        assert entry["error"] is not None and not os.path.exists(entry["path"])
        return
    if entry["error"] is not None:
        pytest.fail(f"export failed: {entry['error']}")
    assert checks.find_leaks(entry["path"]) == []


def test_serve_one_liner_keeps_artifact_alive(exported):
    """`servekit.load(p).serve(x)` works (Keras' tf.saved_model.load one-liner does not)."""
    entry = exported("mlp", "tf_saved_model")
    if entry["error"] is not None:
        pytest.fail(f"export failed: {entry['error']}")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype("float32")
    out = servekit.load(entry["path"]).serve(x)
    expected = mm.source_outputs("mlp", entry["model"], {"features": x})["logits"]
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5, rtol=0)
