"""servekit.bench.export_speed, the servekit-vs-Keras export-time benchmark.

One real run on the smallest cell (mlp, TensorFlow backend, ONNX, one repeat, cold,
warm and script): the report's shape, that every ratio is the quotient of the reported
medians, and that the script's servekit exports shared one worker process. Speed itself is measured by `bazel run //python/servekit/bench:export_speed`,
never asserted here.
"""

import argparse
import json
import os
import pathlib
import types

import numpy as np
import pytest

from servekit.bench import export_speed

RUNFILES = pathlib.Path(os.environ.get("TEST_SRCDIR", ".")) / os.environ.get("TEST_WORKSPACE", "servekit")
MODELS_DIR = RUNFILES / "models"


@pytest.fixture(scope="module")
def report():
    return export_speed.run_benchmark(models=["mlp"], backends=["tensorflow"], formats=["onnx"], repeats=1,
                                      models_dir=MODELS_DIR)


def test_one_cell_with_every_measure(report):
    assert [(c["model"], c["backend"], c["format"]) for c in report["cells"]] == [("mlp", "tensorflow", "onnx")]
    cell = report["cells"][0]
    for library in ("servekit", "keras"):
        side = cell[library]
        assert side["status"] == "ok", side
        for measure in ("cold_wall_s", "cold_export_s", "cold_import_s", "warm_export_s"):
            assert len(side[measure]) == 1 and side[measure][0] > 0
            assert side[f"median_{measure}"] == side[measure][0]
        # The process' wall time includes the export call and the imports it timed.
        assert side["cold_wall_s"][0] > side["cold_export_s"][0] + side["cold_import_s"][0]
        assert side["warm_first_s"] > 0
    assert len(cell["servekit_no_verify"]["warm_export_s"]) == 1
    # The script: a first export, then one more (repeats=1), for each library.
    for library in ("servekit", "keras"):
        assert cell[library]["script_first_s"] > 0 and len(cell[library]["script_export_s"]) == 1
    assert report["scripts"]["tensorflow"]["status"] == "ok"
    assert report["scripts"]["tensorflow"]["worker_processes"] == 1  # paid the worker's start once
    # Keras's artifact was run and compared with the model (untimed).
    assert cell["keras"]["artifact_check"] == "ok"
    assert report["settings"]["repeats"] == 1 and report["machine"]["cores"] >= 1
    assert report["versions"]["keras"] and report["versions"]["tensorflow"]
    assert len(report["machine"]["load_average_start"]) == 3


def test_ratios_are_quotients_of_the_reported_medians(report):
    cell = report["cells"][0]
    for measure, _ in export_speed.MEASURES:
        assert cell["ratios"][measure] == pytest.approx(
            cell["servekit"][f"median_{measure}"] / cell["keras"][f"median_{measure}"])
        summary = report["summary"][measure]
        assert summary["cells"] == 1 and summary["median_ratio"] == pytest.approx(cell["ratios"][measure])
        for key, value in (("backend", "tensorflow"), ("model", "mlp"), ("format", "onnx")):
            assert summary[f"by_{key}"][value]["median_ratio"] == pytest.approx(cell["ratios"][measure])
    assert cell["verification_share"] == pytest.approx(
        1 - cell["servekit_no_verify"]["median_warm_export_s"] / cell["servekit"]["median_warm_export_s"])


def test_report_files(report, tmp_path):
    export_speed.write_report(report, tmp_path)
    assert json.loads((tmp_path / "export_speed.json").read_text())["cells"][0]["model"] == "mlp"
    table = (tmp_path / "export_speed.md").read_text()
    assert "| mlp | tensorflow | onnx |" in table and "Median verification share" in table
    assert (tmp_path / "export_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_script_section_is_written_into_the_readme_between_its_markers(report, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{export_speed.README_BEGIN}\nold table\n{export_speed.README_END}\nafter\n")
    export_speed.update_readme(report, readme)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Title\n\nbefore\n") and text.endswith("after\n")
    section = text.split(export_speed.README_BEGIN)[1].split(export_speed.README_END)[0]
    ratio = report["cells"][0]["ratios"]["script_export_s"]
    assert f"| mlp | tensorflow | ONNX |" in section and f"{ratio:.2f}×" in section
    assert f"{report['machine']['cores']} cores" in section and "Worker processes" in section
    export_speed.update_readme(report, readme)  # rewriting it again changes nothing
    assert readme.read_text() == text
    (tmp_path / "OTHER.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="has no <!-- export-speed-script:begin -->"):
        export_speed.update_readme(report, tmp_path / "OTHER.md")


def test_a_strategy_has_its_own_readme_section(report, tmp_path):
    in_process = {**report, "settings": {**report["settings"], "strategy": "in_process"}}
    begin, end = export_speed.readme_markers("in_process")
    readme = tmp_path / "README.md"
    readme.write_text(f"{export_speed.README_BEGIN}\nauto table\n{export_speed.README_END}\n{begin}\nold\n{end}\n")
    export_speed.update_readme(in_process, readme)
    text = readme.read_text()
    assert "auto table" in text and "old" not in text  # the default section is left as it was
    assert "servekit called with strategy='in_process'" in text.split(begin)[1].split(end)[0]


def test_errors_in_table_cells_lose_backquotes_and_pipes():
    short = export_speed.short("UserError: mismatch between `inputs` and `dynamic_shapes` | more\n" + "x" * 200)
    assert "`" not in short and "|" not in short and "\n" not in short
    assert short.startswith("UserError: mismatch between 'inputs' and 'dynamic_shapes' / more") and len(short) == 100


def test_the_command_line_leaves_out_this_machines_paths():
    assert export_speed._command(["--modes", "script", "--out_dir", "/tmp/x", "--models_dir=/home/me/models",
                                  "--readme", "README.md"]) == (
        "bazel run //python/servekit/bench:export_speed -- --modes script --readme README.md")
    assert export_speed._command([*export_speed.SCRIPT_TARGET_ARGS, "--repeats", "5"]) == (
        "bazel run //python/servekit/bench:export_speed_script -- --repeats 5")
    assert export_speed._command(list(export_speed.SCRIPT_TARGET_ARGS)) == (
        "bazel run //python/servekit/bench:export_speed_script")


def test_a_cell_keras_cannot_export_is_reported_not_dropped():
    # What the driver records for torch -> SavedModel (Keras needs torch_xla there).
    sides = {name: export_speed._new_side() for name in ("servekit", "keras", "servekit_no_verify")}
    sides["servekit"]["cold_wall_s"] = [4.0, 6.0]
    export_speed._record_failure(sides["keras"], {"status": "unsupported", "error_type": "ImportError",
                                                  "error": "ImportError: torch_xla is required"})
    cell = export_speed.summarize_cell("mlp", "torch", "tf_saved_model", sides)
    assert cell["servekit"]["median_cold_wall_s"] == 5.0 and cell["ratios"] == {}
    report = {"date": "2026-11-30", "settings": {"repeats": 2},
              "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 1, "load_average_start": None,
                          "load_average_end": None},
              "versions": {"keras": "3"}, "cells": [cell], "summary": export_speed.summarize([cell])}
    assert report["summary"]["keras_unsupported"] == ["mlp/torch/tf_saved_model"]
    table = export_speed.render_table(report)
    assert "keras: unsupported (ImportError: torch_xla is required)" in table
    assert "Keras could not export: mlp/torch/tf_saved_model." in table


