"""Starts the export worker: a TensorFlow-backend process, fresh per job, or
warm for many (`warm_worker()` blocks; `lingering_worker()`, the one a
script's `servekit.export` calls share), with the cross-backend rebuild's
workers as its siblings.

The worker runs with a fixed environment (`worker_env`): KERAS_BACKEND
=tensorflow, PYTHONHASHSEED=0, HOME, KERAS_HOME and TMPDIR inside the job's
private work directory, TensorFlow logging off. A fresh process that runs the
same steps makes the same traces, so its artifacts are reproducible across
processes and directories; `servekit.determinism` removes what is left. A
warm worker resets per job what a fresh process would not carry over.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from typing import Any, Iterator, Optional, Sequence

from servekit.errors import ExportError
from servekit.worker.job import WorkerJob

WORKER_TIMEOUT_S = 1800
# A warm worker's answer to a job after which it exits (`isolation.holds_too_much`).
RETIRING = "done, retiring\n"
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "SYSTEMROOT",
             "SERVEKIT_ONNX_EXTERNAL_DATA_BYTES", "SERVEKIT_ONNX_LIFT_BYTES",  # servekit.onnx's settings
             "SERVEKIT_LITERT_BUFFER_OFFSET_BYTES", "SERVEKIT_LITERT_LIFT_BYTES",  # servekit.formats.litert's
             "SERVEKIT_FREE_BEFORE_CHECKING_BYTES",  # servekit._write's
             "SERVEKIT_MEMORY_TRACE",  # servekit.peak_memory's
             "SERVEKIT_WORKER_RETIRE_BYTES")  # servekit.worker.isolation's
# The directory holding the `servekit` package, and the package itself.
_PYTHON_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def worker_env(workdir: str, extra_paths: Sequence[str]) -> dict[str, str]:
    """The fixed environment of the export worker."""
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    home = os.path.join(workdir, "home")
    tmp = os.path.join(workdir, "tmp")
    os.makedirs(home, exist_ok=True)
    os.makedirs(tmp, exist_ok=True)
    paths = [_PYTHON_ROOT] + [p for p in extra_paths if p and p != _PYTHON_ROOT]
    env.update(
        KERAS_BACKEND="tensorflow",
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=os.pathsep.join(paths),
        HOME=home,
        KERAS_HOME=os.path.join(home, ".keras"),
        TMPDIR=tmp,
        TF_CPP_MIN_LOG_LEVEL="3",
        TF_CPP_MIN_VLOG_LEVEL="0",
        TF_ENABLE_ONEDNN_OPTS="0",  # as in the export action: the same kernels, no oneDNN notice
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        TF2ONNX_CATCH_ERRORS="FALSE",
        # Not in the job's private TMPDIR: Inductor's cache path reaches an AOTInductor
        # package's debug information, and a shared cache reuses its precompiled headers.
        # An export action's own path (rules/export.bzl) is kept.
        TORCHINDUCTOR_CACHE_DIR=os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "servekit-torchinductor"),
    )
    env.setdefault("LANG", "C.UTF-8")
    return env


def installation_fingerprint() -> tuple:
    """What a fresh worker would read besides its environment: servekit's own
    sources (the worker imports them from this checkout) and the installed
    packages (a directory of site-packages changes when `pip install` adds,
    upgrades or removes one). A warm worker started before either changed is
    replaced, as Bazel replaces a persistent worker whose tool changed. About
    1 ms."""
    sources = []
    stack = [_PACKAGE_DIR]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    st = entry.stat()
                    sources.append((entry.path, st.st_mtime_ns, st.st_size))
    installed = []
    for path in _site_packages():
        try:
            installed.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            installed.append((path, None))
    return sys.executable, tuple(sorted(sources)), tuple(installed)


def _site_packages() -> list[str]:
    import site

    paths = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    return [p for p in paths + ([user] if isinstance(user, str) else []) if os.path.isdir(p)]


def importable_sys_path() -> list[str]:
    """The source process' sys.path entries that exist (for custom modules),
    never servekit's own package directory (its `onnx.py` would shadow onnx)."""
    out = []
    for p in sys.path:
        p = os.path.abspath(p) if p else os.getcwd()
        if os.path.isdir(p) and p not in out and os.path.realpath(p) != _PACKAGE_DIR:
            out.append(p)
    return out


