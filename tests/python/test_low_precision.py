"""bfloat16 models to ONNX: computed in float32 where ONNX Runtime has no bfloat16
kernels, rounded to bfloat16 where the source casts, verified at bfloat16's tolerance.

Before, `mixed_bfloat16` → ONNX failed on every road: tf2onnx typed TensorFlow's
bfloat16 casts as float16 (a MatMul of float16 and bfloat16 loads nowhere), and
the other converters' bfloat16 `Relu`/`MatMul` have no CPU kernel in ONNX Runtime.

bfloat16 *inputs* (`keras.Input(dtype="bfloat16")`) to every format: the artifact
takes bfloat16 and reproduces the source model on bfloat16 inputs. Before, servekit
verified them with float32 inputs, which a bfloat16 signature refuses.
"""

import os

import ml_dtypes
import numpy as np
import onnx
import pytest

import keras
import servekit
from servekit.errors import ExportError

FORMATS = {"tf_saved_model": "saved_model", "onnx": "model.onnx", "openvino": "model.xml",
           "litert": "model.tflite", "torch": "model.pt2", "torch_aoti": "model_aoti.pt2"}


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
    # bfloat16 weights are stored as such, each read through a Cast to float32 (ONNX Runtime's
    # CPU kernels compute in float32).
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    stored = [t.name for t in graph.initializer if t.data_type == bfloat16]
    index = {id(node): i for i, node in enumerate(graph.node)}
    for name in stored:
        assert [(n.op_type, n.attribute[0].i) for n in readers[name]] == [("Cast", onnx.TensorProto.FLOAT)], name
        # Each cast sits right before the first op that reads it (only other casts between):
        # a session running the graph in order holds one weight in float32 at a time.
        cast = index[id(readers[name][0])]
        first_use = min(index[id(n)] for n in readers[graph.node[cast].output[0]])
        assert all(n.op_type == "Cast" for n in graph.node[cast + 1:first_use]), name
    if policy == "bfloat16":
        assert stored, "the bfloat16 weights were widened"
    if policy != "mixed_float16":
        # The source's roundings are kept: some Cast to bfloat16, each widened right after.
        rounding = [n for n in graph.node if n.op_type == "Cast" and n.attribute[0].i == bfloat16]
        assert rounding, "no bfloat16 rounding left in the graph"

    x = np.random.default_rng(1).normal(size=(5, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x)).astype("float32")
    got = servekit.load(path).serve(features=x)
    # bfloat16's declared tolerance: a few of its units at the output's scale.
    np.testing.assert_allclose(got, expected, atol=3e-2 * np.abs(expected).max(), rtol=1e-2)


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
def test_mixed_bfloat16_lifted_weights_are_rounded_where_used(policy, tmp_path, monkeypatch):
    # Lifted out of tf2onnx's folding (as a large model's are), the float32 weights stay
    # float32 and the graph rounds each to bfloat16 on every call, right before its use:
    # the check runs those casts unfolded, holding each weight once.
    from servekit import onnx as sk_onnx
    from servekit import onnx_bfloat16

    monkeypatch.setenv(sk_onnx.LIFT_ENV, "0")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((512,), name="features")  # a 2 MiB kernel: lifted (`servekit.frozen_weights.LIFT_BYTES`)
    hidden = keras.layers.Dense(1024, activation="relu", name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32", name="logits")(hidden), name="mixed")
    path = str(tmp_path / "model.onnx")
    servekit.export(model, path, format="onnx", verbose=False, strategy="rebuild_first")  # tf2onnx's lifting
    proto = onnx.load(path)
    weights = {t.name for t in proto.graph.initializer}
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in proto.graph.initializer)
    nodes = list(proto.graph.node)
    rounding = [i for i, n in enumerate(nodes) if n.op_type == "Cast" and n.input[0] in weights
                and n.attribute[0].i == onnx.TensorProto.BFLOAT16]
    assert rounding and onnx_bfloat16.casts_weights(proto)
    for i in rounding:  # the rounding, its widening back to float32, then their reader
        assert nodes[i + 1].op_type == "Cast" and nodes[i + 1].input == nodes[i].output
        assert nodes[i + 1].output[0] in nodes[i + 2].input or nodes[i + 2].op_type == "Cast"
    x = np.random.default_rng(1).normal(size=(5, 512)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x)).astype("float32")
    got = servekit.load(path).serve(features=x)
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


