"""Unit tests of servekit's helpers (no export): fast, any backend."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types

import numpy as np
import pytest

from servekit import atomic, determinism, patching, support_matrix, verification
from servekit.source_model.input_layout import FlatSpec, InputLayout, resolve_input_layout
from servekit.source_model.names import endpoint_output_names, named_dims, sanitize_name, unique_names
from servekit.source_model.sample_inputs import (embedding_input_ranges, generate_inputs, input_ranges_for,
                                                 mask_input_ranges)


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


def _graph_with_a_while_condition(uid: int):
    """A loop the way a process that has used `uid` counter values writes it:
    freezing names the condition `<name>_frozen_<uid>`, and the condition's
    unused arguments carry the number of its traced function."""
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    cond = graph.library.function.add()
    cond.signature.name = f"__inference_rnn_while_cond_0_frozen_{uid}"
    for i in range(2):
        cond.signature.input_arg.add(name=f"rnn_while_cond_{uid + 5}___redundant_placeholder{i}")
    node = cond.node_def.add(name="less", op="Less")
    node.input.extend([f"rnn_while_cond_{uid + 5}___redundant_placeholder1", "limit"])
    loop = graph.node.add(name="while", op="StatelessWhile")
    loop.attr["cond"].func.name = cond.signature.name
    return graph


def test_while_loop_names_lose_their_process_counters():
    after, fresh = _graph_with_a_while_condition(2178), _graph_with_a_while_condition(163)
    for graph in (after, fresh):
        determinism.canonicalize_function_library(graph)
        determinism.canonicalize_counted_names(graph)
    assert after.SerializeToString(deterministic=True) == fresh.SerializeToString(deterministic=True)
    cond = fresh.library.function[0]
    assert fresh.node[0].attr["cond"].func.name == cond.signature.name == "__inference_rnn_while_cond_0_frozen_0"
    assert [a.name for a in cond.signature.input_arg] == ["rnn_while_cond_0___redundant_placeholder0",
                                                         "rnn_while_cond_0___redundant_placeholder1"]
    assert cond.node_def[0].input[0] == "rnn_while_cond_0___redundant_placeholder1"


def _graph_with_a_lookup_table(uid: int):
    """A StringLookup's table the way a process that has made `uid` ops writes it."""
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    table = graph.node.add(name="hash_table", op="HashTableV2")
    table.attr["shared_name"].s = str(uid + 2).encode()
    init = graph.library.function.add()
    init.signature.name = "__inference__initializer_0"
    init.signature.input_arg.add(name=f"key_value_init{uid}_lookuptableimportv2_keys")
    node = init.node_def.add(name=f"key_value_init{uid}/LookupTableImportV2", op="LookupTableImportV2")
    node.input.append(f"key_value_init{uid}_lookuptableimportv2_keys")
    init.control_ret[node.name] = node.name
    return graph


def test_lookup_table_names_lose_their_process_counters():
    after, fresh = _graph_with_a_lookup_table(2063), _graph_with_a_lookup_table(9)
    for graph in (after, fresh):
        determinism.canonicalize_counted_names(graph)
    assert after.SerializeToString(deterministic=True) == fresh.SerializeToString(deterministic=True)
    assert fresh.node[0].attr["shared_name"].s == b"0"
    node = fresh.library.function[0].node_def[0]
    assert node.name == "key_value_init0/LookupTableImportV2"
    assert node.input[0] == fresh.library.function[0].signature.input_arg[0].name == "key_value_init0_lookuptableimportv2_keys"
    assert dict(fresh.library.function[0].control_ret) == {node.name: node.name}


def _save_module_with_counted_names(export_dir: str, traces_before: int) -> bytes:
    """Saves, after `traces_before` unrelated traces, a module whose functions
    capture a variable in an XLA-compiled call and register a custom gradient:
    TF names the captured argument after its tensor id and the gradient
    `CustomGradient-<uid>`, both process-wide counters. Returns the canonical
    `saved_model.pb`."""
    import tensorflow as tf

    for i in range(traces_before):
        tf.function(lambda x: x * 2.0 + i).get_concrete_function(tf.TensorSpec([None], tf.float32))

    @tf.custom_gradient
    def clipped_identity(x):
        return tf.identity(x), lambda dy: tf.clip_by_value(dy, -1.0, 1.0)

    @tf.function(jit_compile=True)
    def compiled_matmul(x, kernel):  # a variable argument, as Keras passes a layer's to a compiled call
        return tf.matmul(x, kernel)

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.ones([3, 3]), name="kernel")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def serve(self, x):
            with tf.name_scope("block"):
                return clipped_identity(compiled_matmul(x, self.kernel))

    module = Module()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    determinism.canonicalize_saved_model(export_dir)
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        return f.read()


