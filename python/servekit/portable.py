"""Cross-backend export: the source-process side of the export worker.

A Keras model is portable between backends through its `.keras` archive. To
export a model from any backend, servekit saves it to a private temporary
directory, then runs `servekit._export_worker` there in a fresh process under
the TensorFlow backend with a fixed environment. The worker writes the
artifact at a staging path next to the destination and checks it against the
outputs the source backend computed (also handed over in the temporary
directory). A fresh process that runs the same steps makes the same traces, so
the artifacts are reproducible; `servekit.determinism` removes what is left.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from typing import Any, Optional, Sequence


from servekit.errors import ExportError

# Layers that hold code of one backend and cannot be rebuilt under TensorFlow.
_BACKEND_BOUND_LAYERS = {
    "TorchModuleWrapper": "it wraps a torch.nn.Module, which has no TensorFlow or ONNX-via-TF equivalent; rewrite it "
                          "with Keras layers, or export it with torch.onnx.export directly",
    "JaxLayer": "it wraps a JAX function, which servekit cannot rebuild under TensorFlow; rewrite it with Keras "
                "layers",
    "FlaxLayer": "it wraps a Flax module, which servekit cannot rebuild under TensorFlow; rewrite it with Keras "
                 "layers",
}

WORKER_TIMEOUT_S = 1800
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "SYSTEMROOT")


@dataclasses.dataclass
class CustomClass:
    """A non-Keras class of the model, and how the worker imports it: by module
    name, or from `file` for a module that was loaded by path (a model file of
    the build tool)."""

    module: str
    qualname: str
    names: list[str]
    layer: str
    file: Optional[str] = None

    @property
    def importable(self) -> bool:
        if self.module == "__main__" or "<locals>" in self.qualname:
            return False
        if self.file:
            return True
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "qualname": self.qualname, "names": self.names, "file": self.file}


def _loaded_by_path(module_name: str) -> Optional[str]:
    """The source file of a module imported from a path (not findable by name)."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module_name == "__main__" or not path or not os.path.isfile(path):
        return None
    if "." not in module_name:
        import importlib.machinery

        # Findable on sys.path by name (sys.modules aside): the worker imports it so.
        if importlib.machinery.PathFinder.find_spec(module_name) is not None:
            return None
    elif getattr(module, "__spec__", None) is not None and module.__spec__.origin == path:
        return None  # a package's submodule: importable by name
    return os.path.abspath(path)


def _layers(model) -> list[Any]:
    try:
        return list(model._flatten_layers(include_self=True, recursive=True))
    except AttributeError:  # not a Keras layer
        return [model]


def custom_classes(model) -> list[CustomClass]:
    """Non-Keras classes in the model (they must be importable by the worker)."""
    import keras

    found: dict[type, CustomClass] = {}
    for layer in _layers(model):
        cls = type(layer)
        if cls.__module__.startswith("keras.") or cls in found:
            continue
        names = {cls.__name__}
        try:
            registered = keras.saving.get_registered_name(cls)
            if registered:
                names.add(registered)
        except (TypeError, AttributeError):  # not registered
            pass
        found[cls] = CustomClass(cls.__module__, cls.__qualname__, sorted(names), layer.name,
                                 _loaded_by_path(cls.__module__))
    return list(found.values())


