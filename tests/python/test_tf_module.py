"""Plain tf.Module export (tf.saved_model.save signature rules) and servekit.load.

Backend-independent; run under KERAS_BACKEND=tensorflow.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import artifact_checks as checks
import servekit


class Affine(tf.Module):
    def __init__(self):
        super().__init__(name="affine")
        self.w = tf.Variable(np.arange(6, dtype="float32").reshape(3, 2) / 10.0)
        self.b = tf.Variable(np.array([0.5, -0.5], "float32"))

    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    def __call__(self, x):
        return x @ self.w + self.b

    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32, name="features"),
                                  tf.TensorSpec((None,), tf.string, name="ids")])
    def multi(self, x, ids):
        return {"sum": tf.reduce_sum(x, axis=1), "ids": ids}

    @tf.function
    def pair(self, x):
        return [x * 2.0, x + 1.0]


def test_single_function_with_input_signature_is_serving_default(tmp_path):
    class One(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable([[1.0], [2.0]])

        @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32)])
        def predict(self, x):
            return x @ self.w

    path = str(tmp_path / "one")
    artifact = servekit.export(One(), path, verbose=False)
    default = artifact.endpoint("serving_default")
    assert [t.name for t in default.inputs] == ["x"] and [t.name for t in default.outputs] == ["output_0"]
    got = checks.saved_model_outputs(path, {"x": np.array([[1.0, 1.0]], "float32")})
    np.testing.assert_allclose(got["output_0"], [[3.0]])


def test_dict_of_signatures_concrete_and_functions(tmp_path):
    module = Affine()
    pair = module.pair.get_concrete_function(tf.TensorSpec((None, 3), tf.float32))
    path = str(tmp_path / "affine")
    artifact = servekit.export(module, path, verbose=False,
                               signatures={"serving_default": module.__call__, "multi": module.multi, "pair": pair})
    assert [e.name for e in artifact.endpoints] == ["serving_default", "multi", "pair"]
    multi = artifact.endpoint("multi")
    assert [t.name for t in multi.inputs] == ["features", "ids"]
    assert [(t.name, t.dtype) for t in multi.outputs] == [("ids", "string"), ("sum", "float32")]
    assert [t.name for t in artifact.endpoint("pair").outputs] == ["output_0", "output_1"]
    x = np.random.default_rng(0).standard_normal((7, 3)).astype("float32")
    loaded = servekit.load(path)
    np.testing.assert_allclose(loaded.call_endpoint("serving_default", x)["output_0"], module(x).numpy(),
                               atol=1e-6)
    out = loaded.call_endpoint("multi", features=x, ids=np.array([b"a"] * 7))
    np.testing.assert_array_equal(out["ids"], np.array([b"a"] * 7, dtype=object))
    pair_out = loaded.call_endpoint("pair", x)
    np.testing.assert_allclose(pair_out["output_0"], x * 2.0)
    np.testing.assert_allclose(pair_out["output_1"], x + 1.0)
    assert checks.find_leaks(path) == []


def test_module_export_is_deterministic(tmp_path):
    module = Affine()
    for name in ("a", "b"):
        servekit.export(module, str(tmp_path / name), verbose=False, signatures={"serving_default": module.multi})
    assert checks.read_tree(str(tmp_path / "a")) == checks.read_tree(str(tmp_path / "b"))


def test_invalid_signature_is_refused(tmp_path):
    module = Affine()
    path = str(tmp_path / "bad")
    with pytest.raises(servekit.ExportError, match="invalid signatures"):
        servekit.export(module, path, verbose=False, signatures={"serving_default": module.pair})
    with pytest.raises(servekit.ExportError, match="format='tf_saved_model'"):
        servekit.export(module, path, format="onnx", verbose=False)
    assert not os.path.exists(path)


# -- servekit.load -----------------------------------------------------------------


@pytest.fixture(scope="module")
def affine_artifact(tmp_path_factory):
    module = Affine()
    path = str(tmp_path_factory.mktemp("load") / "affine")
    servekit.export(module, path, verbose=False, signatures={"serving_default": module.__call__,
                                                            "multi": module.multi})
    return module, path


def test_load_saved_model_calls(affine_artifact):
    module, path = affine_artifact
    x = np.ones((2, 3), "float32")
    ids = np.array([b"p", b"q"])
    loaded = servekit.load(path)
    assert loaded.format == "tf_saved_model" and set(loaded.endpoint_names) == {"serving_default", "multi"}
    assert [t.name for t in loaded.signature("multi").inputs] == ["features", "ids"]
    expected = module.multi(x, ids)
    by_kw = loaded.call_endpoint("multi", features=x, ids=ids)
    by_pos = loaded.call_endpoint("multi", x, ids)
    by_dict = loaded.call_endpoint("multi", {"features": x, "ids": ids})
    by_method = loaded.multi(x, ids)  # a saved method keeps the module's own calling convention
    for out in (by_kw, by_pos, by_dict, by_method):
        np.testing.assert_allclose(out["sum"], expected["sum"].numpy())
    np.testing.assert_allclose(loaded.serving_default(x)["output_0"], module(x).numpy())
    with pytest.raises(AttributeError, match="no endpoint 'nope'"):
        loaded.nope
    with pytest.raises(servekit.ExportError, match="missing"):
        loaded.call_endpoint("multi", features=x)
    with pytest.raises(KeyError):
        loaded.call_endpoint("nope", x)


def test_load_one_liner_keeps_module_alive(affine_artifact):
    module, path = affine_artifact
    x = np.ones((1, 3), "float32")
    out = servekit.load(path).serving_default(x)
    np.testing.assert_allclose(out["output_0"], module(x).numpy())
    fn = servekit.load(path).multi  # the callable alone keeps the artifact alive
    import gc

    gc.collect()
    np.testing.assert_allclose(fn(x, np.array([b"z"]))["sum"], [3.0])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        servekit.load(str(tmp_path / "missing"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="not a SavedModel"):
        servekit.load(str(tmp_path / "empty_dir"))