def test_captured_arguments_and_custom_gradients_lose_their_process_counters(tmp_path):
    import tensorflow as tf

    first = _save_module_with_counted_names(str(tmp_path / "first"), traces_before=0)
    after = _save_module_with_counted_names(str(tmp_path / "after"), traces_before=25)
    assert first == after
    assert b"CustomGradient-0" in first
    loaded = tf.saved_model.load(str(tmp_path / "after"))
    x = tf.constant([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(loaded.signatures["serving_default"](x=x)["output_0"], [[6.0, 6.0, 6.0]])


def test_argument_names_keep_digits_that_are_not_their_tensor_id():
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    fn = graph.library.function.add()
    fn.signature.name = "__inference_serve_0"
    for index, (name, user_name) in enumerate((("dense_1", "dense_1"), ("conv_7", "12"), ("cap_610", "610"))):
        fn.signature.input_arg.add(name=name)
        fn.arg_attr[index].attr["_user_specified_name"].s = user_name.encode()
    fn.node_def.add(name="add", op="AddV2", input=["dense_1", "cap_610:0"])
    fn.ret["out"] = "cap_610"
    determinism.canonicalize_user_specified_names(graph)
    assert [a.name for a in fn.signature.input_arg] == ["dense_1", "conv_7", "cap_1"]
    assert list(fn.node_def[0].input) == ["dense_1", "cap_1:0"]
    assert fn.ret["out"] == "cap_1"
    assert [fn.arg_attr[i].attr["_user_specified_name"].s for i in range(3)] == [b"dense_1", b"0", b"1"]


def test_canonicalize_onnx_strips_docs_and_sorts_tables():
    import onnx
    from onnx import helper

    node = helper.make_node("CategoryMapper", ["x"], ["y__17"], name="lookup__17", domain="ai.onnx.ml",
                            cats_strings=["b", "a"], cats_int64s=[2, 1], default_int64=0)
    node.doc_string = "/home/someone/model.py:12"
    out = helper.make_node("Identity", ["y__17"], ["y"], name="id__3")
    # What torch.onnx's dynamo exporter records on each node.
    out.metadata_props.add(key="pkg.torch.onnx.stack_trace", value='File "/home/someone/train.py", line 3')
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
    e = {"f": np.full((2, 2), 0.5, "float32"), "i": np.array([1, 2]), "s": np.array([b"a", b"b"], dtype=object)}
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


def test_tiny_outputs_are_checked_relative_to_their_scale():
    # keras_hub's MobileNet with random weights outputs about 3e-5: float32's atol
    # (1e-5) alone would accept a 30% error there.
    tiny = {"y": np.array([3e-5, -1e-5], "float32")}
    wrong = verification.compare_outputs(tiny, {"y": np.array([3.9e-5, -1e-5], "float32")})
    assert not wrong.ok and "x the output's scale" in wrong.problems[0]
    assert verification.compare_outputs(tiny, {"y": tiny["y"] * (1 + 1e-6)}).ok
    assert verification.check_kind(tiny["y"], 1e-5) == "scaled"
    assert verification.check_kind(np.array([0.5]), 1e-5) == "absolute"
    zeros = {"y": np.zeros(3, "float32")}
    assert verification.compare_outputs(zeros, {"y": np.full(3, 5e-9, "float32")}).ok
    assert not verification.compare_outputs(zeros, {"y": np.full(3, 5e-6, "float32")}).ok


def test_large_outputs_are_allowed_their_dtypes_atol_per_unit_of_scale():
    # Two Dense layers with weights of standard deviation 3 output about 1e4, where
    # float32 values are 1e-3 apart: their SavedModel, run as a graph, differs by about
    # 1e-2. Held to 1e-5 per unit of scale, such a model exports, and a 0.1% error of
    # its largest element is still refused.
    large = {"y": np.array([12800.0, -300.0], "float32")}
    assert verification.effective_atol(1e-5, 12800.0) == pytest.approx(0.128)
    assert verification.compare_outputs(large, {"y": np.array([12800.05, -300.02], "float32")}).ok
    wrong = verification.compare_outputs(large, {"y": np.array([12813.0, -300.0], "float32")})
    assert not wrong.ok and "1e-05 per unit of the output's scale" in wrong.problems[0]
    assert verification.check_kind(large["y"], 1e-5) == "scaled"
    assert verification.check_kind(large["y"], 1.0) == "absolute"  # a declared atol above the floor stays
    assert verification.effective_atol(1.0, 12800.0) == 1.0
    # float64 outputs keep float64's own, finer default per unit of scale.
    assert verification.effective_atol(1e-7, 1e4, dtype="float64") == pytest.approx(1e-3)


def test_lossy_precisions_are_scaled_by_their_relative_tolerance():
    # bfloat16's (1e-2, 1e-2) on an output of scale 0.1: 3 * rtol of the scale, not
    # 1e-3 of it, which a bfloat16 model's own roundings exceed; never above atol.
    tolerances = {"float32": (1e-2, 1e-2)}
    expected = {"y": np.array([0.1, -0.05], "float32")}
    assert verification.effective_atol(1e-2, 0.1, 1e-2) == pytest.approx(3e-3)
    assert verification.effective_atol(1e-2, 0.9, 1e-2) == 1e-2
    assert verification.compare_outputs(expected, {"y": np.array([0.1, -0.0485], "float32")},
                                        tolerances=tolerances).ok
    wrong = verification.compare_outputs(expected, {"y": np.array([0.1, -0.045], "float32")}, tolerances=tolerances)
    assert not wrong.ok and "0.03 x the output's scale" in wrong.problems[0]


def test_coarse_tolerance_is_relative_to_the_outputs_range_over_the_endpoints_cases():
    # A quantized model's error follows the range its quantizer calibrated: a one-row case
    # whose sigmoid output is 0.14 may be off by 0.24 when the endpoint's outputs reach 0.5
    # (Keras's representative-dataset test failed so, about 1 run in 150), not by 0.81.
    from servekit.pipeline.cases import Case

    tolerances = {"float32": verification.coarse_tolerance(1.0)}
    few_rows = np.array([[0.14]], "float32")
    many_rows = np.array([[0.5], [0.3], [0.2]], "float32")
    cases = [Case("serving_default", 1, {"x": np.zeros((1, 2), "float32")}, {"p": few_rows}, tolerances=tolerances),
             Case("serving_default", 3, {"x": np.ones((3, 2), "float32")}, {"p": many_rows}, tolerances=tolerances)]
    assert verification.endpoint_scales(cases) == {("serving_default", "p"): pytest.approx(0.5)}

    def artifact(one_row_output):
        return lambda endpoint, inputs: {"p": np.full((1, 1), one_row_output, "float32")
                                         if len(inputs["x"]) == 1 else many_rows}

    assert all(c.ok for c in verification._check(cases, artifact(0.38)))
    wrong = verification._check(cases, artifact(0.95))
    assert not wrong[0].ok and wrong[1].ok
    assert "1 x the output's scale over the endpoint's cases 0.5" in wrong[0].problems[0]


# -- names ---------------------------------------------------------------------------------


def test_replaced_puts_back_a_classmethod_and_an_inherited_method():
    class Base:
        @classmethod
        def build(cls):
            return cls.__name__

        def size(self):
            return 1

    class Child(Base):
        @classmethod
        def build(cls):
            return "child " + cls.__name__

    class Grandchild(Child):
        pass

    with patching.replaced(Child, build=classmethod(lambda cls: "patched"), size=lambda self: 2):
        assert Grandchild.build() == "patched" and Grandchild().size() == 2
    # A classmethod read back as a method bound to Child would name Child for Grandchild.
    assert Grandchild.build() == "child Grandchild"
    assert "size" not in Child.__dict__ and Child().size() == 1


def test_names_are_sanitized_and_unique():
    assert unique_names(["a b", "a_b", "a b", "0x", ""]) == ["a_b", "a_b_1", "a_b_2", "0x", "t"]
    assert sanitize_name("in/put:0") == "in_put_0"


# -- the export pipeline ----------------------------------------------------------------

from servekit.errors import ExportError, ExportTypeError  # noqa: E402
from servekit.pipeline import behavior, core  # noqa: E402
from servekit.pipeline.cases import Case, CaseSet  # noqa: E402


class _Writes:
    """A strategy that writes `content` to the staged path and reports `ok`."""

    def __init__(self, name, ok=True, content=b"artifact", why=None, raises=None):
        self.name, self.ok, self.content, self.why, self.raises = name, ok, content, why, raises
        self.staged = []

    def unavailable(self, request):
        return self.why

    def write(self, request, staged, workdir):
        self.staged.append(staged)
        if self.raises is not None:
            raise self.raises
        with open(staged, "wb") as f:
            f.write(self.content)
        report = {"ok": self.ok, "endpoints": []}
        if not self.ok:
            report.update(message=f"{self.name} does not reproduce the model", reason="verification_failed")
        return report


class _DivergesIn(_Writes):
    """A strategy whose artifact is off by 0.5 in a bfloat16 output and a float32 one,
    as `servekit.verification` reports it."""

    def write(self, request, staged, workdir):
        import ml_dtypes

        with open(staged, "wb") as f:
            f.write(self.content)
        expected = {"h": np.zeros(3, ml_dtypes.bfloat16), "y": np.zeros(3, np.float32), "n": np.zeros(3, np.int32)}
        actual = {"h": np.full(3, 0.5, ml_dtypes.bfloat16), "y": np.full(3, 0.5, np.float32), "n": expected["n"]}
        comparison = verification.compare_outputs(expected, actual)
        return verification.record({"ok": True, "endpoints": []}, [comparison], "onnx", "ONNX model")


def test_a_failed_verification_says_which_dtypes_to_declare_a_tolerance_for(tmp_path):
    with pytest.raises(ExportError) as info:
        _run(tmp_path, [_DivergesIn("portable")])
    message = str(info.value)
    assert "output 'h': max abs diff 0.5" in message and "output 'y': max abs diff 0.5" in message
    assert "tolerances={'bfloat16': (atol, rtol), 'float32': (atol, rtol)}" in message
    assert "tolerances = {'bfloat16': 'atol,rtol', 'float32': 'atol,rtol'}" in message


def _run(tmp_path, strategies):
    made = []

    def make_workdir():
        made.append(str(tmp_path / f"work{len(made)}"))
        os.makedirs(made[-1])
        return made[-1]

    request = types.SimpleNamespace(format="onnx")
    return core.run(request, str(tmp_path / "out"), strategies, "Model 'm' (jax backend) -> onnx", make_workdir,
                    lambda d: __import__("shutil").rmtree(d)), made


def test_pipeline_first_verified_strategy_wins_and_earlier_reasons_are_kept(tmp_path):
    skipped = _Writes("first", why="cannot import the class")
    failing = _Writes("second", ok=False, content=b"bad")
    winner = _Writes("third", content=b"good")
    never = _Writes("fourth")
    (report, attempts), workdirs = _run(tmp_path, [skipped, failing, winner, never])
    assert report["strategy"] == "third" and open(tmp_path / "out", "rb").read() == b"good"
    assert [(a.strategy, a.outcome) for a in attempts] == [("first", "skipped"), ("second", "failed"),
                                                             ("third", "used")]
    assert never.staged == [] and skipped.staged == []
    assert not os.path.exists(failing.staged[0]), "a failed strategy's staged artifact is removed"
    assert all(not os.path.exists(d) for d in workdirs)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    line = core.describe(attempts)
    assert line.startswith("strategy third (") and "first skipped: cannot import the class" in line


def test_pipeline_failure_lists_every_reason_and_writes_nothing(tmp_path):
    (tmp_path / "out").write_bytes(b"previous")
    strategies = [_Writes("portable", why=ExportError("layer 'x' is local", layer="x")),
                  _Writes("inproc", ok=False), _Writes("raising", raises=RuntimeError("converter crashed\nat op Foo"))]
    with pytest.raises(ExportError) as info:
        _run(tmp_path, strategies)
    message = str(info.value)
    assert message.startswith("Model 'm' (jax backend) -> onnx: no export strategy produced a verified artifact")
    assert "portable (skipped): layer 'x' is local" in message
    assert "inproc (failed): inproc does not reproduce the model" in message
    assert "declare the tolerance the model needs: servekit.export(..., tolerances=" in message
    # The converter's cause keeps its first and last lines (what failed, and where).
    assert "raising (failed): RuntimeError: converter crashed at op Foo" in message
    assert info.value.layer == "x" and info.value.reason == "strategy_failed"
    assert not isinstance(info.value, TypeError)
    assert (tmp_path / "out").read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["out"]


@dataclasses.dataclass
class _Request:
    format: str = "tf_saved_model"


class _WritesTogether(_Writes):
    """Writes several formats in one call (like the portable rebuild), but not
    `refuses` (its report says why)."""

    def __init__(self, name, refuses=()):
        super().__init__(name)
        self.calls, self.refuses = [], set(refuses)

    def write_formats(self, requests, staged, workdir):
        self.calls.append(sorted(requests))
        reports = {}
        for fmt, request in requests.items():
            assert request.format == fmt
            if fmt in self.refuses:
                reports[fmt] = {"ok": False, "message": f"{self.name} cannot convert", "reason": "strategy_failed"}
                continue
            with open(staged[fmt], "wb") as f:
                f.write(f"{self.name}:{fmt}".encode())
            reports[fmt] = {"ok": True, "endpoints": []}
        return reports


def test_pipeline_writes_formats_together_and_falls_back_per_format(tmp_path):
    together = _WritesTogether("portable", refuses={"onnx"})
    fallback = _Writes("in_process", content=b"in_process:onnx")
    destinations = {"tf_saved_model": str(tmp_path / "model"), "onnx": str(tmp_path / "model.onnx")}
    results = core.run_formats(_Request(), destinations, [together, fallback], lambda fmt: f"m -> {fmt}")
    assert together.calls == [["onnx", "tf_saved_model"]]  # one call for both formats
    assert len(fallback.staged) == 1  # only the format the first strategy could not write
    assert open(destinations["tf_saved_model"], "rb").read() == b"portable:tf_saved_model"
    assert open(destinations["onnx"], "rb").read() == b"in_process:onnx"
    assert [a.outcome for a in results["onnx"][1]] == ["failed", "used"]
    assert results["tf_saved_model"][0]["strategy"] == "portable"
    assert sorted(os.listdir(tmp_path)) == ["model", "model.onnx"]


def test_pipeline_commits_no_format_unless_every_format_has_an_artifact(tmp_path):
    together = _WritesTogether("portable", refuses={"onnx"})
    destinations = {"tf_saved_model": str(tmp_path / "model"), "onnx": str(tmp_path / "model.onnx")}
    with pytest.raises(ExportError, match=r"m -> onnx: portable cannot convert"):
        core.run_formats(_Request(), destinations, [together], lambda fmt: f"m -> {fmt}")
    assert os.listdir(tmp_path) == []


def test_pipeline_keeps_a_type_error_a_type_error(tmp_path):
    with pytest.raises(TypeError) as info:
        _run(tmp_path, [_Writes("only", raises=ExportTypeError("polymorphic shape mismatch"))])
    assert isinstance(info.value, ExportError) and "polymorphic shape mismatch" in str(info.value)
    assert "tolerance" not in str(info.value)  # offered for outputs that differ, not for a failed trace


def test_case_set_round_trip_keeps_order_strings_and_runs(tmp_path):
    cases = CaseSet([
        Case("serve", 1, {"x": np.ones((1, 2), "float32")}, {"y": np.zeros((1, 2))}),
        Case("serve", 7, {"t": np.array([b"a", "é".encode()])}, {"y": np.arange(3)}, True,
             {"noise": [np.full(2, i, "float32") for i in range(3)]}),
    ])
    path, index = cases.write(str(tmp_path / "cases.npz"))
    back = list(CaseSet.read(path, json.loads(json.dumps(index))))
    assert [(c.endpoint, c.batch) for c in back] == [("serve", 1), ("serve", 7)]
    assert back[1].inputs["t"].tolist() == [b"a", "é".encode()]
    assert [r.tolist() for r in back[1].runs["noise"]] == [[0, 0], [1, 1], [2, 2]]
    assert CaseSet().write(str(tmp_path / "none.npz")) == (None, [])


def test_case_set_stores_bfloat16_as_float32_and_reads_it_back_as_bfloat16(tmp_path):
    import ml_dtypes

    x = (np.arange(6, dtype="float32") / 3).reshape(2, 3).astype(ml_dtypes.bfloat16)
    y = np.array([0.5, 1 / 3], "float32")
    cases = CaseSet([Case("serve", 2, {"x": x}, {"y": y, "z": x[:, :2]}, True, {"noise": [x[0], x[1]]})])
    path, index = cases.write(str(tmp_path / "cases.npz"))
    stored = np.load(path)
    assert {stored[k].dtype.name for k in stored.files} == {"float32"}  # not NumPy's opaque <V2
    (back,) = CaseSet.read(path, json.loads(json.dumps(index)))
    for got, want in [(back.inputs["x"], x), (back.expected["z"], x[:, :2]), (back.runs["noise"][1], x[1])]:
        assert got.dtype == ml_dtypes.bfloat16 and got.tobytes() == want.tobytes()
    assert back.expected["y"].dtype == np.float32 and back.expected["y"].tolist() == y.tolist()


def test_generated_bfloat16_inputs_are_rounded_float32_draws():
    import keras
    import ml_dtypes

    inputs = keras.Input((5,), dtype="bfloat16", name="x")
    layout = resolve_input_layout(keras.Model(inputs, keras.layers.Dense(2)(inputs)), None)
    (x,) = generate_inputs(layout, 3)
    assert x.dtype == ml_dtypes.bfloat16 and x.shape == (3, 5)
    float32 = dataclasses.replace(layout, flat=[dataclasses.replace(layout.flat[0], dtype="float32")])
    (wide,) = generate_inputs(float32, 3)
    assert x.tobytes() == wide.astype(ml_dtypes.bfloat16).tobytes()
    (ranged,) = generate_inputs(layout, 3, ranges={"x": (1, 2)})
    assert ranged.dtype == ml_dtypes.bfloat16 and (ranged.astype("float32") >= 1).all()


def test_statistics_accept_the_same_distribution_and_reject_others():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((7, 10))
    draw = lambda shift=0.0, scale=0.5: [base + shift + rng.normal(0, scale, base.shape) for _ in range(8)]
    assert behavior.compare_statistics(draw(), draw()) is None
    assert "differs" in behavior.compare_statistics(draw(), draw(shift=1.0))
    frozen = draw()[:1] * 8
    assert "no longer random" in behavior.compare_statistics(draw(), frozen)
    assert "shape" in behavior.compare_statistics(draw(), [r[:, :5] for r in draw()])


class _Var:
    """Stands in for a variable: `path`, `trainable`, `numpy()`, `assign()`."""

    def __init__(self, path, value, trainable=False):
        self.path, self.value, self.trainable = path, np.array(value), trainable

    def numpy(self):
        return self.value

    def assign(self, v):
        self.value = np.array(v)


def test_probe_tells_random_from_stateful_and_restores_variables():
    Var = _Var
    counter, seed = Var("counter/count", 0.0), Var("jitter/seed_generator_state", [1, 0])
    x = [np.ones(3, "float32")]

    def stateful(flat):
        counter.assign(counter.value + 1)
        return [flat[0] + counter.value]

    def random(flat):
        seed.assign(seed.value + 1)
        return [flat[0] + seed.value[0], flat[0]]

    found = behavior.probe(stateful, x, [counter, seed])
    assert (found.stateful, found.stochastic, found.state_layer) == (True, False, "counter")
    assert counter.value == 0.0
    found = behavior.probe(random, x, [counter, seed])
    assert (found.stateful, found.stochastic, found.stochastic_outputs) == (False, True, (0,))
    assert seed.value.tolist() == [1, 0]
    assert behavior.probe(lambda flat: [flat[0] * 2], x, [counter, seed]).exact


def test_snapshot_copies_state_and_fingerprints_large_trainable_variables(monkeypatch):
    monkeypatch.setattr(behavior.VariableSnapshot, "COPY_BYTES", 16)
    table = _Var("table/embeddings", np.zeros(64, "float32"), trainable=True)
    count = _Var("counter/count", np.zeros(64, "float32"))
    snapshot = behavior.VariableSnapshot([table, count])
    count.assign(count.value + 1)
    assert snapshot.changed() == [count]
    snapshot.restore()
    assert not count.value.any()
    table.assign(table.value + 1)
    assert snapshot.changed() == [table]
    with pytest.raises(ExportError, match="table/embeddings.*fingerprint, not a copy"):
        snapshot.restore()


def test_snapshot_copies_trainable_variables_within_a_total_budget(monkeypatch):
    # Many trainable variables each under the budget (a decoder's projections) are
    # not all copied: the snapshot would hold the model's weights a second time.
    monkeypatch.setattr(behavior.VariableSnapshot, "COPY_BYTES", 512)
    weights = [_Var(f"layer_{i}/kernel", np.zeros(64, "float32"), trainable=True) for i in range(4)]
    snapshot = behavior.VariableSnapshot(weights)  # 256 bytes each: the first two are copied
    weights[0].assign(weights[0].value + 1)  # copied: restored
    snapshot.restore()
    assert not weights[0].value.any()
    weights[3].assign(weights[3].value + 1)  # fingerprinted: detected, refused
    with pytest.raises(ExportError, match="layer_3/kernel"):
        snapshot.restore()


def test_snapshot_fingerprints_bfloat16_variables(monkeypatch):
    import ml_dtypes

    monkeypatch.setattr(behavior.VariableSnapshot, "COPY_BYTES", 0)
    kernel = _Var("dense/kernel", np.zeros((4, 8), ml_dtypes.bfloat16), trainable=True)
    snapshot = behavior.VariableSnapshot([kernel])
    assert snapshot.changed() == []
    kernel.assign(kernel.value + ml_dtypes.bfloat16(1))
    assert snapshot.changed() == [kernel]


def test_named_dims_and_output_names():
    assert named_dims("image", (None, None, None, 3)) == ("batch", "image_1", "image_2", 3)
    assert endpoint_output_names({"b": 1, "a": 2}) == ["a", "b"]
    assert endpoint_output_names([1, 2], ["logits", "ids"]) == ["logits", "ids"]
    assert endpoint_output_names((1, 2, 3), ["too", "few"]) == ["output_0", "output_1", "output_2"]


# -- the worker job -------------------------------------------------------------------


def _layout() -> InputLayout:
    flat = [FlatSpec("image", "float32", (None, 8, 8, 3), ("batch", None, None, None)),
            FlatSpec("tokens", "int64", (None, None), ("batch", "tokens_1"))]
    return InputLayout(flat, [{"image": 0, "tokens": 1}], ["inputs"])


def test_worker_job_round_trips_through_json(tmp_path):
    from servekit.worker.job import CustomClass, EndpointJob, VariableRef, WorkerJob

    job = WorkerJob(
        kind="archive", keras_file="bundle_keras", outputs={"tf_saved_model": "staged", "onnx": "staged.onnx"},
        model_name="m",
        version="1.2.3",
        endpoints=(EndpointJob("serve", _layout(), ("logits", "probs"), inputs_range=(0, 2),
                               outputs_range=(0, 2), output_structure={"logits": 0, "extra": (1,)}),),
        opset=17, layer_names=("dense",), cases_file="cases.npz", cases=({"endpoint": "serve", "inputs": []},),
        lambda_globals={"np": {"kind": "module", "module": "numpy"}},
        custom_classes=(CustomClass("my.layers", "Scale", ("Scale", "my>Scale"), "scale", None),),
        sys_path=("/src",), tracked=((VariableRef(True, index=0), VariableRef(False, key="v0", name="step")),),
        variable_collections={"extra": (VariableRef(False, key="v0", name="step"),)}, variables_file="v.npz")
    path = str(tmp_path / "job.json")
    job.write(path)
    again = WorkerJob.read(path)
    assert again == job
    # Tuples inside the output structure survive (JSON alone would make them lists).
    assert again.endpoints[0].output_structure == {"logits": 0, "extra": (1,)}
    with open(path) as f:
        assert json.load(f)["endpoints"][0]["inputs_range"] == [0, 2]


def test_worker_job_of_a_model_has_no_bundle_fields():
    from servekit.worker.job import EndpointJob

    endpoint = EndpointJob("serving_default", _layout(), ("output_0",))
    data = endpoint.to_json()
    assert "inputs_range" not in data and EndpointJob.from_json(data) == endpoint


def test_variable_ref_names_exactly_one_source():
    from servekit.worker.job import VariableRef

    with pytest.raises(ValueError, match="either a bundle index or a saved value key"):
        VariableRef(True)
    with pytest.raises(ValueError):
        VariableRef(True, index=1, key="v1")


def test_a_worker_killed_by_a_signal_says_so(tmp_path):
    from servekit.worker import launch
    from servekit.worker.job import WorkerJob

    job = WorkerJob(kind="model", keras_file="model_keras", outputs={"onnx": "staged.onnx"}, model_name="big",
                    version="0", endpoints=())
    with pytest.raises(ExportError, match="'big'.*killed by SIGKILL.*out of memory"):
        launch._read_report(job, str(tmp_path), -9, "")


def test_worker_refuses_a_bad_command_line(capsys):
    from servekit.worker.__main__ import main

    assert main(["worker"]) == 2
    assert "usage: python -m servekit.worker JOB.json | --serve" in capsys.readouterr().err


# -- verification inputs that respect their meaning -------------------------------


def _token_model():
    import keras

    ids = keras.Input((6,), dtype="int32", name="token_ids")
    segments = keras.Input((6,), dtype="int32", name="segment_ids")
    mask = keras.Input((6,), dtype="int32", name="padding_mask")
    inner_ids = keras.Input((6,), dtype="int32", name="inner_ids")
    inner = keras.Model(inner_ids, keras.layers.Embedding(50, 4, name="tokens")(inner_ids), name="inner")
    x = inner(ids) + keras.layers.Embedding(2, 4, name="segments")(segments)
    x = x * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    return keras.Model({"token_ids": ids, "segment_ids": segments, "padding_mask": mask}, x, name="tokens_model")


def test_embedding_ranges_follow_inputs_into_nested_models():
    model = _token_model()
    assert embedding_input_ranges(model) == {"token_ids": (0, 50), "segment_ids": (0, 2)}
    ranges = input_ranges_for(model, {"padding_mask": (1, 2)})
    assert ranges == {"token_ids": (0, 50), "segment_ids": (0, 2), "padding_mask": (1, 2)}
    layout = resolve_input_layout(model, None)
    for batch in (1, 7):
        flat = dict(zip([s.name for s in layout.flat], generate_inputs(layout, batch, model=model, ranges=ranges)))
        assert flat["segment_ids"].min() >= 0 and flat["segment_ids"].max() < 2
        assert flat["token_ids"].min() >= 0 and flat["token_ids"].max() < 50
        assert (flat["padding_mask"] == 1).all()


def test_masks_are_all_valid_unless_declared_otherwise():
    import keras

    assert mask_input_ranges(_token_model()) == {"padding_mask": (1, 2)}
    assert input_ranges_for(_token_model())["padding_mask"] == (1, 2)
    assert input_ranges_for(_token_model(), {"padding_mask": (0, 2)})["padding_mask"] == (0, 2)
    flags = keras.Input((3,), dtype="bool", name="mask")
    weights = keras.Input((3,), dtype="float32", name="loss_mask")  # a float: not a mask of positions
    unmasked = keras.Input((3,), dtype="int32", name="masked_ids")
    model = keras.Model([flags, weights, unmasked], keras.ops.cast(flags, "float32") * weights)
    assert mask_input_ranges(model) == {"mask": (1, 2)}


def test_mixed_precision_models_are_checked_at_their_compute_precision():
    import keras

    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert verification.tolerances_for(plain) == {}
    hidden = keras.layers.Dense(4, dtype="mixed_float16")(inputs)
    mixed = keras.Model(inputs, keras.layers.Dense(2, dtype="float32")(hidden))
    assert verification.tolerances_for(mixed) == {"float32": verification.TOLERANCES["float16"]}
    assert verification.tolerances_for(mixed, {"float32": (1e-3, 0)}) == {"float32": (1e-3, 0.0)}


def test_float64_outputs_of_a_float32_computation_are_checked_at_float32_precision():
    # A float32 result cast to float64 at the end carries float32's rounding: float64's own
    # 1e-7 per unit of scale refused such a model rebuilt under another backend (1.2e-7 off).
    import keras

    inputs = keras.Input((3,), dtype="float64")
    hidden = keras.layers.Dense(2)(keras.ops.cast(inputs, "float32"))
    cast_at_the_end = keras.Model(inputs, keras.ops.cast(hidden, "float64"))
    assert verification.tolerances_for(cast_at_the_end) == {"float64": verification.TOLERANCES["float32"]}
    in_float64 = keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(inputs))
    assert verification.tolerances_for(in_float64) == {}
    mixed = keras.Model(inputs, keras.ops.cast(keras.layers.Dense(2, dtype="mixed_float16")(inputs), "float64"))
    assert verification.tolerances_for(mixed) == {"float32": verification.TOLERANCES["float16"],
                                                  "float64": verification.TOLERANCES["float16"]}


def test_bad_input_ranges_are_refused_with_the_fix():
    from servekit.errors import ExportError

    with pytest.raises(ExportError, match=r"input_ranges\['padding_mask'\] = \(2, 1\).*high exclusive"):
        input_ranges_for(_token_model(), {"padding_mask": (2, 1)})


def test_tolerances_parse_from_the_command_line_form_or_say_what_is_expected():
    assert verification.parse_tolerance("float32=1e-5,1e-4") == ("float32", (1e-5, 1e-4))
    assert verification.parse_tolerance("float16=1e-2") == ("float16", (1e-2, 0.0))
    for bad in ("float32", "float32=", "=1e-5", "float32=tight", "float32=1e-5,x"):
        with pytest.raises(ValueError, match=r"DTYPE=ATOL\[,RTOL\].*" + re.escape(repr(bad))):
            verification.parse_tolerance(bad)


def test_release_memory_lets_go_of_a_traced_model_with_a_custom_gradient():
    # Keras's SiLU traces `tf.nn.silu`, a tf.custom_gradient: TensorFlow's gradient registry
    # then holds the traced graph, and the graph the model's variables, for good.
    import gc
    import weakref

    import keras
    import tensorflow as tf

    from servekit.worker import isolation

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(8, activation="silu", name="hidden")(inputs))
    traced = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec((None, 4))]).get_concrete_function()
    graph = weakref.ref(traced.graph)
    del model, traced
    gc.collect()
    assert graph() is not None  # what the registry keeps without the release
    isolation.release_memory()
    assert graph() is None


