"""The build tool as a Bazel persistent worker, driven through the real protocol.

A warm worker must write byte-identical export directories to a cold build
tool process, answer a failing action with its full error and exit code 1,
and then export the next model as if nothing had happened. The RNN (a while
loop), the text classifier (a lookup table) and the transformer (einsum) are
there because their artifacts used to carry TF's process-wide counters, object
ids, or nodes in memory-address order: they depended on what the worker had
exported before.
"""

from __future__ import annotations

import filecmp
import os
import pathlib
import subprocess
import sys

import pytest

from servekit.build import persistent_worker

BACKEND = os.environ["KERAS_BACKEND"]
MODELS = pathlib.Path(os.environ.get("TEST_SRCDIR", ""), os.environ.get("TEST_WORKSPACE", ""), "models")
if not MODELS.is_dir():  # outside Bazel
    MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"

FAILING_MODEL = '''
import keras

def build_model():
    raise RuntimeError("this model file is broken on purpose")
'''


def _args(model: str, out_dir: pathlib.Path) -> list[str]:
    return ["--model_file", str(MODELS / f"{model}.py"), "--name", f"{model}_{BACKEND}", "--backend", BACKEND,
            "--out_dir", str(out_dir)]


def _same_tree(a: pathlib.Path, b: pathlib.Path) -> list[str]:
    """Relative paths that differ (or exist on one side only)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if files_a != files_b:
        return [str(p) for p in set(files_a) ^ set(files_b)]
    return [str(p) for p in files_a if not filecmp.cmp(a / p, b / p, shallow=False)]


# Bazel's worker_protocol.proto, the fields servekit uses: (name, number, type, label)
# with type 5 = int32, 9 = string and label 1 = optional, 3 = repeated.
_WORK_REQUEST = [("arguments", 1, 9, 3), ("request_id", 3, 5, 1), ("sandbox_dir", 6, 9, 1)]
_WORK_RESPONSE = [("exit_code", 1, 5, 1), ("output", 2, 9, 1), ("request_id", 3, 5, 1)]


def _message_class(name: str, fields: list[tuple[str, int, int, int]]):
    """A protobuf message class built from a descriptor: protobuf's own codec as the reference."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    package = f"servekit_test_{name.lower()}"
    proto = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto3")
    message = proto.message_type.add(name=name)
    for field_name, number, field_type, label in fields:
        message.field.add(name=field_name, number=number, type=field_type, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))


def _request(arguments: list[str], request_id: int = 0) -> bytes:
    """A WorkRequest serialized by protobuf itself (the reference encoder)."""
    body = _message_class("WorkRequest", _WORK_REQUEST)(arguments=arguments, request_id=request_id).SerializeToString()
    return persistent_worker._varint(len(body)) + body


def _read_response(stream) -> tuple[int, str, int]:
    length = persistent_worker._read_varint(stream)
    assert length is not None, "the worker closed stdout"
    data = stream.read(length)
    fields = {1: 0, 2: b"", 3: 0}
    pos = 0
    while pos < len(data):
        key, pos = persistent_worker._varint_at(data, pos)
        if key & 7 == 0:
            value, pos = persistent_worker._varint_at(data, pos)
        else:
            size, pos = persistent_worker._varint_at(data, pos)
            value, pos = data[pos:pos + size], pos + size
        fields[key >> 3] = value
    return fields[1], fields[2].decode(), fields[3]


