"""The export worker: a fresh TensorFlow-backend process that writes artifacts.

Run as `python -m servekit._export_worker JOB.json` by `servekit.portable`,
with a fixed environment (KERAS_BACKEND=tensorflow, PYTHONHASHSEED=0, cwd,
HOME and KERAS_HOME in a private temporary directory, TF logging off). It
loads the `.keras` file(s) the source process saved, rebuilds the endpoints,
writes the SavedModel (and the ONNX model converted from it) at the staging
path, reloads what it wrote, compares it with the outputs the *source*
backend computed, and writes `report.json`. It never writes the final path:
the source process moves the staged artifact into place after a clean report.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _set_seeds() -> None:
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    import tensorflow as tf

    tf.random.set_seed(0)
    import keras

    keras.utils.set_random_seed(0)


def _import_custom(job) -> dict:
    import importlib

    custom = {}
    for entry in job.get("custom_classes", []):
        if entry.get("file") and entry["module"] not in sys.modules:
            # A module the source process loaded by path (a model file).
            import importlib.util

            spec = importlib.util.spec_from_file_location(entry["module"], entry["file"])
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[entry["module"]] = loaded
            spec.loader.exec_module(loaded)
        module = importlib.import_module(entry["module"])
        obj = module
        for part in entry["qualname"].split("."):
            obj = getattr(obj, part)
        for name in entry["names"]:
            custom[name] = obj
    return custom


def _install_lambda_globals(job) -> None:
    """Gives deserialized Lambda functions the globals they refer to."""
    import importlib

    entries = job.get("lambda_globals") or {}
    if not entries:
        return
    extra = {}
    for name, entry in entries.items():
        if entry["kind"] == "module":
            extra[name] = importlib.import_module(entry["module"])
        elif entry["kind"] == "value":
            extra[name] = entry["value"]
        else:
            obj = importlib.import_module(entry["module"])
            for part in entry["qualname"].split("."):
                obj = getattr(obj, part)
            extra[name] = obj
    from keras.src.utils import python_utils

    original = python_utils.func_load

    def func_load(code, defaults=None, closure=None, globs=None):
        if globs is None:
            globs = dict(vars(python_utils))
            globs.update(extra)
        return original(code, defaults=defaults, closure=closure, globs=globs)

    python_utils.func_load = func_load


def _load(path: str, custom):
    import keras

    return keras.saving.load_model(path, custom_objects=custom, compile=False, safe_mode=False)


def _pack_outputs(template, flat):
    from servekit.export_utils import _map_leaves

    return _map_leaves(lambda i: flat[i], template)


def _build_endpoints(job, custom):
    import keras
    import numpy as np
    import tensorflow as tf

    from servekit.export_utils import InputLayout, _from_json_struct
    from servekit.saved_model import Endpoint

    endpoints, tracked, collections = [], [], {}
    if job["kind"] == "model":
        model = _load(job["keras_file"], custom)
        ep = job["endpoints"][0]
        layout = InputLayout.from_json(ep["layout"])

        def serve(*args, _model=model):
            return _model(*args, training=False)

        endpoints.append(Endpoint(ep["name"], serve, layout, ep["output_names"]))
        tracked.append(model)
        return endpoints, tracked, collections, model
    # An ExportArchive from the JAX or torch backend: one Functional "bundle"
    # holding every endpoint's inputs and outputs.
    bundle = _load(job["keras_file"], custom)
    flat_in = list(bundle.inputs)
    flat_out = list(bundle.outputs) if isinstance(bundle.outputs, (list, tuple)) else [bundle.outputs]
    for ep in job["endpoints"]:
        layout = InputLayout.from_json(ep["layout"])
        a, b = ep["inputs_range"]
        c, d = ep["outputs_range"]
        sub = keras.Model(flat_in[a:b], flat_out[c:d], name=f"endpoint_{ep['name']}")
        template = _from_json_struct(ep["output_structure"])

        def fn(*args, _sub=sub, _layout=layout, _template=template):
            flat = _layout.flatten(list(args))
            out = _sub(flat)
            out = out if isinstance(out, (list, tuple)) else [out]
            return _pack_outputs(_template, list(out))

        endpoints.append(Endpoint(ep["name"], fn, layout, ep["output_names"]))
    weights = list(bundle.variables)
    values = np.load(job["variables_file"], allow_pickle=False) if job.get("variables_file") else {}

    def resolve(refs):
        out = []
        for ref in refs:
            if ref["kind"] == "bundle":
                out.append(weights[ref["index"]])
            else:
                out.append(tf.Variable(values[ref["key"]], trainable=ref["trainable"], name=ref["name"]))
        return out

    for t in job.get("tracked", []):
        variables = resolve(t["variables"])
        tracked.append(_TrackedVariables(variables, [r["trainable"] for r in t["variables"]]))
    for name, refs in job.get("variable_collections", {}).items():
        collections[name] = resolve(refs)
    return endpoints, tracked, collections, bundle


class _TrackedVariables:
    """Stands in for a tracked layer: its variables, split by trainability."""

    def __init__(self, variables, trainable_mask):
        self.variables = list(variables)
        self.trainable_variables = [v for v, t in zip(variables, trainable_mask) if t]
        self.non_trainable_variables = [v for v, t in zip(variables, trainable_mask) if not t]

    def _flatten_layers(self, include_self=False, recursive=True):
        return []


def _cases(job):
    from servekit.pipeline.cases import CaseSet

    return list(CaseSet.read(job.get("cases_file"), job.get("cases", [])))


def run(job) -> dict:
    sys.path[:0] = [p for p in job.get("sys_path", []) if p not in sys.path]
    _set_seeds()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    from servekit import _write

    custom = _import_custom(job)
    _install_lambda_globals(job)
    endpoints, tracked, collections, model = _build_endpoints(job, custom)
    return _write.write_and_verify(
        endpoints, tracked, collections, fmt=job["format"], output=job["output"],
        cases=_cases(job) if job.get("verify", True) else [], opset=job.get("opset"),
        model_name=job["model_name"], layer_names=job.get("layer_names", []),
        scratch_dir=os.getcwd(), version=job["version"])


class _BlockOtherBackends:
    """The worker runs TensorFlow only; TensorFlow and Keras import JAX when it
    is installed (~1 s per export). Hide JAX/torch from this process."""

    _BLOCKED = ("jax", "jaxlib", "torch", "flax")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self._BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden in the export worker)", name=name)
        return None


def main(argv) -> int:
    sys.meta_path.insert(0, _BlockOtherBackends())
    job_path = argv[1]
    with open(job_path) as f:
        job = json.load(f)
    report_path = os.path.join(os.path.dirname(os.path.abspath(job_path)), "report.json")
    try:
        report = run(job)
    except Exception as e:  # reported to the source process
        from servekit.errors import ExportError

        report = {"ok": False, "message": str(e), "reason": getattr(e, "reason", "worker_error"),
                  "layer": getattr(e, "layer", None), "exception": type(e).__name__}
        if not isinstance(e, ExportError):
            report["traceback"] = traceback.format_exc(limit=8)
    with open(report_path, "w") as f:
        json.dump(report, f, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