# -- OpenVINO's telemetry -------------------------------------------------------------


def test_an_openvino_conversion_sends_no_telemetry(monkeypatch):
    # openvino_telemetry forks the converting process for each event it sends to
    # Google Analytics: nine in this conversion without servekit's stub.
    import multiprocessing

    import openvino as ov
    import tensorflow as tf

    from servekit.formats import openvino

    forks = []
    monkeypatch.setattr(multiprocessing.Process, "start", lambda process: forks.append(process))
    serve = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec((None, 3), name="x")])
    openvino._converter_without_telemetry()
    ov.convert_model(serve.get_concrete_function())
    assert forks == []


def test_the_export_worker_imports_openvino_without_its_telemetry(tmp_path):
    # `import openvino` alone sends an event and writes ~/intel; the worker hides the package,
    # and OpenVINO falls back to its own no-op stub.
    import subprocess
    import sys

    code = ("import sys; from servekit.worker.__main__ import _HideModules; sys.meta_path.insert(0, _HideModules()); "
            "import openvino; from openvino.tools.ovc import convert_impl; print(convert_impl.tm.__name__)")
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "openvino.tools.ovc.telemetry_stub"
    assert not (tmp_path / "intel").exists()


# -- Mapped pages handed back while a runtime works ------------------------------------


