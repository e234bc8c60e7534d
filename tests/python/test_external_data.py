"""ONNX models with external data: servekit's layout for models over 2 GB.

The threshold (`servekit.onnx.EXTERNAL_DATA_ENV`) is lowered so that a small
model takes the same road a > 2 GB one takes (weights lifted out of the graph
tf2onnx converts, then written as external data): the artifact is a directory with
`model.onnx` and `model.onnx.data`, reloaded by onnxruntime in Python and by
the native verifier, byte-reproducible, with both files' digests in the
manifest. (`tools/onnx_over_2gb.py` runs it on a real > 2 GB model.)

LiteRT's counterpart, the buffers of a large model after the flatbuffer, found
by offset (`servekit.formats.litert.BUFFER_OFFSET_BYTES`), is here too, with
its threshold lowered the same way.

The export worker's writing of a large model (`servekit._write`) is here too:
every format written first, then the model freed, then each artifact reloaded
and checked, so the weights are resident once.
"""

from __future__ import annotations

import json
import struct
import pathlib

import keras
import numpy as np
import pytest

import servekit
from servekit.build import build_tool
from servekit import onnx as sk_onnx


@pytest.fixture(autouse=True)
def _small_threshold(monkeypatch):
    monkeypatch.setenv(sk_onnx.EXTERNAL_DATA_ENV, "4096")


def _model() -> keras.Model:
    # The hidden kernel (1.25 MiB) is over the size from which tf2onnx converts
    # weights as lifted graph inputs (`servekit.frozen_weights.LIFT_BYTES`), as a > 2 GB
    # model's are.
    keras.utils.set_random_seed(3)
    inputs = keras.Input((512,), name="features")
    hidden = keras.layers.Dense(640, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(hidden), name="wide_mlp")