def test_warm_worker_matches_a_cold_process_and_survives_a_failure(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cold, cold_rnn, cold_text = tmp_path / "cold", tmp_path / "cold_rnn", tmp_path / "cold_text"
    cold_transformer = tmp_path / "cold_transformer"
    for model, out_dir in (("mlp", cold), ("rnn", cold_rnn), ("text_classifier", cold_text),
                           ("transformer", cold_transformer)):
        subprocess.run([sys.executable, "-m", "servekit.build.build_tool", *_args(model, out_dir)], env=env,
                       check=True, capture_output=True)

    broken = tmp_path / "broken_model.py"
    broken.write_text(FAILING_MODEL)
    worker = subprocess.Popen([sys.executable, "-m", "servekit.build.build_tool", "--persistent_worker"],
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        requests = [
            (_args("mlp", tmp_path / "warm_first"), 0),
            (["--model_file", str(broken), "--name", "broken", "--backend", BACKEND,
              "--out_dir", str(tmp_path / "broken")], 0),
            (_args("cnn", tmp_path / "cnn"), 0),
            (_args("rnn", tmp_path / "warm_rnn"), 0),
            (_args("text_classifier", tmp_path / "warm_text"), 0),
            (_args("transformer", tmp_path / "warm_transformer"), 0),
            (_args("mlp", tmp_path / "warm_again"), 0),
            # Again: its einsum decompositions are now planned already (servekit.onnx._einsum_plan).
            (_args("transformer", tmp_path / "warm_transformer_again"), 0),
            (["--model_file", str(MODELS / "mlp.py")], 0),  # bad arguments: argparse's message
        ]
        answers = []
        for arguments, request_id in requests:
            worker.stdin.write(_request(arguments, request_id))
            worker.stdin.flush()
            answers.append(_read_response(worker.stdout))
    finally:
        worker.stdin.close()
        assert worker.wait(timeout=120) == 0  # a closed stdin ends the worker cleanly

    (ok_mlp, _, _), (broken_code, broken_output, _), (ok_cnn, _, _), (ok_rnn, _, _), (ok_text, _, _), \
        (ok_transformer, _, _), (ok_again, _, _), (ok_transformer_again, _, _), (bad_code, bad_output, _) = answers
    assert (ok_mlp, ok_cnn, ok_rnn, ok_text, ok_transformer, ok_again, ok_transformer_again) == (0,) * 7, answers
    assert broken_code == 1
    assert "this model file is broken on purpose" in broken_output and "Traceback" in broken_output
    assert not (tmp_path / "broken").exists() or not any((tmp_path / "broken").iterdir())
    assert bad_code == 2 and "required" in bad_output
    assert _same_tree(cold, tmp_path / "warm_first") == []
    assert _same_tree(cold, tmp_path / "warm_again") == []
    assert _same_tree(cold_rnn, tmp_path / "warm_rnn") == []
    assert _same_tree(cold_text, tmp_path / "warm_text") == []
    assert _same_tree(cold_transformer, tmp_path / "warm_transformer") == []
    assert _same_tree(cold_transformer, tmp_path / "warm_transformer_again") == []


HELPER_LAYERS = '''
import keras

OFFSET = {offset}


@keras.saving.register_keras_serializable(package="zoo")
class Shift(keras.layers.Layer):
    def call(self, x):
        return x + OFFSET
'''

MODEL_WITH_HELPERS = '''
import keras

import sizes  # a sibling module
from zoo.layers import Shift  # from the repository root, as Bazel's Python rules import


def build_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(3,), name="features")
    outputs = keras.layers.Dense(sizes.UNITS, name="logits")(Shift(name="shift")(inputs))
    return keras.Model(inputs, outputs, name="with_helpers")
'''


def test_model_files_import_their_helpers_afresh_in_a_warm_worker(tmp_path):
    """A model file imports modules beside it and from its repository root
    (the `data` of its target), the export worker rebuilds their custom layers,
    and an edited helper is imported again by the next action of a warm worker."""
    repo = tmp_path / "repo"
    (repo / "zoo").mkdir(parents=True)
    (repo / "zoo" / "model.py").write_text(MODEL_WITH_HELPERS)
    (repo / "zoo" / "sizes.py").write_text("UNITS = 2\n")
    layers = repo / "zoo" / "layers.py"
    layers.write_text(HELPER_LAYERS.format(offset="1.0"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), PYTHONDONTWRITEBYTECODE="1")

    def args(out: str) -> list[str]:
        return ["--model_file", "zoo/model.py", "--name", "with_helpers", "--backend", BACKEND,
                "--out_dir", str(tmp_path / out)]

    worker = subprocess.Popen([sys.executable, "-m", "servekit.build.build_tool", "--persistent_worker"],
                              cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        answers = []
        for out, offset in (("before", None), ("after", "25.0")):
            if offset:
                layers.write_text(HELPER_LAYERS.format(offset=offset))
            worker.stdin.write(_request(args(out)))
            worker.stdin.flush()
            answers.append(_read_response(worker.stdout))
    finally:
        worker.stdin.close()
        assert worker.wait(timeout=120) == 0
    assert [code for code, _, _ in answers] == [0, 0], answers
    subprocess.run([sys.executable, "-m", "servekit.build.build_tool", *args("cold_after")], cwd=repo, env=env,
                   check=True, capture_output=True)
    assert _same_tree(tmp_path / "cold_after", tmp_path / "after") == []
    reference = "reference/serving_default.b1.out.logits.npy"
    assert not filecmp.cmp(tmp_path / "before" / reference, tmp_path / "after" / reference, shallow=False)


@pytest.mark.parametrize("exit_code,output,request_id", [(0, "", 0), (1, "boom ✗", 7), (-1, "x" * 300, 2**31 - 1)])
def test_work_response_decodes_with_protobuf(exit_code, output, request_id):
    cls = _message_class("WorkResponse", _WORK_RESPONSE)
    encoded = persistent_worker.encode_work_response(exit_code, output, request_id)
    length, pos = persistent_worker._varint_at(encoded, 0)
    assert length == len(encoded) - pos
    decoded = cls.FromString(encoded[pos:])
    assert (decoded.exit_code, decoded.output, decoded.request_id) == (exit_code, output, request_id)


def test_work_request_parsing_rejects_truncated_messages():
    encoded = _request(["--name", "mlp"], request_id=3)
    length, pos = persistent_worker._varint_at(encoded, 0)
    request = persistent_worker.parse_work_request(encoded[pos:])
    assert request.arguments == ["--name", "mlp"] and request.request_id == 3
    body = encoded[pos:]
    field_ends = {8, 13}  # 0a 06 "--name" | 0a 03 "mlp" | 18 03: a cut there is a shorter valid message
    for cut in range(1, length):
        if cut in field_ends:
            assert persistent_worker.parse_work_request(body[:cut]).request_id == 0
            continue
        with pytest.raises(persistent_worker.ProtocolError):
            persistent_worker.parse_work_request(body[:cut])
