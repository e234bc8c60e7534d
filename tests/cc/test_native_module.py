"""servekit.native (the pybind11 module servekit._native) on the fixture export."""

import concurrent.futures
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from servekit import native
from servekit.signature import Signature, TensorSignature

RUNFILES = pathlib.Path(os.environ.get("TEST_SRCDIR", ".")) / os.environ.get("TEST_WORKSPACE", "servekit")
FIXTURE = RUNFILES / "tests/cc/fixture"
AOTI = RUNFILES / "tests/cc/aoti_fixture"


def ref(name):
    return np.load(FIXTURE / "reference" / name)


@pytest.fixture(scope="module")
def onnx_model():
    return native.load(str(FIXTURE / "model.onnx"), intra_op_threads=1)


@pytest.fixture(scope="module")
def saved_model():
    return native.load(str(FIXTURE / "saved_model"), intra_op_threads=1, inter_op_threads=1)


def test_signatures(onnx_model, saved_model):
    assert onnx_model.format == "onnx"
    assert onnx_model.signatures == (Signature(
        name="serving_default", method_name="",
        inputs=(TensorSignature("features", "float32", ("batch", 3)),),
        outputs=(TensorSignature("logits", "float32", ("batch", 2)),)),)
    assert saved_model.endpoints == ("divide", "serving_default", "tokens")
    tokens = saved_model.signature("tokens")
    assert tokens.inputs == (TensorSignature("ids", "int64", (None, 4)), TensorSignature("words", "string", (None,)))
    with pytest.raises(LookupError, match="No endpoint 'nope'"):
        saved_model.signature("nope")


def test_run_matches_references(onnx_model, saved_model):
    for model in (onnx_model, saved_model):
        for batch in (1, 4):
            out = model.run("serving_default", {"features": ref(f"serving_default.b{batch}.in.features.npy")})
            assert list(out) == ["logits"]
            np.testing.assert_allclose(out["logits"], ref(f"serving_default.b{batch}.out.logits.npy"), atol=1e-5)
            assert out["logits"].dtype == np.float32 and out["logits"].flags.writeable


def test_strings_and_int64(saved_model):
    out = saved_model.run("tokens", {"words": ref("tokens.b3.in.words.npy"), "ids": ref("tokens.b3.in.ids.npy")})
    np.testing.assert_array_equal(out["lengths"], ref("tokens.b3.out.lengths.npy"))
    np.testing.assert_array_equal(out["total"], ref("tokens.b3.out.total.npy"))
    assert out["upper"].dtype == object
    assert list(out["upper"]) == [b"ALPHA", b"", b"GAMMA RAY"]
    # str and object arrays work too, and bytes keep embedded NULs.
    out = saved_model.run("tokens", {"words": np.array(["ab", "é"]), "ids": np.zeros((2, 4), np.int64)})
    assert list(out["upper"]) == [b"AB", "é".encode()]
    out = saved_model.run("tokens", {"words": np.array([b"a\0b", "c"], dtype=object), "ids": np.zeros((2, 4), np.int64)})
    assert list(out["upper"]) == [b"A\0B", b"C"]


def test_non_contiguous_big_endian_and_mappings(onnx_model):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    expected = onnx_model.run("serving_default", {"features": x})["logits"]
    wide = np.zeros((4, 6), np.float32)
    wide[:, ::2] = x
    np.testing.assert_array_equal(onnx_model.run("serving_default", {"features": wide[:, ::2]})["logits"], expected)
    np.testing.assert_array_equal(onnx_model.run("serving_default", {"features": x.astype(">f4")})["logits"], expected)
    np.testing.assert_array_equal(onnx_model.run("serving_default", {"features": x.T.copy().T})["logits"], expected)

    class Feeds(dict):
        pass

    np.testing.assert_array_equal(onnx_model.run("serving_default", Feeds(features=x))["logits"], expected)


