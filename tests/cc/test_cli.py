"""servekit_verify, the native verifier's command line, on the fixture export."""

import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

RUNFILES = pathlib.Path(os.environ.get("TEST_SRCDIR", ".")) / os.environ.get("TEST_WORKSPACE", "servekit")
VERIFY = RUNFILES / "cc/cli/servekit_verify"
FIXTURE = RUNFILES / "tests/cc/fixture"
AOTI = RUNFILES / "tests/cc/aoti_fixture"


def verify(*args, cwd=None):
    """Runs servekit_verify; returns (exit status, stdout, stderr)."""
    p = subprocess.run([str(VERIFY), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def export_copy(tmp_path):
    """A writable copy of the fixture export."""
    dst = tmp_path / "export"
    shutil.copytree(FIXTURE, dst, symlinks=False)
    for path in dst.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    return dst


def test_help_and_usage():
    # Phrased so that CLI11 2.1 (Debian bookworm) and newer (sid, the Bazel 7 lane),
    # whose help layouts differ, both pass.
    code, out, err = verify("--help")
    assert code == 0 and "servekit_verify [OPTIONS] SUBCOMMAND" in out, out
    assert err == ""  # nothing from TensorFlow's libraries as they load
    for command in ("inspect", "validate", "compare", "run", "bench"):
        code, out, err = verify(command, "--help")
        assert code == 0, command
        assert f"servekit_verify {command} [OPTIONS]" in out, out
        assert err == "", (command, err)
    # The help comes from the declarations: every option is there.
    _, out, _ = verify("inspect", "--help")
    assert "--tag" in out and "--manifest" in out and "--json" in out
    _, out, _ = verify("bench", "--help")
    assert "--iterations" in out and "Excludes: --seconds" in out, out
    code, _, err = verify()
    assert code == 2 and "A subcommand is required" in err
    code, _, err = verify("frobnicate")
    assert code == 2 and "unknown command 'frobnicate'" in err
    code, _, err = verify("inspect", FIXTURE / "model.onnx", "--bogus")
    assert code == 2 and "The following argument was not expected: --bogus" in err
    assert err.startswith("servekit_verify inspect:"), err


def test_tensorflow_logs_only_with_verbose():
    code, out, err = verify("validate", "--manifest", FIXTURE / "manifest.json", "--format", "tf_saved_model")
    assert code == 0, out + err
    assert err == ""
    code, out, err = verify("--verbose", "validate", "--manifest", FIXTURE / "manifest.json",
                            "--format", "tf_saved_model")
    assert code == 0, out + err
    assert "Reading SavedModel from" in err  # TensorFlow's own loader log


def test_inspect_saved_model_table():
    code, out, err = verify("inspect", FIXTURE / "saved_model")
    assert code == 0, err
    assert "(tf_saved_model), 3 endpoints" in out
    assert "endpoint 'serving_default'  (tensorflow/serving/predict)" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["input", "features", "float32", "[?,3]", "serving_default_features:0"] in lines
    assert ["output", "upper", "string", "[?]", "PartitionedCall_1:2"] in lines


def test_inspect_onnx_json():
    code, out, err = verify("inspect", FIXTURE / "model.onnx", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "onnx"
    (endpoint,) = report["endpoints"]
    assert endpoint["inputs"] == [{"name": "features", "dtype": "float32", "shape": ["batch", 3]}]
    assert endpoint["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]


def test_inspect_errors():
    code, _, err = verify("inspect", "/nonexistent/model.onnx")
    assert code == 2 and "no model at /nonexistent/model.onnx" in err
    code, _, err = verify("inspect", FIXTURE / "reference")
    assert code == 2 and "is not a SavedModel: it has no saved_model.pb" in err


def test_validate_passes():
    code, out, err = verify("validate", "--manifest", FIXTURE / "manifest.json")
    assert code == 0, out + err
    assert "RESULT: PASS" in out
    assert "PASS tf_saved_model vs onnx serving_default b4 logits" in out
    assert "PASS onnx reference serving_default b1 logits" in out


def test_validate_one_format_json_to_stdout():
    code, out, err = verify("validate", "--manifest", FIXTURE / "manifest.json", "--format", "onnx", "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] is True
    assert [a["format"] for a in report["artifacts"]] == ["onnx"]
    assert "RESULT: PASS" in err  # the text report moves to stderr


def test_validate_wrong_manifest_is_exit_1_with_precise_messages(export_copy, tmp_path):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    manifest["endpoints"][0]["outputs"][0]["dtype"] = "float64"
    manifest["endpoints"][0]["inputs"][0]["shape"] = ["batch", 4]
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = verify("validate", "--manifest", export_copy / "manifest.json", "--json", tmp_path / "r.json")
    assert code == 1, out + err
    assert "RESULT: FAIL" in out
    assert ("  - tf_saved_model: endpoint 'serving_default' output 'logits': dtype expected float64, found float32"
            in out.splitlines())
    assert "  - onnx: endpoint 'serving_default' input 'features': dim 1 expected 4, found 3" in out.splitlines()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is False
    assert any("dtype expected float64, found float32" in f for f in report["failures"])


def test_validate_tampered_reference_is_exit_1(export_copy):
    ref = export_copy / "reference/serving_default.b4.out.logits.npy"
    logits = np.load(ref)
    logits[3, 1] += 0.5
    np.save(ref, logits)
    code, out, err = verify("validate", "--manifest", export_copy / "manifest.json", "--no-cross")
    assert code == 1, out + err
    assert "FAIL tf_saved_model reference serving_default b4 logits max_abs=0.5" in out
    assert "1 of 8 elements differ beyond tolerance; first: element [3,1]" in out
    assert "first diverging output: tf_saved_model reference serving_default b4 output 'logits' max_abs=0.5" in out


def test_validate_broken_artifact_is_exit_2(export_copy):
    (export_copy / "model.onnx").write_bytes(b"\x08\x07garbage")
    code, out, err = verify("validate", "--manifest", export_copy / "manifest.json")
    assert code == 2, out + err
    assert "onnx: load failed: " in out
    assert "artifact 'onnx' file 'model.onnx': sha256 expected" in out


def test_validate_usage_errors():
    code, _, err = verify("validate")
    assert code == 2 and "--manifest is required" in err
    code, _, err = verify("validate", "--manifest", "/nonexistent/manifest.json")
    assert code == 2 and "no such file: /nonexistent/manifest.json" in err
    code, _, err = verify("validate", "--manifest", FIXTURE / "manifest.json", "--format", "tflite")
    assert code == 2 and "--format: tflite not in {tf_saved_model,onnx,openvino,litert,torch,torch_aoti}" in err


def test_inspect_openvino_json():
    code, out, err = verify("inspect", FIXTURE / "formats/model.xml", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "openvino"
    (endpoint,) = report["endpoints"]
    assert endpoint["inputs"] == [{"name": "features", "dtype": "float32", "shape": [None, 3]}]
    assert endpoint["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [None, 2]}]


def test_validate_openvino():
    code, out, err = verify("validate", "--manifest", FIXTURE / "formats/manifest.json", "--format", "openvino")
    assert code == 0, out + err
    assert "openvino: " in out and "digests: OK" in out and "signatures: OK" in out
    assert "PASS openvino reference serving_default b4 logits" in out
    assert "RESULT: PASS" in out


def test_litert_inspect_validate_run_bench(tmp_path):
    code, out, err = verify("inspect", FIXTURE / "formats/model.tflite", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "litert"
    (endpoint,) = report["endpoints"]
    assert endpoint["inputs"] == [{"name": "features", "dtype": "float32", "shape": [None, 3]}]
    assert endpoint["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [None, 2]}]
    # Both formats of formats/, and each against the first (OpenVINO vs LiteRT).
    code, out, err = verify("validate", "--manifest", FIXTURE / "formats/manifest.json")
    assert code == 0, out + err
    assert "PASS litert reference serving_default b4 logits" in out
    assert "PASS openvino vs litert serving_default b4 logits" in out
    assert "RESULT: PASS" in out
    code, out, err = verify("run", FIXTURE / "formats/model.tflite", "--input",
                            f"features={FIXTURE / 'reference/serving_default.b4.in.features.npy'}",
                            "--output-dir", tmp_path / "out")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "out/logits.npy"),
                               np.load(FIXTURE / "reference/serving_default.b4.out.logits.npy"), atol=1e-5)
    code, out, err = verify("bench", FIXTURE / "formats/model.tflite", "--batches", "1,3", "--iterations", "10",
                            "--json", tmp_path / "b.json")
    assert code == 0, err
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["format"] == "litert" and [b["batch"] for b in report["batches"]] == [1, 3]


def test_torch_aoti_inspect_validate_run(tmp_path):
    # The package carries no signature: inspect and run read it from manifest.json beside it.
    code, out, err = verify("inspect", AOTI / "model_aoti.pt2", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "torch_aoti"
    assert report["endpoints"][0]["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]
    code, out, err = verify("validate", "--manifest", AOTI / "manifest.json")
    assert code == 0, out + err
    assert "PASS torch_aoti reference serving_default b4 logits" in out and "RESULT: PASS" in out
    code, out, err = verify("run", AOTI / "model_aoti.pt2", "--input",
                            f"features={AOTI / 'reference/serving_default.b4.in.features.npy'}",
                            "--output-dir", tmp_path / "out")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "out/logits.npy"),
                               np.load(AOTI / "reference/serving_default.b4.out.logits.npy"), atol=1e-5)
    lonely = tmp_path / "model_aoti.pt2"
    shutil.copyfile(AOTI / "model_aoti.pt2", lonely)
    code, out, err = verify("inspect", lonely)
    assert code == 2 and "an AOTInductor package carries no signature" in err, err


def test_libtorch_is_a_plugin_loaded_on_demand(tmp_path):
    # servekit_verify does not link libtorch: a copy of it with no plugin beside it runs
    # every other format, and an AOTInductor package gets a clear error naming the file.
    alone = tmp_path / "servekit_verify"
    shutil.copyfile(VERIFY, alone)
    alone.chmod(0o755)
    assert "libtorch" not in subprocess.run(["ldd", str(alone)], capture_output=True, text=True).stdout
    p = subprocess.run([str(alone), "inspect", FIXTURE / "model.onnx"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([str(alone), "inspect", AOTI / "model_aoti.pt2"], capture_output=True, text=True)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "AOTInductor packages run through servekit's libtorch plugin, libservekit_torch_aoti.so" in p.stderr
    assert f"looked for {tmp_path / 'libservekit_torch_aoti.so'}" in p.stderr, p.stderr
    assert "SERVEKIT_TORCH_AOTI_PLUGIN" in p.stderr
    # The variable names the plugin's file, wherever it is (and only that file).
    plugin = VERIFY.parent / "libservekit_torch_aoti.so"
    p = subprocess.run([str(alone), "inspect", AOTI / "model_aoti.pt2"], capture_output=True, text=True,
                       env={**os.environ, "SERVEKIT_TORCH_AOTI_PLUGIN": str(plugin)})
    assert p.returncode == 0, p.stderr
    assert "torch_aoti" in p.stdout
    p = subprocess.run([str(alone), "inspect", AOTI / "model_aoti.pt2"], capture_output=True, text=True,
                       env={**os.environ, "SERVEKIT_TORCH_AOTI_PLUGIN": str(tmp_path / "nope.so")})
    assert p.returncode == 2 and f"looked for {tmp_path / 'nope.so'})" in p.stderr, p.stderr
    # A file that is not the plugin: dlopen's own error, or no entry point.
    (tmp_path / "bogus.so").write_bytes(b"not an ELF file")
    p = subprocess.run([str(alone), "inspect", AOTI / "model_aoti.pt2"], capture_output=True, text=True,
                       env={**os.environ, "SERVEKIT_TORCH_AOTI_PLUGIN": str(tmp_path / "bogus.so")})
    assert p.returncode == 2 and "plugin " + str(tmp_path / "bogus.so") + " could not be opened" in p.stderr


def test_validate_litert_truncated_is_exit_2(export_copy):
    tflite = export_copy / "formats/model.tflite"
    tflite.write_bytes(tflite.read_bytes()[:500])
    code, out, err = verify("validate", "--manifest", export_copy / "formats/manifest.json", "--format", "litert")
    assert code == 2, out + err
    assert "artifact 'litert' file 'model.tflite': sha256 expected" in out
    assert "litert: load failed: LiteRT could not read " in out


def test_validate_openvino_missing_bin_is_exit_2(export_copy):
    (export_copy / "formats/model.bin").unlink()
    code, out, err = verify("validate", "--manifest", export_copy / "formats/manifest.json", "--format", "openvino")
    assert code == 2, out + err
    assert "artifact 'openvino' file 'model.bin': missing" in out
    assert "openvino: load failed: OpenVINO IR " in out and "has no weights file" in out


def test_validate_openvino_truncated_bin_is_exit_2(export_copy):
    (export_copy / "formats/model.bin").write_bytes((FIXTURE / "formats/model.bin").read_bytes()[:8])
    code, out, err = verify("validate", "--manifest", export_copy / "formats/manifest.json", "--format", "openvino")
    assert code == 2, out + err
    assert "artifact 'openvino' file 'model.bin': sha256 expected" in out
    assert "openvino: load failed: OpenVINO could not read the IR" in out


def test_validate_torch_program_is_skipped_with_a_note(export_copy):
    # A torch ExportedProgram has no native runtime: its digests are checked and the
    # report says why it was not loaded.
    import hashlib

    pt2 = export_copy / "formats/model.pt2"
    pt2.write_bytes(b"PK\x03\x04 a torch ExportedProgram archive")
    manifest = json.loads((export_copy / "formats/manifest.json").read_text())
    manifest["artifacts"].append({"format": "torch", "path": "model.pt2",
                                  "files": {"model.pt2": "sha256:" + hashlib.sha256(pt2.read_bytes()).hexdigest()}})
    manifest["endpoints"][0]["formats"].append("torch")
    (export_copy / "formats/manifest.json").write_text(json.dumps(manifest))
    code, out, err = verify("validate", "--manifest", export_copy / "formats/manifest.json", "--format", "torch",
                            "--json", "-")
    assert code == 0, out + err
    assert ("  load: SKIPPED (no native runtime for torch ExportedProgram: verified in Python at export)"
            in err.splitlines())
    report = json.loads(out)
    (artifact,) = report["artifacts"]
    assert artifact["skipped"].startswith("no native runtime for torch ExportedProgram")
    assert artifact["passed"] is True and artifact["digest_errors"] == []
    pt2.write_bytes(b"changed")
    code, out, err = verify("validate", "--manifest", export_copy / "formats/manifest.json", "--format", "torch")
    assert code == 1 and "artifact 'torch' file 'model.pt2': sha256 expected" in out, out + err


def test_bench_openvino_with_bare_loop(tmp_path):
    code, out, err = verify("bench", FIXTURE / "formats/model.xml", "--batches", "1,4", "--iterations", "20",
                            "--warmup", "2", "--threads", "1", "--bare-ort", "--json", tmp_path / "b.json")
    assert code == 0, err
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["format"] == "openvino"
    for b in report["batches"]:
        assert b["runner"]["iterations"] == 20 and b["bare_ort"]["iterations"] == 20
        assert b["overhead_ratio_p50"] > 0
    code, out, err = verify("run", FIXTURE / "formats/model.xml", "--input",
                            f"features={FIXTURE / 'reference/serving_default.b4.in.features.npy'}",
                            "--output-dir", tmp_path / "out")
    assert code == 0, err
    expected = np.load(FIXTURE / "reference/serving_default.b4.out.logits.npy")
    np.testing.assert_allclose(np.load(tmp_path / "out/logits.npy"), expected, atol=1e-5)
    code, out, err = verify("bench", FIXTURE / "formats/model.xml", "--openvino-precision", "fp8")
    assert code == 2 and "--openvino-precision: fp8 not in {f32,bf16}" in err, err


def test_validate_stochastic_and_stateful_export():
    code, out, err = verify("validate", "--manifest", FIXTURE / "random/manifest.json", "--json", "-")
    assert code == 0, out + err
    assert "  serving_default  tf_saved_model,onnx  stochastic (noisy)" in err.splitlines()
    assert "  counter          tf_saved_model       stateful" in err.splitlines()
    assert "  PASS onnx stays random serving_default b2: 'noisy' changed between two runs" in err.splitlines()
    assert ("  N/A  tf_saved_model vs onnx serving_default b2 noisy: not comparable (stochastic output)"
            in err.splitlines())
    report = json.loads(out)
    assert [(e["name"], e["stochastic"], e["stateful"]) for e in report["endpoints"]] == [
        ("serving_default", True, False), ("counter", False, True)]


def test_inspect_with_manifest_marks_endpoints():
    code, out, err = verify("inspect", FIXTURE / "random/saved_model", "--manifest", FIXTURE / "random/manifest.json")
    assert code == 0, err
    assert "endpoint 'counter'  (tensorflow/serving/predict)  stateful" in out
    assert "endpoint 'serving_default'  (tensorflow/serving/predict)  stochastic" in out
    code, out, err = verify("inspect", FIXTURE / "random/model.onnx", "--manifest", FIXTURE / "random/manifest.json",
                            "--json")
    assert code == 0, err
    (endpoint,) = json.loads(out)["endpoints"]
    assert endpoint["stochastic"] is True and endpoint["stateful"] is False
    assert [(o["name"], o["stochastic"]) for o in endpoint["outputs"]] == [("noisy", True), ("doubled", False)]


def test_run_writes_outputs(tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = verify("run", FIXTURE / "saved_model", "--endpoint", "tokens",
                            "--input", f"words={FIXTURE / 'reference/tokens.b3.in.words.npy'}",
                            "--input", f"ids={FIXTURE / 'reference/tokens.b3.in.ids.npy'}",
                            "--output-dir", out_dir)
    assert code == 0, err
    for name in ("lengths", "total", "upper"):
        np.testing.assert_array_equal(np.load(out_dir / f"{name}.npy"),
                                      np.load(FIXTURE / f"reference/tokens.b3.out.{name}.npy"))
    code, out, err = verify("run", FIXTURE / "model.onnx",
                            "--input", f"features={FIXTURE / 'reference/serving_default.b4.in.features.npy'}",
                            "--output-dir", out_dir)
    assert code == 0, err
    np.testing.assert_allclose(np.load(out_dir / "logits.npy"),
                               np.load(FIXTURE / "reference/serving_default.b4.out.logits.npy"), atol=1e-5)


def test_run_errors(tmp_path):
    ids = FIXTURE / "reference/tokens.b3.in.ids.npy"
    code, _, err = verify("run", FIXTURE / "model.onnx", "--input", f"features={ids}", "--output-dir", tmp_path)
    assert code == 2
    assert "endpoint 'serving_default' input 'features': expected float32[batch,3], got int64[3,4]" in err
    code, _, err = verify("run", FIXTURE / "model.onnx", "--input", "features", "--output-dir", tmp_path)
    assert code == 2 and "--input: must be NAME=FILE.npy, not 'features'" in err
    code, _, err = verify("run", FIXTURE / "model.onnx", "--output-dir", tmp_path)
    assert code == 2 and "input 'features' (float32[batch,3]) is not fed" in err
    code, _, err = verify("run", FIXTURE / "model.onnx", "--input", f"features={tmp_path}/missing.npy",
                          "--output-dir", tmp_path)
    assert code == 2 and "no such file" in err


def test_bench_json(tmp_path):
    code, out, err = verify("bench", FIXTURE / "model.onnx", "--batches", "1,4", "--iterations", "30",
                            "--warmup", "2", "--threads", "1", "--bare-ort", "--json", tmp_path / "b.json")
    assert code == 0, err
    assert "bare_p50" in out
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["format"] == "onnx" and report["threads"]["intra_op"] == 1
    assert [b["batch"] for b in report["batches"]] == [1, 4]
    for b in report["batches"]:
        assert b["runner"]["iterations"] == 30
        assert b["runner"]["p50_us"] <= b["runner"]["p99_us"] <= b["runner"]["max_us"]
        assert b["overhead_ratio_p50"] > 0
    assert report["machine"]["logical_cores"] >= 1


def test_bench_saved_model_with_sample_inputs():
    code, out, err = verify("bench", FIXTURE / "saved_model", "--endpoint", "tokens", "--seconds", "0.2",
                            "--batches", "2", "--input", f"words={FIXTURE / 'reference/tokens.b3.in.words.npy'}",
                            "--input", f"ids={FIXTURE / 'reference/tokens.b3.in.ids.npy'}")
    assert code == 0, err
    assert "sample inputs" in out


def test_bench_usage_errors():
    model = FIXTURE / "model.onnx"
    for args, message in [
        (("--batches", "1,x"), "--batches: must be a number > 0, not 'x'"),
        (("--batches", "1,0"), "--batches: must be a number > 0, not '0'"),
        (("--iterations", "5", "--seconds", "1"), "--iterations excludes --seconds"),
        (("--iterations", "0"), "--iterations: must be a number > 0, not '0'"),
        (("--iterations", "1.5"), "Could not convert: --iterations = 1.5"),
        (("--threads", "two"), "--threads: must be a number >= 0, not 'two'"),
        (("--threads", "-1"), "--threads: must be a number >= 0, not '-1'"),
        (("--inter-threads", "-2"), "--inter-threads: must be a number >= -1, not '-2'"),
        (("--device", "tpu"), "--device: tpu not in {cpu,gpu}"),
    ]:
        code, _, err = verify("bench", model, *args)
        assert code == 2, args
        assert message in err, (args, err)
    code, _, err = verify("bench", FIXTURE / "saved_model", "--bare-ort", "--iterations", "2")
    assert code == 2 and "the bare runtime loop needs an ONNX, OpenVINO, LiteRT or AOTInductor model" in err


def test_gpu_validates_where_the_runtime_has_one_else_a_clear_error():
    code, out, err = verify("validate", "--manifest", FIXTURE / "manifest.json", "--format", "onnx", "--device", "gpu")
    if code == 0:
        assert "RESULT: PASS" in out
    else:
        assert code == 2 and "onnx: load failed: device 'gpu' requested" in out, (code, out, err)


# ---- compare: two artifacts of one model --------------------------------------------

MLP = RUNFILES / "models/mlp_tensorflow"  # the zoo's MLP: SavedModel, ONNX, OpenVINO, LiteRT, torch


def _float32_atols(export_dir: pathlib.Path, atol: float) -> list[float]:
    """The atol the verifier uses on each reference output of an export, case by case:
    `atol`, or float32's 1e-5 per unit of an output's scale above that (docs/manifest.md)."""
    manifest = json.loads((export_dir / "manifest.json").read_text())
    return [max(atol, 1e-5 * float(np.abs(np.load(export_dir / path)).max()))
            for case in manifest["reference"] for path in case["outputs"].values()]


def test_compare_saved_model_with_onnx(tmp_path):
    code, out, err = verify("compare", MLP / "saved_model", MLP / "model.onnx", "--json", tmp_path / "c.json")
    assert code == 0, out + err
    assert err == ""
    assert f"A: {MLP / 'saved_model'} (tf_saved_model, model 'mlp_tensorflow', from tensorflow)" in out, out
    assert f"B: {MLP / 'model.onnx'} (onnx, model 'mlp_tensorflow', from tensorflow)" in out
    assert "tolerance: the looser of both manifests" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["case", "output", "max_abs", "max_rel", "atol", "rtol", "result"] in rows
    assert [r[:3] for r in rows if r[-1:] == ["PASS"]] == [["serving_default", "b1", "logits"],
                                                           ["serving_default", "b7", "logits"],
                                                           ["serving_default", "b2", "logits"]]
    assert "RESULT: SAME (every output of 3 cases within tolerance)" in out
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["passed"] is True and report["first_divergence"] is None
    assert report["a"]["format"] == "tf_saved_model" and report["b"]["format"] == "onnx"
    assert report["a"]["manifest"] == report["b"]["manifest"] == str(MLP / "manifest.json")
    assert [(c["endpoint"], c["batch"]) for c in report["cases"]] == [("serving_default", 1), ("serving_default", 7),
                                                                       ("serving_default", 2)]
    assert report["cases"][0]["outputs"][0]["atol"] == pytest.approx(_float32_atols(MLP, 1e-5)[0])


def test_compare_exports_and_every_native_format():
    # An export directory (or its manifest) stands for its first artifact, or --format-a/-b.
    code, out, err = verify("compare", MLP, MLP / "manifest.json", "--format-b", "litert")
    assert code == 0, out + err
    assert "(tf_saved_model, model 'mlp_tensorflow'" in out and "model.tflite (litert" in out
    code, out, err = verify("compare", MLP / "model.xml", MLP / "model.onnx", "--json", "-")
    assert code == 0, out + err
    report = json.loads(out)  # JSON on standard output, the table on standard error
    assert report["passed"] and report["a"]["format"] == "openvino" and "RESULT: SAME" in err
    code, out, err = verify("compare", MLP / "model.onnx", MLP, "--endpoint", "serving_default")
    assert code == 0, out + err
    assert "B: " + str(MLP / "model.onnx") + " (onnx" in out  # B defaults to A's format


def test_compare_two_different_models_is_exit_1(export_copy, tmp_path):
    # The fixture's serving_default has the MLP's signature (features[batch,3] -> logits[batch,2]),
    # not its weights.
    code, out, err = verify("compare", MLP / "model.onnx", export_copy / "model.onnx", "--json", tmp_path / "c.json")
    assert code == 1, out + err
    assert "note: A is model 'mlp_tensorflow', B is model " in out
    assert "RESULT: DIFFERENT (first divergence: serving_default b1 output 'logits', max_abs=" in out
    assert "FAIL" in out and "elements differ beyond tolerance; first: element [0," in out
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["passed"] is False
    first = report["first_divergence"]
    assert first["endpoint"] == "serving_default" and first["batch"] == 1 and first["output"] == "logits"
    assert first["max_abs_error"] > 1e-3


def test_compare_tolerance_is_the_looser_manifest(export_copy):
    # A copy of the MLP export whose manifest allows a float32 rtol of 0.5: B's looser term wins.
    mlp = export_copy.parent / "mlp"
    shutil.copytree(MLP, mlp)
    for path in mlp.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    manifest = json.loads((mlp / "manifest.json").read_text())
    manifest["tolerances"]["float32"] = {"atol": 1e-6, "rtol": 0.5}
    (mlp / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = verify("compare", MLP / "model.onnx", mlp / "model.onnx", "--json", "-")
    assert code == 0, out + err
    outputs = [o for c in json.loads(out)["cases"] for o in c["outputs"]]
    assert outputs and all(o["rtol"] == 0.5 for o in outputs)
    assert [o["atol"] for o in outputs] == pytest.approx(_float32_atols(MLP, 1e-5))  # A's atol, the looser


def test_compare_refuses_what_it_cannot_compare(tmp_path):
    # B serving more endpoints than A's reference cases use is fine (then the values differ: exit 1).
    code, _, err = verify("compare", MLP / "saved_model", FIXTURE / "saved_model")
    assert code == 1, err
    # Signatures that differ: every difference named, exit 2.
    code, _, err = verify("compare", FIXTURE / "saved_model", MLP / "saved_model")
    assert code == 2 and "A and B do not have the same signatures" in err, err
    assert "  - endpoint 'tokens': only in A" in err.splitlines() and "  - endpoint 'divide': only in A" in err
    # An endpoint A's artifact does not serve is noted, not compared.
    code, out, err = verify("compare", FIXTURE / "model.onnx", MLP / "model.onnx")
    assert code == 1, out + err
    assert "note: endpoint 'tokens' has reference cases, but A (onnx) does not serve it: not compared" in out
    # A needs a manifest: its reference inputs are what both run on.
    lone = tmp_path / "lone.onnx"
    shutil.copy(MLP / "model.onnx", lone)
    code, _, err = verify("compare", lone, MLP / "model.onnx")
    assert code == 2 and "A: no manifest lists " in err, err
    # B without one is compared at A's tolerances, and says so.
    code, out, err = verify("compare", MLP / "model.onnx", lone)
    assert code == 0, out + err
    assert "note: no manifest lists B: A's tolerances apply" in out
    code, _, err = verify("compare", MLP, MLP, "--format-b", "torch_aoti")
    assert code == 2 and "has no torch_aoti artifact (it has tf_saved_model, onnx, openvino, litert, torch)" in err
    code, _, err = verify("compare", MLP, MLP, "--format-b", "torch")
    assert code == 2 and "no native runtime for torch ExportedProgram" in err
    code, _, err = verify("compare", MLP, MLP, "--endpoint", "nope")
    assert code == 2 and "has no reference case for endpoint 'nope'" in err
    code, _, err = verify("compare", MLP)
    assert code == 2 and "b is required" in err