def _mapping_resident_bytes(path) -> int:
    """Resident bytes of this process' mappings of `path`, from /proc/self/smaps."""
    target, total, inside = os.path.realpath(path), 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
                inside = len(fields) == 6 and fields[5] == target
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


def test_paged_out_hands_a_read_only_mapping_back_and_keeps_its_bytes(tmp_path):
    import mmap
    import time

    from servekit import mapped_pages

    data = np.random.default_rng(0).integers(0, 256, 16 << 20, dtype=np.uint8)
    path = tmp_path / "weights.bin"
    data.tofile(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = np.frombuffer(mapped, np.uint8)
        np.testing.assert_array_equal(view, data)  # every page read: resident
        assert _mapping_resident_bytes(path) >= 15 << 20
        with mapped_pages.paged_out(str(path), every_s=0.01):
            time.sleep(0.2)
            assert _mapping_resident_bytes(path) < 1 << 20
        np.testing.assert_array_equal(view, data)  # read again from the file
        del view
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as copied:
        copied[0] = 7  # a writable mapping may hold bytes the file does not: never paged out
        assert mapped_pages.mapped_ranges(str(path)) == []


def _checked_then_resident(monkeypatch, mapped_file, check) -> tuple[list, int]:
    """Runs `check()` (a format's check of one case); returns its comparisons and the
    resident bytes of `mapped_file`'s mappings right after the cases ran, while the
    runtime still holds the file."""
    import time

    resident = []

    def run_then_measure(cases, run, _check=verification._check):
        comparisons = _check(cases, run)
        time.sleep(0.2)  # the page-out thread's next rounds
        resident.append(_mapping_resident_bytes(mapped_file))
        return comparisons

    monkeypatch.setattr(verification, "_check", run_then_measure)
    return check(), resident[0]


@pytest.mark.parametrize("page_out", [False, True])
def test_an_openvino_check_that_pages_out_its_weights_holds_them_once(tmp_path, monkeypatch, page_out):
    # OpenVINO's CPU plugin packs its own copy of a MatMul weight, reading the mapped .bin;
    # those pages stayed resident beside the copy through the whole check.
    import openvino as ov

    from servekit.formats import openvino

    rng = np.random.default_rng(3)
    weight = rng.standard_normal((4096, 4096)).astype("float32")  # 64 MiB
    x = ov.opset13.parameter([-1, 4096], ov.Type.f32, name="x")
    y = ov.opset13.matmul(x, ov.opset13.constant(weight), False, False)
    y.output(0).get_tensor().set_names({"y"})
    xml = tmp_path / "model.xml"
    ov.save_model(ov.Model([y], [x], "dense"), xml, compress_to_fp16=False)
    features = rng.standard_normal((2, 4096)).astype("float32")
    case = Case("serving_default", 2, {"x": features}, {"y": features @ weight})
    comparisons, resident = _checked_then_resident(
        monkeypatch, tmp_path / "model.bin", lambda: openvino.check(str(xml), [case], page_out_weights=page_out))
    assert [c.problems for c in comparisons] == [[]]
    if page_out:
        assert resident < 8 << 20, resident
    else:
        assert resident > 56 << 20, resident  # what paging out is for


@pytest.mark.parametrize("page_out", [False, True])
def test_a_litert_check_that_pages_out_its_file_holds_none_of_it(tmp_path, monkeypatch, page_out):
    # LiteRT's built-in kernels read a weight where the file is mapped, at every call: the
    # pages read stayed resident, the whole file by the end of the check.
    import tensorflow as tf

    from servekit.formats import litert

    rng = np.random.default_rng(4)
    weight = rng.standard_normal((2048, 4096)).astype("float32")  # 32 MiB
    serve = tf.function(lambda x: {"y": tf.matmul(x, weight)},
                        input_signature=[tf.TensorSpec((None, 2048), tf.float32, name="x")])
    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "saved_model"), signatures={"serving_default": serve})
    path = tmp_path / "model.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved_model")).convert())
    features = rng.standard_normal((2, 2048)).astype("float32")
    case = Case("serving_default", 2, {"x": features}, {"y": features @ weight})
    comparisons, resident = _checked_then_resident(
        monkeypatch, path, lambda: litert.check(str(path), [case], delegates=False, page_out_weights=page_out))
    assert [c.problems for c in comparisons] == [[]]
    if page_out:
        assert resident < 4 << 20, resident
    else:
        assert resident > 28 << 20, resident  # what paging out is for


