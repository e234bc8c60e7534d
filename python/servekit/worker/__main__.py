"""The export worker process.

    python -m servekit.worker JOB.json   # one job, then exit
    python -m servekit.worker --serve    # warm: job paths on stdin, one "done" line each

Each job's report lands next to its job file as `report.json`. An export the
worker refuses or that fails is a report with `ok: False`: the source process
decides what to do with it. A non-zero exit (or, warm, no "done" line) means
the worker itself crashed.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import traceback


class _HideModules:
    """Packages the export worker must not import, each hidden for a reason:

    - JAX and torch: the worker runs TensorFlow only; TensorFlow and Keras import
      JAX when it is installed (~1 s per export).
    - openvino_telemetry: `import openvino` and every `ov.convert_model` report
      to Google Analytics through it, each event forking this process (one at
      import, nine in one small conversion, measured). An export is a build
      step, hermetic and offline. Without the package OpenVINO uses its own
      no-op stub (`openvino.tools.ovc.telemetry_stub`).
    """

    _HIDDEN = ("jax", "jaxlib", "torch", "flax", "openvino_telemetry")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self._HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden in the export worker)", name=name)
        return None


def _run_job_file(job_path: str) -> None:
    from servekit.errors import ExportError
    from servekit.worker.job import WorkerJob
    from servekit.worker.run import run

    report_path = os.path.join(os.path.dirname(os.path.abspath(job_path)), "report.json")
    try:
        report = run(WorkerJob.read(job_path))
    except Exception as e:  # any failure is reported to the source process, which shows it
        report = {"ok": False, "message": str(e), "reason": getattr(e, "reason", "worker_error"),
                  "layer": getattr(e, "layer", None), "exception": type(e).__name__}
        if not isinstance(e, ExportError):
            report["traceback"] = traceback.format_exc(limit=8)
    with open(report_path, "w") as f:
        json.dump(report, f, default=float)


def _import_and_freeze() -> None:
    """Imports what every job uses, then moves those objects out of the
    garbage collector's reach.

    A full collection after each job would scan every object TensorFlow,
    Keras, tf2onnx and onnxruntime created at import: about 0.2 s, which a
    build exporting models back to back waits for. Frozen, they are never
    scanned again, and the collection after a job only walks what jobs
    created. (No collection before freezing: it would cost a fresh export
    those 0.2 s; the little import-time garbage lives as long as the process.)
    """
    try:
        import onnxruntime  # noqa: F401
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401

        from servekit import _write  # noqa: F401
        from servekit import tf2onnx_handlers  # noqa: F401
        from servekit.worker import run  # noqa: F401
    except ImportError:
        return  # a broken install: the first job imports it again and reports the error in full
    gc.freeze()


def _serve() -> int:
    """Runs jobs whose paths arrive on stdin, each as a fresh process would.

    A job that leaves the process holding more than
    `isolation.RETIRE_BYTES` is answered `launch.RETIRING`, and the process
    exits: memory a library keeps after every reference is gone (as
    TensorFlow's gradient registry did, `isolation.release_memory`) goes back
    only with the process.

    What a fresh process would not carry over is reset per job: cwd, HOME,
    KERAS_HOME and TMPDIR (the job's work directory), the Keras session and
    seeds (`run`), sys.path, and the modules the job imported from outside the
    Python installation (a model file edited between two builds is read
    again). The job's stderr goes to `worker.log` in its work directory.
    """
    from servekit.worker import isolation
    from servekit.worker import launch
    from servekit.worker.launch import worker_env

    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints of libraries must not corrupt the protocol
    start_dir = os.getcwd()
    _import_and_freeze()
    for line in sys.stdin:
        job_path = line.strip()
        workdir = os.path.dirname(os.path.abspath(job_path))
        env = worker_env(workdir, ())
        os.environ.update({k: env[k] for k in ("HOME", "KERAS_HOME", "TMPDIR")})
        tempfile.tempdir = None
        os.chdir(workdir)
        saved_stderr = os.dup(2)
        log = os.open(os.path.join(workdir, "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 2)
        try:
            with isolation.one_job():
                _run_job_file(job_path)
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            os.close(log)
        retire = isolation.holds_too_much()
        try:
            protocol.write(launch.RETIRING if retire else "done\n")
            protocol.flush()
        except BrokenPipeError:  # the source process is gone
            break
        if retire:
            break
        isolation.release_memory()  # while the source process is not waiting on this one
    launch.remove_orphaned_home(start_dir)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m servekit.worker JOB.json | --serve", file=sys.stderr)
        return 2
    sys.meta_path.insert(0, _HideModules())
    if argv[1] == "--serve":
        return _serve()
    _run_job_file(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
