"""The warm export worker a script's `servekit.export` calls share (`launch.lingering_worker`).

A script or notebook pays the worker's start (TensorFlow's import) once: the
first export of a thread leaves its worker running for the next, and so does
the torch worker of the cross-backend rebuild (the torch formats of a
TensorFlow model). A process
stops after SERVEKIT_WARM_WORKER_IDLE_S without a job and at interpreter exit,
and is replaced when what a fresh worker would read changes (environment,
servekit's sources, installed packages), after an interrupted job, and in a
forked child. Speed itself is measured by the export-speed benchmark's
"script" mode, never here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

import keras
import servekit
from servekit.worker import launch


@pytest.fixture()
def model():
    inputs = keras.Input((3,), name="features")
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs), name="tiny")


@pytest.fixture()
def script(monkeypatch):
    """Outside the session's warm_worker() block, as a script runs; the
    thread's lingering worker is this test's own and is shut down after it."""
    monkeypatch.setenv("SERVEKIT_WARM_WORKER_IDLE_S", "60")
    monkeypatch.setattr(launch._local, "warm", None, raising=False)
    monkeypatch.setattr(launch._local, "lingering", None, raising=False)
    yield
    worker = getattr(launch._local, "lingering", None)
    if worker is not None:
        worker.shutdown()


def _export(model, path, fmt="onnx"):
    return servekit.export(model, str(path), format=fmt, verbose=False)


def test_a_script_reuses_one_warm_worker_until_it_idles(model, tmp_path, script):
    _export(model, tmp_path / "a.onnx")
    worker = launch._local.lingering
    pid = worker.pid
    assert pid is not None
    _export(model, tmp_path / "b", "tf_saved_model")
    assert launch._local.lingering is worker and worker.pid == pid
    worker.start_idle_timer(0.01)
    worker._idle_timer.join()
    assert worker.pid is None and worker._home is None  # stopped, its home removed
    _export(model, tmp_path / "c.onnx")  # the next export starts a process again
    assert launch._local.lingering is worker and worker.pid not in (None, pid)


def test_torch_formats_of_a_tensorflow_model_share_one_warm_torch_worker(model, tmp_path, script):
    first = _export(model, tmp_path / "a.pt2", "torch")
    assert first.strategy == "cross_backend_rebuild"
    worker = launch._local.lingering
    torch_worker = worker.sibling("torch")
    pid = torch_worker.pid
    assert pid is not None and worker.pid is None  # no TensorFlow worker: nothing needed one
    _export(model, tmp_path / "b.pt2", "torch")
    assert torch_worker.pid == pid
    # The warm worker's second artifact is the first one's bytes (a fresh process').
    assert (tmp_path / "a.pt2").read_bytes() == (tmp_path / "b.pt2").read_bytes()
    _export(model, tmp_path / "c.onnx")  # the TensorFlow worker joins the scope
    assert worker.pid is not None and torch_worker.pid == pid
    worker.start_idle_timer(0.01)
    worker._idle_timer.join()
    assert worker.pid is None and torch_worker.pid is None  # idle: both stopped


def test_a_job_cancels_the_pending_idle_stop(model, tmp_path, script):
    _export(model, tmp_path / "a.onnx")
    worker = launch._local.lingering
    pid = worker.pid
    worker.start_idle_timer(30)
    timer = worker._idle_timer
    _export(model, tmp_path / "b.onnx")  # cancels it, and arms a new one
    assert not timer.is_alive() and worker._idle_timer is not timer and worker.pid == pid
    worker._stop_if_idle(worker._idle_generation - 1)  # a timer that fired late does nothing
    assert worker.pid == pid


def test_the_worker_is_replaced_when_its_settings_change(model, tmp_path, script, monkeypatch):
    _export(model, tmp_path / "a.onnx")
    worker = launch._local.lingering
    first = worker.pid
    # An environment variable the worker reads (servekit.onnx's lifting threshold).
    monkeypatch.setenv("SERVEKIT_ONNX_LIFT_BYTES", str(1 << 40))
    _export(model, tmp_path / "b.onnx")
    second = worker.pid
    assert second not in (None, first)
    # servekit's sources or the installed packages (as `installation_fingerprint` sees an edit or a pip install).
    real = launch.installation_fingerprint
    monkeypatch.setattr(launch, "installation_fingerprint", lambda: real() + ("edited",))
    _export(model, tmp_path / "c.onnx")
    assert worker.pid not in (None, first, second)


def test_a_worker_left_holding_too_much_memory_retires_after_its_job(model, tmp_path, script, monkeypatch):
    # As after a model of gigabytes whose memory TensorFlow keeps: the worker answers, then exits.
    monkeypatch.setenv("SERVEKIT_WORKER_RETIRE_BYTES", "1")
    _export(model, tmp_path / "a.onnx")
    worker = launch._local.lingering
    assert worker.pid is None  # gone, and its process reaped
    _export(model, tmp_path / "b", "tf_saved_model")  # the next export starts another
    assert worker.pid is None
    assert sorted(os.listdir(tmp_path)) == ["a.onnx", "b"]


def test_installation_fingerprint_sees_servekit_sources_and_site_packages():
    executable, sources, installed = launch.installation_fingerprint()
    assert executable == sys.executable
    paths = {os.path.relpath(path, launch._PACKAGE_DIR) for path, _, _ in sources}
    assert {"exporter.py", os.path.join("worker", "launch.py")} <= paths
    assert installed and all(os.path.isdir(path) for path, _ in installed)


def test_an_interrupted_export_replaces_the_worker(model, tmp_path, script, monkeypatch):
    _export(model, tmp_path / "a.onnx")
    worker = launch._local.lingering
    pid = worker.pid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in a notebook while the worker converts

    with monkeypatch.context() as patch:
        patch.setattr(launch.select, "select", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _export(model, tmp_path / "b.onnx")
    assert worker.pid is None  # its answer to that job must not reach the next one
    assert not (tmp_path / "b.onnx").exists()
    _export(model, tmp_path / "c.onnx")
    assert worker.pid not in (None, pid)


def test_a_forked_child_lets_go_of_the_parents_worker(model, tmp_path, script):
    _export(model, tmp_path / "a.onnx")
    worker = launch._local.lingering
    pid = worker.pid
    child = os.fork()
    if child == 0:  # the child: it must neither use nor stop the parent's process
        ok = worker._proc is None and worker.pid is None and worker._home is None and not worker.closed
        launch._shutdown_lingering()  # what the child's atexit would do
        os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 0
    assert worker.pid == pid and os.path.isdir(worker._home)
    _export(model, tmp_path / "b.onnx")
    assert worker.pid == pid


def test_interpreter_exit_stops_the_worker_and_removes_its_home(tmp_path):
    code = textwrap.dedent("""
        import keras, servekit
        from servekit.worker import launch
        inputs = keras.Input((3,), name="features")
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        servekit.export(model, {path!r} + ".onnx", format="onnx", verbose=False)
        servekit.export(model, {path!r} + ".pt2", format="torch", verbose=False)
        worker = launch._local.lingering
        torch_worker = worker.sibling("torch")
        print(worker.pid, worker._home, torch_worker.pid, torch_worker._home, flush=True)
    """).format(path=str(tmp_path / "m"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("SERVEKIT_WARM_WORKER_IDLE_S", None)  # the default: 300 s, far beyond this script
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    pid, home, torch_pid, torch_home = out.stdout.split()[-4:]
    for pid, home in ((pid, home), (torch_pid, torch_home)):
        assert not os.path.exists(home)
        with pytest.raises(ProcessLookupError):  # reaped by the script's atexit, not left running
            os.kill(int(pid), 0)


def test_a_worker_whose_script_was_killed_exits_and_removes_its_home(tmp_path):
    code = textwrap.dedent("""
        import time, keras, servekit
        from servekit.worker import launch
        inputs = keras.Input((3,), name="features")
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        servekit.export(model, {path!r}, format="onnx", verbose=False)
        worker = launch._local.lingering
        print(worker.pid, worker._home, flush=True)
        time.sleep(600)
    """).format(path=str(tmp_path / "m.onnx"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    script = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        pid, home = script.stdout.readline().split()
        assert os.path.isdir(home)
    finally:
        script.kill()  # no atexit: the worker sees its stdin end
        script.wait()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (os.path.exists(home) or _alive(int(pid))):
        time.sleep(0.5)
    assert not os.path.exists(home) and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_idle_zero_stops_the_worker_after_each_export(model, tmp_path, script, monkeypatch):
    monkeypatch.setenv("SERVEKIT_WARM_WORKER_IDLE_S", "0")
    _export(model, tmp_path / "a.onnx")
    assert launch._local.lingering.pid is None


def test_a_bad_idle_timeout_is_refused():
    os.environ["SERVEKIT_WARM_WORKER_IDLE_S"] = "soon"
    try:
        with pytest.raises(servekit.ExportError, match="SERVEKIT_WARM_WORKER_IDLE_S must be a number"):
            launch.idle_seconds()
    finally:
        del os.environ["SERVEKIT_WARM_WORKER_IDLE_S"]
