"""Independent checks of exported artifacts, used by the test suites.

These reload artifacts the way a serving stack does (tf.saved_model.load
signatures, onnxruntime.InferenceSession, OpenVINO's CompiledModel, LiteRT's
signature runner, torch.export.load) without going through servekit.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import sysconfig
from typing import Mapping

import numpy as np

FLOAT_ATOL = 1e-5


def saved_model_outputs(path: str, inputs: Mapping[str, np.ndarray], endpoint: str = "serving_default"):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    fn = loaded.signatures[endpoint]
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def saved_model_signature_keys(path: str, endpoint: str = "serving_default"):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    fn = loaded.signatures[endpoint]
    ins = sorted(fn.structured_input_signature[1])
    outs = sorted(fn.structured_outputs)
    return ins, outs


def onnx_session(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def onnx_outputs(path: str, inputs: Mapping[str, np.ndarray]):
    session = onnx_session(path)
    feeds = {}
    for k, v in inputs.items():
        v = np.asarray(v)
        feeds[k] = v.astype(str).astype(object) if v.dtype.kind in "SO" else v
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def openvino_outputs(path: str, inputs: Mapping[str, np.ndarray]):
    """Runs an IR in OpenVINO's CPU plugin at float32, as the manifest declares."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)  # its ports carry the IR's names; a compiled port can carry more
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled({port.get_any_name(): np.asarray(inputs[port.get_any_name()]) for port in model.inputs})
    return {port.get_any_name(): np.asarray(results[i]) for i, port in enumerate(model.outputs)}


def litert_outputs(path: str, inputs: Mapping[str, np.ndarray]):
    """Runs a `.tflite` model's serving_default signature in ai_edge_litert's interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return {k: np.asarray(v) for k, v in runner(**{k: np.asarray(v) for k, v in inputs.items()}).items()}


def torch_program_outputs(path: str, input_names, output_names, inputs: Mapping[str, np.ndarray]):
    """Runs a torch ExportedProgram of a Functional model: its inputs by position
    (one tensor, or a list in `input_names` order), its outputs a tensor or a dict."""
    import torch

    module = torch.export.load(path).module()
    tensors = [torch.from_numpy(np.asarray(inputs[name])) for name in input_names]
    out = module(tensors[0] if len(tensors) == 1 else tensors)
    if isinstance(out, dict):
        return {k: v.detach().numpy() for k, v in out.items()}
    (name,) = output_names
    return {name: out.detach().numpy()}


def _bytes(a):
    return np.array([x.encode() if isinstance(x, str) else bytes(x) for x in np.asarray(a, dtype=object).ravel()],
                    dtype=object).reshape(np.shape(a))


def max_abs_err(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> float:
    """Asserts same names, shapes; floats within 1e-5, ints/strings exact.

    Returns the largest float error."""
    assert sorted(expected) == sorted(actual), f"output names {sorted(actual)} != {sorted(expected)}"
    worst = 0.0
    for name, e in expected.items():
        e, a = np.asarray(e), np.asarray(actual[name])
        assert e.shape == a.shape, f"output {name}: shape {a.shape} != {e.shape}"
        if e.dtype.kind in "SUO":
            assert (_bytes(e) == _bytes(a)).all(), f"output {name}: strings differ"
        elif e.dtype.kind in "iub":
            assert a.dtype.kind in "iub", f"output {name}: dtype {a.dtype} != {e.dtype}"
            assert np.array_equal(e, a), f"output {name}: integers differ"
        else:
            err = float(np.max(np.abs(e.astype(np.float64) - a.astype(np.float64)))) if e.size else 0.0
            assert err <= FLOAT_ATOL, f"output {name}: max abs err {err} > {FLOAT_ATOL}"
            worst = max(worst, err)
    return worst


def leak_needles() -> list[bytes]:
    """Strings that must not appear in any artifact: this machine's paths
    (cwd, $HOME, the Python prefix and site-packages, the tests' directory,
    the temp dir), servekit's temporary names, the user and host names."""
    paths = {os.getcwd(), os.path.expanduser("~"), sys.prefix, sys.exec_prefix,
             sysconfig.get_paths()["purelib"], os.path.dirname(os.path.abspath(__file__)),
             os.path.abspath(os.environ.get("TMPDIR") or "/tmp") + "/"}
    words = {"site-packages", "servekit-export-", ".servekit-", socket.gethostname()}
    try:
        user = getpass.getuser()
        if user != "root":  # "root" is an ordinary word; /root is covered as $HOME
            words.add(user)
    except Exception:
        pass
    needles = {p for p in paths if p.startswith("/") and len(p) > 1} | {w for w in words if len(w) >= 4}
    return sorted(n.encode() for n in needles)


def find_leaks(path: str, needles=None) -> list[str]:
    needles = leak_needles() if needles is None else needles
    found = []
    files = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        for n in needles:
            if n in data:
                found.append(f"{os.path.relpath(f, os.path.dirname(path))}: {n!r}")
    return found


def read_tree(path: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file of an artifact."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return {os.path.basename(path): f.read()}
    out = {}
    for d, _, fs in os.walk(path):
        for f in fs:
            full = os.path.join(d, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return dict(sorted(out.items()))