def test_outputs_are_independent_of_inputs_and_each_other(onnx_model, saved_model):
    x = ref("serving_default.b1.in.features.npy").copy()
    first = onnx_model.run("serving_default", {"features": x})["logits"]
    kept = first.copy()
    x += 1
    second = onnx_model.run("serving_default", {"features": x})["logits"]
    np.testing.assert_array_equal(first, kept)
    assert not np.array_equal(first, second)
    # A SavedModel constant output is a copy: writing to it leaves the model intact.
    out = saved_model.run("divide", {"a": np.array([5]), "b": np.array([2])})
    assert out["quotient"].tolist() == [2]
    out["constant"][:] = 0
    assert saved_model.run("divide", {"a": np.array([5]), "b": np.array([2])})["constant"].tolist() == [1, 2, 3]


def test_feed_errors_are_precise(onnx_model, saved_model):
    with pytest.raises(ValueError) as e:
        onnx_model.run("serving_default", {"features": np.ones((2, 3))})
    assert str(e.value) == "endpoint 'serving_default' input 'features': expected float32[batch,3], got float64[2,3]"
    with pytest.raises(ValueError, match=r"expected float32\[batch,3\], got float32\[2,4\]"):
        onnx_model.run("serving_default", {"features": np.ones((2, 4), np.float32)})
    with pytest.raises(ValueError, match="has no input 'x'; its inputs are: 'features'"):
        onnx_model.run("serving_default", {"x": np.ones((1, 3), np.float32)})
    with pytest.raises(ValueError, match=r"input 'features' \(float32\[batch,3\]\) is not fed"):
        onnx_model.run("serving_default", {})
    with pytest.raises(LookupError, match="no endpoint 'predict'"):
        onnx_model.run("predict", {})
    with pytest.raises(TypeError, match="input 'features' has NumPy dtype complex64"):
        onnx_model.run("serving_default", {"features": np.ones((1, 3), np.complex64)})
    with pytest.raises(TypeError, match="mapping"):
        onnx_model.run("serving_default", [("features", np.ones((1, 3), np.float32))])
    with pytest.raises(TypeError, match="must be bytes or str"):
        saved_model.run("tokens", {"words": np.array([1, "a"], dtype=object), "ids": np.zeros((2, 4), np.int64)})
    with pytest.raises(ValueError, match="TensorFlow failed to run endpoint 'divide'.*division by zero"):
        saved_model.run("divide", {"a": np.array([1]), "b": np.array([0])})


def test_load_errors(tmp_path):
    with pytest.raises(LookupError, match="no model at /nonexistent/model.onnx"):
        native.load("/nonexistent/model.onnx")
    with pytest.raises(LookupError, match="is not a SavedModel: it has no saved_model.pb"):
        native.load(str(FIXTURE / "reference"))
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty, not an ONNX model"):
        native.load(str(broken))
    with pytest.raises(LookupError, match=r"has no MetaGraph tagged \{train\}; it has: \{serve\}"):
        native.load(str(FIXTURE / "saved_model"), tags=["train"])
    with pytest.raises(ValueError, match="device must be one of cpu, gpu, not 'tpu'"):
        native.load(str(FIXTURE / "model.onnx"), device="tpu")
    with pytest.raises(ValueError, match="inter-op threads must be >= -1") as e:
        native.load(str(FIXTURE / "saved_model"), inter_op_threads=-2)
    assert e.value.status_code == "INVALID_ARGUMENT"
    with pytest.raises(LookupError) as e:
        native.load("/nonexistent/model.onnx")
    assert e.value.status_code == "NOT_FOUND"


def test_caller_thread_inter_op():
    for artifact in ("saved_model", "model.onnx"):
        inline = native.load(str(FIXTURE / artifact), intra_op_threads=1, inter_op_threads=native.CALLER_THREAD)
        out = inline.run("serving_default", {"features": ref("serving_default.b4.in.features.npy")})
        np.testing.assert_allclose(out["logits"], ref("serving_default.b4.out.logits.npy"), atol=1e-5)


@pytest.mark.parametrize("artifact", ["model.onnx", "saved_model"])
def test_gpu_runs_where_the_runtime_has_one_else_a_clear_error(artifact):
    try:
        model = native.load(str(FIXTURE / artifact), device="gpu")
    except RuntimeError as e:
        assert "device 'gpu' requested" in str(e)
        return
    out = model.run("serving_default", {"features": ref("serving_default.b4.in.features.npy")})
    np.testing.assert_allclose(out["logits"], ref("serving_default.b4.out.logits.npy"), atol=1e-4)