def run_worker(job: WorkerJob, workdir: str) -> dict[str, Any]:
    """Runs the export worker on `job` in `workdir`: in the warm worker when
    one is open (`warm_worker()`), else in a fresh process.

    Returns:
        The worker's result: `{"reports": {format: report}}`
        (`servekit.worker.run.run`), or one failed report (`ok: False`) when
        the job failed as a whole.

    Raises:
        ExportError: the worker crashed or timed out (its last stderr lines
            are in the message). An export the worker refused is a report
            with `ok: False`, not an exception.
    """
    job_path = os.path.join(workdir, "job.json")
    job.write(job_path)
    warm = getattr(_local, "warm", None)
    if warm is not None:
        return warm.run(job, job_path, workdir)
    env = worker_env(workdir, job.sys_path)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "servekit.worker", job_path],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _timeout_error(job) from None
    return _read_report(job, workdir, proc.returncode, proc.stderr)


def _timeout_error(job: WorkerJob) -> ExportError:
    return ExportError(f"Model '{job.model_name}': the export worker took longer than {WORKER_TIMEOUT_S} s.",
                       model=job.model_name, reason="worker_error")


def _read_report(job: WorkerJob, workdir: str, returncode: Optional[int], stderr: str) -> dict[str, Any]:
    report_path = os.path.join(workdir, "report.json")
    if returncode != 0 or not os.path.exists(report_path):
        tail = "\n".join((stderr or "").strip().splitlines()[-15:])
        how = f"exit code {returncode}"
        if returncode is not None and returncode < 0:
            how = f"killed by {signal.Signals(-returncode).name}"
            if -returncode == signal.SIGKILL:
                how += ": the machine may have run out of memory"
        raise ExportError(f"Model '{job.model_name}': the export worker failed ({how}):\n{tail}",
                          model=job.model_name, reason="worker_error")
    with open(report_path) as f:
        return json.load(f)


