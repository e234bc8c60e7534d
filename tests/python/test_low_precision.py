"""bfloat16 models to ONNX: computed in float32 where ONNX Runtime has no bfloat16
kernels, rounded to bfloat16 where the source casts, verified at bfloat16's tolerance.

Before, `mixed_bfloat16` → ONNX failed on every road: tf2onnx typed TensorFlow's
bfloat16 casts as float16 (a MatMul of float16 and bfloat16 loads nowhere), and
the other converters' bfloat16 `Relu`/`MatMul` have no CPU kernel in ONNX Runtime.
"""

import numpy as np
import onnx
import pytest

import keras
import servekit


@pytest.fixture
def policy(request):
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(request.param)
    yield request.param
    keras.mixed_precision.set_dtype_policy(previous)


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="features")
    h = keras.layers.Dense(16, activation="relu", name="dense")(inputs)
    h = keras.layers.LayerNormalization(name="norm")(h)
    h = keras.layers.Dense(16, activation="gelu", name="mlp")(h)
    h = keras.layers.Softmax(name="softmax")(h)
    return keras.Model(inputs, keras.layers.Dense(3, dtype="float32", name="logits")(h), name="low_precision")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "bfloat16", "mixed_float16"], indirect=True)
def test_low_precision_model_to_onnx(policy, tmp_path):
    model = _model()
    path = str(tmp_path / "model.onnx")
    servekit.export(model, path, format="onnx", verbose=False)

    graph = onnx.load(path).graph
    bfloat16 = onnx.TensorProto.BFLOAT16
    assert all(t.data_type != bfloat16 for t in graph.initializer)
    if policy != "mixed_float16":
        # The source's roundings are kept: some Cast to bfloat16, each widened right after.
        rounding = [n for n in graph.node if n.op_type == "Cast" and n.attribute[0].i == bfloat16]
        assert rounding, "no bfloat16 rounding left in the graph"

    x = np.random.default_rng(1).normal(size=(5, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x)).astype("float32")
    got = servekit.load(path).serve(features=x)
    # bfloat16's declared tolerance: a few of its units at the output's scale.
    np.testing.assert_allclose(got, expected, atol=3e-2 * np.abs(expected).max(), rtol=1e-2)


@pytest.mark.parametrize("policy", ["bfloat16"], indirect=True)
def test_bfloat16_outputs_stay_bfloat16(policy, tmp_path):
    # ONNX Runtime's Python API cannot return bfloat16: servekit reads it as ml_dtypes.bfloat16.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="relu", name="logits")(inputs))
    path = str(tmp_path / "model.onnx")
    servekit.export(model, path, format="onnx", verbose=False)
    (output,) = onnx.load(path).graph.output
    assert output.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16
    x = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    got = servekit.load(path).serve(features=x)
    assert str(got.dtype) == "bfloat16"
    expected = keras.ops.convert_to_numpy(model(x)).astype("float32")
    np.testing.assert_allclose(got.astype("float32"), expected, atol=3e-2 * np.abs(expected).max(), rtol=1e-2)