def test_threads_share_one_model(onnx_model, saved_model):
    x = ref("serving_default.b4.in.features.npy")
    expected = ref("serving_default.b4.out.logits.npy")

    def work(i):
        model = onnx_model if i % 2 else saved_model
        for _ in range(25):
            out = model.run("serving_default", {"features": x * 1.0})
            np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
        return i

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(work, range(8))) == list(range(8))


def test_validate(tmp_path):
    report = native.validate(str(FIXTURE / "manifest.json"))
    assert report.passed and bool(report) and report.failures == ()
    assert isinstance(report, native.VerifyReport)
    assert {a.format for a in report.artifacts} == {native.Format.tf_saved_model, native.Format.onnx}
    assert all(c.passed for a in report.artifacts for c in a.parity)
    assert json.loads(report.to_json())["passed"] is True and "RESULT: PASS" in report.to_text()
    export = tmp_path / "export"
    shutil.copytree(FIXTURE, export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["endpoints"][1]["inputs"][1]["shape"] = ["batch", 5]
    (export / "manifest.json").chmod(0o644)
    (export / "manifest.json").write_text(json.dumps(manifest))
    report = native.validate(str(export / "manifest.json"), "tf_saved_model")
    assert not report.passed
    assert report.failures == ("tf_saved_model: endpoint 'tokens' input 'ids': dim 1 expected 5, found 4",)
    with pytest.raises(LookupError, match="has no onnx artifact"):
        native.validate(str(_onnx_less_manifest(tmp_path)), "onnx")


def test_validate_reports_stochastic_and_stateful_endpoints():
    report = native.validate(str(FIXTURE / "random/manifest.json"))
    assert report.passed, report.to_text()
    assert [(e.name, e.stochastic, e.stateful, e.stochastic_outputs) for e in report.endpoints] == [
        ("serving_default", True, False, ("noisy",)), ("counter", False, True, ())]
    for artifact in report.artifacts:
        (check,) = artifact.stays_random
        assert check.passed and check.endpoint == "serving_default"
        noisy = [o for c in artifact.parity for o in c.outputs if o.name == "noisy"]
        assert noisy and all(o.check == native._native.OutputCheck.stochastic for o in noisy)
    (cross,) = report.cross_parity
    assert [o.check.name for o in cross.outputs] == ["not_comparable", "values"]


def test_bound_types():
    options = native.LoadOptions(intra_op_threads=1, inter_op_threads=native.CALLER_THREAD,
                                 device=native.Device.cpu, optimization=native.OnnxOptimization.basic)
    assert options.inter_op_threads == native.LoadOptions.CALLER_THREAD == -1
    assert options.tags == ["serve"] and options.optimization == native.OnnxOptimization.basic
    with pytest.raises(ValueError, match="intra-op threads must be >= 0"):
        native.LoadOptions(intra_op_threads=-1)
    model = native.load(str(FIXTURE / "model.onnx"), optimization="basic")
    assert model.options.optimization == native.OnnxOptimization.basic
    (signature,) = model._model.signatures
    assert signature.name == "serving_default"
    (features,) = signature.inputs
    assert (features.name, features.dtype, features.shape) == ("features", "float32", ("batch", 3))
    assert [(d.size, d.symbol, d.is_static) for d in features.dims] == [(-1, "batch", False), (3, "", True)]


def test_summarize_latencies_is_nearest_rank():
    stats = native.summarize_latencies([4000, 1000, 3000, 2000])  # ns
    assert (stats.min_us, stats.p50_us, stats.p90_us, stats.max_us) == (1.0, 2.0, 4.0, 4.0)
    assert stats.mean_us == 2.5 and stats.iterations == 4
    stats = native.summarize_latencies(range(1000, 101000, 1000))  # 1..100 µs
    assert (stats.p50_us, stats.p90_us, stats.p99_us) == (50.0, 90.0, 99.0)


def _onnx_less_manifest(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"servekit_manifest": 1, "model": "m", "artifacts": [], "endpoints": []}))
    return path