def _bfloat16_input_model(compute: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), dtype="bfloat16", name="features")
    hidden = keras.layers.Dense(16, activation="gelu", dtype=compute, name="mlp")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, dtype="float32", name="logits")(hidden),
                       name=f"bfloat16_input_{compute}")


def _torch_bfloat16(x: np.ndarray):
    import torch

    return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)


def _run_artifact(fmt: str, path: str, x: np.ndarray) -> np.ndarray:
    """The artifact's `logits` on `x` through its own runtime, after checking
    that the runtime sees a bfloat16 input."""
    if fmt in ("tf_saved_model", "onnx"):
        loaded = servekit.load(path)
        (features,) = loaded.signature("serving_default").inputs
        assert features.dtype == "bfloat16"
        return loaded.call_endpoint("serving_default", features=x)["logits"]
    if fmt == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        assert compiled.input(0).get_element_type() == ov.Type.bf16
        return np.asarray(compiled({"features": x})[0])
    if fmt == "litert":
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.interpreter import Interpreter

        with open(path, "rb") as f:
            graph = schema.Model.GetRootAs(f.read(), 0).Subgraphs(0)
        assert graph.Tensors(graph.Inputs(0)).Type() == schema.TensorType.BFLOAT16
        return Interpreter(model_path=path).get_signature_runner("serving_default")(features=x)["logits"]
    import torch

    if fmt == "torch":
        program = torch.export.load(path)
        (features,) = [n for n in program.graph.nodes if n.name in program.graph_signature.user_inputs]
        assert features.meta["val"].dtype == torch.bfloat16
        with torch.no_grad():
            return program.module()(_torch_bfloat16(x)).numpy()
    with torch.no_grad():
        (logits,) = torch._inductor.aoti_load_package(path)(_torch_bfloat16(x))
    return logits.numpy()


# (compute dtype, format): a bfloat16 input works in every format. A model that
# also computes in bfloat16 converts to LiteRT and OpenVINO in float32 (LiteRT's
# built-in kernels have no bfloat16 MatMul, OpenVINO's TensorFlow frontend no bfloat16
# constant: a `bfloat16` policy's weights are read from a SavedModel). The AOTInductor
# package (about a minute of
# C++ compilation) only on torch: a TensorFlow or JAX model's is compiled from its
# torch program, which the "torch" cases check on their backend (and the zoo's trained
# MLP compiles from each backend).
_COMPILED = ("torch_aoti",) if keras.backend.backend() == "torch" else ()
BFLOAT16_INPUTS = [("float32", fmt) for fmt in FORMATS if fmt != "torch_aoti" or _COMPILED] + [
    ("bfloat16", fmt) for fmt in ("tf_saved_model", "onnx", "litert", "openvino", "torch") + _COMPILED] + [
    ("mixed_bfloat16", "openvino")]


@pytest.mark.parametrize("compute,fmt", BFLOAT16_INPUTS)
def test_bfloat16_inputs_export_and_reproduce_the_source(compute, fmt, tmp_path):
    model = _bfloat16_input_model(compute)
    path = str(tmp_path / FORMATS[fmt])
    artifact = servekit.export(model, path, format=fmt, verbose=False)
    assert [t.dtype for t in artifact.endpoints[0].inputs] == ["bfloat16"]

    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, 8)).astype(ml_dtypes.bfloat16)
        expected = keras.ops.convert_to_numpy(model(x)).astype("float32")
        got = np.asarray(_run_artifact(fmt, path, x), dtype="float32")
        if compute == "float32":
            # The input's widening is exact: float32's tolerance.
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
        else:
            np.testing.assert_allclose(got, expected, atol=3e-2 * np.abs(expected).max(), rtol=1e-2)


