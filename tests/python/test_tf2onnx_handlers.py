"""servekit's tf2onnx handlers and graph fixes, each on a tiny TensorFlow graph.

Each test saves a SavedModel with one signature, converts it with
`servekit.onnx.convert_saved_model` (which registers the handlers) and runs the
ONNX model in onnxruntime against TensorFlow's own outputs on the same inputs.
tf2onnx's error catching is off, as in the export worker, so a handler or
optimizer that fails is an error here, not a silently skipped rewrite.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

from servekit import onnx as sk_onnx
from servekit import signature as sig


@pytest.fixture(autouse=True)
def _strict_tf2onnx(monkeypatch):
    monkeypatch.setenv("TF2ONNX_CATCH_ERRORS", "FALSE")


def _convert_and_compare(tmp_path, fn, x: np.ndarray, atol: float = 1e-5) -> list[str]:
    """Saves `fn` (one float32 input `x` -> output `y`), converts it, compares
    onnxruntime with TensorFlow; returns the ONNX graph's op types."""
    spec = tf.TensorSpec((None,) + x.shape[1:], tf.float32, name="x")
    module = tf.Module()
    module.serve = tf.function(lambda x: {"y": fn(x)}, input_signature=[spec])
    path = str(tmp_path / "saved_model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    expected = fn(tf.constant(x)).numpy()
    endpoint = sig.Signature(
        "serving_default",
        (sig.TensorSignature("x", "float32", (sig.BATCH_DIM,) + tuple(x.shape[1:])),),
        (sig.TensorSignature("y", "float32", (sig.BATCH_DIM,) + tuple(expected.shape[1:])),))
    proto = sk_onnx.convert_saved_model(path, endpoint, model_name="handler_test")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x})
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    return [n.op_type for n in proto.graph.node]


def _images(channels: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 8, 8, channels)).astype("float32")


def test_erfc_is_one_minus_erf(tmp_path):
    ops = _convert_and_compare(tmp_path, lambda x: tf.math.erfc(x) * x, _images())
    assert "Erf" in ops and "Sub" in ops


def test_expm1_is_exp_minus_one(tmp_path):
    ops = _convert_and_compare(tmp_path, lambda x: tf.math.expm1(x) * x, _images())
    assert "Exp" in ops and "Sub" in ops


def test_sign_bit_of_a_float_orders_negative_zero(tmp_path):
    # Keras's signbit (argmax/argmin on TensorFlow): Bitcast to int32, then mask the sign bit.
    def signbit(x):
        bits = tf.bitwise.bitwise_and(tf.bitcast(x, tf.int32), tf.constant(np.iinfo(np.int32).min, tf.int32))
        return tf.cast(tf.less(bits, 0), tf.float32)

    x = np.array([[-0.0, 0.0, -1.5, 2.0, -np.inf, np.inf]], np.float32)
    ops = _convert_and_compare(tmp_path, signbit, np.concatenate([x, -x]))
    assert "Where" in ops and "BitwiseAnd" not in ops


def test_argmax_of_keras_on_tensorflow(tmp_path):
    import keras

    x = np.random.default_rng(1).standard_normal((5, 7)).astype("float32")
    x[0, :] = 0.0
    x[0, 3] = -0.0
    _convert_and_compare(tmp_path, lambda t: tf.cast(keras.ops.argmax(t, axis=-1), tf.float32), x)


def test_other_bitcasts_are_refused(tmp_path):
    with pytest.raises(Exception, match="Bitcast"):
        _convert_and_compare(tmp_path, lambda x: tf.cast(tf.bitcast(x, tf.int32), tf.float32), _images())


@pytest.mark.parametrize("activation", ["elu", "selu", "celu"])
def test_elu_family_activations(tmp_path, activation):
    import keras

    fn = getattr(keras.activations, activation)
    _convert_and_compare(tmp_path, lambda x: fn(x), _images())


def test_exact_gelu(tmp_path):
    # What keras.activations.gelu(approximate=False) lowers to on TensorFlow.
    ops = _convert_and_compare(tmp_path, lambda x: tf.nn.gelu(x, approximate=False), _images())
    assert "Erf" in ops