class _WarmWorker:
    """One long-lived worker process (`python -m servekit.worker --serve`) that
    runs jobs one at a time, so that TensorFlow is imported once, not once per
    export. Each job still gets its own work directory, HOME, TMPDIR, seeds and
    Keras session (`servekit.worker.__main__`), so a warm worker writes the
    same bytes as a fresh process. After a job that failed, crashed, timed
    out or was interrupted (KeyboardInterrupt), the process is replaced, so
    one model's failure cannot leak into the next export. Before each job, a
    process started under other settings than a fresh one would read now
    (`worker_env`, `installation_fingerprint`) is replaced too.

    The process starts when the worker is created, not at its first job: it
    imports TensorFlow, tf2onnx and onnxruntime (about 3 s) on another core
    while the caller imports its own backend, builds the model and computes
    the reference outputs.

    `backend` "tensorflow" is the export worker (`python -m servekit.worker
    --serve`); another backend is the cross-backend rebuild's worker under
    that backend (`python -m servekit.strategies.cross_backend --serve`, the
    torch formats of TensorFlow and JAX models), a `sibling` of the scope's
    TensorFlow worker, started at its first job or by `refresh`, and stopped
    with it.
    """

    def __init__(self, backend: str = "tensorflow", start: bool = True) -> None:
        self.backend = backend
        self._siblings: dict[str, "_WarmWorker"] = {}
        self._proc: Optional[subprocess.Popen] = None
        self._settings: tuple = ()
        self._home: Optional[str] = None
        # Held while a job runs, and while the process is stopped or replaced.
        self._busy = threading.Lock()
        self._idle_timer: Optional[threading.Timer] = None
        self._idle_generation = 0
        self.closed = False
        if start:
            self._start()

    def _current_settings(self) -> tuple:
        env = worker_env(self._home, ())
        env["KERAS_BACKEND"] = self.backend
        return env, installation_fingerprint()

    def _start(self) -> None:
        if self._home is None or not os.path.isdir(self._home):
            self._home = tempfile.mkdtemp(prefix=WARM_HOME_PREFIX)
        self._settings = self._current_settings()
        module = "servekit.worker" if self.backend == "tensorflow" else "servekit.strategies.cross_backend"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, "--serve"], cwd=self._home,
            env=self._settings[0], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)

    def sibling(self, backend: str) -> "_WarmWorker":
        """This scope's warm worker for `backend`: itself for its own backend,
        else the cross-backend worker, created on first use (not started)."""
        if backend == self.backend:
            return self
        worker = self._siblings.get(backend)
        if worker is None:
            worker = self._siblings[backend] = _WarmWorker(backend, start=False)
            _every_worker.add(worker)
        return worker

    @property
    def pid(self) -> Optional[int]:
        """The worker process' id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def refresh(self) -> None:
        """Starts the process now if it is not running or was started under
        other settings, so that its imports overlap the caller's work."""
        with self._busy:
            self._ensure_current()

    def _ensure_current(self) -> None:
        if self._proc is not None and self._current_settings() != self._settings:
            self.close()  # the settings a fresh worker would read have changed
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._start()

    def run(self, job: WorkerJob, job_path: str, workdir: str) -> dict[str, Any]:
        with self._busy:
            if self.closed:
                raise RuntimeError("This warm export worker was shut down.")
            try:
                return self._run(job, job_path, workdir)
            except BaseException:
                # Interrupted (KeyboardInterrupt in a notebook) or failed mid-job: the process
                # may still be working on this job and would answer the next one with its "done".
                self.close()
                raise

    def _run(self, job: WorkerJob, job_path: str, workdir: str) -> dict[str, Any]:
        self._ensure_current()
        proc = self._proc
        proc.stdin.write(job_path + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], WORKER_TIMEOUT_S)
        if not ready:
            self.close()
            raise _timeout_error(job)
        answer = proc.stdout.readline()
        stderr = _read_text(os.path.join(workdir, "worker.log"))
        if answer not in ("done\n", RETIRING):  # the process died mid-job
            self.close()
            return _read_report(job, workdir, proc.wait(), stderr)
        report = _read_report(job, workdir, 0, stderr)
        if answer == RETIRING:
            self._retire()
        elif not all(r.get("ok") for r in report.get("reports", {None: report}).values()):
            self.close()  # a fresh process for the next job
        return report

    def _retire(self) -> None:
        """Lets a worker that said it retires exit by itself (it hands its memory
        back); the next job starts another."""
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        self.close()

    def close(self) -> None:
        """Stops the process (the next job starts another)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:  # a broken pipe to a killed process: nothing left to flush
                    pass
            self._proc = None

    def _stop(self) -> None:
        """Stops the process and removes its home; the object stays usable."""
        self.close()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def shutdown(self) -> None:
        """Stops the process, and its siblings', for good."""
        self.cancel_idle_timer()
        with self._busy:
            self.closed = True
            self._stop()
        for worker in list(self._siblings.values()):
            worker.shutdown()

    def start_idle_timer(self, seconds: float) -> None:
        """Stops the process after `seconds` without a job (the next job starts it again)."""
        self.cancel_idle_timer()
        generation = self._idle_generation
        self._idle_timer = threading.Timer(seconds, self._stop_if_idle, (generation,))
        self._idle_timer.daemon = True
        self._idle_timer.start()

    def cancel_idle_timer(self) -> None:
        # A timer that has fired already but waits for the lock finds a newer generation and does nothing.
        self._idle_generation += 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _stop_if_idle(self, generation: int) -> None:
        with self._busy:  # a scope's job takes its workers' locks one at a time, never this one then another's
            if generation != self._idle_generation:
                return
            self._stop()
            for worker in list(self._siblings.values()):
                worker.stop()

    def stop(self) -> None:
        """Stops the process, and its siblings', now (the next job starts another)."""
        self.cancel_idle_timer()
        with self._busy:
            self._stop()
        for worker in list(self._siblings.values()):
            worker.stop()

    def forget_after_fork(self) -> None:
        """In a forked child: lets go of the parent's process without touching
        it (its pipes are the parent's conversation); a job of the child starts
        the child's own process."""
        for stream in (self._proc.stdin, self._proc.stdout) if self._proc is not None else ():
            try:
                stream.close()  # the child's copies of the descriptors only
            except OSError:
                pass
        self._proc = None
        self._home = None
        self._busy = threading.Lock()
        self._idle_timer = None


# A warm worker's own directory (its cwd at start): the source process removes it
# when it stops the worker; a worker whose source process died removes it itself.
WARM_HOME_PREFIX = "servekit-warm-worker-"


def remove_orphaned_home(start_dir: str) -> None:
    """In a warm worker whose stdin ended (its source process is gone without
    stopping it, e.g. killed): removes the directory it was started in."""
    if os.path.basename(os.path.normpath(start_dir)).startswith(WARM_HOME_PREFIX):
        shutil.rmtree(start_dir, ignore_errors=True)


def _read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# The open warm worker of each thread: a worker serves one job at a time.
_local = threading.local()
# Every warm worker of this process, for a forked child to let go of them.
_every_worker: "weakref.WeakSet[_WarmWorker]" = weakref.WeakSet()