def test_openvino_bfloat16_outputs_stay_bfloat16(tmp_path):
    # The frontend types a traced function's bfloat16 tensors f32; the IR keeps the signature's bf16.
    import openvino as ov

    inputs = keras.Input((8,), dtype="bfloat16", name="features")
    model = keras.Model(inputs, keras.layers.ReLU(dtype="bfloat16", name="relu")(inputs), name="bfloat16_relu")
    path = str(tmp_path / "model.xml")
    servekit.export(model, path, format="openvino", verbose=False)
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compiled.output(0).get_element_type() == ov.Type.bf16
    x = np.random.default_rng(1).normal(size=(4, 8)).astype(ml_dtypes.bfloat16)
    got = np.asarray(compiled({"features": x})[0]).view(ml_dtypes.bfloat16)  # OpenVINO hands bf16 bits as float16
    assert got.tobytes() == np.maximum(x, 0).tobytes()


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
def test_a_bfloat16_constant_outside_the_layers_to_openvino_says_why_and_what_to_do(policy, tmp_path):
    # As keras_hub's Gemma scales its embeddings: a constant made in bfloat16 while the
    # Functional model is built, which no layer's policy widens.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="features")
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    scaled = hidden * keras.ops.cast(keras.ops.sqrt(4.0), hidden.dtype)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32", name="logits")(scaled), name="scaled")
    with pytest.raises(ExportError, match="Model 'scaled'") as info:
        servekit.export(model, str(tmp_path / "model.xml"), format="openvino", verbose=False)
    assert "a constant the model makes in bfloat16 outside its layers" in str(info.value)
    assert "format='onnx'" in str(info.value)
    assert os.listdir(tmp_path) == []


