"""The cross-backend rebuild: a TensorFlow model's ONNX made by JAX's converter.

Pinned with `strategy="cross_backend_rebuild"` (in the default order it runs
only after tf2onnx and the source backend's converter both failed): the
`.keras` archive is rebuilt in a fresh JAX worker, converted by jax2onnx, and
must reproduce the outputs TensorFlow computed.
"""

from __future__ import annotations

import keras
import numpy as np
import onnxruntime as ort
import pytest

import servekit


def _model() -> keras.Model:
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="gelu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="tiny_cnn")


def test_rebuilt_under_jax_and_converted_by_jax2onnx(tmp_path):
    model = _model()
    path = tmp_path / "tiny.onnx"
    artifact = servekit.export(model, path, format="onnx", verbose=False, strategy="cross_backend_rebuild")
    assert artifact.strategy == "cross_backend_rebuild" and artifact.converter == "jax2onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert session.get_inputs()[0].shape[0] == "batch"
    x = np.random.default_rng(1).standard_normal((5, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(session.run(None, {"image": x})[0], keras.ops.convert_to_numpy(model(x)),
                               atol=1e-5, rtol=0)
    assert str(tmp_path).encode() not in path.read_bytes()


def test_declines_savedmodel_and_string_inputs(tmp_path):
    with pytest.raises(servekit.ExportError, match="its converters take the TensorFlow trace"):
        servekit.export(_model(), tmp_path / "sm", format="tf_saved_model", verbose=False,
                        strategy="cross_backend_rebuild")


def test_unregistered_custom_layer_of_an_importable_module(tmp_path):
    # layer_families.FixedLoop is importable by module name but not registered with Keras:
    # the worker imports the module from the source process' sys.path and passes the class
    # to load_model (as the portable rebuild's worker does).
    import layer_families

    model = layer_families.FAMILIES["control_flow"]()
    path = tmp_path / "loop.onnx"
    artifact = servekit.export(model, path, format="onnx", verbose=False, strategy="cross_backend_rebuild")
    assert artifact.strategy == "cross_backend_rebuild"
    x = np.random.default_rng(2).standard_normal((3, 4)).astype("float32")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"features": x})[0], keras.ops.convert_to_numpy(model(x)),
                               atol=1e-5, rtol=1e-5)