def test_scalar_add_after_conv_without_bias(tmp_path):
    # Hard-sigmoid after a bias-less Conv (MobileNetV3): tf2onnx's transpose
    # optimizer tried to fold the scalar into the Conv's bias and crashed.
    kernel = tf.constant(np.random.default_rng(1).standard_normal((3, 3, 4, 6)).astype("float32"))

    def hard_sigmoid_conv(x):
        return tf.nn.relu6(tf.nn.conv2d(x, kernel, 1, "SAME") + 3.0) / 6.0

    ops = _convert_and_compare(tmp_path, hard_sigmoid_conv, _images())
    assert "Conv" in ops


def test_vector_bias_after_conv_still_folds(tmp_path):
    kernel = tf.constant(np.random.default_rng(1).standard_normal((3, 3, 4, 6)).astype("float32"))
    bias = tf.constant(np.arange(6, dtype="float32"))
    ops = _convert_and_compare(tmp_path, lambda x: tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias), _images())
    assert "Add" not in ops  # the bias went into the Conv, as tf2onnx does it


def test_xla_compiled_grouped_conv_is_inlined(tmp_path):
    # Keras's TensorFlow backend runs grouped convolutions (ConvNeXt's depthwise
    # Conv2D(groups=C)) in a tf.function(jit_compile=True).
    kernel = tf.constant(np.random.default_rng(2).standard_normal((3, 3, 1, 4)).astype("float32"))

    @tf.function(jit_compile=True)
    def grouped(x):
        return tf.nn.convolution(x, kernel, padding="SAME")

    ops = _convert_and_compare(tmp_path, lambda x: grouped(x) * 2.0, _images())
    assert "Conv" in ops and not any("Call" in op for op in ops)


def test_fft2d_of_a_complex_tensor_is_two_dfts(tmp_path):
    # What keras.ops.fft2 (FNet's token mixing) lowers to on TensorFlow:
    # Complex -> FFT2D over the last two axes -> Real and Imag.
    def mix(x):
        spectrum = tf.signal.fft2d(tf.complex(x, tf.zeros_like(x)))
        return tf.math.real(spectrum) + 0.5 * tf.math.imag(spectrum)

    tokens = np.random.default_rng(0).standard_normal((3, 6, 5)).astype("float32")
    # TensorFlow's FFT and onnxruntime's DFT round differently: sums of 30
    # products, outputs up to about 10.
    ops = _convert_and_compare(tmp_path, mix, tokens, atol=5e-5)
    assert ops.count("DFT") == 2 and "Complex" not in ops and "FFT2D" not in ops


@pytest.mark.parametrize("key_dtype", [tf.int64, tf.int32])
def test_integer_lookup_table_is_a_label_encoder(tmp_path, key_dtype):
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant([3, 7, 11, 42], tf.int64), tf.constant([1, 2, 3, 4], tf.int64)),
        default_value=0)
    module = tf.Module()
    module.table = table
    spec = tf.TensorSpec((None, 5), key_dtype, name="ids")
    module.serve = tf.function(lambda ids: {"y": table.lookup(tf.cast(ids, tf.int64))}, input_signature=[spec])
    path = str(tmp_path / "saved_model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    ids = np.array([[3, 7, 5, 42, 0], [11, 11, 1, 3, 99]], key_dtype.as_numpy_dtype)
    expected = module.serve(tf.constant(ids))["y"].numpy()
    endpoint = sig.Signature(
        "serving_default", (sig.TensorSignature("ids", key_dtype.name, (sig.BATCH_DIM, 5)),),
        (sig.TensorSignature("y", "int64", (sig.BATCH_DIM, 5)),))
    proto = sk_onnx.convert_saved_model(path, endpoint, model_name="int_table")
    assert "LabelEncoder" in [n.op_type for n in proto.graph.node]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"ids": ids})
    np.testing.assert_array_equal(got, expected)
