"""The OpenVINO, LiteRT and torch formats, on this process' backend.

Each artifact is loaded here with its runtime's own Python API (not servekit's
loaders) and run at batch sizes the export did not verify, against the source
model. Run once per backend (KERAS_BACKEND=tensorflow|jax|torch).
"""

from __future__ import annotations

import os
import weakref
import zipfile

import numpy as np
import pytest

import artifact_checks as checks
import keras
import matrix_models as mm
import servekit
from servekit.errors import ExportError

BACKEND = keras.backend.backend()
# Each format's artifact in a test's tmp_path, and its outputs reloaded in the format's runtime
# (the torch program's input named "images").
_ARTIFACT = {"tf_saved_model": "m", "onnx": "m.onnx", "openvino": "m.xml", "litert": "m.tflite", "torch": "m.pt2"}
_OUTPUTS_IN = {"tf_saved_model": checks.saved_model_outputs, "onnx": checks.onnx_outputs,
               "openvino": checks.openvino_outputs, "litert": checks.litert_outputs,
               "torch": lambda path, feed: checks.torch_program_outputs(path, ["images"], [], feed)}

# A TensorFlow or a JAX model's torch program is the same rebuild of its `.keras` file
# under torch: the torch program's own cases run from TensorFlow (the rebuild) and torch
# (torch.export in process), and from JAX only where the source's numbers matter.
_REBUILT_AS_FROM_TENSORFLOW = pytest.mark.skipif(
    BACKEND == "jax", reason="a JAX model's torch program is its rebuild under torch, as a TensorFlow model's")


def _inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    return {"x1": rng.normal(size=(batch, 3)).astype("float32"), "x2": rng.normal(size=(batch, 4)).astype("float32")}


def _expected(model, named):
    out = model({"x1": named["x1"], "x2": named["x2"]}, training=False)
    leaves = keras.tree.flatten(out)
    return [np.asarray(keras.ops.convert_to_numpy(x)) for x in leaves]


@pytest.fixture(scope="module")
def model():
    return mm.two_inputs_dict()


def test_openvino_names_dynamic_batch_and_declared_precision(model, tmp_path):
    import openvino as ov

    path = str(tmp_path / "m.xml")
    artifact = servekit.export(model, path, format="openvino", verbose=False)
    assert artifact.precision == "float32"
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.xml"]
    read = ov.Core().read_model(path)
    assert [i.get_any_name() for i in read.inputs] == ["x1", "x2"]
    assert [set(o.get_names()) for o in read.outputs] == [{n} for n in [t.name for t in artifact.endpoints[0].outputs]]
    assert read.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str) == "f32"
    compiled = ov.Core().compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for batch in (1, 3, 16):
        named = _inputs(batch, seed=batch)
        got = compiled(named)
        for i, want in enumerate(_expected(model, named)):
            np.testing.assert_allclose(np.asarray(got[i]), want, atol=1e-5)


def test_openvino_bytes_do_not_depend_on_what_the_worker_converted_before(tmp_path):
    # OpenVINO numbers generated node names with a process-wide counter.
    servekit.export(mm.cnn(), str(tmp_path / "a.xml"), format="openvino", verbose=False)
    servekit.export(mm.mlp(), str(tmp_path / "other.xml"), format="openvino", verbose=False)
    servekit.export(mm.cnn(), str(tmp_path / "b.xml"), format="openvino", verbose=False)
    assert (tmp_path / "a.xml").read_bytes() == (tmp_path / "b.xml").read_bytes()
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()


def test_openvino_bf16_is_declared_and_checked_at_its_tolerance(model, tmp_path):
    import openvino as ov

    artifact = servekit.export(model, str(tmp_path / "m.xml"), format="openvino", openvino_precision="bf16",
                               verbose=False)
    assert artifact.precision == "bfloat16"
    read = ov.Core().read_model(str(tmp_path / "m.xml"))
    assert read.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str) == "bf16"


def _runtime_outputs(fmt: str, path: str, inputs: dict) -> dict:
    """The outputs of an OpenVINO IR or a LiteRT model, by name, run in its runtime."""
    if fmt == "openvino":
        return checks.openvino_outputs(path, inputs)
    return checks.litert_outputs(path, inputs)


def _litert_ops(path: str) -> set[str]:
    from ai_edge_litert import interpreter

    return {op["op_name"] for op in interpreter.Interpreter(model_path=path)._get_ops_details()}


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_discretization_and_category_encoding_convert(fmt, tmp_path):
    # Bucketize and DenseBincount: OpenVINO's frontend cannot convert them (servekit does), and
    # LiteRT has no bincount kernel (its trace encodes without one).
    features = keras.Input(shape=(5,), name="features")
    bins = keras.layers.Discretization(bin_boundaries=[-1.0, 0.0, 0.5, 2.0])(features)
    outputs = {"multi_hot": keras.layers.CategoryEncoding(num_tokens=5, output_mode="multi_hot")(bins),
               "count": keras.layers.CategoryEncoding(num_tokens=5, output_mode="count")(bins)}
    model = keras.Model(features, outputs)
    path = str(tmp_path / ("m.xml" if fmt == "openvino" else "m.tflite"))
    servekit.export(model, path, format=fmt, verbose=False)
    values = np.array([[-2.0, -1.0, 0.0, 0.5, 3.0], [0.1, 0.2, 0.3, 0.4, -0.5], [2.0, 2.0, 2.0, 9.0, -9.0]], "float32")
    got = _runtime_outputs(fmt, path, {"features": values})
    want = keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), model(values))
    for name in ("multi_hot", "count"):
        np.testing.assert_array_equal(got[name], want[name])


def test_openvino_converts_an_integer_lookup(tmp_path):
    # The frontend initializes a lookup table only from a SavedModel, which the worker then writes.
    import openvino as ov

    items = keras.Input(shape=(3,), dtype="int64", name="items")
    lookup = keras.layers.IntegerLookup(vocabulary=[7, 42, 1000])
    model = keras.Model(items, keras.layers.CategoryEncoding(num_tokens=4, output_mode="count")(lookup(items)))
    path = str(tmp_path / "m.xml")
    servekit.export(model, path, format="openvino", verbose=False)
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    values = np.array([[7, 42, 5], [1000, 1000, -1]], "int64")  # 5 and -1: out of vocabulary
    want = np.asarray(keras.ops.convert_to_numpy(model(values)))
    np.testing.assert_array_equal(np.asarray(compiled(values)[0]), want)


def test_openvino_names_the_ops_it_cannot_convert(tmp_path):
    features = keras.Input(shape=(3,), name="features")
    model = keras.Model(features, keras.layers.Lambda(lambda t: keras.ops.erfinv(keras.ops.tanh(t)))(features))
    with pytest.raises(ExportError, match="frontend could not convert the serving function: it has no rule for Erfinv"
                                          r".*Export format='onnx' or 'tf_saved_model'"):
        servekit.export(model, str(tmp_path / "m.xml"), format="openvino", verbose=False)
    assert os.listdir(tmp_path) == []
    # String ops convert to ONNX no better: the advice names SavedModel alone.
    ids = keras.Input(shape=(3,), dtype="int64", name="ids")
    hashed = keras.Model(ids, keras.layers.Hashing(num_bins=8)(ids))
    with pytest.raises(ExportError, match=r"no rule for .*StringToHashBucketFast.*Export format='tf_saved_model', or"):
        servekit.export(hashed, str(tmp_path / "hashed.xml"), format="openvino", verbose=False)
    assert os.listdir(tmp_path) == []


def test_onnx_refuses_hashing_by_its_op_and_does_not_try_jax_or_torch_converters(tmp_path):
    # jax2onnx and torch.onnx cannot capture Keras's TensorFlow string hashes: their
    # attempts only added noise to the error (jax2onnx's AttributeError, a TorchScript
    # graph with no inputs).
    ids = keras.Input(shape=(3,), dtype="int64", name="ids")
    model = keras.Model(ids, keras.layers.Hashing(num_bins=8, name="buckets")(ids))
    with pytest.raises(ExportError) as raised:
        servekit.export(model, str(tmp_path / "hashed.onnx"), format="onnx", verbose=False)
    message = str(raised.value)
    assert "layer 'buckets' uses TensorFlow op(s) StringToHashBucketFast" in message
    assert ("cross_backend_rebuild (skipped): layer 'buckets' (Hashing) hashes with TensorFlow's string hashes"
            in message)
    assert "jax2onnx could not convert" not in message and "produced 0 input(s)" not in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_argmax_and_argmin_convert_without_a_bitcast(fmt, tmp_path):
    # Keras's TensorFlow argmax/argmin read the sign bit of zeros through an int32 bitcast,
    # which neither OpenVINO nor LiteRT's built-in ops have: such formats get a second trace.
    scores = keras.Input(shape=(4,), name="scores")
    model = keras.Model(scores, {
        "best": keras.layers.Lambda(lambda t: keras.ops.cast(keras.ops.argmax(t, axis=-1), "int32"))(scores),
        "worst": keras.layers.Lambda(lambda t: keras.ops.cast(keras.ops.argmin(t, axis=-1), "int32"))(scores)})
    path = str(tmp_path / ("m.xml" if fmt == "openvino" else "m.tflite"))
    servekit.export(model, path, format=fmt, verbose=False)
    values = np.array([[0.0, -0.0, -1.0, 0.5], [-0.0, 0.0, 2.0, -3.0], [1.0, np.inf, -np.inf, 0.0]], "float32")
    if BACKEND != "torch":  # ties of zeros: Keras's torch argmax does not rank -0.0 below 0.0, the others do
        values = np.concatenate([values, np.array([[-0.0, 0.0, -1.0, -2.0], [0.0, -0.0, 1.0, 2.0]], "float32")])
    want = keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), model(values))
    got = _runtime_outputs(fmt, path, {"scores": values})
    for name in ("best", "worst"):
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_outputs_that_are_an_input_or_each_other(fmt, tmp_path):
    # One tensor under several output names: an input returned as is, and a Dropout (the
    # identity at inference) beside its input. OpenVINO's converter gives such outputs one
    # tensor and one Result, and an IR whose tensor carries two outputs' names did not load.
    features = keras.Input(shape=(3,), name="features")
    hidden = keras.layers.Dense(4, name="hidden")(features)
    model = keras.Model(features, {"echo": features, "hidden": hidden,
                                   "dropped": keras.layers.Dropout(0.5, name="drop")(hidden)})
    path = str(tmp_path / ("m.xml" if fmt == "openvino" else "m.tflite"))
    servekit.export(model, path, format=fmt, verbose=False)
    values = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    want = keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), model(values))
    got = _runtime_outputs(fmt, path, {"features": values})
    assert sorted(got) == ["dropped", "echo", "hidden"]
    for name in got:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_openvino_outputs_keep_their_names_through_the_cpu_plugins_fusions(tmp_path):
    # The CPU plugin fuses an RMS normalization, and its compiled output also answers to
    # the first multiply's TensorFlow name, which sorts first: read from the compiled
    # model, the output was misnamed and the export failed ("output names differ").
    features = keras.Input(shape=(5, 6), name="features")
    model = keras.Model(features, keras.layers.RMSNormalization(name="rms")(features))
    path = str(tmp_path / "rms.xml")
    servekit.export(model, path, format="openvino", strategy="portable_rebuild", verbose=False)
    values = np.random.default_rng(0).normal(size=(3, 5, 6)).astype("float32")
    want = np.asarray(keras.ops.convert_to_numpy(model(values)))
    loaded = servekit.load(path)
    assert [t.name for t in loaded.signatures[0].outputs] == ["rms"]
    np.testing.assert_allclose(loaded.call_endpoint("serving_default", features=values)["rms"], want, atol=1e-5)
    np.testing.assert_allclose(checks.openvino_outputs(path, {"features": values})["rms"], want, atol=1e-5)


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_servekit_load_runs_the_other_formats(fmt, model, tmp_path):
    path = str(tmp_path / ("m.xml" if fmt == "openvino" else "m.tflite"))
    artifact = servekit.export(model, path, format=fmt, verbose=False)
    loaded = servekit.load(path)
    assert loaded.format == fmt and loaded.endpoint_names == ["serving_default"]
    (signature,) = loaded.signatures
    assert [t.name for t in signature.inputs] == ["x1", "x2"]
    assert [t.name for t in signature.outputs] == [t.name for t in artifact.endpoints[0].outputs]
    assert [t.shape for t in signature.inputs] == [(None, 3), (None, 4)]  # the batch stays dynamic
    named = _inputs(6, seed=6)
    got = loaded.call_endpoint("serving_default", **named)
    for spec, want in zip(signature.outputs, _expected(model, named)):
        np.testing.assert_allclose(got[spec.name], want, atol=1e-5)
    with pytest.raises(KeyError, match="one endpoint, 'serving_default'"):
        loaded.call_endpoint("predict", **named)