def test_export_writes_model_and_data_files(tmp_path):
    model = _model()
    target = tmp_path / "wide.onnx"
    artifact = servekit.export(model, target, format="onnx", verbose=False)
    assert target.is_dir()
    assert sorted(p.name for p in target.iterdir()) == sorted([sk_onnx.DATA_FILE, sk_onnx.MODEL_FILE])
    data = (target / sk_onnx.DATA_FILE).stat().st_size
    assert data >= 512 * 640 * 4  # the hidden kernel at least went out of the model file
    assert (target / sk_onnx.MODEL_FILE).stat().st_size < data
    assert str(tmp_path).encode() not in (target / sk_onnx.MODEL_FILE).read_bytes()  # a relative location
    x = np.random.default_rng(0).standard_normal((5, 512)).astype("float32")
    loaded = servekit.load(str(target))
    np.testing.assert_allclose(loaded.serve(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5, rtol=0)
    assert artifact.endpoints[0].inputs[0].name == "features"


def _build(out_dir: pathlib.Path) -> pathlib.Path:
    return build_tool.build_export(_model(), out_dir, "wide_mlp_tensorflow", "tensorflow",
                                   formats=("tf_saved_model", "onnx"))


def test_build_export_is_reproducible_and_natively_valid(tmp_path):
    first = _build(tmp_path / "a" / "wide_mlp_tensorflow")
    second = _build(tmp_path / "b" / "wide_mlp_tensorflow")
    manifest = json.loads(first.read_text())
    onnx_entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    assert sorted(onnx_entry["files"]) == sorted([sk_onnx.DATA_FILE, sk_onnx.MODEL_FILE])
    for name in (sk_onnx.MODEL_FILE, sk_onnx.DATA_FILE):
        a = (first.parent / onnx_entry["path"] / name).read_bytes()
        b = (second.parent / onnx_entry["path"] / name).read_bytes()
        assert a == b, f"{name} differs between two builds"
    assert onnx_entry["files"] == json.loads(second.read_text())["artifacts"][1]["files"]

    from servekit import native

    report = native.validate(str(first))
    assert report, str(report)
    model = native.load(str(first.parent / onnx_entry["path"]))
    assert [s.name for s in model.signatures] == ["serving_default"]


class _Jitter(keras.layers.Layer):
    """Adds seeded Gaussian noise on every call (seed-state updates in the graph)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1)

    def call(self, x):
        return x + keras.random.normal(keras.ops.shape(x), stddev=0.1, seed=self.seed_generator)


def _lookup_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    words = keras.Input((3,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["a", "b", "c"], name="lookup")(words)
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(4, 512, name="embed")(ids))
    hidden = keras.layers.Dense(640, activation="relu", name="hidden")(pooled)
    return keras.Model(words, keras.layers.Dense(4, name="logits")(hidden), name="lookup_mlp")


def _noisy_model() -> keras.Model:
    model = _model()
    return keras.Model(model.inputs, _Jitter(name="jitter")(model.outputs[0]), name="noisy_wide_mlp")


@pytest.mark.parametrize("build", [_lookup_model, _noisy_model], ids=["lookup_table", "random_layer"])
def test_weights_are_lifted_in_models_with_tables_and_random_layers(tmp_path, monkeypatch, build):
    # Every model takes the lifting roads (`servekit.onnx._roads`), one file: the lean
    # road freezes neither lookup tables nor seed-state updates as tf2onnx's regular
    # freezing does, so it repairs them or falls back to the regular one.
    monkeypatch.setenv(sk_onnx.LIFT_ENV, "0")
    monkeypatch.setenv(sk_onnx.EXTERNAL_DATA_ENV, str(2**40))
    model = build()
    target = tmp_path / "model.onnx"
    artifact = servekit.export(model, target, format="onnx", verbose=False)
    assert target.is_file() and artifact.strategy == "portable_rebuild"



def test_a_lookup_table_in_a_model_with_external_data(tmp_path):
    # Over the external-data threshold only the lean road converts, whose freezing keeps
    # the lookup inside the model's functions (tf2onnx: "Could not determine table shared
    # name"); servekit gives the lookup its table back once grappler inlined them.
    model = _lookup_model()
    target = tmp_path / "lookup.onnx"
    servekit.export(model, target, format="onnx", verbose=False)
    assert (target / sk_onnx.DATA_FILE).is_file()
    words = np.array([["a", "b", "out-of-vocabulary"], ["c", "c", "a"]])
    np.testing.assert_allclose(np.asarray(servekit.load(str(target)).serve(words)),
                               keras.ops.convert_to_numpy(model(words)), atol=1e-5, rtol=0)


def _bfloat16_model() -> keras.Model:
    # A 1 MiB bfloat16 kernel: lifted (`servekit.frozen_weights.LIFT_BYTES`) as a bfloat16 LLM's weights are.
    keras.utils.set_random_seed(3)
    inputs = keras.Input((512,), name="features")
    hidden = keras.layers.Dense(1024, activation="relu", name="hidden", dtype="bfloat16")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits", dtype="bfloat16")(hidden), name="bf16_mlp")


@pytest.mark.parametrize("one_file", [False, True], ids=["external_data", "one_file"])
def test_bfloat16_weights_are_written_as_bfloat16_from_the_variables(tmp_path, monkeypatch, one_file):
    # ONNX Runtime's CPU kernels have no bfloat16 MatMul: the graph computes in float32
    # (`servekit.onnx_bfloat16`), its weights stored as bfloat16 and read through casts, which
    # the export's check runs op by op and servekit.load's session folds.
    import onnx

    if one_file:
        monkeypatch.setenv(sk_onnx.LIFT_ENV, "0")
        monkeypatch.setenv(sk_onnx.EXTERNAL_DATA_ENV, str(2**40))
    model = _bfloat16_model()
    target = tmp_path / "bf16.onnx"
    servekit.export(model, target, format="onnx", verbose=False)  # verified at bfloat16's tolerance
    graph = onnx.load(str(target / sk_onnx.MODEL_FILE if not one_file else target), load_external_data=False).graph
    kernel = next(t for t in graph.initializer if list(t.dims) == [512, 1024])
    assert kernel.data_type == onnx.TensorProto.BFLOAT16
    (reader,) = [n for n in graph.node if kernel.name in n.input]
    assert reader.op_type == "Cast" and reader.attribute[0].i == onnx.TensorProto.FLOAT
    if not one_file:
        assert 512 * 1024 * 2 <= (target / sk_onnx.DATA_FILE).stat().st_size < 512 * 1024 * 4
    x = np.random.default_rng(0).standard_normal((5, 512)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x)).astype("float32")
    got = np.asarray(servekit.load(str(target)).serve(x)).astype("float32")
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max(), rtol=0.02)


def test_one_file_is_streamed_with_protobufs_own_bytes(tmp_path, monkeypatch):
    # Under the external-data threshold the lifted weights still stream from the variables
    # into the one file, spliced where protobuf puts them: the file must be exactly
    # `SerializeToString(deterministic=True)` of the model with the weights copied in (which
    # held them twice more). Weights in bytes, float32 and bfloat16 arrays, one over 2 MiB
    # (a 4-byte length), between initializers, and around a tensor, graph and model with
    # fields after theirs; the in-memory checker takes a model whose weights are left out.
    import ml_dtypes
    import onnx
    from onnx import TensorProto, helper

    monkeypatch.setenv(sk_onnx.EXTERNAL_DATA_ENV, str(2**40))
    rng = np.random.default_rng(0)
    weights = {"0": rng.standard_normal((700, 1024)).astype("float32"), "1": b"\x01\x02\x03\x04" * 3,
               "2": rng.standard_normal((4, 3)).astype(ml_dtypes.bfloat16)}
    dtypes = {"0": TensorProto.FLOAT, "1": TensorProto.FLOAT, "2": TensorProto.BFLOAT16}
    dims = {"0": [700, 1024], "1": [3], "2": [4, 3]}
    left_out = []
    for key in ("0", "1", "2"):
        tensor = TensorProto(name=f"w{key}", data_type=dtypes[key], dims=dims[key])
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=sk_onnx._PENDING_LOCATION + key)
        tensor.doc_string = "tf2onnx's, numbered after raw_data"
        left_out.append(tensor)
    small = helper.make_tensor("bias", TensorProto.FLOAT, [3], [0.5, -1.0, 2.0])
    nodes = [helper.make_node("Cast", ["w2"], ["w2f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["w1", "bias"], ["sum"]),
             helper.make_node("MatMul", ["x", "w0"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 700])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                               for n, shape in (("y", ["batch", 1024]), ("sum", [3]), ("w2f", [4, 3]))],
                              initializer=[left_out[0], small, left_out[1], left_out[2]], doc_string="after")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="servekit")
    helper.set_model_props(model, {"after": "the graph"})
    sk_onnx._check_in_memory(model)

    with_weights = onnx.ModelProto()
    with_weights.CopyFrom(model)
    for tensor in with_weights.graph.initializer:
        key = sk_onnx._left_out_key(tensor)
        if key is not None:
            data = weights[key]
            tensor.ClearField("data_location")
            del tensor.external_data[:]
            tensor.raw_data = data if isinstance(data, bytes) else data.view(np.uint8).tobytes()
    path = tmp_path / "one.onnx"
    sk_onnx.write_onnx(model, str(path), dict(weights))
    assert path.read_bytes() == with_weights.SerializeToString(deterministic=True)
    onnx.checker.check_model(str(path))


def test_lifted_weights_do_not_depend_on_earlier_exports(tmp_path):
    # One warm worker exports the model, another model, then the model again: the
    # lifted weights' names once carried TF ids that moved in between.
    from servekit.worker.launch import warm_worker

    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    small = keras.Sequential([keras.Input((8,), name="x"), keras.layers.Dense(3, name="out")], name="small")
    with warm_worker():
        servekit.export(_model(), first, format="onnx", verbose=False)
        servekit.export(small, tmp_path / "small.onnx", format="onnx", verbose=False)
        servekit.export(_model(), second, format="onnx", verbose=False)
    for name in (sk_onnx.MODEL_FILE, sk_onnx.DATA_FILE):
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs"


def _write_in_this_process(tmp_path, monkeypatch, formats, expected_offset=0.0):
    """Writes `formats` of `_model()` with `servekit._write`, as the export worker
    does, every model counted as large; returns (reports, what happened in order,
    a weak reference to each model the build made)."""
    import gc
    import weakref

    import tensorflow as tf

    from servekit import _write
    from servekit import saved_model as sk_sm
    from servekit import verification
    from servekit.formats import litert
    from servekit.pipeline.cases import Case

    monkeypatch.setattr(_write, "FREE_BEFORE_CHECKING_BYTES", 0)
    events, models = [], []
    x = np.random.default_rng(1).standard_normal((3, 512)).astype("float32")
    expected = keras.ops.convert_to_numpy(_model()(x)) + expected_offset

    def build():
        model = _model()
        models.append(weakref.ref(model))
        events.append("build")
        serve = tf.function(lambda features: {"logits": model(features, training=False)},
                            input_signature=[tf.TensorSpec((None, 512), tf.float32, name="features")])
        serve.get_concrete_function()
        return sk_sm.build_module([sk_sm.Endpoint("serving_default", serve)], tracked=[model])

    def release_memory():
        gc.collect()
        events.append("release: %d models alive" % sum(ref() is not None for ref in models))

    for name in ("check_saved_model", "check_onnx"):
        def check(path, cases, _check=getattr(verification, name), _name=name, **options):
            events.append(_name)
            return _check(path, cases, **options)
        monkeypatch.setattr(verification, name, check)

    def convert_to_litert(*args, _convert=litert.convert, **kwargs):
        gc.collect()
        events.append("convert to LiteRT: %d models alive" % sum(ref() is not None for ref in models))
        return _convert(*args, **kwargs)
    monkeypatch.setattr(litert, "convert", convert_to_litert)
    outputs = {fmt: str(tmp_path / fmt) for fmt in formats}
    reports = _write.write_and_verify(
        build, outputs=outputs, cases=[Case("serving_default", 3, {"features": x}, {"logits": expected})],
        opset=None, model_name="wide_mlp", layer_names=[], scratch_dir=str(tmp_path), version="test",
        release_memory=release_memory)
    return reports, events


def test_a_large_model_is_freed_before_its_artifacts_are_checked(tmp_path, monkeypatch):
    reports, events = _write_in_this_process(tmp_path, monkeypatch, ("tf_saved_model", "onnx"))
    assert all(r["ok"] for r in reports.values()), reports
    # Each reloaded artifact is freed too before the next one loads.
    assert events == ["build", "release: 0 models alive", "check_saved_model", "release: 0 models alive",
                      "check_onnx", "release: 0 models alive"]
    assert [c["artifact"] for c in reports["onnx"]["comparisons"]] == ["tf_saved_model", "onnx"]


@pytest.mark.parametrize("fmt,suffix", [("openvino", "xml"), ("litert", "tflite")])
def test_a_large_models_check_pages_its_weights_out(tmp_path, monkeypatch, fmt, suffix):
    # The pages of the mapped weights a check reads would otherwise stay resident: beside
    # OpenVINO's CPU plugin's packed copy, and, for LiteRT's built-in kernels, the whole file.
    import importlib

    module = importlib.import_module(f"servekit.formats.{fmt}")
    asked = []

    def check(*args, _check=module.check, **options):
        asked.append(options.get("page_out_weights"))
        return _check(*args, **options)

    monkeypatch.setattr(module, "check", check)
    reports, _ = _write_in_this_process(tmp_path, monkeypatch, ("tf_saved_model", fmt))
    assert all(r["ok"] for r in reports.values()), reports
    # The in-process strategy (TensorFlow models) pages them out too.
    from servekit import _write

    monkeypatch.setenv(_write.FREE_BEFORE_CHECKING_ENV, "0")
    artifact = servekit.export(_model(), tmp_path / f"in_process.{suffix}", format=fmt, strategy="in_process",
                               verbose=False)
    assert artifact.strategy == "in_process"
    assert asked == [True, True]


def test_a_large_model_is_converted_to_litert_once_it_is_freed(tmp_path, monkeypatch):
    # The TFLite converter's copies of the weights (about 3x) no longer sit beside the
    # model's: the trace is saved, the model freed, then the SavedModel converted.
    reports, events = _write_in_this_process(tmp_path, monkeypatch, ("tf_saved_model", "litert"))
    assert all(r["ok"] for r in reports.values()), reports
    assert events[:5] == ["build", "release: 0 models alive", "convert to LiteRT: 0 models alive",
                          "release: 0 models alive", "check_saved_model"]
    assert reports["litert"]["converter"] == "tflite_converter"
    assert [c["artifact"] for c in reports["litert"]["comparisons"]] == ["tf_saved_model", "litert"]


def test_a_large_model_is_traced_again_for_litert_after_its_release(tmp_path, monkeypatch):
    # An exact and a tanh GELU of one tensor: the converter leaves the exact one unfused,
    # and the export worker traces the model again with it written out (`builtin_trace`),
    # after the model it held was freed and the first conversion failed.
    from ai_edge_litert.interpreter import Interpreter

    from servekit import _write, peak_memory

    trace = tmp_path / "memory.jsonl"
    monkeypatch.setenv(_write.FREE_BEFORE_CHECKING_ENV, "0")
    monkeypatch.setenv(peak_memory.TRACE_ENV, str(trace))
    keras.utils.set_random_seed(6)
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    exact = keras.layers.Activation("gelu", name="exact")(hidden)
    tanh = keras.layers.Lambda(lambda t: keras.ops.gelu(t, approximate=True), name="tanh")(hidden)
    model = keras.Model(inputs, {"exact": exact, "tanh": tanh}, name="two_gelus")
    path = tmp_path / "two_gelus.tflite"
    servekit.export(model, path, format="litert", verbose=False)
    stages = [json.loads(line)["stage"] for line in trace.read_text().splitlines()]
    worker = stages[stages.index("LiteRT's SavedModel"):]
    assert worker[:5] == ["LiteRT's SavedModel", "release the model", "rebuild",
                          "LiteRT's SavedModel, traced again with exact GELUs written out", "LiteRT conversion"]
    x = np.random.default_rng(0).standard_normal((3, 6)).astype("float32")
    got = Interpreter(model_path=str(path)).get_signature_runner("serving_default")(features=x)
    for name, value in model(x).items():
        np.testing.assert_allclose(got[name], keras.ops.convert_to_numpy(value), atol=1e-5, rtol=0)


def test_a_failing_saved_model_fails_every_format_converted_from_its_trace(tmp_path, monkeypatch):
    reports, events = _write_in_this_process(tmp_path, monkeypatch, ("tf_saved_model", "onnx", "openvino"),
                                             expected_offset=0.5)
    assert [e for e in events if e.startswith("check")] == ["check_saved_model"]  # nothing converted is checked
    assert "The SavedModel does not reproduce" in reports["tf_saved_model"]["message"]
    for fmt, what in (("onnx", "ONNX model"), ("openvino", "OpenVINO IR (.xml + .bin)")):
        assert not reports[fmt]["ok"]
        assert f"The SavedModel (from which the {what} is converted) does not reproduce" in reports[fmt]["message"]


def test_a_failing_conversion_traces_the_model_again_to_blame_the_trace(tmp_path, monkeypatch):
    reports, events = _write_in_this_process(tmp_path, monkeypatch, ("onnx",), expected_offset=0.5)
    # The twin SavedModel comes from a second trace: the first model was freed before checking.
    assert events == ["build", "release: 0 models alive", "check_onnx", "release: 0 models alive", "build",
                      "check_saved_model"]
    assert "(from whose trace the ONNX model is converted) does not reproduce" in reports["onnx"]["message"]


def _litert_buffers(path: pathlib.Path) -> list[tuple[int, int]]:
    """(offset, size) of each buffer a LiteRT file keeps after its flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    return [(b.Offset(), b.Size()) for b in (model.Buffers(i) for i in range(model.BuffersLength())) if b.Offset()]


def test_a_large_litert_model_keeps_its_buffers_after_the_flatbuffer(tmp_path, monkeypatch):
    # A model of BUFFER_OFFSET_BYTES or more is converted with buffer offsets: the converter
    # then holds about half the copies of its weights. Below it, a plain flatbuffer.
    from ai_edge_litert.interpreter import Interpreter

    from servekit import native
    from servekit.formats import litert

    model = _model()
    plain = tmp_path / "plain.tflite"
    servekit.export(model, plain, format="litert", verbose=False)
    assert _litert_buffers(plain) == []

    monkeypatch.setenv(litert.BUFFER_OFFSET_ENV, "4096")
    manifest = build_tool.build_export(model, tmp_path / "offsets", "wide_mlp_tensorflow", "tensorflow",
                                       formats=("litert",))
    entry = json.loads(manifest.read_text())["artifacts"][0]
    path = manifest.parent / entry["path"]
    buffers = _litert_buffers(path)
    assert max(size for _, size in buffers) == 512 * 640 * 4  # the hidden kernel, after the flatbuffer
    assert all(offset + size <= path.stat().st_size for offset, size in buffers)
    # The signature's order is written into the file in place, and inference reads the weights.
    interpreter = Interpreter(model_path=str(path))
    x = np.random.default_rng(0).standard_normal((5, 512)).astype("float32")
    got = interpreter.get_signature_runner("serving_default")(features=x)["logits"]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-5, rtol=0)
    report = native.validate(str(manifest), "litert")
    assert report.passed, report.to_text()
    again = build_tool.build_export(model, tmp_path / "again", "wide_mlp_tensorflow", "tensorflow",
                                    formats=("litert",))
    assert (again.parent / entry["path"]).read_bytes() == path.read_bytes()


