"""servekit.ExportArchive on this process' backend (run once per backend).

One archive with inference and training-mode endpoints, a multi-input model
(list and dict signatures), an untracked lookup layer and a variable
collection is written once per module and checked in several tests.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import artifact_checks as checks
import keras
import matrix_models as mm
import servekit

BACKEND = keras.backend.backend()


def spec(*shape, dtype="float32", name=None):
    return keras.InputSpec(shape=shape, dtype=dtype, name=name)


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory):
    mlp = mm.mlp(11)
    two = mm.two_inputs_list(12)
    text = mm.text_classifier(13)
    archive = servekit.ExportArchive()
    archive.track(mlp)
    archive.track(two)
    # The text model is deliberately not tracked: its lookup table must be
    # found because the endpoint calls it.
    archive.add_endpoint("serve", mlp.call, input_signature=[spec(None, 3)])
    archive.add_endpoint("call_training", lambda x: mlp(x, training=True), input_signature=[spec(None, 3)])
    archive.add_endpoint("pair_list", two.call, input_signature=[[spec(None, 3), spec(None, 4)]])
    archive.add_endpoint("pair_dict", lambda d: two([d["a"], d["b"]]),
                         input_signature=[{"a": spec(None, 3), "b": spec(None, 4)}])
    archive.add_endpoint("classify", lambda tokens: text(tokens), input_signature=[spec(None, 5, dtype="string")])
    step = keras.Variable(np.array([3.0, 4.0], "float32"), name="opt_step", trainable=False)
    archive.add_variable_collection("optimizer_variables", [step])
    assert len(archive.variables) == len(mlp.variables) + len(two.variables)
    path = str(tmp_path_factory.mktemp("archive") / "archive")
    artifact = archive.write_out(path, verbose=False)
    return {"path": path, "artifact": artifact, "mlp": mlp, "two": two, "text": text}


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_endpoints_and_serving_default(archive_dir):
    artifact = archive_dir["artifact"]
    names = [e.name for e in artifact.endpoints]
    assert names[0] == "serving_default"
    assert set(names) == {"serving_default", "serve", "call_training", "pair_list", "pair_dict", "classify"}
    default, serve_sig = artifact.endpoint("serving_default"), artifact.endpoint("serve")
    assert (default.inputs, default.outputs) == (serve_sig.inputs, serve_sig.outputs)
    serve = artifact.endpoint("serve")
    assert [t.name for t in serve.inputs] == ["features"] and [t.name for t in serve.outputs] == ["logits"]
    assert [t.name for t in artifact.endpoint("pair_list").inputs] == ["x1", "x2"]
    assert [t.name for t in artifact.endpoint("pair_dict").inputs] == ["a", "b"]
    assert artifact.endpoint("call_training").outputs[0].name == "output_0"
    assert all(t.shape[0] == "batch" for e in artifact.endpoints for t in e.inputs + e.outputs)


def test_inference_endpoints_reproduce_source(archive_dir):
    loaded = servekit.load(archive_dir["path"])
    rng = np.random.default_rng(5)
    for batch in (1, 7):
        x = rng.standard_normal((batch, 3)).astype("float32")
        x1 = rng.standard_normal((batch, 3)).astype("float32")
        x2 = rng.standard_normal((batch, 4)).astype("float32")
        expected = _np(archive_dir["mlp"](x, training=False))
        np.testing.assert_allclose(loaded.serve(x), expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(loaded.call_endpoint("serving_default", x)["logits"], expected, atol=1e-5,
                                   rtol=0)
        pair = _np(archive_dir["two"]([x1, x2], training=False))
        np.testing.assert_allclose(loaded.pair_list([x1, x2]), pair, atol=1e-5, rtol=0)
        np.testing.assert_allclose(loaded.pair_dict({"a": x1, "b": x2}), pair, atol=1e-5, rtol=0)
        np.testing.assert_allclose(loaded.call_endpoint("pair_dict", a=x1, b=x2)["output_0"], pair, atol=1e-5,
                                   rtol=0)
        tokens = mm.sample_inputs("text_classifier", batch, rng)
        expected_text = mm.source_outputs("text_classifier", archive_dir["text"], tokens)
        got = loaded.call_endpoint("classify", tokens["tokens"])
        assert checks.max_abs_err({"output_0": expected_text["logits"], "output_1": expected_text["token_ids"]},
                                  got) <= 1e-5


def test_training_endpoint_applies_dropout(archive_dir):
    loaded = servekit.load(archive_dir["path"])
    x = np.random.default_rng(6).standard_normal((64, 3)).astype("float32")
    inference = loaded.serve(x)
    a, b = loaded.call_training(x), loaded.call_training(x)
    assert a.shape == inference.shape == (64, 2)
    assert not np.allclose(a, b), "dropout must make two training-mode calls differ"
    assert not np.allclose(a, inference)


def test_variables_and_collections(archive_dir):
    import tensorflow as tf

    module = tf.saved_model.load(archive_dir["path"])
    np.testing.assert_array_equal(module.optimizer_variables[0].numpy(), [3.0, 4.0])
    expected = len(archive_dir["mlp"].variables) + len(archive_dir["two"].variables)
    assert len(module.variables) == expected
    assert len(module.trainable_variables) == len(archive_dir["mlp"].trainable_variables) + len(
        archive_dir["two"].trainable_variables)


def test_archive_has_no_path_leaks(archive_dir):
    assert checks.find_leaks(archive_dir["path"]) == []


def test_rewrite_is_byte_identical_and_silent(tmp_path, capfd):
    """Two write_outs of the same archive in one process give the same bytes
    (TF function counters differ between them); verbose=False prints nothing."""
    model = mm.mlp(21)

    def write(path):
        archive = servekit.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", model.call, input_signature=[spec(None, 3)])
        archive.write_out(path, verbose=False)

    capfd.readouterr()
    write(str(tmp_path / "a"))
    write(str(tmp_path / "b"))
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    assert checks.read_tree(str(tmp_path / "a")) == checks.read_tree(str(tmp_path / "b"))


def test_errors(tmp_path):
    model = mm.mlp(22)
    archive = servekit.ExportArchive()
    path = str(tmp_path / "none")
    with pytest.raises(servekit.ExportError, match="No endpoints"):
        archive.write_out(path)
    with pytest.raises(servekit.ExportError, match="needs an input_signature"):
        archive.add_endpoint("serve", lambda x: model(x))
    archive.add_endpoint("serve", model.call, input_signature=[spec(None, 3)])
    with pytest.raises(servekit.ExportError, match="already taken"):
        archive.add_endpoint("serve", model.call, input_signature=[spec(None, 3)])
    with pytest.raises(servekit.ExportError, match="Cannot track"):
        archive.track(object())
    with pytest.raises(servekit.ExportError, match="has not been built"):
        archive.track(keras.layers.Dense(3, name="unbuilt"))
    with pytest.raises(servekit.ExportError, match="jax backend only") if BACKEND != "jax" else _nullcontext():
        archive.add_endpoint("jaxy", model.call, input_signature=[spec(None, 3)], is_static=True)
    with pytest.raises(servekit.ExportError, match="keras.Variable or tf.Variable"):
        archive.add_variable_collection("bad", [np.ones(3)])
    assert not os.path.exists(path)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_tf_functions_and_tf_resources(tmp_path):
    """TensorFlow: traced tf.function endpoints (batch made dynamic) and tracked
    tf.lookup tables work. JAX: tables track as in Keras, endpoints that leave
    Keras fail with every strategy's reason. torch: refused with what to do
    instead."""
    import tensorflow as tf

    model = mm.mlp(23)
    keys = tf.constant(["a", "b"])
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, tf.constant([1.0, 2.0])), 0.0)
    archive = servekit.ExportArchive()
    path = str(tmp_path / "tf_things")
    if BACKEND != "tensorflow":
        @tf.function
        def never(x):
            return x

        if BACKEND == "torch":
            with pytest.raises(servekit.ExportError, match="Keras layer"):
                archive.track(table)
            with pytest.raises(servekit.ExportError, match="cannot be exported from the"):
                archive.add_endpoint("tf_fn", never)
        else:
            archive.track(table)
            with pytest.raises(servekit.ExportError, match="never been called"):
                archive.add_endpoint("tf_fn", never)
            archive = servekit.ExportArchive()  # without the table, the portable rebuild is tried too

        def backend_specific(x):  # leaves Keras: NumPy on the tensor
            return np.tanh(keras.ops.convert_to_numpy(x))

        archive.add_endpoint("raw", backend_specific, input_signature=[spec(None, 3)])
        with pytest.raises(servekit.ExportError, match="Keras layers/models and keras.ops") as info:
            archive.write_out(path, verbose=False)
        assert "'raw'" in str(info.value)
        assert not os.path.exists(path)
        return
    archive.track(model)
    archive.track(table)

    @tf.function
    def untraced(x):
        return model(x)

    with pytest.raises(servekit.ExportError, match="never been called"):
        archive.add_endpoint("untraced", untraced)

    @tf.function
    def serve(x):
        return {"logits": model(x, training=False)}

    serve(tf.ones((2, 3)))  # traced with a static batch of 2

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="keys")])
    def lookup(k):
        return table.lookup(k)

    archive.add_endpoint("serve", serve)
    archive.add_endpoint("lookup", lookup)
    artifact = archive.write_out(path, verbose=False)
    # Written in-process (TensorFlow code): still byte-stable on a rewrite.
    archive.write_out(str(tmp_path / "again"), verbose=False)
    assert checks.read_tree(path) == checks.read_tree(str(tmp_path / "again"))
    default = artifact.endpoint("serving_default")
    assert default.inputs[0].shape == ("batch", 3), "the traced batch of 2 must be relaxed"
    assert [t.name for t in default.outputs] == ["logits"]
    loaded = servekit.load(path)
    x = np.random.default_rng(8).standard_normal((7, 3)).astype("float32")
    np.testing.assert_allclose(loaded.call_endpoint("serving_default", x)["logits"], _np(model(x)), atol=1e-5)
    np.testing.assert_array_equal(loaded.call_endpoint("lookup", keys=np.array([b"b", b"z"]))["output_0"],
                                  [2.0, 0.0])