def test_servekit_load_says_how_to_load_a_torch_archive_and_refuses_other_files(model, tmp_path):
    program = tmp_path / "m.pt2"
    with zipfile.ZipFile(program, "w") as archive:  # the container torch writes
        archive.writestr("m/version", "1")
    with pytest.raises(ValueError, match=r"torch.export.load\(path\)"):
        servekit.load(str(program))
    other = tmp_path / "notes.txt"
    other.write_text("not a model")
    with pytest.raises(ValueError, match="is not an ONNX model .* LiteRT flatbuffer"):
        servekit.load(str(other))


def test_openvino_refuses_a_bad_precision_and_suffix(model, tmp_path):
    with pytest.raises(ExportError, match="openvino_precision must be one of"):
        servekit.export(model, str(tmp_path / "m.xml"), format="openvino", openvino_precision="f16", verbose=False)
    with pytest.raises(ValueError, match="end with '.xml'"):
        servekit.export(model, str(tmp_path / "m.bin"), format="openvino", verbose=False)
    assert os.listdir(tmp_path) == []


def test_openvino_replaces_a_previous_ir_pair(model, tmp_path):
    path = str(tmp_path / "m.xml")
    (tmp_path / "m.xml").write_text("old")
    (tmp_path / "m.bin").write_text("old")
    servekit.export(model, path, format="openvino", verbose=False)
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.xml"]
    assert (tmp_path / "m.xml").read_text() != "old" and (tmp_path / "m.bin").read_bytes() != b"old"


def _int8_quantized_model():
    keras.utils.set_random_seed(8)
    features = keras.Input(shape=(32,), name="features")
    hidden = keras.layers.Dense(24, activation="relu", name="hidden")(features)
    model = keras.Model(features, keras.layers.Dense(3, name="logits")(hidden))
    model.quantize("int8")
    return model


