"""Unit tests of servekit's helpers (no export): fast, any backend."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from servekit import atomic, determinism, support_matrix, verification
from servekit import export_utils as eu


# -- support matrix -----------------------------------------------------------------


def test_render_markdown_table_and_notes():
    rows = [
        support_matrix.make_row("jax", "onnx", "cnn", "pass", 2.5e-7),
        support_matrix.make_row("tensorflow", "tf_saved_model", "cnn", "pass", 0.0),
        support_matrix.make_row("torch", "onnx", "text", "unsupported", None, "layer 'x' cannot be exported"),
        support_matrix.make_row("jax", "tf_saved_model", "text", "fail", None, "max abs diff 0.5"),
    ]
    text = support_matrix.render_markdown(json.loads(json.dumps(rows)))
    lines = text.splitlines()
    assert lines[0] == ("| model | tensorflow → tf_saved_model | tensorflow → onnx | jax → tf_saved_model | "
                        "jax → onnx | torch → tf_saved_model | torch → onnx |")
    assert lines[2] == "| cnn | ✅ 0e+00 | · | · | ✅ 2e-07 | · | · |"
    assert lines[3] == "| text | · | · | ❌ | · | · | ➖ |"
    assert "2 pass, 1 fail, 1 unsupported." in text
    assert "- text, torch → onnx (unsupported): layer 'x' cannot be exported" in text
    assert "- text, jax → tf_saved_model (fail): max abs diff 0.5" in text
    assert support_matrix.render_markdown([]) == "_No results._\n"
    with pytest.raises(ValueError):
        support_matrix.make_row("jax", "onnx", "cnn", "maybe")


# -- atomic writes ------------------------------------------------------------------


def test_commit_replaces_directory_and_file(tmp_path):
    target = tmp_path / "art"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic.staged_write(str(target)) as staged:
        os.makedirs(staged)
        with open(os.path.join(staged, "new"), "w") as f:
            f.write("new")
        atomic.commit(staged, str(target))
    assert sorted(os.listdir(target)) == ["new"]
    assert [n for n in os.listdir(tmp_path) if ".servekit-" in n] == []
    target_file = tmp_path / "m.onnx"
    target_file.write_bytes(b"old")
    with atomic.staged_write(str(target_file)) as staged:
        with open(staged, "wb") as f:
            f.write(b"new")
        atomic.commit(staged, str(target_file))
    assert target_file.read_bytes() == b"new"


def test_staged_write_cleans_up_on_error(tmp_path):
    target = tmp_path / "kept"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.staged_write(str(target)) as staged:
            os.makedirs(staged)
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["kept"] and (target / "old").read_text() == "old"


# -- determinism helpers ------------------------------------------------------------


def test_canonical_function_names_ignore_counter_offsets():
    a = determinism.canonical_function_names(
        ["__inference_serve_71", "__inference_serve_126", "__inference_signature_wrapper_109", "plain"])
    b = determinism.canonical_function_names(
        ["__inference_serve_1071", "__inference_serve_2126", "__inference_signature_wrapper_5", "plain"])
    assert a == {"__inference_serve_71": "__inference_serve_0", "__inference_serve_126": "__inference_serve_1",
                 "__inference_signature_wrapper_109": "__inference_signature_wrapper_0"}
    assert sorted(a.values()) == sorted(b.values())


def test_canonicalize_onnx_strips_docs_and_sorts_tables():
    import onnx
    from onnx import helper

    node = helper.make_node("CategoryMapper", ["x"], ["y__17"], name="lookup__17", domain="ai.onnx.ml",
                            cats_strings=["b", "a"], cats_int64s=[2, 1], default_int64=0)
    node.doc_string = "/home/someone/model.py:12"
    out = helper.make_node("Identity", ["y__17"], ["y"], name="id__3")
    graph = helper.make_graph([node, out], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.STRING, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, [1])])
    graph.doc_string = "converted from /tmp/secret"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)])
    model.doc_string = "x"
    helper.set_model_props(model, {"path": "/tmp/secret"})
    determinism.canonicalize_onnx(model, "0.1.0")
    data = model.SerializeToString()
    assert b"/tmp/secret" not in data and b"/home/someone" not in data
    attrs = {a.name: a for a in model.graph.node[0].attribute}
    assert list(attrs["cats_strings"].strings) == [b"a", b"b"] and list(attrs["cats_int64s"].ints) == [1, 2]
    assert model.graph.node[0].name == "lookup__0" and model.graph.node[1].input[0] == "y__0"
    assert model.producer_name == "servekit"


# -- verification ----------------------------------------------------------------------


def test_compare_outputs_tolerances():
    e = {"f": np.zeros((2, 2), "float32"), "i": np.array([1, 2]), "s": np.array([b"a", b"b"], dtype=object)}
    ok = verification.compare_outputs(e, {"f": e["f"] + 9e-6, "i": np.array([1, 2]), "s": np.array(["a", "b"])})
    assert ok.ok and ok.max_abs_err == pytest.approx(9e-6, rel=1e-3)
    bad = verification.compare_outputs(e, {"f": e["f"] + 2e-5, "i": np.array([1, 3]), "s": np.array(["a", "c"])})
    assert not bad.ok and len(bad.problems) == 3
    shapes = verification.compare_outputs(e, {"f": np.zeros((3, 2), "float32"), "i": e["i"], "s": e["s"]})
    assert "shape" in shapes.problems[0]
    names = verification.compare_outputs({"a": np.zeros(1)}, {"b": np.zeros(1)})
    assert "output names differ" in names.problems[0]
    random_ok = verification.compare_outputs(e, {"f": e["f"] + 1.0, "i": e["i"], "s": e["s"]}, values=False)
    assert random_ok.ok


# -- names ---------------------------------------------------------------------------------


def test_names_are_sanitized_and_unique():
    assert eu.unique_names(["a b", "a_b", "a b", "0x", ""]) == ["a_b", "a_b_1", "a_b_2", "0x", "t"]
    assert eu.sanitize_name("in/put:0") == "in_put_0"