def _litert_tensor_types(path: str) -> tuple[list[int], list[int], list[str]]:
    """A LiteRT model's input and output tensor types and its custom (Flex) op names."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    graph = model.Subgraphs(0)
    custom = [(model.OperatorCodes(i).CustomCode() or b"").decode() for i in range(model.OperatorCodesLength())]
    return ([graph.Tensors(graph.Inputs(i)).Type() for i in range(graph.InputsLength())],
            [graph.Tensors(graph.Outputs(i)).Type() for i in range(graph.OutputsLength())],
            [name for name in custom if name])


# The in-process strategy converts LiteRT from a SavedModel it traces on TensorFlow only.
_LITERT_LOW_PRECISION = [(policy, "portable_rebuild") for policy in
                         ("mixed_float16", "float16", "mixed_bfloat16", "bfloat16")] + [
    (policy, "in_process") for policy in ("mixed_float16", "bfloat16") if keras.backend.backend() == "tensorflow"]


@pytest.mark.parametrize("policy,strategy", _LITERT_LOW_PRECISION, indirect=["policy"])
def test_low_precision_compute_to_litert_runs_in_float32(policy, strategy, tmp_path):
    # LiteRT's built-in kernels have no float16 or bfloat16 MatMul: the model's LiteRT trace
    # computes in float32, with built-in ops only, and keeps the model's signature.
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="features")
    h = keras.layers.Dense(16, activation="relu", name="dense")(inputs)
    h = keras.layers.LayerNormalization(name="norm")(h)
    h = keras.layers.Dense(16, activation="gelu", name="mlp")(h)
    model = keras.Model(inputs, {"logits": keras.layers.Dense(3, dtype="float32", name="logits")(h),
                                 "hidden": keras.layers.Dense(4, name="hidden")(h)}, name="low_precision")
    path = str(tmp_path / "model.tflite")
    # On a CPU with AVX512-BF16, the source's bfloat16 layers run oneDNN's native kernels (TensorFlow's
    # default there; this test process's everywhere) and the worker's trace Eigen's: outputs of this
    # bfloat16 stack (its float32 logits too) then differ by up to 0.016, beyond the default (0.01, 0.01).
    tolerances = {"bfloat16": (2e-2, 2e-2), "float32": (2e-2, 2e-2)} if policy == "mixed_bfloat16" else None
    artifact = servekit.export(model, path, format="litert", strategy=strategy, verbose=False,
                               tolerances=tolerances)
    assert artifact.strategy == strategy
    compute = policy.removeprefix("mixed_")
    assert {t.name: t.dtype for t in artifact.endpoints[0].outputs} == {"logits": "float32", "hidden": compute}

    inputs_types, output_types, custom_ops = _litert_tensor_types(path)
    assert custom_ops == []
    assert inputs_types == [schema.TensorType.FLOAT32]
    low = schema.TensorType.FLOAT16 if compute == "float16" else schema.TensorType.BFLOAT16
    assert sorted(output_types) == sorted([schema.TensorType.FLOAT32, low])

    x = np.random.default_rng(1).normal(size=(5, 8)).astype("float32")
    expected = {k: keras.ops.convert_to_numpy(v).astype("float32") for k, v in model(x).items()}
    got = Interpreter(model_path=path).get_signature_runner("serving_default")(features=x)
    assert str(got["hidden"].dtype) == compute
    for name in ("logits", "hidden"):
        scale = np.abs(expected[name]).max()
        np.testing.assert_allclose(got[name].astype("float32"), expected[name], atol=3e-2 * scale, rtol=1e-2)


@pytest.mark.parametrize("policy", ["float16", "bfloat16"], indirect=True)
def test_an_embedding_inside_a_low_precision_block_to_litert_gathers_in_float32(policy, tmp_path):
    # Keras's Embedding does not autocast: called inside another layer's autocast scope (a
    # decoder backbone's, keras_hub's TokenAndPositionEmbedding's), it read its table in the
    # table's own dtype, and the gather was left to TensorFlow (FlexGatherV2), which LiteRT
    # cannot run.
    import keras_hub
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32", name="ids")
    embedded = keras_hub.layers.TokenAndPositionEmbedding(50, 6, 16, name="tokens")(ids)
    model = keras.Model(ids, {"hidden": keras.layers.Dense(8, name="dense")(embedded)}, name="embedded_tokens")
    path = str(tmp_path / "model.tflite")
    servekit.export(model, path, format="litert", verbose=False)
    assert _litert_tensor_types(path)[2] == []
    x = np.random.default_rng(2).integers(0, 50, (3, 6)).astype("int32")
    expected = keras.ops.convert_to_numpy(model(x)["hidden"]).astype("float32")
    got = Interpreter(model_path=path).get_signature_runner("serving_default")(ids=x)["hidden"]
    np.testing.assert_allclose(got.astype("float32"), expected, atol=3e-2 * np.abs(expected).max(), rtol=1e-2)


def test_a_litert_model_left_with_flex_ops_names_them(tmp_path):
    # The converter succeeds with Select TF ops (FlexMatrixInverse), which LiteRT's
    # runtime cannot run: the error names them and what to do.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 3), name="features")
    model = keras.Model(inputs, keras.ops.linalg.inv(keras.layers.Dense(3, name="dense")(inputs)), name="inverse")
    with pytest.raises(ExportError, match="needs TensorFlow op\\(s\\) FlexMatrixInverse") as info:
        servekit.export(model, str(tmp_path / "model.tflite"), format="litert", verbose=False)
    assert "Model 'inverse'" in str(info.value) and "Flex delegate" in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_ops_outside_layer_policies_to_litert_say_why_and_what_to_do(dtype, tmp_path):
    # Layers' policies compute in float32 for LiteRT; an op of the model's own on a tensor it
    # casts does not, and LiteRT has no kernel for it.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="features")
    hidden = keras.ops.cast(keras.layers.Dense(4, name="dense")(inputs), dtype)
    model = keras.Model(inputs, keras.ops.exp(hidden) * hidden, name=f"{dtype}_op")
    with pytest.raises(ExportError, match=f"Model '{dtype}_op'") as info:
        servekit.export(model, str(tmp_path / "model.tflite"), format="litert", verbose=False)
    assert f"computes in {dtype} outside its layers' dtype policies" in str(info.value)
    assert "compute that op in float32" in str(info.value) and "format='onnx'" in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
def test_mixed_bfloat16_with_constants_built_in_bfloat16_to_openvino(policy, tmp_path):
    # Normalization builds its mean and variance in its compute dtype: in the OpenVINO trace
    # they are float32 with the layer, where OpenVINO's frontend has no bfloat16 constant.
    import openvino as ov

    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="features")
    normalized = keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 1.0, 0.25], name="norm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="float32", name="logits")(normalized), name="normalized")
    path = str(tmp_path / "model.xml")
    servekit.export(model, path, format="openvino", verbose=False)
    x = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x)).astype("float32")
    got = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({"features": x})[0]
    np.testing.assert_allclose(got, expected, atol=3e-2 * np.abs(expected).max(), rtol=1e-2)