def test_openvino_int8_matmuls_accumulate_in_int32(tmp_path):
    # OpenVINO's frontend turned TensorFlow's int8 x int8 -> int32 matmul into an int8 one that
    # wraps around: Keras's int8-quantized Dense came out wrong by about 1.
    import openvino as ov

    model = _int8_quantized_model()
    servekit.export(model, str(tmp_path / "a.xml"), format="openvino", verbose=False)
    servekit.export(mm.mlp(), str(tmp_path / "other.xml"), format="openvino", verbose=False)
    servekit.export(model, str(tmp_path / "b.xml"), format="openvino", verbose=False)
    assert (tmp_path / "a.xml").read_bytes() == (tmp_path / "b.xml").read_bytes()
    compiled = ov.Core().compile_model(str(tmp_path / "a.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    features = (np.random.default_rng(6).normal(size=(5, 32)) * 4).astype("float32")
    want = np.asarray(keras.ops.convert_to_numpy(model(features, training=False)))
    np.testing.assert_allclose(np.asarray(compiled(features)[0]), want, atol=1e-4)


def test_openvino_keeps_large_matmul_weights_as_the_model_holds_them(tmp_path):
    # OpenVINO's converter folded a transpose of each Dense kernel into a new constant while the
    # worker's variable stayed resident: 2x the weights during conversion. A kernel of 1 MiB or
    # more now reaches the IR as the variable holds it, [in, out], and the MatMul transposes nothing.
    import openvino as ov

    features = keras.Input((768,), name="features")
    hidden = keras.layers.Dense(512, name="wide")(features)
    model = keras.Model(features, keras.layers.Dense(4, name="narrow")(hidden))
    path = str(tmp_path / "m.xml")
    servekit.export(model, path, format="openvino", verbose=False)
    read = ov.Core().read_model(path)
    kernel = np.asarray(keras.ops.convert_to_numpy(model.get_layer("wide").kernel))
    weights = {}
    for node in read.get_ordered_ops():
        if node.get_type_name() == "MatMul":
            weight = node.input_value(1).get_node()
            weights[tuple(weight.get_output_shape(0))] = (weight, node.get_attributes()["transpose_b"])
    weight, transposed = weights[(768, 512)]
    assert weight.get_type_name() == "Constant" and not transposed
    np.testing.assert_array_equal(weight.data, kernel)
    assert (4, 512) in weights  # a small one still goes through OpenVINO's own passes (transposed)
    named = {"features": np.random.default_rng(3).normal(size=(6, 768)).astype("float32")}
    compiled = ov.Core().compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    want = np.asarray(keras.ops.convert_to_numpy(model(named["features"], training=False)))
    np.testing.assert_allclose(np.asarray(compiled(named)[0]), want, atol=1e-4)


def test_litert_signature_keys_and_dynamic_batch(model, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = str(tmp_path / "m.tflite")
    artifact = servekit.export(model, path, format="litert", verbose=False)
    assert artifact.converter == "tflite_converter"
    interpreter = Interpreter(model_path=path)
    listed = interpreter.get_signature_list()["serving_default"]
    assert sorted(listed["inputs"]) == ["x1", "x2"]
    assert sorted(listed["outputs"]) == sorted(t.name for t in artifact.endpoints[0].outputs)
    assert all(d["shape_signature"][0] == -1 for d in interpreter.get_input_details())
    runner = interpreter.get_signature_runner("serving_default")
    for batch in (1, 5, 16):
        named = _inputs(batch, seed=batch)
        got = runner(**named)
        names = [t.name for t in artifact.endpoints[0].outputs]
        for name, want in zip(names, _expected(model, named)):
            np.testing.assert_allclose(got[name], want, atol=1e-5)


def test_litert_quantization_is_declared(tmp_path):
    import tensorflow as tf

    model = mm.mlp()
    artifact = servekit.export(model, str(tmp_path / "q.tflite"), format="litert",
                               optimizations=[tf.lite.Optimize.DEFAULT], verbose=False)
    assert artifact.precision == "quantized"


def test_litert_representative_dataset_is_replayed_in_the_worker(tmp_path):
    import tensorflow as tf

    drawn = []

    def representative_dataset():
        for i in range(4):
            drawn.append(i)
            yield [np.random.default_rng(i).normal(size=(1, 3)).astype("float32")]

    artifact = servekit.export(mm.mlp(), str(tmp_path / "q.tflite"), format="litert",
                               optimizations=[tf.lite.Optimize.DEFAULT],
                               representative_dataset=representative_dataset, verbose=False)
    assert artifact.precision == "quantized" and artifact.strategy == "portable_rebuild"
    assert drawn == [0, 1, 2, 3]  # drawn once, here


def test_litert_runs_keras_int8_layers_with_int8_kernels(tmp_path):
    # Keras's int8 Dense and EinsumDense multiply int8 by int8 into int32, which LiteRT's kernels
    # take only as quantized tensors: the products are computed in float32, the kernels stay int8.
    keras.utils.set_random_seed(8)
    tokens = keras.Input(shape=(4, 32), name="tokens")
    hidden = keras.layers.Dense(128, activation="relu", name="hidden")(tokens)
    mixed = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 48), bias_axes="d", name="mixed")(hidden)
    model = keras.Model(tokens, keras.layers.Dense(3, name="logits")(mixed))
    model.quantize("int8")
    path = str(tmp_path / "q.tflite")
    servekit.export(model, path, format="litert", verbose=False)
    values = np.random.default_rng(3).normal(size=(5, 4, 32)).astype("float32")
    want = np.asarray(keras.ops.convert_to_numpy(model(values)))
    (got,) = _runtime_outputs("litert", path, {"tokens": values}).values()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    from ai_edge_litert import interpreter

    tensors = interpreter.Interpreter(model_path=path).get_tensor_details()
    kernels = {tuple(int(d) for d in t["shape"]) for t in tensors if t["dtype"] == np.int8 and len(t["shape"]) == 2}
    # The converter folds the cast of a kernel of a few thousand elements or fewer (the logits' 48 x 3).
    assert {(32, 128), (128, 48)} <= kernels, kernels
    assert not any(op.startswith("Flex") for op in _litert_ops(path))


def test_litert_refuses_an_unknown_converter_option(model, tmp_path):
    with pytest.raises(ExportError, match="not_an_option"):
        servekit.export(model, str(tmp_path / "m.tflite"), format="litert", not_an_option=1, verbose=False)
    assert os.listdir(tmp_path) == []


def _recurrent_model(steps):
    layers = keras.layers
    keras.utils.set_random_seed(5)
    ids = keras.Input(shape=(steps,), dtype="int32", name="token_ids")
    x = layers.Embedding(12, 6, mask_zero=True)(ids)
    x = layers.LSTM(5, return_sequences=True)(x)
    x = layers.Bidirectional(layers.GRU(3, return_sequences=True))(x)
    x = layers.GRU(3, return_sequences=True, go_backwards=True)(x)
    x = layers.SimpleRNN(4)(x)
    return keras.Model(ids, layers.Dense(2, name="logits")(x))


def _unet():
    layers = keras.layers
    keras.utils.set_random_seed(2)
    image = keras.Input((None, None, 3), name="image")
    skip = layers.Conv2D(4, 3, padding="same")(image)
    deep = layers.Conv2D(4, 3, padding="same")(layers.MaxPooling2D()(skip))
    merged = layers.Concatenate()([skip, layers.UpSampling2D()(deep)])
    return keras.Model(image, layers.Conv2D(2, 1, activation="sigmoid", name="mask")(merged))


def _check_unet(model, run):
    rng = np.random.default_rng(0)
    for shape in ((2, 8, 6, 3), (1, 16, 10, 3)):
        x = rng.random(shape, dtype=np.float32)
        np.testing.assert_allclose(run(x), keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5)


def test_litert_takes_a_unet_of_any_image_size(tmp_path):
    # UpSampling2D repeats by tiling, then reshaping to a computed shape, which left the
    # converter without the channels of the concatenation after it: the last convolution
    # went to Flex. And at its placeholder size (1x1) the model pools one pixel to none, so
    # the check allocates at each case's sizes instead.
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    model = _unet()
    path = tmp_path / "unet.tflite"
    artifact = servekit.export(model, str(path), format="litert", verbose=False)
    assert artifact.converter == "tflite_converter"
    flatbuffer = schema.Model.GetRootAs(path.read_bytes(), 0)
    assert not [flatbuffer.OperatorCodes(i).CustomCode() for i in range(flatbuffer.OperatorCodesLength())
                if flatbuffer.OperatorCodes(i).CustomCode()]
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    _check_unet(model, lambda x: runner(image=x)["mask"])


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_takes_a_unet_whose_sizes_must_be_even(tmp_path):
    # torch.export finds that the pooled-then-upsampled image must be of even sizes and
    # derives each from a dim of half its size: still dynamic, which servekit called fixed.
    model = _unet()
    path = str(tmp_path / "unet.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    _check_unet(model, lambda x: checks.torch_program_outputs(path, ["image"], ["mask"], {"image": x})["mask"])


def test_litert_runs_recurrent_layers_unrolled(tmp_path):
    # A recurrent layer's loop needs TensorFlow's TensorList ops, which LiteRT's runtime lacks:
    # the LiteRT model is traced with the loop unrolled, all built-in ops.
    from ai_edge_litert import schema_py_generated as schema

    model = _recurrent_model(steps=7)
    path = str(tmp_path / "rnn.tflite")
    artifact = servekit.export(model, path, format="litert", verbose=False)
    assert artifact.converter == "tflite_converter"
    flatbuffer = schema.Model.GetRootAs((tmp_path / "rnn.tflite").read_bytes(), 0)
    assert not [flatbuffer.OperatorCodes(i).CustomCode() for i in range(flatbuffer.OperatorCodesLength())
                if flatbuffer.OperatorCodes(i).CustomCode()]
    _check_recurrent_litert(model, path)


def _check_recurrent_litert(model, path, lengths=(7,)):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    rng = np.random.default_rng(3)
    for length in lengths:
        for batch in (1, 4):
            ids = rng.integers(1, 12, size=(batch, length)).astype("int32")
            ids[0, length // 2 + 1:] = 0  # padding, masked
            want = np.asarray(keras.ops.convert_to_numpy(model(ids, training=False)))
            np.testing.assert_allclose(runner(token_ids=ids)["logits"], want, atol=1e-5, err_msg=f"{batch}x{length}")


def test_the_builtin_trace_traces_the_model_the_worker_already_holds(tmp_path, monkeypatch):
    # The worker loaded the model a second time for LiteRT's builtin trace (here: the loops
    # unrolled), holding its weights twice while converting: a 1.17 GiB decoder's worker
    # peaked 1.2 GiB higher. It now traces the model it rebuilt for the first trace again.
    import json

    from servekit import peak_memory
    from servekit.exporter import export_formats

    trace = tmp_path / "memory.jsonl"
    monkeypatch.setenv(peak_memory.TRACE_ENV, str(trace))
    model = _recurrent_model(steps=7)
    path = str(tmp_path / "rnn.tflite")
    export_formats(model, {"tf_saved_model": str(tmp_path / "saved"), "litert": path}, verbose=False)
    worker_stages = [r["stage"] for r in map(json.loads, trace.read_text().splitlines()) if r["pid"] != os.getpid()]
    assert worker_stages.count("rebuild") == 1, worker_stages
    assert "LiteRT conversion" in worker_stages
    _check_recurrent_litert(model, path)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the in-process roads to LiteRT and OpenVINO are TensorFlow's")
def test_in_process_litert_takes_the_builtin_trace_too(tmp_path):
    # The in-process strategy (for models a fresh process cannot rebuild) traced the loop as
    # Keras does, and its LiteRT model needed TensorList ops LiteRT's runtime lacks.
    model = _recurrent_model(steps=7)
    path = str(tmp_path / "rnn.tflite")
    artifact = servekit.export(model, path, format="litert", strategy="in_process", verbose=False)
    assert artifact.strategy == "in_process"
    _check_recurrent_litert(model, path)


def test_litert_pools_in_3d_with_2d_pools(tmp_path):
    # LiteRT has no MaxPool3D or AvgPool3D kernel (a Flex op: the export was refused). Both,
    # "same" and "valid", uneven windows and strides, channels first too, and Keras's 3-D
    # adaptive pools, which call them.
    keras.utils.set_random_seed(5)
    volumes = keras.Input(shape=(7, 9, 8, 2), name="volumes")
    features = keras.layers.Conv3D(3, 3, padding="same", name="conv")(volumes)
    model = keras.Model(volumes, {
        "max_same": keras.layers.MaxPooling3D((2, 3, 2), strides=(2, 2, 1), padding="same")(features),
        "mean_strided": keras.layers.AveragePooling3D((3, 2, 2), strides=(1, 2, 2), padding="same")(volumes),
        "mean_valid": keras.layers.AveragePooling3D(2)(volumes),
        "max_channels_first": keras.layers.MaxPooling3D(2, data_format="channels_first")(
            keras.layers.Permute((4, 1, 2, 3))(volumes)),
        "adaptive_max": keras.layers.AdaptiveMaxPooling3D((3, 2, 4))(features),
        "adaptive_mean": keras.layers.AdaptiveAveragePooling3D(2)(volumes)})
    path = str(tmp_path / "pools.tflite")
    servekit.export(model, path, format="litert", verbose=False)
    values = np.random.default_rng(2).normal(size=(3, 7, 9, 8, 2)).astype("float32")
    want = {k: np.asarray(keras.ops.convert_to_numpy(t)) for k, t in model(values).items()}
    got = _runtime_outputs("litert", path, {"volumes": values})
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)


@pytest.mark.parametrize("fmt", ["tf_saved_model", "litert"])
def test_channels_first_convolutions_are_traced_channels_last(fmt, tmp_path):
    # TensorFlow's CPU convolutions take NHWC only without oneDNN (off in the worker and the
    # Bazel action): the SavedModel of a channels-first Conv2D failed to run ("only
    # supports the NHWC tensor format"), the only road for a torch model. LiteRT took a
    # transposed one only with the Flex op DataFormatVecPermute, and a 1-D one not at all
    # (its converter mis-lowers the NCHW BiasAdd of a 3-D tensor).
    keras.utils.set_random_seed(4)
    images = keras.Input(shape=(3, 8, 8), name="images")
    x = keras.layers.Conv2D(4, 3, padding="same", data_format="channels_first", name="conv")(images)
    x = keras.layers.DepthwiseConv2D(3, data_format="channels_first", name="depthwise")(x)
    x = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", data_format="channels_first", name="up")(x)
    signals = keras.Input(shape=(3, 10), name="signals")
    y = keras.layers.Conv1D(4, 3, padding="same", data_format="channels_first", name="conv_1d")(signals)
    y = keras.layers.Conv1DTranspose(2, 3, strides=2, data_format="channels_first", name="up_1d")(y)
    model = keras.Model([images, signals], {"images_out": x, "signals_out": y})
    rng = np.random.default_rng(6)
    feeds = {"images": rng.normal(size=(2, 3, 8, 8)).astype("float32"),
             "signals": rng.normal(size=(2, 3, 10)).astype("float32")}
    want = {k: np.asarray(keras.ops.convert_to_numpy(t)) for k, t in model(feeds).items()}
    if fmt == "tf_saved_model":
        path = str(tmp_path / "conv")
        servekit.export(model, path, format=fmt, verbose=False)
        got = checks.saved_model_outputs(path, feeds)
    else:
        path = str(tmp_path / "conv.tflite")
        servekit.export(model, path, format=fmt, verbose=False)
        got = _runtime_outputs(fmt, path, feeds)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4)


def _uneven_same_average_2d(values: np.ndarray, size: int, stride: int, edge: str) -> np.ndarray:
    """A channels-last 2-D average pool with "same" padding, split as Keras splits it, the
    extra row or column after: `edge` "excluded" averages the input positions a window
    covers (TensorFlow, JAX); "repeated" pads with the edge values and averages the whole
    window (Keras's torch backend, when the split is uneven)."""
    _, height, width, _ = values.shape
    pads = []
    for n in (height, width):
        total = max((-(-n // stride) - 1) * stride + size - n, 0)
        pads.append((total // 2, total - total // 2))
    if edge == "repeated":
        values = np.pad(values, [(0, 0), pads[0], pads[1], (0, 0)], mode="edge")
        pads = [(0, 0), (0, 0)]
    rows = range(-pads[0][0], values.shape[1] + pads[0][1] - size + 1, stride)
    cols = range(-pads[1][0], values.shape[2] + pads[1][1] - size + 1, stride)
    out = np.empty((values.shape[0], len(rows), len(cols), values.shape[3]), values.dtype)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            window = values[:, max(r, 0):r + size, max(c, 0):c + size]
            out[:, i, j] = window.mean(axis=(1, 2))
    return out


def _segments_of_features(ids, num_segments: int, reductions) -> keras.Model:
    """A model reducing its 6 features by segment: each of `reductions` (name -> Keras op) over
    the features with `ids`, one output per reduction, the batch kept as a trailing axis."""
    features = keras.Input(shape=(6,), name="features")
    by_feature = keras.ops.transpose(features)  # (6, batch): the segments on axis 0
    segment_ids = keras.ops.convert_to_tensor(np.array(ids, "int32"))
    return keras.Model(features, {name: keras.ops.transpose(reduce(by_feature, segment_ids, num_segments=num_segments))
                                  for name, reduce in reductions.items()})


def test_empty_segments_are_computed_as_the_source_backend_does(tmp_path):
    # No id in segment 1: its max (min) is float32's lowest (highest) on TensorFlow, -inf (inf)
    # on JAX and torch. The rebuild under the other backend (TensorFlow for a SavedModel from
    # JAX or torch, torch for a torch program from TensorFlow) writes the source's value.
    outputs = {"max": keras.ops.segment_max, "min": keras.ops.segment_min}
    model = _segments_of_features([0, 0, 2, 2, 3, 3], 4, outputs)
    values = np.random.default_rng(5).normal(size=(3, 6)).astype("float32")
    want = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in model(values).items()}
    lowest = np.finfo("float32").min if BACKEND == "tensorflow" else -np.inf
    np.testing.assert_array_equal(want["max"][:, 1], np.full(3, lowest, "float32"))
    if BACKEND == "tensorflow":
        path = str(tmp_path / "segments.pt2")
        servekit.export(model, path, format="torch", verbose=False)
        got = checks.torch_program_outputs(path, ["features"], list(outputs), {"features": values})
    else:
        path = str(tmp_path / "segments")
        servekit.export(model, path, format="tf_saved_model", verbose=False)
        got = checks.saved_model_outputs(path, {"features": values})
    for name in outputs:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_uneven_same_average_pooling_is_computed_as_the_source_backend_does(tmp_path):
    # A window of 3 with stride 2 over even sizes: "same" padding is split unevenly, and
    # Keras's torch backend then counts the edge, repeated, into the mean, TensorFlow and
    # JAX do not. The rebuild under the other backend (TensorFlow for a SavedModel from
    # torch, torch for a torch program from TensorFlow or JAX) computes the source's means.
    images = keras.Input(shape=(8, 6, 2), name="images")
    model = keras.Model(images, keras.layers.AveragePooling2D(3, strides=2, padding="same", name="mean")(images))
    values = np.random.default_rng(3).normal(size=(2, 8, 6, 2)).astype("float32")
    want = np.asarray(keras.ops.convert_to_numpy(model(values)))
    source_edge, other_edge = ("repeated", "excluded") if BACKEND == "torch" else ("excluded", "repeated")
    np.testing.assert_allclose(want, _uneven_same_average_2d(values, 3, 2, source_edge), atol=1e-5)
    assert np.abs(want - _uneven_same_average_2d(values, 3, 2, other_edge)).max() > 0.1  # the backends differ here

    if BACKEND == "torch":
        path = str(tmp_path / "mean")
        servekit.export(model, path, format="tf_saved_model", verbose=False)
        (got,) = checks.saved_model_outputs(path, {"images": values}).values()
    else:
        path = str(tmp_path / "mean.pt2")
        servekit.export(model, path, format="torch", verbose=False)
        got = checks.torch_program_outputs(path, ["images"], ["mean"], {"images": values})["mean"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_litert_computes_erf_without_a_flex_op(tmp_path):
    # LiteRT has no Erf kernel (FlexErf: refused); its trace computes erf as XLA does.
    features = keras.Input(shape=(6,), name="features")
    model = keras.Model(features, keras.layers.Lambda(lambda t: keras.ops.erf(t * 2.0), name="erf")(features))
    path = str(tmp_path / "erf.tflite")
    servekit.export(model, path, format="litert", verbose=False)
    values = np.linspace(-5, 5, 60, dtype="float32").reshape(10, 6)
    want = np.asarray(keras.ops.convert_to_numpy(model(values)))
    np.testing.assert_allclose(_runtime_outputs("litert", path, {"features": values})["erf"], want, atol=1e-6)


def test_litert_exact_gelu_is_fused_or_written_out(tmp_path):
    # The converter fuses an exact GELU into LiteRT's GELU op only while nothing else computes
    # x * 0.5; a tanh GELU of the same tensor does, and the Erfc left over has no LiteRT kernel.
    values = np.linspace(-6, 6, 60, dtype="float32").reshape(10, 6)
    for name, with_tanh in (("alone", False), ("with_tanh", True)):
        features = keras.Input(shape=(6,), name="features")
        outputs = {"exact": keras.layers.Activation("gelu", name="exact")(features)}
        if with_tanh:
            outputs["tanh"] = keras.layers.Lambda(lambda t: keras.ops.gelu(t, approximate=True),
                                                  name="tanh")(features)
        model = keras.Model(features, outputs, name=f"gelu_{name}")
        path = str(tmp_path / f"{name}.tflite")
        servekit.export(model, path, format="litert", verbose=False)
        got = _runtime_outputs("litert", path, {"features": values})
        for key, want in model(values).items():
            np.testing.assert_allclose(got[key], np.asarray(keras.ops.convert_to_numpy(want)), atol=2e-6, err_msg=key)
        ops = _litert_ops(path)
        assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
        if not with_tanh:
            assert "GELU" in ops, ops  # written out only where the converter could not fuse it


def test_litert_names_flex_ops_that_fail_only_once_inputs_are_sized(tmp_path):
    # TextVectorization's string ops sit behind a dynamic shape: LiteRT refuses them when the
    # first case runs, not when tensors are allocated, and its own message came through.
    text = keras.Input(shape=(1,), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=4, vocabulary=["a", "b"])
    path = tmp_path / "text.tflite"
    with pytest.raises(ExportError, match=r"needs TensorFlow op\(s\) .*FlexStringLower.* \(Select TF ops\)"):
        servekit.export(keras.Model(text, vectorize(text)), str(path), format="litert", verbose=False)
    assert not path.exists()


@pytest.mark.parametrize("strategy", ["auto", "in_process"])
def test_litert_runs_recurrent_layers_over_sequences_of_any_length(tmp_path, strategy):
    # Refused before: Keras's loop over a sequence of unknown length holds its steps in
    # TensorLists, which LiteRT's runtime cannot run. The LiteRT trace loops over tensors
    # (masked, bidirectional and backwards layers included), all built-in ops.
    if strategy == "in_process" and BACKEND != "tensorflow":
        pytest.skip("the in-process road to LiteRT is TensorFlow's")
    model = _recurrent_model(steps=None)
    path = str(tmp_path / "rnn.tflite")
    servekit.export(model, path, format="litert", strategy=strategy, verbose=False)
    ops = _litert_ops(path)
    assert "WHILE" in ops and not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    assert "READ_VARIABLE" not in ops, ops  # the weights are constants in the loop too
    _check_recurrent_litert(model, path, lengths=(1, 7, 30))


@pytest.mark.parametrize("fmt", ["tf_saved_model", "onnx", "openvino", "litert"])
def test_time_distributed_over_frames_of_any_count(tmp_path, fmt):
    # A video model: a convolution on each frame of a clip of any length. Keras's TensorFlow
    # TimeDistributed maps unknown steps with vectorized_map, whose fallback loop failed at
    # run time whenever the batch was larger than the number of frames: refused in every
    # format. The trace folds the frames into the batch.
    layers = keras.layers
    keras.utils.set_random_seed(7)
    clips = keras.Input(shape=(None, 8, 8, 1), name="clips")
    frames = layers.TimeDistributed(layers.Conv2D(2, 3, activation="relu"))(clips)
    frames = layers.TimeDistributed(layers.GlobalAveragePooling2D())(frames)
    model = keras.Model(clips, layers.LSTM(3, name="summary")(frames))
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    reload = _OUTPUTS_IN[fmt]
    rng = np.random.default_rng(8)
    for batch, count in ((3, 2), (1, 5), (4, 4)):
        x = rng.standard_normal((batch, count, 8, 8, 1)).astype("float32")
        got = reload(path, {"clips": x})
        np.testing.assert_allclose(next(iter(got.values())), keras.ops.convert_to_numpy(model(x)), atol=1e-5,
                                   err_msg=f"{batch} clips of {count} frames")


@pytest.mark.parametrize("fmt", ["tf_saved_model", "onnx", "openvino", "litert"])
def test_image_layers_of_any_size(tmp_path, fmt):
    # With image sides unknown while tracing, Keras's TensorFlow UpSampling2D (bilinear)
    # and RandomCrop (at inference) failed to trace (a tensor taken as a bool, a float), and
    # CenterCrop always cropped, so an image smaller than the crop came out smaller. Once it
    # chose, its sides were unknown to the converters: a convolution after it was a Flex op
    # in LiteRT.
    layers = keras.layers
    image = keras.Input(shape=(None, None, 3), name="image")
    cropped = layers.CenterCrop(4, 5, name="cropped")(image)
    model = keras.Model(image, {"upsampled": layers.UpSampling2D(interpolation="bilinear", name="upsampled")(image),
                                "cropped": cropped, "features": layers.Conv2D(2, 3, name="features")(cropped),
                                "augmented": layers.RandomCrop(3, 3, name="augmented")(image)})
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    reload = _OUTPUTS_IN[fmt]
    rng = np.random.default_rng(9)
    for sides in ((2, 3), (6, 9), (4, 5), (3, 8)):
        x = rng.standard_normal((2, *sides, 3)).astype("float32")
        got = reload(path, {"image": x})
        for name, want in model(x, training=False).items():  # RandomCrop leaves an image as it is
            np.testing.assert_allclose(got[name], keras.ops.convert_to_numpy(want), atol=1e-5,
                                       err_msg=f"{name} of {sides}")


def test_openvino_pads_after_a_branch_at_every_shape(tmp_path):
    # OpenVINO's CPU plugin computed a constant Pad or resize that runs after an If (CenterCrop
    # of images of any size crops or resizes) wrong, values of 1e+30, on each call whose shape
    # differed from the previous call's: the export was refused for it. And the If's branches
    # kept OpenVINO's counted node names: the bytes depended on earlier conversions.
    import openvino as ov

    layers = keras.layers
    image = keras.Input(shape=(None, None, 3), name="image")
    cropped = layers.CenterCrop(8, 8)(image)
    padded = layers.Conv2D(4, 3)(layers.ZeroPadding2D(2)(cropped))
    resized = layers.Conv2D(4, 3)(layers.Resizing(12, 12)(cropped))
    model = keras.Model(image, {"padded": layers.UpSampling2D(interpolation="bilinear")(padded), "resized": resized})
    path = str(tmp_path / "m.xml")
    servekit.export(model, path, format="openvino", verbose=False)
    # The nodes inside the If's branches are named from OpenVINO's process-wide counter too.
    servekit.export(mm.mlp(), str(tmp_path / "other.xml"), format="openvino", verbose=False)
    servekit.export(model, str(tmp_path / "again.xml"), format="openvino", verbose=False)
    assert (tmp_path / "m.xml").read_bytes() == (tmp_path / "again.xml").read_bytes()
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(3)
    for sides in ((12, 12), (6, 6), (9, 14), (12, 12), (8, 8)):
        x = rng.standard_normal((2, *sides, 3)).astype("float32")
        got = compiled(x)
        for name, want in model(x, training=False).items():
            np.testing.assert_allclose(np.asarray(got[name]), keras.ops.convert_to_numpy(want), atol=1e-4,
                                       err_msg=f"{name}, images of {sides}")


@pytest.mark.parametrize("fmt", ["tf_saved_model", "onnx", "openvino", "litert"])
def test_adaptive_pooling_of_any_size(tmp_path, fmt):
    # Adaptive pooling exists for inputs of any size, but Keras's TensorFlow code picks its
    # window sizes from the static size and refused an unknown one in every format. The sides
    # below give bins of unequal widths, sides smaller than the bin count, and sides that
    # divide evenly.
    layers = keras.layers
    image = keras.Input(shape=(None, None, 3), name="image")
    signal = keras.Input(shape=(3, None), name="signal")
    model = keras.Model([image, signal], {
        "mean": layers.AdaptiveAveragePooling2D((2, 3), name="mean")(image),
        "max": layers.AdaptiveMaxPooling2D(3, name="max")(image),
        "signal_mean": layers.AdaptiveAveragePooling1D(4, data_format="channels_first", name="signal_mean")(signal)})
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    reload = _OUTPUTS_IN[fmt]
    rng = np.random.default_rng(10)
    for sides in ((7, 5), (1, 2), (6, 9), (11, 4)):
        feed = {"image": rng.standard_normal((2, *sides, 3)).astype("float32"),
                "signal": rng.standard_normal((2, 3, sides[0])).astype("float32")}
        got = reload(path, feed)
        for name, want in model([feed["image"], feed["signal"]]).items():
            np.testing.assert_allclose(got[name], keras.ops.convert_to_numpy(want), atol=1e-5,
                                       err_msg=f"{name} of {sides}")


def test_random_shear_survives_keras_round_trip(tmp_path):
    # RandomShear's config holds each factor f as (-f, f), which its constructor refuses:
    # Keras's own save and load failed, so the portable rebuild did.
    layers = keras.layers
    image = keras.Input(shape=(None, None, 3), name="image")
    features = layers.Conv2D(2, 1, name="features")(image)
    model = keras.Model(image, layers.RandomShear(x_factor=0.2, y_factor=(0.1, 0.3), name="shear")(features))
    path = str(tmp_path / "m.onnx")
    # The rebuild's round trip (by default a small JAX or torch model's ONNX is converted in process first).
    artifact = servekit.export(model, path, format="onnx", verbose=False, strategy="rebuild_first")
    assert artifact.strategy == "portable_rebuild"
    x = np.random.default_rng(11).standard_normal((2, 5, 6, 3)).astype("float32")
    np.testing.assert_allclose(checks.onnx_outputs(path, {"image": x})["shear"],
                               keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_switch_chooses_a_branch_in_every_converted_format(tmp_path, fmt):
    # keras.ops.switch is tf.switch_case on TensorFlow, a Case op none of the three converts.
    features = keras.Input(shape=(3,), name="features")
    chosen = keras.layers.Lambda(lambda x: keras.ops.switch(
        keras.ops.argmax(keras.ops.sum(x, axis=0)), [lambda v: v + 1.0, lambda v: v * 3.0, lambda v: v - 2.0], x),
        name="chosen")(features)
    model = keras.Model(features, chosen)
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    reload = _OUTPUTS_IN[fmt]
    for column in range(3):  # the column with the largest sum picks the branch
        x = np.full((4, 3), -1.0, "float32")
        x[:, column] = 2.0
        np.testing.assert_allclose(next(iter(reload(path, {"features": x}).values())),
                                   keras.ops.convert_to_numpy(model(x)), atol=1e-6, err_msg=f"branch {column}")


def _loops_of_keras_ops() -> keras.Model:
    # A running sum and decay over time, forwards and backwards, and a per-example map:
    # Keras's TensorFlow scan and map hold their steps in TensorLists (Flex ops in LiteRT).
    # Each Lambda is a self-contained `lambda`: Keras saves a named function by its name only.
    running = lambda x, reverse: keras.ops.swapaxes(keras.ops.subtract(*keras.ops.scan(  # noqa: E731
        lambda carry, frame: ((carry[0] + frame, carry[1] * 0.5 + frame),) * 2,
        (keras.ops.zeros_like(x[:, 0]), keras.ops.zeros_like(x[:, 0])), keras.ops.swapaxes(x, 0, 1),
        reverse=reverse)[1]), 0, 1)

    frames = keras.Input(shape=(None, 3), name="frames")
    forwards = keras.layers.Lambda(running, arguments={"reverse": False}, name="forwards")(frames)
    backwards = keras.layers.Lambda(running, arguments={"reverse": True}, name="backwards")(frames)
    energy = keras.layers.Lambda(lambda x: keras.ops.map(lambda clip: keras.ops.sum(clip * clip, axis=-1), x),
                                 name="energy")(frames)
    return keras.Model(frames, {"forwards": forwards, "backwards": backwards, "energy": energy})


def test_litert_runs_scans_and_maps_of_any_length(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = _loops_of_keras_ops()
    path = str(tmp_path / "loops.tflite")
    servekit.export(model, path, format="litert", verbose=False)
    ops = _litert_ops(path)
    assert "WHILE" in ops and not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    rng = np.random.default_rng(4)
    for batch, length in ((1, 1), (3, 6), (2, 17)):
        frames = rng.standard_normal((batch, length, 3)).astype("float32")
        got = runner(frames=frames)
        for name, want in model(frames).items():
            np.testing.assert_allclose(got[name], keras.ops.convert_to_numpy(want), atol=1e-5, rtol=1e-5,
                                       err_msg=f"{name} at {batch}x{length}")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.map_fn in a model's own code is TensorFlow's")
def test_litert_names_a_loop_it_cannot_run(tmp_path):
    # tf.map_fn written in the model itself holds its steps in TensorLists.
    import tensorflow as tf

    frames = keras.Input(shape=(None, 3), name="frames")
    squared = keras.layers.Lambda(lambda x: tf.map_fn(lambda clip: clip * clip, x))(frames)
    with pytest.raises(ExportError, match=r"FlexTensorList.*tf.TensorArray or tf.map_fn"):
        servekit.export(keras.Model(frames, squared), str(tmp_path / "map.tflite"), format="litert", verbose=False)
    assert os.listdir(tmp_path) == []


def test_litert_slices_new_axes_and_int64_abs_of_dynamic_shapes(tmp_path):
    # LLM attention broadcasts its mask with `mask[:, None, :, :]`: a StridedSlice with new axes,
    # which the converter lowers to built-in ops only for static shapes (keras_hub's Gemma);
    # relative positions take int64 abs and sign (DeBERTa). Both were Select TF ops LiteRT's own
    # runtime cannot run; the LiteRT trace writes them with ExpandDims, Select and comparisons.
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    wide = keras.layers.Lambda(lambda t: keras.ops.cast(t, "int64"))(ids)
    offsets = keras.layers.Lambda(lambda t: t[:, :, None] - t[:, None, :])(wide)  # (batch, sequence, sequence)
    relative = keras.layers.Lambda(lambda t: keras.ops.cast(keras.ops.abs(t) + 3 * keras.ops.sign(t), "float32"),
                                   name="relative")(offsets)
    model = keras.Model(ids, relative)
    path = str(tmp_path / "m.tflite")
    servekit.export(model, path, format="litert", verbose=False)
    values = np.random.default_rng(4).integers(-50, 50, size=(3, 9)).astype("int32")
    want = np.asarray(keras.ops.convert_to_numpy(model(values)))
    np.testing.assert_array_equal(checks.litert_outputs(path, {"ids": values})["relative"], want)


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_fft2_is_written_with_real_matmuls(fmt, tmp_path):
    # FNet mixes tokens with a 2-D FFT over complex tensors, which LiteRT's built-in ops lack and
    # OpenVINO's frontend converts only from a SavedModel (the road of TensorFlow models alone).
    tokens = keras.Input(shape=(None, 8), name="tokens")
    mixed = keras.layers.Lambda(lambda t: keras.ops.fft2((t, keras.ops.zeros_like(t)))[0] / 8.0, name="mixed")(tokens)
    model = keras.Model(tokens, mixed)
    path = str(tmp_path / ("m.xml" if fmt == "openvino" else "m.tflite"))
    servekit.export(model, path, format=fmt, verbose=False)
    values = np.random.default_rng(5).normal(size=(2, 11, 8)).astype("float32")
    want = np.asarray(keras.ops.convert_to_numpy(model(values)))
    np.testing.assert_allclose(_runtime_outputs(fmt, path, {"tokens": values})["mixed"], want, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_spectrograms_and_real_ffts_convert(fmt, tmp_path):
    # keras.ops.stft and rfft read the real and imaginary parts of an RFFT, which tf2onnx
    # converts only for ComplexAbs: a MelSpectrogram was refused for ONNX.
    audio = keras.Input(shape=(800,), name="audio")
    real, imag = keras.layers.Lambda(lambda a: keras.ops.rfft(a, fft_length=64), name="spectrum")(audio[:, :50])
    model = keras.Model(audio, {
        "mel": keras.layers.MelSpectrogram(fft_length=128, sequence_stride=64, num_mel_bins=16, sampling_rate=8000,
                                           name="mel")(audio),
        "real": keras.layers.Identity(name="real")(real), "imag": keras.layers.Identity(name="imag")(imag)})
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    feed = {"audio": np.random.default_rng(12).uniform(-1, 1, size=(3, 800)).astype("float32")}
    got = _OUTPUTS_IN[fmt](path, feed)
    for name, want in model(feed["audio"]).items():
        want = keras.ops.convert_to_numpy(want)
        np.testing.assert_allclose(got[name], want, atol=1e-5 * max(1.0, float(np.abs(want).max())), err_msg=name)


def test_litert_computes_elementary_functions_and_rolls_with_builtin_ops(tmp_path):
    # LiteRT has no kernel for these (Flex ops, or none at all): the export was refused.
    ops = keras.ops
    x = keras.Input(shape=(5, 6), name="x")
    unit = keras.layers.Lambda(lambda t: ops.tanh(t) * 0.99, name="unit")(x)
    model = keras.Model(x, {
        "tan": keras.layers.Lambda(lambda t: ops.tan(t * 0.5), name="tan")(x),
        "arcsin": keras.layers.Lambda(ops.arcsin, name="arcsin")(unit),
        "arccos": keras.layers.Lambda(ops.arccos, name="arccos")(unit),
        "sinh": keras.layers.Lambda(lambda t: ops.sinh(t * 0.01) * 100.0 + ops.sinh(t), name="sinh")(x),
        "cosh": keras.layers.Lambda(ops.cosh, name="cosh")(x),
        "arcsinh": keras.layers.Lambda(ops.arcsinh, name="arcsinh")(x),
        "arccosh": keras.layers.Lambda(lambda t: ops.arccosh(ops.abs(t) + 1.0), name="arccosh")(x),
        "arctanh": keras.layers.Lambda(ops.arctanh, name="arctanh")(unit),
        "shifted_windows": keras.layers.Lambda(lambda t: ops.roll(t, shift=(-2, 3), axis=(1, 2)),
                                               name="shifted_windows")(x),
        "flat_roll": keras.layers.Lambda(lambda t: ops.roll(t, 7), name="flat_roll")(x)})
    path = str(tmp_path / "m.tflite")
    servekit.export(model, path, format="litert", verbose=False)
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in _litert_ops(path))
    values = np.random.default_rng(14).normal(size=(3, 5, 6)).astype("float32")
    got = _runtime_outputs("litert", path, {"x": values})
    for name, want in model(values).items():
        want = keras.ops.convert_to_numpy(want)
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_searchsorted_counts_the_entries_before_each_value(fmt, tmp_path):
    # keras.ops.searchsorted is LowerBound/UpperBound on TensorFlow, which neither OpenVINO nor
    # LiteRT converts. Values equal to an entry tell the sides apart.
    ops = keras.ops
    x = keras.Input(shape=(5,), name="x")
    edges = np.array([-1.0, -0.5, 0.0, 0.0, 1.0, 2.5], "float32")
    flat = keras.layers.Reshape((-1,))(x)
    model = keras.Model(x, {
        "left": keras.layers.Lambda(lambda t: ops.searchsorted(edges, ops.reshape(t, (-1,))), name="left")(flat),
        "right": keras.layers.Lambda(lambda t: ops.searchsorted(edges, ops.reshape(t, (-1,)), side="right"),
                                     name="right")(flat)})
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    values = np.array([[-2.0, -1.0, 0.0, 0.3, 3.0], [2.5, 1.0, -0.5, -0.7, 0.0]], "float32")
    got = _OUTPUTS_IN[fmt](path, {"x": values})
    for name, want in model(values).items():
        np.testing.assert_array_equal(got[name], keras.ops.convert_to_numpy(want), err_msg=name)


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_diagonals_traces_and_cross_products_convert(fmt, tmp_path):
    # keras.ops.diagonal, trace and cross are MatrixDiagPartV3, MatrixSetDiagV3 (tf.eye) and
    # Cross on TensorFlow: no LiteRT kernel, no OpenVINO rule. Offsets on both sides and axes
    # other than the last two.
    ops = keras.ops
    x = keras.Input(shape=(5, 4), name="x")
    model = keras.Model(x, {
        "diagonal": keras.layers.Lambda(lambda t: ops.diagonal(t, axis1=1, axis2=2), name="diagonal")(x),
        "above": keras.layers.Lambda(lambda t: ops.diagonal(t, offset=1, axis1=2, axis2=1), name="above")(x),
        "trace": keras.layers.Lambda(lambda t: ops.trace(t, offset=-1, axis1=1, axis2=2), name="trace")(x),
        "cross": keras.layers.Lambda(lambda t: ops.cross(t[:, :, :3], t[:, :, 1:]), name="cross")(x)})
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    rng = np.random.default_rng(17)
    for batch in (1, 4):  # not 3: Keras's torch cross crosses the first axis of size 3
        values = rng.normal(size=(batch, 5, 4)).astype("float32")
        got = _OUTPUTS_IN[fmt](path, {"x": values})
        for name, want in model(values).items():
            np.testing.assert_allclose(got[name], keras.ops.convert_to_numpy(want), rtol=1e-6, atol=1e-6,
                                       err_msg=f"{name}, batch {batch}")


def test_openvino_writes_slice_updates(tmp_path):
    # keras.ops.slice_update (a key/value cache's write) is XlaDynamicUpdateSlice on
    # TensorFlow, which OpenVINO's frontend has no rule for: the export was refused. A start
    # computed from the input, and a box inside the last axis.
    ops = keras.ops
    cache = keras.Input(shape=(None, 4), name="cache")
    step = keras.Input(shape=(1, 4), name="step")
    written = keras.layers.Lambda(
        lambda a: ops.slice_update(a[0], (0, ops.shape(a[0])[1] - 1, 0), a[1]), name="written")([cache, step])
    boxed = keras.layers.Lambda(lambda a: ops.slice_update(a[0], (0, 0, 1), a[1][..., :2]),
                                name="boxed")([cache, step])
    model = keras.Model([cache, step], {"written": written, "boxed": boxed})
    path = str(tmp_path / "m.xml")
    servekit.export(model, path, format="openvino", verbose=False)
    rng = np.random.default_rng(16)
    for length in (3, 8):
        feed = {"cache": rng.normal(size=(2, length, 4)).astype("float32"),
                "step": rng.normal(size=(2, 1, 4)).astype("float32")}
        got = checks.openvino_outputs(path, feed)
        for name, want in model([feed["cache"], feed["step"]]).items():
            np.testing.assert_array_equal(got[name], keras.ops.convert_to_numpy(want), err_msg=f"{name}, {length}")


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_complex_and_inverse_ffts_convert(fmt, tmp_path):
    # tf2onnx converts an FFT only for ComplexAbs, and no IRFFT at all: keras.ops.fft's parts,
    # irfft and istft (a vocoder's last step) were refused for ONNX. OpenVINO's frontend takes
    # complex tensors from a SavedModel only: from JAX and torch they were refused.
    ops = keras.ops
    x = keras.Input(shape=(6, 8), name="x")
    model = keras.Model(x, {
        "even": keras.layers.Lambda(lambda t: ops.irfft(ops.rfft(t * 2.0), fft_length=8), name="even")(x),
        "odd": keras.layers.Lambda(lambda t: ops.irfft(ops.rfft(t, fft_length=7), fft_length=7), name="odd")(x),
        "istft": keras.layers.Lambda(lambda t: ops.istft(ops.stft(ops.reshape(t, (-1, 48)), 16, 8, 16), 16, 8, 16),
                                     name="istft")(x),
        "fft_real": keras.layers.Lambda(lambda t: ops.fft((t, t * 0.5))[0], name="fft_real")(x),
        "fft_imag": keras.layers.Lambda(lambda t: ops.fft((t, -t))[1], name="fft_imag")(x)})
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    values = np.random.default_rng(15).normal(size=(3, 6, 8)).astype("float32")
    got = _OUTPUTS_IN[fmt](path, {"x": values})
    for name, want in model(values).items():
        np.testing.assert_allclose(got[name], keras.ops.convert_to_numpy(want), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_cumprod_is_a_scan_of_products(fmt, tmp_path):
    # None of the three runtimes has a cumulative product: static and dynamic axes, and integers,
    # which must come out exact.
    values = keras.Input(shape=(None, 6), name="values")
    counts = keras.Input(shape=(5,), name="counts", dtype="int32")
    outputs = {
        "over_features": keras.layers.Lambda(lambda t: keras.ops.cumprod(t, axis=-1), name="over_features")(values),
        "over_time": keras.layers.Lambda(lambda t: keras.ops.cumprod(t, axis=1), name="over_time")(values),
        "products": keras.layers.Lambda(lambda t: keras.ops.cumprod(t, axis=1), name="products")(counts),
    }
    model = keras.Model({"values": values, "counts": counts}, outputs)
    path = str(tmp_path / {"onnx": "m.onnx", "openvino": "m.xml", "litert": "m.tflite"}[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    rng = np.random.default_rng(6)
    feed = {"values": rng.uniform(0.5, 1.5, size=(3, 13, 6)).astype("float32"),
            "counts": rng.integers(-9, 10, size=(3, 5)).astype("int32")}
    want = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in model(feed).items()}
    got = checks.onnx_outputs(path, feed) if fmt == "onnx" else _runtime_outputs(fmt, path, feed)
    np.testing.assert_allclose(got["over_features"], want["over_features"], rtol=1e-5)
    np.testing.assert_allclose(got["over_time"], want["over_time"], rtol=1e-5)
    np.testing.assert_array_equal(got["products"], want["products"])
    if fmt == "onnx" and BACKEND == "tensorflow":  # the in-process road traces for tf2onnx as the worker does
        artifact = servekit.export(model, str(tmp_path / "in_process.onnx"), format="onnx", strategy="in_process",
                                   verbose=False)
        assert artifact.strategy == "in_process"
        np.testing.assert_array_equal(checks.onnx_outputs(str(tmp_path / "in_process.onnx"), feed)["products"],
                                      want["products"])


def test_litert_looks_up_integers_without_hash_tables(tmp_path):
    # LiteRT's built-in tables map strings to integers and back, not integers to integers:
    # IntegerLookup (with a mask, hashed out-of-vocabulary buckets, and inverted) used to need Flex ops.
    ids = keras.Input(shape=(4,), dtype="int64", name="ids")
    lookup = keras.layers.IntegerLookup(vocabulary=[12, 7, 30, 5], mask_token=0, num_oov_indices=2, name="lookup")
    inverse = keras.layers.IntegerLookup(vocabulary=[12, 7, 30, 5], invert=True, name="inverse")
    model = keras.Model(ids, {"index": lookup(ids), "token": inverse(keras.ops.clip(ids, 0, 4))})
    path = str(tmp_path / "m.tflite")
    servekit.export(model, path, format="litert", verbose=False)
    values = np.array([[12, 5, 0, 99], [7, 30, 3, -4], [5, 5, 12, 1]], dtype="int64")
    want = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in model(values).items()}
    got = checks.litert_outputs(path, {"ids": values})
    np.testing.assert_array_equal(got["index"], want["index"])
    np.testing.assert_array_equal(got["token"], want["token"])


@pytest.mark.parametrize("fmt", ["tf_saved_model", "onnx", "openvino", "litert", "torch"])
def test_resizing_is_computed_as_the_source_backend_does(fmt, tmp_path):
    # Each backend's bicubic kernel differs (TensorFlow's offsets from a table, torch's a = -0.75);
    # LiteRT and OpenVINO have no bicubic, area, lanczos or antialiased conversion; tf2onnx none for
    # lanczos and another area; ONNX Runtime's cubic Resize rounds otherwise. Keras's torch backend has
    # no area or lanczos (nor can a torch program of a model with them be rebuilt), JAX no area.
    methods = [("bicubic", False), ("bilinear", True)]
    if fmt != "torch" and BACKEND != "torch":
        methods += [("lanczos3", True), ("lanczos5", False)] + ([("area", False)] if BACKEND == "tensorflow" else [])
    images = keras.Input(shape=(None, None, 3), name="images")
    outputs = {}
    for method, antialias in methods:
        for direction, size in [("larger", (17, 23)), ("smaller", (5, 4))]:
            name = f"{method}{'_antialiased' if antialias else ''}_{direction}"
            outputs[name] = keras.layers.Resizing(*size, interpolation=method, antialias=antialias, name=name)(images)
    model = keras.Model(images, outputs)
    path = str(tmp_path / _ARTIFACT[fmt])
    servekit.export(model, path, format=fmt, verbose=False)
    for shape in [(2, 12, 10, 3), (1, 7, 31, 3)]:  # neither is a size the export verified
        feed = {"images": np.random.default_rng(sum(shape)).uniform(0, 255, size=shape).astype("float32")}
        want = {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in model(feed).items()}
        got = _OUTPUTS_IN[fmt](path, feed)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=2e-3, rtol=1e-5, err_msg=f"{name} at {shape}")


def test_openvino_takes_eyes_and_patches(tmp_path):
    # tf.eye (keras.ops.eye, and extract_patches' identity kernel) is a MatrixDiagV3, which
    # OpenVINO's frontend has no rule for.
    images = keras.Input(shape=(8, 8, 3), name="images")
    model = keras.Model(images, {
        "patches": keras.layers.Lambda(lambda t: keras.ops.image.extract_patches(t, 4), name="patches")(images),
        "shifted": keras.layers.Lambda(lambda t: keras.ops.matmul(t, keras.ops.eye(8, 8, k=1)), name="shifted")(images[..., 0]),
    })
    path = str(tmp_path / "m.xml")
    servekit.export(model, path, format="openvino", verbose=False)
    feed = {"images": np.random.default_rng(9).normal(size=(2, 8, 8, 3)).astype("float32")}
    got = checks.openvino_outputs(path, feed)
    for name, value in model(feed).items():
        np.testing.assert_allclose(got[name], np.asarray(keras.ops.convert_to_numpy(value)), atol=1e-6)


def _positions_model():
    # Three ways a model depends on its sequence length that torch.export could not trace over
    # a dynamic dim: a 16-row table sliced to it (GPT-2's position embedding: torch narrows the
    # dim to <= 16), `arange` of it (T5's attention: Keras read the traced size's type as a
    # dtype) and `repeat` by it (ESM's mask: a repeat torch could not size).
    features = keras.Input(shape=(None, 4), name="features")
    table = keras.layers.Lambda(
        lambda t: t + keras.ops.reshape(keras.ops.arange(64, dtype="float32"), (16, 4))[:keras.ops.shape(t)[1]] / 64.0,
        output_shape=(None, 4))  # Keras's torch backend infers shapes at a length over 16
    steps = keras.layers.Lambda(
        lambda t: t + keras.ops.cast(keras.ops.arange(keras.ops.shape(t)[1]), "float32")[None, :, None] / 16.0)
    repeated = keras.layers.Lambda(lambda t: t + keras.ops.max(  # max: exact in any order, unlike a sum
        keras.ops.repeat(keras.ops.mean(t, axis=-1, keepdims=True), keras.ops.shape(t)[1], axis=-1),
        axis=-1, keepdims=True), name="positions")
    return keras.Model(features, repeated(steps(table(features))))


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_of_a_length_bounded_by_the_model(tmp_path):
    import torch

    model = _positions_model()
    path = str(tmp_path / "positions.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    module = torch.export.load(path).module()
    rng = np.random.default_rng(6)
    for batch, steps in ((1, 3), (4, 16)):
        values = rng.normal(size=(batch, steps, 4)).astype("float32")
        want = np.asarray(keras.ops.convert_to_numpy(model(values, training=False)))
        got = torch.utils._pytree.tree_leaves(module(torch.from_numpy(values)))[0]
        np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_keeps_the_model_call_structure(model, tmp_path):
    import torch

    path = str(tmp_path / "m.pt2")
    artifact = servekit.export(model, path, format="torch", verbose=False)
    assert artifact.converter == "torch.export"
    module = torch.export.load(path).module()
    for batch in (1, 6):
        named = _inputs(batch, seed=batch)
        out = module({k: torch.from_numpy(v) for k, v in named.items()})
        leaves = torch.utils._pytree.tree_leaves(out)
        for got, want in zip(leaves, _expected(model, named)):
            np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)
    with zipfile.ZipFile(path) as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"model"}
        program = [n for n in archive.namelist() if n.endswith("models/model.json")]
        assert program and b"/site-packages/" not in archive.read(program[0])  # no stack traces, no paths


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_of_recurrent_layers_keeps_the_batch_dynamic(tmp_path):
    # Keras's torch loop sized its outputs by iterating over the batch, which fixed it at the
    # sample's size: the layers are traced unrolled, and the caller's model is left as it was.
    import torch

    model = _recurrent_model(steps=7)
    path = str(tmp_path / "rnn.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    recurrent = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
                 if isinstance(layer, keras.layers.RNN)]
    assert len(recurrent) == 5 and not any(layer.unroll or "inner_loop" in vars(layer) for layer in recurrent)
    module = torch.export.load(path).module()
    rng = np.random.default_rng(3)
    for batch in (1, 4):
        ids = rng.integers(1, 12, size=(batch, 7)).astype("int32")
        ids[0, 4:] = 0  # padding, masked
        want = np.asarray(keras.ops.convert_to_numpy(model(ids, training=False)))
        got = torch.utils._pytree.tree_leaves(module(torch.from_numpy(ids)))[0]
        np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_of_augmentation_and_activity_regularization(tmp_path):
    # Called without `training`, Keras's random augmentations take their training branch,
    # random draws seeded from a variable ("GuardOnDataDependentSymNode"); an activity
    # regularizer's loss divides by the batch size, read as a Python number under torch
    # (the batch fixed at the sample's). The program is traced at inference, without losses.
    import torch

    keras.utils.set_random_seed(4)
    images = keras.Input(shape=(8, 8, 3), name="images")
    x = keras.layers.RandomFlip(name="flip")(images)
    x = keras.layers.RandomRotation(0.1, name="rotate")(x)
    x = keras.layers.ActivityRegularization(l2=0.1, name="regularized")(keras.layers.Flatten()(x))
    model = keras.Model(images, keras.layers.Dense(2, activity_regularizer="l2", name="logits")(x))
    path = str(tmp_path / "augmented.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    module = torch.export.load(path).module()
    for batch in (1, 5):
        values = np.random.default_rng(batch).normal(size=(batch, 8, 8, 3)).astype("float32")
        got = torch.utils._pytree.tree_leaves(module(torch.from_numpy(values)))[0]
        want = np.asarray(keras.ops.convert_to_numpy(model(values, training=False)))
        np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_holds_each_weight_once(tmp_path):
    # Keras's torch layers compute with their variables' tensors, which torch.export lifted as
    # constants beside the parameters it already held: every weight was saved twice.
    import torch

    model = mm.mlp()
    path = str(tmp_path / "mlp.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    program = torch.export.load(path)
    held = [t for t in [*program.state_dict.values(), *program.constants.values()] if isinstance(t, torch.Tensor)]
    assert sum(t.numel() for t in held) == sum(int(np.prod(v.shape)) for v in model.variables)
    assert len(held) == len(model.variables)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.export runs in this process on torch only")
def test_torch_export_lets_the_models_weights_go(tmp_path):
    # torch.export left fake tensors referenced from C++ whose constants were the model's
    # weights: they stayed resident after the model was deleted.
    import gc
    import weakref

    from torch._subclasses.fake_tensor import FakeTensor

    class Gone:
        pass

    gone = Gone()
    dead_proxy = weakref.proxy(gone)  # among the objects searched for fake tensors (Keras's tests hold such)
    del gone
    model = mm.mlp()
    weights = {v.value.data_ptr() for v in model.variables}
    servekit.export(model, str(tmp_path / "mlp.pt2"), format="torch", verbose=False)
    del dead_proxy
    gc.collect()
    held = [o for o in gc.get_objects()
            if isinstance(o, FakeTensor) and o.constant is not None and o.constant.data_ptr() in weights]
    assert held == []


@pytest.mark.skipif(BACKEND != "torch", reason="torch.export runs in this process on torch only")
def test_a_fake_tensor_made_under_a_dead_ones_id_lets_its_constant_go():
    # Python reuses a dead object's id: a fake tensor of this export made at the address
    # of one that died before it was skipped as "already there", and kept a weight (a CI flake).
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from servekit.formats import torch_program

    class Gone:
        pass

    weight = torch.ones(8)
    fake = FakeTensorMode().from_tensor(weight)
    fake.constant = weight
    gone = Gone()
    before = {id(fake): weakref.ref(gone)}  # what a dead tensor at the same address left
    del gone
    torch_program._release_fake_constants(before)
    assert fake.constant is None

    kept = FakeTensorMode().from_tensor(weight)
    kept.constant = weight
    torch_program._release_fake_constants(torch_program._fake_tensors())
    assert kept.constant is weight


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_looks_integers_up_with_comparisons(tmp_path):
    # Keras's IntegerLookup looks up in a TensorFlow table on every backend, which torch.export
    # cannot trace: in the program every input is compared with the vocabulary.
    lookup = keras.layers.IntegerLookup
    vocabulary = [3, 7, 11, 19]
    ids = keras.Input(shape=(4,), dtype="int64", name="ids")
    outputs = {
        "index": lookup(vocabulary=vocabulary, mask_token=0, num_oov_indices=2, name="index")(ids),
        "one_hot": lookup(vocabulary=vocabulary, output_mode="one_hot", name="one_hot")(ids),
        "multi_hot": lookup(vocabulary=vocabulary, output_mode="multi_hot", name="multi_hot")(ids),
        "count": lookup(vocabulary=vocabulary, output_mode="count", name="count")(ids),
        "tf_idf": lookup(vocabulary=vocabulary, output_mode="tf_idf", idf_weights=[0.5, 1.0, 1.5, 2.0],
                         name="tf_idf")(ids),
        "token": lookup(vocabulary=vocabulary, invert=True, name="token")(
            lookup(vocabulary=vocabulary, name="to_index")(ids)),
    }
    model = keras.Model(ids, outputs)
    path = str(tmp_path / "lookups.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    values = np.array([[3, 0, 99, 100], [19, 19, 7, -5], [11, 11, 11, 11]], "int64")
    got = checks.torch_program_outputs(path, ["ids"], list(outputs), {"ids": values})
    for name, want in model(values).items():
        np.testing.assert_array_equal(got[name], np.asarray(keras.ops.convert_to_numpy(want)), err_msg=name)


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_of_segment_reductions(tmp_path):
    # Keras's torch segment reductions repeated each id over the data's trailing dims with a
    # tensor count, whose size torch.export cannot know: the program asserted its traced size
    # and failed at every other batch size.
    outputs = {"sum": keras.ops.segment_sum, "max": keras.ops.segment_max}
    model = _segments_of_features([0, 0, 1, 1, 2, 2], 3, outputs)
    path = str(tmp_path / "segments.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    for batch in (1, 3, 8):
        values = np.random.default_rng(batch).normal(size=(batch, 6)).astype("float32")
        got = checks.torch_program_outputs(path, ["features"], list(outputs), {"features": values})
        for name, want in model(values).items():
            np.testing.assert_allclose(got[name], np.asarray(keras.ops.convert_to_numpy(want)), rtol=1e-6,
                                       err_msg=f"{name} at batch {batch}")


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_of_take_along_axis(tmp_path):
    # Keras's torch take_along_axis broadcasts with torch.take_along_dim, which torch.export
    # fixed at the sample's batch: indices of the data's shape (a sort), and of one row.
    values = keras.Input(shape=(6,), name="values")
    one_row = keras.ops.convert_to_tensor(np.array([[5, 0, -1]], "int32"))
    outputs = {"sorted": keras.ops.take_along_axis(values, keras.ops.argsort(values, axis=-1), axis=-1),
               "picked": keras.ops.take_along_axis(values, one_row, axis=-1)}
    model = keras.Model(values, outputs)
    path = str(tmp_path / "taken.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).normal(size=(batch, 6)).astype("float32")
        got = checks.torch_program_outputs(path, ["values"], list(outputs), {"values": x})
        for name, want in model(x).items():
            np.testing.assert_array_equal(got[name], np.asarray(keras.ops.convert_to_numpy(want)),
                                          err_msg=f"{name} at batch {batch}")


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_of_deberta_v3_attention(tmp_path):
    # keras_hub's disentangled attention gathers relative positions with take_along_axis.
    import keras_hub

    keras.utils.set_random_seed(0)
    model = keras_hub.models.DebertaV3Backbone(vocabulary_size=100, num_layers=1, num_heads=2, hidden_dim=16,
                                              intermediate_dim=32, max_sequence_length=32, bucket_size=8)
    path = str(tmp_path / "deberta.pt2")
    servekit.export(model, path, format="torch", verbose=False)  # verified at batch 1, 2, 7
    import torch

    program = torch.export.load(path).module()
    for batch, sequence in ((1, 3), (2, 11)):  # sizes the verification did not use
        ids = np.random.default_rng(batch).integers(1, 100, size=(batch, sequence)).astype("int32")
        feed = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
        got = program({k: torch.from_numpy(v) for k, v in feed.items()}).detach().numpy()
        want = np.asarray(keras.ops.convert_to_numpy(model(feed)))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=f"batch {batch}, sequence {sequence}")


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_crops_images_of_any_size(tmp_path):
    # torch.export fixed an image side of a Cropping2D model: the cropped side (h - 3) must
    # not be 1 (torch's 0/1 specialization), which no range of h says; the export was refused.
    layers = keras.layers
    image = keras.Input(shape=(None, None, 3), name="images")
    model = keras.Model(image, layers.Conv2D(2, 1)(layers.Cropping2D(((1, 2), (1, 1)))(image)))
    path = str(tmp_path / _ARTIFACT["torch"])
    servekit.export(model, path, format="torch", verbose=False)
    rng = np.random.default_rng(4)
    for sides in ((4, 3), (9, 12), (5, 5)):  # (4, 3): a cropped side of 1
        x = rng.standard_normal((2, *sides, 3)).astype("float32")
        got = checks.torch_program_outputs(path, ["images"], ["cropped"], {"images": x})["cropped"]
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-5, err_msg=f"images of {sides}")


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_of_strided_convolutions_over_images_of_any_size(tmp_path):
    # A backbone's "same" stride-2 convolutions over images of any size: torch.export
    # fixed the side's parity (Keras pads itself only when the padding splits unevenly),
    # guarded that each feature map is more than 1 high (the convolution's layout), and
    # nested each padded size in the next, so that the export was refused.
    keras.utils.set_random_seed(6)
    images = keras.Input(shape=(None, None, 3), name="images")
    x = images
    for i, channels in enumerate((6, 8, 10)):
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", name=f"conv{i}")(x)
        x = keras.layers.DepthwiseConv2D(3, padding="same", name=f"depthwise{i}")(x)
    model = keras.Model(images, x)
    path = str(tmp_path / "strided.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    for sides in ((1, 1), (2, 7), (9, 16), (33, 20)):
        x = np.random.default_rng(sum(sides)).normal(scale=10.0, size=(2, *sides, 3)).astype("float32")
        want = keras.ops.convert_to_numpy(model(x))
        got = checks.torch_program_outputs(path, ["images"], ["depthwise2"], {"images": x})["depthwise2"]
        assert got.shape == want.shape, sides
        scale = np.abs(want).max()
        assert scale > 1e-3, "a check of outputs near 0 would be vacuous"
        np.testing.assert_allclose(got, want, atol=1e-5 * scale, err_msg=f"images of {sides}")


@pytest.mark.parametrize("fmt", ["torch", pytest.param("torch_aoti", marks=pytest.mark.skipif(
    BACKEND != "torch", reason="compiled once, in process: the torch worker compiles the same program"))])
def test_torch_program_of_a_center_crop_of_images_of_any_size(tmp_path, fmt):
    # Keras crops an image at least as large as the crop and resizes a smaller one, but
    # with torch's symbolic sizes it always cropped, by a slice whose start is negative
    # for a smaller image: the trace kept the sample's case and the export was refused.
    import torch

    keras.utils.set_random_seed(7)
    images = keras.Input(shape=(None, None, 3), name="images")
    cropped = keras.layers.CenterCrop(8, 6, name="crop")(images)
    model = keras.Model(images, keras.layers.Conv2D(4, 3, name="conv")(cropped))
    path = str(tmp_path / "crop.pt2")
    servekit.export(model, path, format=fmt, verbose=False)
    if fmt == "torch":
        def run(x):
            return checks.torch_program_outputs(path, ["images"], ["conv"], {"images": x})["conv"]
    else:
        package = torch._inductor.aoti_load_package(path)

        def run(x):
            return torch.utils._pytree.tree_leaves(package(torch.from_numpy(x)))[0].numpy()
    # Smaller than the crop, as large, larger, and larger on one side only.
    for sides in ((3, 2), (8, 6), (21, 9), (5, 30), (40, 4)):
        x = np.random.default_rng(sum(sides)).normal(scale=10.0, size=(2, *sides, 3)).astype("float32")
        want = keras.ops.convert_to_numpy(model(x))
        got = run(x)
        assert got.shape == want.shape == (2, 6, 4, 4), sides
        scale = np.abs(want).max()
        assert scale > 1e-3, "a check of outputs near 0 would be vacuous"
        np.testing.assert_allclose(got, want, atol=1e-5 * scale, err_msg=f"images of {sides}")


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_that_asserts_its_sample_sizes_is_refused_with_them(tmp_path):
    # keras_hub's Whisper: torch.export keeps "frames >= 3" from the sample's sizes (a
    # convolution's output length branched on being 1), which verification at 1 frame meets.
    import keras_hub

    keras.utils.set_random_seed(0)
    model = keras_hub.models.WhisperBackbone(vocabulary_size=100, num_layers=1, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, num_mels=8, max_encoder_sequence_length=32,
                                             max_decoder_sequence_length=16)
    with pytest.raises(ExportError, match=r"the program refuses inputs of sizes the signature allows "
                                          r"\(.*encoder_features \[1, 1, 8\].*(>= 3|Ne\(\(\(s\d+ - 1\)//2\), 0\)).*"
                                          r"declare those dims static"):
        servekit.export(model, str(tmp_path / "whisper.pt2"), format="torch", verbose=False)
    assert os.listdir(tmp_path) == []


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_refuses_a_lookup_that_asserts(tmp_path):
    ids = keras.Input(shape=(4,), dtype="int64", name="ids")
    model = keras.Model(ids, keras.layers.IntegerLookup(vocabulary=[3, 7], num_oov_indices=0, name="strict")(ids))
    with pytest.raises(ExportError, match=r"layer 'strict' \(IntegerLookup\) asserts .*\(num_oov_indices=0\)"):
        servekit.export(model, str(tmp_path / "strict.pt2"), format="torch", input_ranges={"ids": (3, 4)},
                        verbose=False)
    assert os.listdir(tmp_path) == []


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_refuses_hashing_by_name(tmp_path):
    # Keras hashes with TensorFlow on every backend: torch.export failed inside Hashing.call.
    ids = keras.Input(shape=(3,), dtype="int64", name="ids")
    model = keras.Model(ids, keras.layers.Hashing(num_bins=8, name="buckets")(ids))
    with pytest.raises(ExportError, match=r"layer 'buckets' \(Hashing\) hashes its inputs with TensorFlow's"):
        servekit.export(model, str(tmp_path / "hashed.pt2"), format="torch", verbose=False)
    assert os.listdir(tmp_path) == []


@_REBUILT_AS_FROM_TENSORFLOW
def test_torch_program_of_lambda_layers_with_globals(tmp_path):
    # The torch worker that rebuilds a TensorFlow or JAX model gave Lambda functions no globals
    # (`keras`, `np`): Keras then could not infer their output shapes.
    import torch

    features = keras.Input(shape=(4,), name="features")
    scaled = keras.layers.Lambda(lambda t: keras.ops.gelu(t * np.float32(2.0), approximate=True))(features)
    model = keras.Model(features, keras.layers.Dense(2, name="logits")(scaled))
    path = str(tmp_path / "lambda.pt2")
    servekit.export(model, path, format="torch", verbose=False)
    values = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    got = torch.utils._pytree.tree_leaves(torch.export.load(path).module()(torch.from_numpy(values)))[0]
    want = np.asarray(keras.ops.convert_to_numpy(model(values, training=False)))
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torch"])
def test_named_lambda_functions_are_rebuilt(fmt, tmp_path):
    # Keras saves a Lambda's named function by its name alone, and finds only activations by
    # name when it loads: Lambda(keras.ops.arcsinh), or a function defined in a notebook, failed
    # its own round trip, and every rebuild with it (the torch program of a TensorFlow or JAX
    # model had no other road). A lambda whose closure holds a module (Keras wrote the module's
    # repr) failed the same way.
    def doubled_exp(t):
        return keras.ops.exp(t) * np.float32(2.0)

    ops, scale = keras.ops, 3.0
    features = keras.Input(shape=(4,), name="features")
    model = keras.Model(features, {"asinh": keras.layers.Lambda(keras.ops.arcsinh, name="asinh")(features),
                                   "doubled": keras.layers.Lambda(doubled_exp, name="doubled")(features),
                                   "closure": keras.layers.Lambda(lambda t: ops.sin(t) * scale,
                                                                  name="closure")(features)})
    path = str(tmp_path / _ARTIFACT[fmt])
    # The rebuild's ONNX (by default a small JAX or torch model's is converted in process first).
    order = {"strategy": "rebuild_first"} if fmt == "onnx" else {}
    artifact = servekit.export(model, path, format=fmt, verbose=False, **order)
    if fmt == "onnx":
        assert artifact.strategy == "portable_rebuild"
        values = np.random.default_rng(13).normal(size=(3, 4)).astype("float32")
        got = checks.onnx_outputs(path, {"features": values})
        for name, want in model(values).items():
            np.testing.assert_allclose(got[name], keras.ops.convert_to_numpy(want), rtol=1e-6, atol=1e-6)
    else:
        assert artifact.strategy == ("in_process" if BACKEND == "torch" else "cross_backend_rebuild")


@pytest.mark.skipif(BACKEND != "torch", reason="a TensorFlow or JAX model's package is compiled from its rebuild "
                                              "under Keras's torch backend: this batch normalization")
def test_torch_aoti_compiles_batch_normalization(tmp_path):
    # Keras's torch batch normalization mutates tensors in place (rsqrt_, mul_, add_),
    # which AOTInductor refused to lower.
    import torch

    keras.utils.set_random_seed(2)
    image = keras.Input(shape=(6, 6, 2), name="image")
    x = keras.layers.Conv2D(3, 3, name="conv")(image)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(image, keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(x)))
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 3).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 3).astype("float32"))
    path = str(tmp_path / "bn.pt2")
    servekit.export(model, path, format="torch_aoti", verbose=False)
    runner = torch._inductor.aoti_load_package(path)
    images = np.random.default_rng(4).normal(size=(3, 6, 6, 2)).astype("float32")
    got = runner(torch.from_numpy(images))
    want = np.asarray(keras.ops.convert_to_numpy(model(images, training=False)))
    np.testing.assert_allclose(torch.utils._pytree.tree_leaves(got)[0].numpy(), want, atol=1e-5)


@pytest.mark.skipif(BACKEND != "torch", reason="a TensorFlow or JAX model's package is compiled the same way, "
                                              "from its rebuild under Keras's torch backend")
def test_torch_aoti_package_does_not_depend_on_the_hosts_isa_probe(tmp_path, monkeypatch):
    # Inductor compiled for the host it found: `-march=native` and the widest vector ISA
    # whose probe (a library compiled, then loaded in a subprocess given 60 s) passed. A
    # probe that failed on a loaded CI machine gave another package from the same model.
    import torch
    from torch._inductor import cpu_vec_isa

    from servekit.formats import torch_program

    keras.utils.set_random_seed(3)
    features = keras.Input(shape=(5,), name="features")
    model = keras.Model(features, keras.layers.Dense(3, activation="relu", name="dense")(features))
    first = servekit.export(model, str(tmp_path / "first.pt2"), format="torch_aoti", verbose=False)
    assert first.converter == f"torch.export+aoti_compile_and_package for {torch_program.aoti_cpu_target()[0]}"
    # Every probe fails from here (Inductor's own answer when a setting answers for it).
    monkeypatch.setattr(cpu_vec_isa.VecISA, "_VecISA__bool__impl",
                        lambda self, vec_isa_ok: bool(vec_isa_ok) if vec_isa_ok is not None else False)
    cpu_vec_isa.valid_vec_isa_list.cache_clear()
    try:
        servekit.export(model, str(tmp_path / "probe_failed.pt2"), format="torch_aoti", verbose=False)
    finally:
        cpu_vec_isa.valid_vec_isa_list.cache_clear()
    assert (tmp_path / "first.pt2").read_bytes() == (tmp_path / "probe_failed.pt2").read_bytes()
    runner = torch._inductor.aoti_load_package(str(tmp_path / "probe_failed.pt2"))
    values = np.random.default_rng(5).normal(size=(4, 5)).astype("float32")
    got = torch.utils._pytree.tree_leaves(runner(torch.from_numpy(values)))[0].numpy()
    np.testing.assert_allclose(got, np.asarray(keras.ops.convert_to_numpy(model(values))), atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="AOTInductor compiles in this process on torch only")
def test_torch_aoti_package_does_not_depend_on_the_exporting_thread_count(tmp_path):
    # Inductor wrote each kernel's loops for the exporting process's thread count: a
    # build action (one thread) wrote packages without parallel loops, serving on one
    # core, and a script on a host with other cores wrote other bytes.
    import torch

    keras.utils.set_random_seed(3)
    image = keras.Input(shape=(32, 32, 8), name="image")
    hidden = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(image)
    model = keras.Model(image, keras.layers.Add(name="sum")([hidden, keras.layers.Conv2D(16, 1, name="skip")(image)]))
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            servekit.export(model, str(tmp_path / f"threads_{count}.pt2"), format="torch_aoti", verbose=False)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "threads_1.pt2").read_bytes() == (tmp_path / "threads_2.pt2").read_bytes()


def test_torch_refuses_string_inputs(tmp_path):
    with pytest.raises(ExportError, match="string inputs"):
        servekit.export(mm.text_classifier(), str(tmp_path / "t.pt2"), format="torch", verbose=False)
    assert os.listdir(tmp_path) == []


def test_torch_refuses_unsupported_arguments(model, tmp_path):
    with pytest.raises(ValueError, match='Unsupported arguments for `format="torch"`'):
        servekit.export(model, str(tmp_path / "m.pt2"), format="torch", not_a_kwarg=True, verbose=False)


def test_stateful_model_is_refused_by_formats_without_variables(tmp_path):
    for fmt, name in (("openvino", "s.xml"), ("litert", "s.tflite"), ("torch", "s.pt2")):
        with pytest.raises(ExportError, match="updates its variables"):
            servekit.export(mm.stateful_layer(), str(tmp_path / name), format=fmt, verbose=False)
    assert os.listdir(tmp_path) == []


def _zeta_alpha():
    """Inputs and outputs whose signature order is not their sorted order, of different
    widths: a swap fails loudly."""
    zeta = keras.Input(shape=(3,), name="zeta")
    alpha = keras.Input(shape=(5,), name="alpha")
    merged = keras.layers.Concatenate()([zeta, alpha])
    z_out = keras.layers.Dense(2, name="z_out")(merged)
    a_out = keras.layers.Dense(4, name="a_out")(merged)
    return mm.randomize_weights(keras.Model([zeta, alpha], [z_out, a_out]), 3)


def test_litert_tensors_are_in_signature_order(tmp_path):
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    model = _zeta_alpha()
    path = str(tmp_path / "m.tflite")
    artifact = servekit.export(model, path, format="litert", verbose=False)
    serving = artifact.endpoints[0]
    assert [t.name for t in serving.inputs] == ["zeta", "alpha"]
    assert [t.name for t in serving.outputs] == ["z_out", "a_out"]
    interpreter = Interpreter(model_path=path)
    keys = interpreter._get_full_signature_list()["serving_default"]
    names = {kind: {index: name for name, index in keys[kind].items()} for kind in ("inputs", "outputs")}
    assert [names["inputs"][d["index"]] for d in interpreter.get_input_details()] == ["zeta", "alpha"]
    assert [names["outputs"][d["index"]] for d in interpreter.get_output_details()] == ["z_out", "a_out"]
    # The SignatureDef's maps too (the LiteRT C API's signature indices).
    flat = schema.Model.GetRootAs(open(path, "rb").read(), 0).SignatureDefs(0)
    assert [flat.Inputs(i).Name().decode() for i in range(flat.InputsLength())] == ["zeta", "alpha"]
    assert [flat.Outputs(i).Name().decode() for i in range(flat.OutputsLength())] == ["z_out", "a_out"]
    # A positional caller (Keras's own LiteRT tests feed inputs so) gets the model's outputs.
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        zeta, alpha = rng.normal(size=(batch, 3)).astype("float32"), rng.normal(size=(batch, 5)).astype("float32")
        for detail, array in zip(interpreter.get_input_details(), (zeta, alpha)):
            interpreter.resize_tensor_input(detail["index"], array.shape)
        interpreter.allocate_tensors()
        for detail, array in zip(interpreter.get_input_details(), (zeta, alpha)):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        got = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        want = [keras.ops.convert_to_numpy(x) for x in model([zeta, alpha], training=False)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-5)
    # Reordering keeps the bytes reproducible.
    again = str(tmp_path / "again.tflite")
    servekit.export(model, again, format="litert", verbose=False)
    assert open(path, "rb").read() == open(again, "rb").read()


def test_litert_refuses_custom_ops(model, tmp_path):
    with pytest.raises(ValueError, match="Unsupported arguments for LiteRT export.*allow_custom_ops"):
        servekit.export(model, str(tmp_path / "m.tflite"), format="litert", allow_custom_ops=True, verbose=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(BACKEND != "torch", reason="litert-torch's arguments are Keras's on the torch backend only")
def test_litert_takes_keras_torch_arguments(tmp_path):
    # Keras (via litert-torch) takes these on torch; servekit checks them and converts as always.
    path = str(tmp_path / "m.tflite")
    artifact = servekit.export(mm.mlp(), path, format="litert", strict_export="auto", lightweight_conversion=True,
                               runtime_constant_folding=None, enable_x64=False, verbose=False)
    assert artifact.precision == "float32"
    with pytest.raises(ValueError, match="Unsupported arguments for LiteRT export with the PyTorch backend: "
                                         "quant_config.*optimizations="):
        servekit.export(mm.mlp(), path, format="litert", quant_config=object(), verbose=False)
    with pytest.raises(ValueError, match="Unsupported arguments for LiteRT export with the PyTorch backend: "
                                         "use_v2. Supported arguments are: enable_x64, lightweight_conversion"):
        servekit.export(mm.mlp(), path, format="litert", use_v2=True, verbose=False)
    with pytest.raises(ValueError, match="strict_export takes True, False or 'auto'"):
        servekit.export(mm.mlp(), path, format="litert", strict_export="yes", verbose=False)
    # enable_x64=False: servekit does not downcast, so a 64-bit model is refused, naming the tensor.
    ids = keras.Input(shape=(3,), dtype="int64", name="ids")
    wide = keras.Model(ids, keras.layers.Lambda(lambda x: x * 2, name="twice")(ids))
    with pytest.raises(ValueError, match=r"enable_x64=False.*ids.*\(int64\)"):
        servekit.export(wide, str(tmp_path / "w.tflite"), format="litert", enable_x64=False, verbose=False)
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


@pytest.mark.skipif(BACKEND == "torch", reason="on torch, Keras takes litert-torch's arguments")
def test_litert_torch_arguments_are_unknown_off_torch(tmp_path):
    with pytest.raises(ExportError, match="'strict_export' is neither an export argument nor an attribute"):
        servekit.export(mm.mlp(), str(tmp_path / "m.tflite"), format="litert", strict_export=False, verbose=False)
