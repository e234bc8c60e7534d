"""The export worker's job runner: rebuilds the endpoints, writes, verifies.

Runs in a fresh TensorFlow-backend process (`python -m servekit.worker
JOB.json`, started by `servekit.worker.launch` with its fixed environment). It
loads the `.keras` file(s) the source process saved, rebuilds the endpoints,
writes the SavedModel (and the ONNX model converted from it) at the staging
path, reloads what it wrote, compares it with the outputs the *source*
backend computed, and writes `report.json`. It never writes the final path:
the source process moves the staged artifact into place after a clean report.
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from typing import Any, Sequence

from servekit import peak_memory
from servekit.source_model.input_layout import map_leaves
from servekit.strategies import keras_file
from servekit.worker.job import VariableRef, WorkerJob


def _fresh_state() -> None:
    """The Keras session and every seed as a fresh process has them (a warm
    worker runs many jobs)."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    import tensorflow as tf

    tf.random.set_seed(0)
    import keras

    # Without the garbage collection (a fifth of a warm export's time): the
    # warm worker collects after answering (`servekit.worker.__main__`).
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)


def _endpoints_of(job: WorkerJob, loaded):
    """The job's endpoints over `loaded`, the Keras object its `.keras` file holds
    (the model, or the JAX or torch ExportArchive's bundle), and what they track."""
    import keras
    import numpy as np
    import tensorflow as tf

    from servekit.saved_model import Endpoint

    endpoints, tracked, collections = [], [], {}
    if job.kind == "model":
        ep = job.endpoints[0]

        def serve(*args, _model=loaded):
            return _model(*args, training=False)

        endpoints.append(Endpoint(ep.name, serve, ep.layout, list(ep.output_names)))
        tracked.append(loaded)
        return endpoints, tracked, collections
    # An ExportArchive from the JAX or torch backend: one Functional "bundle"
    # holding every endpoint's inputs and outputs (the variables it does not
    # hold are made from the job's variables file, again for each trace).
    bundle = loaded
    flat_in = list(bundle.inputs)
    flat_out = list(bundle.outputs) if isinstance(bundle.outputs, (list, tuple)) else [bundle.outputs]
    for ep in job.endpoints:
        a, b = ep.inputs_range
        c, d = ep.outputs_range
        sub = keras.Model(flat_in[a:b], flat_out[c:d], name=f"endpoint_{ep.name}")

        def fn(*args, _sub=sub, _layout=ep.layout, _template=ep.output_structure):
            out = _sub(_layout.flatten(list(args)))
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            return map_leaves(lambda i: out[i], _template)

        endpoints.append(Endpoint(ep.name, fn, ep.layout, list(ep.output_names)))
    weights = list(bundle.variables)
    values = np.load(job.variables_file, allow_pickle=False) if job.variables_file else {}

    def resolve(refs: Sequence[VariableRef]) -> list[Any]:
        return [weights[r.index] if r.index is not None
                else tf.Variable(values[r.key], trainable=r.trainable, name=r.name) for r in refs]

    for refs in job.tracked:
        tracked.append(_TrackedVariables(resolve(refs), [r.trainable for r in refs]))
    for name, refs in job.variable_collections.items():
        collections[name] = resolve(refs)
    return endpoints, tracked, collections


class _TrackedVariables:
    """Stands in for a tracked layer: its variables, split by trainability."""

    def __init__(self, variables, trainable_mask):
        self.variables = list(variables)
        self.trainable_variables = [v for v, t in zip(variables, trainable_mask) if t]
        self.non_trainable_variables = [v for v, t in zip(variables, trainable_mask) if not t]

    def _flatten_layers(self, include_self=False, recursive=True):
        return []


def run(job: WorkerJob) -> dict[str, Any]:
    """Writes and verifies the artifacts `job` describes at `job.outputs`.

    Returns:
        `{"reports": {format: report}}`, each report from
        `servekit._write.write_and_verify` (`ok`, signatures, verification
        results).

    Raises:
        ExportError: the model cannot be rebuilt, written or verified.
    """
    sys.path[:0] = [p for p in job.sys_path if p not in sys.path]
    _fresh_state()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    from servekit import _write
    from servekit import saved_model as sk_sm
    from servekit.formats import builtin_trace
    from servekit.pipeline.cases import CaseSet
    from servekit.source_model import backend_semantics, precision, recurrences
    from servekit.worker import isolation

    custom = keras_file.import_custom_classes(job.custom_classes)
    cases = list(CaseSet.read(job.cases_file, list(job.cases))) if job.verify else []

    last_loaded: list[weakref.ref] = []  # the model the last build loaded, while something holds it
    # The outputs' dtypes in the model's own trace, which a format's builtin trace keeps.
    output_dtypes: dict[str, dict[str, str]] = {}

    def build(builtin_trace_for: str | None = None, unfused_gelu: bool = False) -> sk_sm.BuiltModule:
        # The model lives only in what this returns: `write_and_verify` frees it before checking.
        # A second trace while the first one's model lives (a format's builtin trace) traces
        # that model again: loading it anew would hold the weights twice.
        loaded = last_loaded[0]() if last_loaded else None
        if loaded is None:
            with keras_file.lambda_globals_installed(job.lambda_globals):
                loaded = keras_file.load_keras(job.keras_file, job.model_name, custom)
            last_loaded[:] = [weakref.ref(loaded)]
            peak_memory.mark("rebuild")
        endpoints, tracked, collections = _endpoints_of(job, loaded)
        with contextlib.ExitStack() as rewrites:
            if builtin_trace_for:
                rewrites.enter_context(recurrences.for_converters(loaded, builtin_trace_for))
                rewrites.enter_context(precision.computed_in_float32(
                    loaded, builtin_trace.COMPUTED_IN_FLOAT32.get(builtin_trace_for, ())))
                rewrites.enter_context(builtin_trace.builtin_ops(builtin_trace_for, unfused_gelu))
            # The source backend's arithmetic inside the builtin trace's rewrites, which may call it.
            rewrites.enter_context(backend_semantics.computed_as(job.source_backend))
            cast_back = builtin_trace_for in builtin_trace.OUTPUTS_CAST_BACK
            built = sk_sm.build_module(endpoints, tracked=tracked, variable_collections=collections,
                                       output_dtypes=output_dtypes if cast_back else None)
        if not builtin_trace_for and not output_dtypes:
            output_dtypes.update({s.name: {t.name: t.dtype for t in s.outputs} for s in built.endpoints})
        return built

    return {"reports": _write.write_and_verify(
        build, outputs=dict(job.outputs), cases=cases, opset=job.opset, model_name=job.model_name,
        layer_names=list(job.layer_names), scratch_dir=os.getcwd(), version=job.version,
        format_options=job.format_options, release_memory=isolation.release_memory)}