@contextlib.contextmanager
def warm_worker() -> Iterator[None]:
    """Runs every portable export of this thread in this block in one warm
    worker process, started now.

    The build tool opens one for its lifetime: both formats of an action (and,
    as a Bazel persistent worker, every action of a build) share a TensorFlow
    process. `servekit.export` keeps one warm per thread for a script's next
    exports (`lingering_worker`). Artifacts are byte-identical to those of
    fresh processes.

    Example:

    ```python
    with servekit.worker.launch.warm_worker():
        servekit.export(model, "out/model", format="tf_saved_model")
        servekit.export(model, "out/model.onnx", format="onnx")
    ```
    """
    if getattr(_local, "warm", None) is not None:  # nested: the outer block owns the process
        yield
        return
    worker = _local.warm = _new_worker()
    try:
        yield
    finally:
        _local.warm = None
        worker.shutdown()


def current_worker(backend: str) -> Optional[_WarmWorker]:
    """The warm worker for `backend` of this thread's open scope (a
    `warm_worker()` block or a `lingering_worker()` call), or None: then a
    job runs in a fresh process."""
    scope = getattr(_local, "warm", None)
    return scope.sibling(backend) if scope is not None else None


def _new_worker() -> _WarmWorker:
    worker = _WarmWorker()
    _every_worker.add(worker)
    return worker


# How long `servekit.export`'s own warm worker waits for the next export of its
# thread before its process exits (SERVEKIT_WARM_WORKER_IDLE_S; 0: after each call).
DEFAULT_IDLE_S = 300.0
_lingering_lock = threading.Lock()
_lingering: list[_WarmWorker] = []


def idle_seconds() -> float:
    """The idle timeout of a lingering worker, from SERVEKIT_WARM_WORKER_IDLE_S.

    Raises:
        ExportError: the variable is not a number of seconds.
    """
    text = os.environ.get("SERVEKIT_WARM_WORKER_IDLE_S", "")
    try:
        return float(text) if text else DEFAULT_IDLE_S
    except ValueError:
        raise ExportError(f"SERVEKIT_WARM_WORKER_IDLE_S must be a number of seconds; got {text!r}.",
                          reason="bad_argument") from None


@contextlib.contextmanager
def lingering_worker(tensorflow: bool = True, cross: Sequence[str] = ()) -> Iterator[None]:
    """`warm_worker()` for one `servekit.export` call that stays warm afterwards.

    A script or notebook exporting several models pays the worker's start
    (TensorFlow's import) once: the worker of the first export of a thread
    serves the next ones. Its process exits after `idle_seconds()` without a
    job (the next export starts another), at interpreter exit, and is
    replaced when the settings a fresh worker reads change (environment,
    servekit's sources, installed packages: `_WarmWorker._ensure_current`),
    after a failed or interrupted job, and in a forked child. Inside an open
    `warm_worker()` block that block's workers are used instead.

    Args:
        tensorflow: start the TensorFlow export worker now (the portable
            rebuild will run), so that it imports while the caller computes
            the reference outputs.
        cross: backends whose cross-backend workers to start now (the torch
            formats of a TensorFlow or JAX model: "torch"). Others start at
            their first job, and stay warm as well.
    """
    scope = getattr(_local, "warm", None)
    if scope is not None:
        for backend in cross:
            scope.sibling(backend).refresh()
        yield
        return
    idle = idle_seconds()
    worker = getattr(_local, "lingering", None)
    if worker is None or worker.closed:
        worker = _local.lingering = _WarmWorker(start=tensorflow)
        _every_worker.add(worker)
        with _lingering_lock:
            _lingering.append(worker)
    else:
        worker.cancel_idle_timer()
        if tensorflow:
            worker.refresh()  # imports start now if its process had stopped
    for backend in cross:
        worker.sibling(backend).refresh()
    _local.warm = worker
    try:
        yield
    finally:
        _local.warm = None
        if idle > 0:
            worker.start_idle_timer(idle)
        else:
            worker.stop()


def _shutdown_lingering() -> None:
    """At interpreter exit: every lingering worker's process is stopped and its
    home removed (the threads that used them have ended)."""
    with _lingering_lock:
        workers, _lingering[:] = list(_lingering), []
    for worker in workers:
        worker.shutdown()


def _after_fork_in_child() -> None:
    global _lingering_lock
    _lingering_lock = threading.Lock()
    for worker in list(_every_worker):
        worker.forget_after_fork()


atexit.register(_shutdown_lingering)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