def test_lambda_globals_are_the_names_the_code_loads_not_its_attributes():
    # `keras.ops.switch` names `switch` as an attribute; a function `switch` the caller's
    # module defines (which no worker can import) made servekit refuse the Lambda.
    import keras

    from servekit.strategies import keras_file

    def switch():  # a function of the caller's own, which a worker cannot import
        return None

    namespace = {"keras": keras, "switch": switch, "scale": 2.0}
    exec("function = lambda x: keras.ops.switch(0, [lambda v: v * scale], x)", namespace)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(namespace["function"])])
    entries, problems = keras_file.lambda_globals(model)
    assert problems == []
    assert entries == {"keras": {"kind": "module", "module": "keras"}, "scale": {"kind": "value", "value": 2.0}}


# -- low-precision layers traced in float32 ------------------------------------------


def test_low_precision_layers_compute_in_float32_inside_the_block_only():
    import keras

    from servekit.source_model import precision

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="x")
    half = keras.layers.Dense(3, dtype="float16", name="half")
    mixed = keras.layers.Dense(3, dtype="mixed_float16", name="mixed")
    wide = keras.layers.Dense(2, dtype="float32", name="wide")
    model = keras.Model(inputs, [half(inputs), wide(mixed(inputs))], name="policies")
    x = np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4)

    with precision.computed_in_float32(model, ("float16",)) as changed:
        assert sorted(changed) == ["half", "mixed"]
        assert (half.compute_dtype, half.variable_dtype) == ("float32", "float16")
        assert (mixed.compute_dtype, mixed.variable_dtype) == ("float32", "float32")
        inside = [keras.ops.convert_to_numpy(y) for y in model(x)]
    assert [y.dtype for y in inside] == [np.float32, np.float32]
    # float16 weights widen exactly: the float32 result is the float16 layer's without its roundings.
    kernel, bias = (keras.ops.convert_to_numpy(w).astype("float32") for w in half.weights)
    np.testing.assert_allclose(inside[0], x @ kernel + bias, rtol=1e-6, atol=1e-6)

    assert (half.dtype_policy.name, mixed.dtype_policy.name, wide.dtype_policy.name) == (
        "float16", "mixed_float16", "float32")
    after = [keras.ops.convert_to_numpy(y) for y in model(x)]
    assert after[0].dtype == np.float16
    np.testing.assert_allclose(after[0], inside[0], atol=1e-2, rtol=1e-2)
    with precision.computed_in_float32(model, ()) as changed:  # no dtype named: nothing changes
        assert changed == []