def _code_names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def lambda_globals(model) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Globals the functions of `keras.layers.Lambda` layers refer to.

    Keras serializes a Lambda's bytecode but not its globals: a fresh process
    loading it knows neither `keras` nor `np`. Returns `(entries, problems)`:
    entries say how the worker rebuilds each global (a module, an importable
    function/class, or a plain constant); problems are `(layer, name)` pairs
    that cannot be carried over.
    """
    entries: dict[str, dict] = {}
    problems: list[tuple[str, str]] = []
    for layer in _layers(model):
        if type(layer).__name__ != "Lambda" or not type(layer).__module__.startswith("keras."):
            continue
        fn = getattr(layer, "function", None)
        if not inspect.isfunction(fn):
            continue
        g = fn.__globals__
        for name in sorted(_code_names(fn.__code__)):
            if name not in g or name in entries:
                continue
            value = g[name]
            if isinstance(value, types.ModuleType):
                entries[name] = {"kind": "module", "module": value.__name__}
            elif isinstance(value, (bool, int, float, str, type(None))):
                entries[name] = {"kind": "value", "value": value}
            elif (callable(value) and getattr(value, "__module__", None) not in (None, "__main__")
                  and "<locals>" not in getattr(value, "__qualname__", "<locals>")):
                entries[name] = {"kind": "object", "module": value.__module__, "qualname": value.__qualname__}
            else:
                problems.append((layer.name, name))
    return entries, problems


def preflight(model, model_name: str) -> list[CustomClass]:
    """Checks, before anything is written, that a fresh process can rebuild
    the model from its `.keras` archive.

    Returns:
        The model's custom (non-Keras) classes, which the worker imports.

    Raises:
        ExportError: naming the layer and what would make it portable.
    """
    for layer in _layers(model):
        reason = _BACKEND_BOUND_LAYERS.get(type(layer).__name__)
        if reason:
            raise ExportError(
                f"Model '{model_name}': layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt under "
                f"TensorFlow: {reason}.", model=model_name, layer=layer.name, reason="unsupported_layer")
    _, lambda_problems = lambda_globals(model)
    if lambda_problems:
        layer, name = lambda_problems[0]
        raise ExportError(
            f"Model '{model_name}': Lambda layer '{layer}' refers to the global '{name}', which servekit cannot "
            "carry to a separate export process (only modules, importable functions/classes and plain constants "
            "can be). Pass it through Lambda(arguments={...}), or replace the Lambda with a custom layer "
            "registered with @keras.saving.register_keras_serializable() in an importable module.",
            model=model_name, layer=layer, reason="unsupported_layer")
    classes = custom_classes(model)
    bad = [c for c in classes if not c.importable]
    if bad:
        c = bad[0]
        raise ExportError(
            f"Model '{model_name}': layer '{c.layer}' is an instance of {c.qualname}, defined in '{c.module}', "
            "which a separate export process cannot import, so the model cannot be rebuilt under TensorFlow. "
            "To make it portable, move the class to an importable module and decorate it with "
            "@keras.saving.register_keras_serializable() (with get_config()).",
            model=model_name, layer=c.layer, reason="unsupported_layer")
    return classes


def save_keras(model, path: str, model_name: str) -> None:
    try:
        model.save(path)
    except Exception as e:  # Keras raises anything from a get_config(); the message is kept
        detail = str(e).strip() or f"{type(e).__name__} from its get_config()"
        raise ExportError(
            f"Model '{model_name}' cannot be saved as a .keras archive, which the portable rebuild needs: {detail}. "
            "Give custom layers and models a get_config() and register them with "
            "@keras.saving.register_keras_serializable().", model=model_name, reason="not_serializable") from None


def worker_env(workdir: str, extra_paths: Sequence[str]) -> dict[str, str]:
    """The fixed environment of the export worker."""
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    home = os.path.join(workdir, "home")
    tmp = os.path.join(workdir, "tmp")
    os.makedirs(home, exist_ok=True)
    os.makedirs(tmp, exist_ok=True)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [package_root] + [p for p in extra_paths if p and p != package_root]
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
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        TF2ONNX_CATCH_ERRORS="FALSE",
    )
    env.setdefault("LANG", "C.UTF-8")
    return env


def importable_sys_path() -> list[str]:
    """The source process' sys.path entries that exist (for custom modules),
    never servekit's own package directory (its `onnx.py` would shadow onnx)."""
    package_dir = os.path.dirname(os.path.realpath(__file__))
    out = []
    for p in sys.path:
        p = os.path.abspath(p) if p else os.getcwd()
        if os.path.isdir(p) and p not in out and os.path.realpath(p) != package_dir:
            out.append(p)
    return out


def run_worker(job: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Runs the export worker on `job` in `workdir`; returns its report."""
    job_path = os.path.join(workdir, "job.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    env = worker_env(workdir, job.get("sys_path", []))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "servekit._export_worker", job_path],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportError(f"Model '{job.get('model_name')}': the export worker took longer than "
                          f"{WORKER_TIMEOUT_S} s.", model=job.get("model_name"), reason="worker_error") from None
    report_path = os.path.join(workdir, "report.json")
    if proc.returncode != 0 or not os.path.exists(report_path):
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        raise ExportError(f"Model '{job.get('model_name')}': the export worker failed (exit code "
                          f"{proc.returncode}):\n{tail}", model=job.get("model_name"), reason="worker_error")
    with open(report_path) as f:
        report = json.load(f)
    report["_stderr"] = proc.stderr
    return report


def make_workdir() -> str:
    return tempfile.mkdtemp(prefix="servekit-export-")


def remove_workdir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
