"""A failed verification names the first diverging Keras layer (issue 22, item 4).

Each model has one deliberately broken layer between correct ones: the error
must name that layer (not the output where the difference surfaced), with its
max error and, where the converter kept Keras name scopes, the artifact's
tensors for it; in SavedModel and ONNX, OpenVINO and LiteRT. Run once per backend.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

import custom_layers
import keras
import servekit

BACKEND = keras.backend.backend()


def _skewed_model(name="skewed_mlp"):
    keras.utils.set_random_seed(3)
    inp = keras.Input((3,), name="features")
    h = keras.layers.Dense(4, name="hidden")(inp)
    h = custom_layers.SkewedLayer(name="skewed")(h)
    h = keras.layers.Dense(4, activation="relu", name="after")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="logits")(h), name=name)


def _export_error(model, path, **kwargs) -> servekit.ExportError:
    with pytest.raises(servekit.ExportError) as info:
        servekit.export(model, path, verbose=False, **kwargs)
    assert info.value.reason == "verification_failed", str(info.value)
    assert not os.path.exists(path)
    return info.value


def _assert_names(error, layer, cls, path=(), min_error=0.0):
    message = str(error)
    where = "/".join(list(path) + [layer])
    assert f"First diverging layer: '{where}' ({cls})" in message, (message, error.details)
    assert error.layer == layer
    first = error.details["first_diverging_layer"]
    assert first["name"] == layer and first["class"] == cls and first["path"] == list(path)
    assert first["max_abs_err"] >= min_error
    assert first["localized"] is True and first["endpoint"] == "serving_default"
    return first


@pytest.mark.parametrize("fmt,path", [("tf_saved_model", "sm"), ("onnx", "model.onnx")])
def test_skewed_layer_is_named_in_both_formats(tmp_path, monkeypatch, fmt, path):
    model = _skewed_model()
    monkeypatch.setenv("SERVEKIT_TEST_SKEW", "0.5")  # the worker does not see it: the rebuild lacks the skew
    error = _export_error(model, str(tmp_path / path), format=fmt, strategy="portable_rebuild")
    first = _assert_names(error, "skewed", "SkewedLayer", min_error=0.49)
    assert abs(first["max_abs_err"] - 0.5) < 1e-5
    assert first["before"] == 1 and first["later"] == 2  # 'hidden' matches; 'after' and 'logits' differ
    assert first["strategy"] == "portable_rebuild" and first["format"] == fmt
    assert "output 'logits': max abs diff" in str(error)  # the check's own lines stay
    if fmt == "tf_saved_model":  # the rebuilt SavedModel's ops keep the layer's name scope
        assert first["artifact_tensors"] and all("skewed" in t for t in first["artifact_tensors"])
        assert f"In the artifact: '{first['artifact_tensors'][0]}'" in str(error)


@pytest.mark.parametrize("fmt,path", [("openvino", "m.xml"), ("litert", "m.tflite")])
def test_skewed_layer_is_named_in_the_other_formats(tmp_path, monkeypatch, fmt, path):
    # The Dropout is the identity at inference, so its probe output is its input's tensor:
    # an OpenVINO probe with one tensor under two output names did not load, and no layer
    # was named.
    keras.utils.set_random_seed(3)
    inp = keras.Input((3,), name="features")
    h = keras.layers.Dropout(0.5, name="drop")(keras.layers.Dense(4, name="hidden")(inp))
    h = custom_layers.SkewedLayer(name="skewed")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="logits")(h), name="skewed_after_dropout")
    monkeypatch.setenv("SERVEKIT_TEST_SKEW", "0.5")
    error = _export_error(model, str(tmp_path / path), format=fmt, strategy="portable_rebuild")
    first = _assert_names(error, "skewed", "SkewedLayer", min_error=0.49)
    assert first["before"] == 2 and first["later"] == 1  # 'hidden' and 'drop' match; 'logits' differs
    assert first["format"] == fmt


def test_a_quantized_model_is_probed_at_its_coarse_tolerance(tmp_path, monkeypatch):
    # Every layer of an int8 model differs from the float one by its quantization error:
    # probed at float32's 1e-5, the first quantized layer ('hidden') was named.
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    inp = keras.Input((8,), name="features")
    h = keras.layers.Dense(4, name="after")(keras.layers.Dense(16, activation="relu", name="hidden")(inp))
    model = keras.Model(inp, custom_layers.SkewedLayer(name="skewed")(h), name="skewed_quantized")
    rng = np.random.default_rng(0)
    samples = [[rng.standard_normal((1, 8)).astype("float32")] for _ in range(20)]
    monkeypatch.setenv("SERVEKIT_TEST_SKEW", "50")
    error = _export_error(model, str(tmp_path / "q.tflite"), format="litert", strategy="portable_rebuild",
                          optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=lambda: iter(samples))
    first = _assert_names(error, "skewed", "SkewedLayer", min_error=49)
    assert first["before"] == 2 and "the output's scale over the endpoint's cases" in first["problem"]


def test_layer_inside_a_nested_functional_model(tmp_path, monkeypatch):
    keras.utils.set_random_seed(4)
    block_in = keras.Input((4,), name="block_in")
    b = keras.layers.Dense(4, name="block_dense")(block_in)
    block = keras.Model(block_in, custom_layers.SkewedLayer(name="skewed")(b), name="block")
    inp = keras.Input((3,), name="features")
    h = block(keras.layers.Dense(4, name="hidden")(inp))
    model = keras.Model(inp, keras.layers.Dense(2, name="logits")(h), name="nested")
    monkeypatch.setenv("SERVEKIT_TEST_SKEW", "0.25")
    error = _export_error(model, str(tmp_path / "sm"), strategy="portable_rebuild")
    first = _assert_names(error, "skewed", "SkewedLayer", path=["block"], min_error=0.24)
    assert first["before"] == 2  # 'hidden', then 'block_dense' inside the block


def test_sequential_model(tmp_path, monkeypatch):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="first"),
                              custom_layers.SkewedLayer(name="skewed"), keras.layers.Dense(2, name="last")],
                             name="seq")
    monkeypatch.setenv("SERVEKIT_TEST_SKEW", "1.0")
    error = _export_error(model, str(tmp_path / "model.onnx"), format="onnx", strategy="portable_rebuild")
    _assert_names(error, "skewed", "SkewedLayer", min_error=0.99)


def test_subclassed_model_says_it_cannot_be_localized(tmp_path, monkeypatch):
    model = custom_layers.SkewedSubclassed(name="skewed_sub")
    model(np.zeros((1, 3), "float32"))
    monkeypatch.setenv("SERVEKIT_TEST_SKEW", "0.5")
    error = _export_error(model, str(tmp_path / "sm"), strategy="portable_rebuild")
    message = str(error)
    assert "The diverging layer could not be localized: 'skewed_sub' is a subclassed model (SkewedSubclassed)" \
        in message, message
    assert "first_diverging_layer" not in error.details
    assert error.details["localization"][0]["localized"] is False


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow traces the graph the source ran eagerly")
def test_graph_only_bug_named_by_every_strategy(tmp_path):
    """The layer's traced graph differs from its eager call: both SavedModel
    strategies (the worker's rebuild and the in-process trace) fail, and each
    localizes the same layer."""
    keras.utils.set_random_seed(6)
    inp = keras.Input((3,), name="features")
    h = keras.layers.Dense(4, name="hidden")(inp)
    h = custom_layers.GraphModeBug(name="graph_bug")(keras.layers.Dense(4, name="middle")(h))
    model = keras.Model(inp, keras.layers.Dense(2, name="logits")(h), name="graph_bug_model")
    error = _export_error(model, str(tmp_path / "sm"))
    first = _assert_names(error, "graph_bug", "GraphModeBug", min_error=0.99)
    assert first["before"] == 2
    strategies = {d["strategy"]: d for d in error.details["localization"]}
    assert set(strategies) == {"portable_rebuild", "in_process"}
    assert all(d["localized"] and d["name"] == "graph_bug" for d in strategies.values())
    assert str(error).count("First diverging layer: 'graph_bug' (GraphModeBug)") == 2
    assert any("graph_bug" in t for t in first["artifact_tensors"])


@contextlib.contextmanager
def _wrong_tf2onnx_handler(tf_op_type: str, onnx_op_type: str):
    """tf2onnx converts `tf_op_type` to `onnx_op_type` in this process (the
    in-process strategy's converter), as a converter bug would."""
    from tf2onnx.handler import tf_op

    import servekit.tf2onnx_handlers  # noqa: F401 (servekit's own handlers, registered first)

    def wrong(ctx, node, **kwargs):
        node.type = onnx_op_type

    replaced = []
    for opsets in tf_op.get_opsets().values():
        for handlers in opsets:
            if tf_op_type in handlers:
                replaced.append((handlers, handlers[tf_op_type]))
                handlers[tf_op_type] = (wrong, {})
    assert replaced, tf_op_type
    try:
        yield
    finally:
        for handlers, original in replaced:
            handlers[tf_op_type] = original


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf2onnx converts in this process on TensorFlow only")
def test_op_the_converter_maps_wrongly(tmp_path):
    keras.utils.set_random_seed(7)
    inp = keras.Input((3,), name="features")
    h = keras.layers.Dense(4, name="hidden")(inp)
    h = custom_layers.Sinh(name="sinh_layer")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="logits")(h), name="sinh_model")
    path = str(tmp_path / "model.onnx")
    with _wrong_tf2onnx_handler("Sinh", "Cosh"):
        error = _export_error(model, path, format="onnx", strategy="in_process")
    first = _assert_names(error, "sinh_layer", "Sinh", min_error=0.5)
    assert first["format"] == "onnx" and first["strategy"] == "in_process"
    # The failed ONNX model's tensor for the layer, by tf2onnx's name scope.
    assert first["artifact_tensors"] and "sinh_layer" in first["artifact_tensors"][-1]
    assert first["artifact_tensors"][-1].endswith("Sinh:0")
    # With the converter fixed, the same model exports.
    servekit.export(model, path, format="onnx", verbose=False, strategy="in_process")
    assert os.path.exists(path)