def test_benchmark_helpers(onnx_model, saved_model):
    feeds = {"features": ref("serving_default.b1.in.features.npy")}
    report = native.benchmark(onnx_model, batches=[1, 8], iterations=20, warmup=2, inputs=feeds, bare_ort=True)
    assert [b.batch for b in report.batches] == [1, 8]
    assert report.input_source == "sample" and report.batches[0].overhead_ratio > 0
    assert report.batches[0].bare_ort.iterations == 20
    assert json.loads(report.to_json())["batches"][1]["batch"] == 8
    report = native.benchmark(saved_model, endpoint="tokens", iterations=5)
    assert report.input_source == "random" and report.batches[0].runner.iterations == 5
    assert report.batches[0].bare_ort is None and report.batches[0].overhead_ratio is None
    latencies = native.benchmark_loop(onnx_model, "serving_default", feeds, 2, 50, 0.0)
    assert len(latencies) == 50 and all(isinstance(t, int) and t > 0 for t in latencies)
    runner, bare = native.runner_and_bare_onnxruntime_loops(onnx_model, feeds, 2, 40, 0.0)
    assert len(runner) == len(bare) == 40 and all(t > 0 for t in runner + bare)
    for artifact in ("formats/model.xml", "formats/model.tflite"):  # every runtime with a bare C/C++ loop
        runner, bare = native.runner_and_bare_loops(native.load(str(FIXTURE / artifact)), feeds, 1, 20, 0.0)
        assert len(runner) == len(bare) == 20, artifact
    with pytest.raises(ValueError, match="needs an ONNX, OpenVINO, LiteRT or AOTInductor model"):
        native.runner_and_bare_onnxruntime_loops(saved_model, {"x": np.zeros(1)}, 0, 1)
    with pytest.raises(ValueError, match="needs an ONNX, OpenVINO, LiteRT or AOTInductor model"):
        native.benchmark(saved_model, bare_ort=True, iterations=2)


def test_openvino_ir_runs_like_the_others(onnx_model, tmp_path):
    model = native.load(str(FIXTURE / "formats/model.xml"), intra_op_threads=1)
    assert model.format == "openvino"
    assert model.signatures == (Signature(
        name="serving_default", method_name="",
        inputs=(TensorSignature("features", "float32", (None, 3)),),
        outputs=(TensorSignature("logits", "float32", (None, 2)),)),)
    x = ref("serving_default.b4.in.features.npy")
    out = model.run("serving_default", {"features": x})
    np.testing.assert_allclose(out["logits"], ref("serving_default.b4.out.logits.npy"), atol=1e-5)
    np.testing.assert_allclose(out["logits"], onnx_model.run("serving_default", {"features": x})["logits"],
                               atol=1e-5)
    with pytest.raises(ValueError, match=r"input 'features': expected float32\[\?,3\], got int64\[4,3\]"):
        model.run("serving_default", {"features": x.astype(np.int64)})
    bf16 = native.load(str(FIXTURE / "formats/model.xml"), openvino_precision="bf16")
    np.testing.assert_allclose(bf16.run("serving_default", {"features": x})["logits"],
                               ref("serving_default.b4.out.logits.npy"), atol=1e-2, rtol=1e-2)
    report = native.validate(str(FIXTURE / "formats/manifest.json"), "openvino")
    assert report.passed, report.failures
    lonely = tmp_path / "model.xml"
    shutil.copyfile(FIXTURE / "formats/model.xml", lonely)
    with pytest.raises(LookupError, match="has no weights file") as e:
        native.load(str(lonely))
    assert e.value.status_code == "NOT_FOUND"