def test_tensors_a_low_precision_layer_built_are_float32_inside_the_block_only():
    import keras

    from servekit.source_model import precision

    norm = keras.layers.Normalization(mean=[1.0, 2.0], variance=[4.0, 1.0], dtype="mixed_bfloat16", name="norm")
    model = keras.Sequential([keras.Input((2,)), norm])
    assert keras.backend.standardize_dtype(norm.mean.dtype) == "bfloat16"
    with precision.computed_in_float32(model, ("bfloat16",)):
        assert keras.backend.standardize_dtype(norm.mean.dtype) == "float32"
        assert keras.backend.standardize_dtype(norm.variance.dtype) == "float32"
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.mean).ravel(), [1.0, 2.0])
    assert keras.backend.standardize_dtype(norm.mean.dtype) == "bfloat16"


@pytest.mark.parametrize("axes_from", ["initializer", "constant"])
def test_a_foreign_opset_17_model_gets_its_opset_18_reductions_respelled(axes_from):
    # jax2onnx asked for opset 17 writes ReduceMean with axes as an input (opset 18's form).
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from servekit import onnx as sk_onnx
    from servekit import signature as sig

    axes = numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=1),
             helper.make_node("ReduceMax", ["x", "axes"], ["peak"], keepdims=0)]
    if axes_from == "constant":
        nodes.insert(0, helper.make_node("Constant", [], ["axes"], value=axes))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["b", 1]),
                               helper.make_tensor_value_info("peak", TensorProto.FLOAT, ["b"])],
                              initializer=[axes] if axes_from == "initializer" else [])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(proto)
    endpoint = sig.Signature("serving_default", (sig.TensorSignature("features", "float32", ("batch", 4)),),
                             (sig.TensorSignature("mean", "float32", ("batch", 1)),
                              sig.TensorSignature("peak", "float32", ("batch",))))
    sk_onnx.adopt_foreign(proto, endpoint, model_name="m", producer_version="0")
    onnx.checker.check_model(proto)
    reductions = [n for n in proto.graph.node if n.op_type.startswith("Reduce")]
    assert [list(n.input) for n in reductions] == [["features"], ["features"]]
    assert all(helper.get_attribute_value(next(a for a in n.attribute if a.name == "axes")) == [-1]
               for n in reductions)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    mean, peak = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"features": x})
    np.testing.assert_allclose(mean, x.mean(-1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(peak, x.max(-1), rtol=1e-6)
