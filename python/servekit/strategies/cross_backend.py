"""Rebuilding under another backend, for that backend's converters.

The road from TensorFlow and JAX to the torch formats (an ExportedProgram, an
AOTInductor package): the model's `.keras` archive is rebuilt in a fresh torch
worker and exported there as the in-process strategy exports on torch.

And the last road to ONNX, tried after the portable rebuild (tf2onnx) and the
in-process export (the source backend's own converter) have failed: the
model's `.keras` archive is rebuilt in a fresh worker process under each other
backend in turn, JAX (jax2onnx) then torch (torch.onnx), and converted there
the way the in-process strategy converts on that backend. The artifact is
verified against the cases the *source* backend computed, with the same
tolerances, and gets the same contract (names, dynamic `batch`, canonical
bytes, no paths); `converter` says which converter made it.

It declines what a fresh process cannot rebuild faithfully: ExportArchives,
custom classes from modules a fresh process cannot import by name (the worker
imports the others, e.g. keras_hub's), and stochastic or stateful endpoints
(their checks run in the source process).

    python -m servekit.strategies.cross_backend JOB.json   # the worker side
    python -m servekit.strategies.cross_backend --serve    # warm: job paths on stdin

Inside a warm scope (`servekit.worker.launch.warm_worker()`, or the lingering
worker a script's `servekit.export` calls share) the worker of each backend is
warm too: a script exporting several TensorFlow models to the torch formats
pays torch's start once. Each job is run as a fresh process would run it
(`_serve`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Optional

from servekit.errors import ExportError, root_cause
from servekit.pipeline.request import ExportRequest
from servekit.worker import launch
from servekit.worker.job import EndpointJob, WorkerJob

# Tried in this order, skipping the source backend.
TARGET_BACKENDS = ("jax", "torch")


class CrossBackendRebuild:
    """Rebuilds the model under JAX or torch in a fresh worker and converts it there."""

    name = "cross_backend_rebuild"

    def unavailable(self, request: ExportRequest) -> Optional[str | ExportError]:
        from servekit.strategies import keras_file

        if request.format not in ("onnx", "torch", "torch_aoti"):
            return "its converters take the TensorFlow trace (the portable rebuild and in-process strategies)"
        if request.format != "onnx" and request.backend == "torch":
            return "the model is already on torch (the in-process strategy exports it)"
        if request.kind != "model":
            return "ExportArchives are rebuilt under TensorFlow only"
        plan = request.endpoints[0]
        if any(s.dtype == "string" for s in plan.layout.flat):
            if request.format != "onnx":
                from servekit.formats import torch_program

                return torch_program.string_inputs_error(request.name)
            return "string inputs run TensorFlow ops, which neither JAX nor torch converts to ONNX"
        if request.format == "onnx":
            from servekit.formats import torch_lookups

            hashing = torch_lookups.hashing_outside_onnx_converters(request.source)
            if hashing:
                return hashing
        if plan.behavior.stochastic or plan.behavior.stateful:
            return "stochastic and stateful endpoints are verified in the source process only"
        try:
            classes = keras_file.preflight(request.source, request.name)
        except ExportError as e:
            return e
        local = sorted(c.qualname for c in classes if not c.importable or c.file)
        if local:
            return (f"the model uses classes a fresh process cannot import by module name ({', '.join(local)}); "
                    "this strategy's worker imports modules by name only")
        return None

    def write(self, request: ExportRequest, staged: str, workdir: str) -> dict[str, Any]:
        return self.write_formats({request.format: request}, {request.format: staged}, workdir)[request.format]

    def write_formats(self, requests: dict[str, ExportRequest], staged: dict[str, str],
                      workdir: str) -> dict[str, dict[str, Any]]:
        """The torch formats in one torch worker; ONNX on its own (it tries JAX first)."""
        torch_formats = [fmt for fmt in requests if fmt != "onnx"]
        reports = {}
        for group in ([torch_formats] if torch_formats else []) + ([["onnx"]] if "onnx" in requests else []):
            reports.update(self._write_group({f: requests[f] for f in group}, staged, workdir))
        return reports

    def _write_group(self, requests: dict[str, ExportRequest], staged: dict[str, str],
                     workdir: str) -> dict[str, dict[str, Any]]:
        from servekit.strategies import keras_file as keras_archive

        request = next(iter(requests.values()))
        workdir = os.path.join(workdir, "_".join(requests))  # one directory per group of formats
        os.makedirs(workdir)
        keras_file = os.path.join(workdir, "model_keras")
        classes = keras_archive.preflight(request.source, request.name)
        keras_archive.save_keras(request.source, keras_file, request.name)
        cases_file, cases_index = request.cases.write(os.path.join(workdir, "cases.npz"))
        plan = request.endpoints[0]
        job = WorkerJob(
            kind="model", keras_file=keras_file, outputs={fmt: staged[fmt] for fmt in requests},
            model_name=request.name, version=request.version,
            endpoints=(EndpointJob("serving_default", plan.layout, tuple(plan.output_names)),),
            opset=request.opset, layer_names=tuple(request.layer_names), verify=request.verify,
            cases_file=cases_file, cases=tuple(cases_index), custom_classes=tuple(classes),
            lambda_globals=keras_archive.lambda_globals(request.source)[0],
            sys_path=tuple(launch.importable_sys_path()) if classes else (), source_backend=request.backend)
        reasons: dict[str, list[str]] = {fmt: [] for fmt in requests}
        reports: dict[str, dict[str, Any]] = {}
        targets = TARGET_BACKENDS if "onnx" in requests else ("torch",)
        for backend in (b for b in targets if b != request.backend):
            result = _run_worker(job, workdir, backend)
            for fmt in requests:
                report = result["reports"][fmt] if "reports" in result else result
                if report.get("ok"):
                    reports.setdefault(fmt, report)
                else:
                    reasons[fmt].append(f"{backend}: {report.get('message', 'failed')}")
            if len(reports) == len(requests):
                break
        for fmt in requests:
            reports.setdefault(fmt, {"ok": False, "reason": "conversion_failed",
                                     "message": "rebuilt under " + "; under ".join(reasons[fmt])})
        return reports


def _run_worker(job: WorkerJob, workdir: str, backend: str) -> dict[str, Any]:
    scratch = os.path.join(workdir, f"rebuild_{backend}")
    os.makedirs(scratch, exist_ok=True)
    job_path = os.path.join(scratch, "job.json")
    job.write(job_path)
    warm = launch.current_worker(backend)
    if warm is not None:
        try:
            return warm.run(job, job_path, scratch)
        except ExportError as e:  # it crashed or timed out (and was replaced): this backend failed
            return {"ok": False, "message": str(e)}
    env = launch.worker_env(scratch, job.sys_path)  # where the model's own modules are
    env["KERAS_BACKEND"] = backend  # the point of this strategy: not TensorFlow
    try:
        proc = subprocess.run([sys.executable, "-m", "servekit.strategies.cross_backend", job_path], cwd=scratch,
                              env=env, capture_output=True, text=True, timeout=launch.WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"ok": False, "message": f"the worker took longer than {launch.WORKER_TIMEOUT_S} s"}
    report_path = os.path.join(scratch, "report.json")
    if proc.returncode != 0 or not os.path.exists(report_path):
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
        return {"ok": False, "message": f"the worker failed (exit code {proc.returncode}): {tail}"}
    with open(report_path) as f:
        return json.load(f)


def _work(job: WorkerJob, workdir: str) -> dict[str, Any]:
    """The worker side: rebuild under this process' backend, then convert and
    verify each format of the job (`{"reports": {format: report}}`)."""
    import keras

    from servekit.pipeline.cases import CaseSet
    from servekit.pipeline.request import EndpointPlan
    from servekit.source_model import backend_semantics
    from servekit import formats, peak_memory
    from servekit.strategies import keras_file
    from servekit.strategies.in_process import InProcess
    from servekit.worker import isolation

    peak_memory.mark("imports")
    custom = keras_file.import_custom_classes(job.custom_classes)  # also registers e.g. keras_hub's classes
    keras.utils.set_random_seed(0)
    with keras_file.lambda_globals_installed(job.lambda_globals):
        model = keras_file.load_keras(job.keras_file, job.model_name, custom)
    peak_memory.mark("rebuild")
    endpoint = job.endpoints[0]
    plan = EndpointPlan(endpoint.name, endpoint.layout, list(endpoint.output_names), fn=model)
    cases = CaseSet.read(job.cases_file, list(job.cases)) if job.verify else CaseSet()
    reports, checks, request = {}, {}, None
    for fmt, staged in job.outputs.items():
        request = ExportRequest("model", fmt, job.model_name, keras.backend.backend(), [plan], cases,
                                verify=job.verify, opset=job.opset, source=model, version=job.version)
        try:
            with backend_semantics.computed_as(job.source_backend):
                checks[fmt] = InProcess().write_deferring_check(request, staged, workdir)
        except ExportError as e:
            reports[fmt] = {"ok": False, "message": str(e), "reason": e.reason}
        peak_memory.mark(f"{fmt} export")
    # A torch program is loaded back to be checked: with the rebuilt model freed first
    # (its programs' weights are the model's own), the weights are in memory once. The
    # collection costs little beside a torch export.
    del model, plan, request
    if any(fmt in formats.TORCH_FORMATS for fmt in job.outputs):
        isolation.release_memory()
        peak_memory.mark("release the model")
    for fmt, check in checks.items():
        try:
            reports[fmt] = check()
        except ExportError as e:
            reports[fmt] = {"ok": False, "message": str(e), "reason": e.reason}
        peak_memory.mark(f"{fmt} verification")
    return {"reports": {fmt: reports[fmt] for fmt in job.outputs}}


def _run_job_file(job_path: str, warm: bool = False) -> None:
    job = WorkerJob.read(job_path)
    workdir = os.path.dirname(os.path.abspath(job_path))
    try:
        if warm:
            _fresh_state(job)
        report = _work(job, workdir)
    except ExportError as e:
        report = {"ok": False, "message": str(e), "reason": e.reason}
    except Exception as e:  # a converter's own failure: reported to the source process, which tries the next
        report = {"ok": False, "message": root_cause(e), "reason": "conversion_failed"}
    report.pop("error_class", None)
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, default=str)


def _import_and_freeze() -> None:
    """Imports what every job of this backend uses (Keras, the backend, the
    exporters), then moves those objects out of the garbage collector's reach
    (as `servekit.worker.__main__` does for TensorFlow)."""
    import gc

    try:
        import keras  # noqa: F401  (imports the backend)
        import onnxruntime  # noqa: F401

        from servekit.strategies import in_process  # noqa: F401
        if keras.backend.backend() == "torch":
            from servekit.formats import torch_program  # noqa: F401
    except ImportError:
        return  # the first job imports it again and reports the error in full
    gc.freeze()


def _fresh_state(job: WorkerJob) -> None:
    """What a fresh process has that a warm one must get back before a job:
    an empty Keras session (auto-generated names, `seed_generator`, count
    from zero again) and torch's compiler caches cleared; `_work` seeds the
    generators."""
    import keras

    keras.backend.clear_session(free_memory=False)  # the worker collects after answering
    if keras.backend.backend() == "torch":
        import torch

        torch._dynamo.reset()
        _fresh_precompiled_headers()
    sys.path[:0] = [p for p in job.sys_path if p not in sys.path]  # restored by `isolation.one_job`


def _fresh_precompiled_headers() -> None:
    """Points Inductor's precompiled headers at this job's TMPDIR, as a fresh
    process would have them.

    Inductor fixes their directory when `torch._inductor.codecache` is imported
    (under the TMPDIR of the job that imported it) and memoizes each header's
    path: a later job's AOTInductor compile then included a header from that
    job's removed directory (measured: a float32 then a bfloat16 model's
    `torch_aoti` from JAX, "fatal error: .../precompiled_headers/<hash>.h: No
    such file or directory").
    """
    codecache = sys.modules.get("torch._inductor.codecache")
    if codecache is None:
        return  # not imported yet: it will read this job's TMPDIR
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    codecache._HEADER_DIR = os.path.join(default_cache_dir(), "precompiled_headers")
    codecache._HEADER_LOCK_DIR = os.path.join(codecache._HEADER_DIR, "locks")
    codecache._precompile_header.cache_clear()


def _serve() -> int:
    """Runs jobs whose paths arrive on stdin, each as a fresh process would
    (`servekit.worker.__main__._serve`: cwd, HOME, KERAS_HOME, TMPDIR, stderr
    into the job's `worker.log`, sys.path and user modules restored after it),
    answering "done" for each."""
    import tempfile

    from servekit.worker import isolation

    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints of libraries must not corrupt the protocol
    start_dir = os.getcwd()
    _import_and_freeze()
    for line in sys.stdin:
        job_path = line.strip()
        workdir = os.path.dirname(os.path.abspath(job_path))
        env = launch.worker_env(workdir, ())
        os.environ.update({k: env[k] for k in ("HOME", "KERAS_HOME", "TMPDIR")})
        tempfile.tempdir = None
        os.chdir(workdir)
        saved_stderr = os.dup(2)
        log = os.open(os.path.join(workdir, "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 2)
        try:
            with isolation.one_job():
                _run_job_file(job_path, warm=True)
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            os.close(log)
        try:
            protocol.write("done\n")
            protocol.flush()
        except BrokenPipeError:  # the source process is gone
            break
        isolation.release_memory()  # while the source process is not waiting on this one
    launch.remove_orphaned_home(start_dir)
    return 0


def main(argv) -> int:
    if len(argv) == 2 and argv[1] == "--serve":
        return _serve()
    _run_job_file(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