# -- the pieces, without exporting ------------------------------------------------


def test_name_scopes_with_a_trace_counter():
    from servekit.pipeline import localize

    names = ["m_1/dense_1/MatMul", "m_1/dense_1_1/MatMul", "m_1/block_1/dense_1/BiasAdd", "m_1/dense_1/BiasAdd",
             "logits"]
    # Most scopes carry the counter "_1": 'dense' is 'dense_1', 'dense_1' is 'dense_1_1'.
    assert localize._in_scope(names, ["m", "dense"]) == ["m_1/dense_1/MatMul", "m_1/dense_1/BiasAdd"]
    assert localize._in_scope(names, ["m", "dense_1"]) == ["m_1/dense_1_1/MatMul"]
    assert localize._in_scope(names, ["block", "dense"]) == ["m_1/block_1/dense_1/BiasAdd"]
    assert localize._in_scope(["a/x/Add:0"], ["x"]) == ["a/x/Add:0"]  # no counter
    assert localize._in_scope(names, ["missing"]) == []


def test_first_divergence_is_in_topological_order_at_the_case_tolerance():
    from servekit.pipeline import localize

    keras.utils.set_random_seed(1)
    inp = keras.Input((3,), name="x")
    a = keras.layers.Dense(2, name="a")(inp)
    b = keras.layers.Dense(2, name="b")(a)
    model = keras.Model(inp, keras.layers.Add(name="c")([a, b]), name="m")
    points = localize.probe_points(model)
    assert [p.name for p in points] == ["a", "b", "c"]
    expected = {p.key: np.ones((1, 2), "float32") for p in points}
    actual = dict(expected)
    actual[points[1].key] = expected[points[1].key] + 2e-5  # beyond float32's 1e-5
    actual[points[2].key] = expected[points[2].key] + 3e-5
    found = localize.first_divergence(points, expected, actual, None)
    assert found.point.name == "b" and found.later == 1 and found.compared == 3
    assert abs(found.max_abs_err - 2e-5) < 1e-6
    assert localize.first_divergence(points, expected, actual, {"float32": (1e-4, 0.0)}).point is None


def test_a_failed_localization_says_why():
    from servekit.pipeline import localize

    text = localize.describe({"localized": False, "why": "the model is stochastic or stateful"})
    assert text == "The diverging layer could not be localized: the model is stochastic or stateful."


def test_the_search_can_be_turned_off(monkeypatch):
    from servekit.pipeline import localize

    monkeypatch.setenv(localize.DISABLE_ENV, "0")
    report = {"ok": False, "reason": "verification_failed", "message": "m"}
    strategy = type("S", (), {"name": "portable_rebuild"})()
    localize.explain(strategy, {"onnx": None}, {"onnx": report}, {}, lambda: "", lambda d: None)
    assert report["localization"]["localized"] is False and "turned off" in report["localization"]["why"]
    assert report["message"] == "m"  # no paragraph, no probe