def test_litert_model_runs_like_the_others():
    model = native.load(str(FIXTURE / "formats/model.tflite"))
    assert model.format == "litert"
    assert model.signatures[0].inputs == (TensorSignature("features", "float32", (None, 3)),)
    for batch in (4, 1):
        x = ref(f"serving_default.b{batch}.in.features.npy")
        np.testing.assert_allclose(model.run("serving_default", {"features": x})["logits"],
                                   ref(f"serving_default.b{batch}.out.logits.npy"), atol=1e-5)
    report = native.validate(str(FIXTURE / "formats/manifest.json"))
    assert report.passed, report.failures
    assert [a.format.name for a in report.artifacts] == ["openvino", "litert"]
    with pytest.raises(ValueError, match="is not a LiteRT model: no TFL3 FlatBuffer identifier"):
        native.load(str(FIXTURE / "model.onnx"), format="litert")


def test_torch_aoti_package_runs_like_the_others():
    model = native.load(str(AOTI / "model_aoti.pt2"))
    assert model.format == "torch_aoti"
    x = np.load(AOTI / "reference/serving_default.b4.in.features.npy")
    np.testing.assert_allclose(model.run("serving_default", {"features": x})["logits"],
                               np.load(AOTI / "reference/serving_default.b4.out.logits.npy"), atol=1e-5)
    report = native.validate(str(AOTI / "manifest.json"))
    assert report.passed, report.failures


def test_libtorch_is_loaded_only_for_an_aotinductor_package():
    # In a fresh interpreter: the module and its ONNX/SavedModel runners map no libtorch;
    # the first .pt2 opens the plugin (and libtorch) beside _native.so.
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from servekit import native\n"
        "def torch_mapped():\n"
        "    return 'libtorch_cpu.so' in open('/proc/self/maps').read()\n"
        f"native.load({str(FIXTURE / 'model.onnx')!r})\n"
        "before = torch_mapped()\n"
        f"native.load({str(AOTI / 'model_aoti.pt2')!r})\n"
        "print(before, torch_mapped(), 'torch' in sys.modules)\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "True", "False"], p.stdout + p.stderr


def test_coexists_with_tensorflow_onnxruntime_and_hashlib():
    # The extension keeps its symbols to itself: the Python runtimes and OpenSSL-backed
    # hashlib keep working in the same process.
    import hashlib

    import onnxruntime
    import tensorflow as tf

    assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
    session = onnxruntime.InferenceSession(str(FIXTURE / "model.onnx"), providers=["CPUExecutionProvider"])
    x = ref("serving_default.b1.in.features.npy")
    np.testing.assert_allclose(session.run(None, {"features": x})[0], ref("serving_default.b1.out.logits.npy"),
                               atol=1e-5)
    assert float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0
    model = native.load(str(FIXTURE / "saved_model"))
    np.testing.assert_allclose(model.run("serving_default", {"features": x})["logits"],
                               ref("serving_default.b1.out.logits.npy"), atol=1e-5)


def test_compare_mirrors_the_command_line():
    mlp = RUNFILES / "models/mlp_tensorflow"
    report = native.compare(mlp / "saved_model", mlp / "model.onnx")
    assert report and report.passed and report.first_divergence is None
    assert report.a.format == native.Format.tf_saved_model and report.b.format == native.Format.onnx
    assert report.a.model == "mlp_tensorflow" and report.b.manifest_path == str(mlp / "manifest.json")
    assert [(c.endpoint, c.batch) for c in report.cases] == [("serving_default", 1), ("serving_default", 7),
                                                             ("serving_default", 2)]
    assert "RESULT: SAME" in report.to_text() and json.loads(report.to_json())["passed"] is True
    report = native.compare(mlp, mlp, format_b="litert")
    assert report.passed and report.b.format == native.Format.litert
    # The fixture's serving_default has the MLP's signature, not its weights.
    different = native.compare(mlp / "model.onnx", FIXTURE / "model.onnx")
    assert not different and different.notes
    endpoint, batch, output = different.first_divergence
    assert (endpoint, batch, output.name) == ("serving_default", 1, "logits") and not output.passed
    with pytest.raises(ValueError, match="do not have the same signatures"):
        native.compare(FIXTURE / "saved_model", mlp / "saved_model")
    with pytest.raises(LookupError, match="has no torch_aoti artifact"):
        native.compare(mlp, mlp, format_b="torch_aoti")