def test_a_keras_artifact_that_does_not_run_is_marked():
    # What the driver records for JAX -> ONNX of the zoo CNN (onnxruntime refuses its MaxPool).
    sides = {name: export_speed._new_side() for name in ("servekit", "keras", "servekit_no_verify")}
    for side in sides.values():
        side["warm_export_s"] = [2.0]
    sides["keras"]["warm_export_s"] = [0.5]
    sides["keras"]["artifact_check"] = "fails: InvalidArgument: Unsupported pooling size."
    cell = export_speed.summarize_cell("cnn", "jax", "onnx", sides)
    assert cell["ratios"] == {"warm_export_s": 4.0}  # still timed, and the ratio still shown...
    summary = export_speed.summarize([cell])
    assert summary["keras_artifact_not_ok"] == ["cnn/jax/onnx: fails: InvalidArgument: Unsupported pooling size."]
    report = {"date": "2026-11-30", "settings": {"repeats": 1},
              "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 1, "load_average_start": None,
                          "load_average_end": None},
              "versions": {"keras": "3"}, "cells": [cell], "summary": summary}
    table = export_speed.render_table(report)  # ...with the broken artifact named next to it
    assert "keras's artifact: fails: InvalidArgument: Unsupported pooling size." in table


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"Unknown backend\(s\) \['tensorflw'\]"):
        export_speed.run_benchmark(backends=["tensorflw"], models_dir=MODELS_DIR)
    with pytest.raises(ValueError, match="No model file"):
        export_speed.run_benchmark(models=["no_such_model"], models_dir=MODELS_DIR)


def test_tolerances_are_given_per_model_as_the_build_tool_takes_them():
    parsed = [export_speed._parse_tolerance(t) for t in ("mobilenet_v2:float32=1e-5,1e-4", "vit:float16=1e-2")]
    assert export_speed._tolerances_by_model(parsed) == {"mobilenet_v2": {"float32": (1e-5, 1e-4)},
                                                         "vit": {"float16": (1e-2, 0.0)}}
    with pytest.raises(argparse.ArgumentTypeError, match="MODEL:DTYPE=ATOL"):
        export_speed._parse_tolerance("float32=1e-5")
    with pytest.raises(argparse.ArgumentTypeError, match="MODEL:DTYPE=ATOL"):
        export_speed._parse_tolerance("vit:float16")


def test_integer_inputs_are_valid_ids_and_honour_input_ranges():
    import keras

    ids = keras.Input((6,), dtype="int32", name="token_ids")
    mask = keras.Input((6,), dtype="int32", name="padding_mask")
    model = keras.Model({"token_ids": ids, "padding_mask": mask},
                        keras.layers.Embedding(2, 3)(ids) * keras.ops.expand_dims(mask, -1))
    module = types.SimpleNamespace(input_ranges=lambda: {"padding_mask": (1, 2)})
    inputs = export_speed._sample_inputs(module, model, batch=8)
    assert set(np.unique(inputs["token_ids"])) <= {0, 1}  # any embedding has 2 rows
    assert set(np.unique(inputs["padding_mask"])) == {1}
    model(inputs)


def test_a_model_that_fails_to_build_fails_its_own_cells_only(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def build_model():\n    raise RuntimeError('no weights file')\n")
    cells = export_speed._warm_cells([broken], ["onnx", "tf_saved_model"], repeats=1, tolerances={})
    assert [(c["model"], c["format"]) for c in cells] == [("broken", "onnx"), ("broken", "tf_saved_model")]
    for cell in cells:
        for entry in cell["variants"].values():
            assert entry["status"] == "failed" and "RuntimeError: no weights file" in entry["error"]