def _with_two_buffers_swapped(data: bytes) -> bytes:
    """A LiteRT file as the converter may also lay it out: its first two buffers
    after the flatbuffer in the other order, their offsets rewritten."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    after = sorted((b.Offset(), b.Size(), b._tab.Pos + b._tab.Offset(6))
                   for b in (model.Buffers(i) for i in range(model.BuffersLength())) if b.Offset() > 1)
    (first, first_size, first_field), (second, second_size, second_field) = after[:2]
    assert second == first + first_size
    out = bytearray(data)
    out[first:first + second_size] = data[second:second + second_size]
    out[first + second_size:second + second_size] = data[first:first + first_size]
    struct.pack_into("<Q", out, second_field, first)
    struct.pack_into("<Q", out, first_field, first + second_size)
    return bytes(out)


def test_litert_buffers_after_the_flatbuffer_are_written_in_buffer_order(tmp_path, monkeypatch):
    # The converter lays them out in an order that changes from one conversion to
    # the next; servekit writes them in buffer order, so equal models give equal bytes.
    from ai_edge_litert.interpreter import Interpreter

    from servekit.formats import litert

    monkeypatch.setenv(litert.BUFFER_OFFSET_ENV, "4096")
    model = _model()
    path = tmp_path / "written.tflite"
    artifact = servekit.export(model, path, format="litert", verbose=False)
    written = path.read_bytes()
    swapped = _with_two_buffers_swapped(written)
    assert swapped != written
    x = np.random.default_rng(0).standard_normal((2, 512)).astype("float32")
    want = keras.ops.convert_to_numpy(model(x))
    for data in (written, swapped):  # both layouts are valid files
        got = Interpreter(model_content=data).get_signature_runner("serving_default")(features=x)["logits"]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    litert.write(swapped, str(tmp_path / "rewritten.tflite"), artifact.endpoints[0], "wide_mlp")
    assert (tmp_path / "rewritten.tflite").read_bytes() == written


def _litert_ops(path: pathlib.Path) -> list[int]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    codes = [model.OperatorCodes(graph.Operators(i).OpcodeIndex()) for i in range(graph.OperatorsLength())]
    return [max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) for c in codes]


def _token_model(dtype: str = "float32", width: int = 512) -> keras.Model:
    # Every weight over the 1 MiB from which weights are lifted: an embedding (gathered),
    # a Dense kernel (the converter transposes it for a fully connected layer, and fuses
    # the ReLU), an EinsumDense kernel (reshaped) and a Conv1D filter (transposed).
    layers = keras.layers
    keras.utils.set_random_seed(4)
    ids = keras.Input((8,), dtype="int32", name="ids")
    x = layers.Embedding(1000, width, dtype=dtype, name="embedding")(ids)
    x = layers.Dense(width * 5 // 4, activation="relu", dtype=dtype, name="dense")(x)
    x = layers.EinsumDense("btd,dhk->bthk", output_shape=(8, 4, width // 4), bias_axes="hk", dtype=dtype,
                           name="einsum")(x)
    x = layers.Conv1D(width // 2, 3, padding="same", dtype=dtype, name="conv")(
        layers.Reshape((8, width), name="heads")(x))
    pooled = layers.GlobalAveragePooling1D(dtype=dtype, name="pool")(x)
    return keras.Model(ids, layers.Dense(4, dtype="float32", name="logits")(pooled), name="token_model")


def test_a_large_litert_model_is_converted_with_its_weights_lifted(tmp_path, monkeypatch):
    # The converter holds about three copies of the weights it converts: from LIFT_BYTES
    # of variables on, it converts a graph whose weights are inputs, and they are put back
    # as buffers after the flatbuffer, streamed from the variables; the ops are those of
    # the plain conversion, the results the model's, in Python and in LiteRT's C API.
    from ai_edge_litert.interpreter import Interpreter

    from servekit import native
    from servekit.formats import litert_lifted

    model = _token_model()
    plain = build_tool.build_export(model, tmp_path / "plain", "token_model_tensorflow", "tensorflow",
                                    formats=("litert",))
    monkeypatch.setenv(litert_lifted.LIFT_ENV, "0")
    lifted = build_tool.build_export(model, tmp_path / "lifted", "token_model_tensorflow", "tensorflow",
                                     formats=("litert",))
    entries = {name: json.loads(m.read_text())["artifacts"][0] for name, m in (("plain", plain), ("lifted", lifted))}
    assert entries["plain"]["converter"] == "tflite_converter"
    assert entries["lifted"]["converter"] == "tflite_converter+lifted_weights"
    paths = {name: m.parent / entries[name]["path"] for name, m in (("plain", plain), ("lifted", lifted))}
    # The plain conversion's ops, but the ReLU: a LEAKY_RELU of slope 0 after the layer
    # (the converter fused it into the layer, then lost it: `litert_lifted._activations_kept`).
    from ai_edge_litert import schema_py_generated as schema

    lifted_ops = _litert_ops(paths["lifted"])
    assert lifted_ops.count(schema.BuiltinOperator.LEAKY_RELU) == 1
    assert [op for op in lifted_ops if op != schema.BuiltinOperator.LEAKY_RELU] == _litert_ops(paths["plain"])
    buffers = _litert_buffers(paths["lifted"])
    assert sorted(size for _, size in buffers)[-4:] == sorted(
        4 * n for n in (1000 * 512, 512 * 640, 640 * 512, 3 * 512 * 256))
    assert all(offset % 64 == 0 and offset + size <= paths["lifted"].stat().st_size for offset, size in buffers)
    x = np.random.default_rng(0).integers(0, 1000, size=(3, 8)).astype("int32")
    want = keras.ops.convert_to_numpy(model(x))
    assert np.abs(want).max() > 1e-3, "a check of outputs near 0 would be vacuous"
    got = Interpreter(model_path=str(paths["lifted"])).get_signature_runner("serving_default")(ids=x)["logits"]
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)
    report = native.validate(str(lifted), "litert")
    assert report.passed, report.to_text()
    again = build_tool.build_export(model, tmp_path / "again", "token_model_tensorflow", "tensorflow",
                                    formats=("litert",))
    assert (again.parent / entries["lifted"]["path"]).read_bytes() == paths["lifted"].read_bytes()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_large_low_precision_litert_model_is_converted_with_its_weights_lifted_as_float32(tmp_path, monkeypatch,
                                                                                           dtype):
    # The converter takes no bfloat16 input: a lifted low-precision weight, which the
    # float32 trace for LiteRT only reads through casts, is lifted as float32 and widened
    # while it is written (a bfloat16 decoder fell back to the plain conversion, 9x its weights).
    from servekit import native
    from servekit.formats import litert_lifted

    model = _token_model(dtype, width=1024)  # every weight over 1 MiB in 2-byte floats too
    monkeypatch.setenv(litert_lifted.LIFT_ENV, "0")
    manifest = build_tool.build_export(model, tmp_path / "lifted", "token_model_tensorflow", "tensorflow",
                                       formats=("litert",))
    entry = json.loads(manifest.read_text())["artifacts"][0]
    assert entry["converter"] == "tflite_converter+lifted_weights"
    path = manifest.parent / entry["path"]
    assert sorted(size for _, size in _litert_buffers(path))[-4:] == sorted(
        4 * n for n in (1000 * 1024, 1024 * 1280, 1280 * 1024, 3 * 1024 * 512))
    report = native.validate(str(manifest), "litert")
    assert report.passed, report.to_text()
