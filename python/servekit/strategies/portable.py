"""The portable rebuild: `.keras` archive -> fresh TensorFlow worker -> artifact.

The source process saves what to export to a private temporary directory and
hands the worker (`servekit.worker`, a fresh TensorFlow-backend process) a
typed `WorkerJob` there. The worker writes and verifies
the artifact at the staging path against the cases the source backend
computed; the pipeline commits it. What is saved:

- a model that Keras can save (Functional, Sequential, subclassed with
  `get_config`): the model itself;
- otherwise, and for `ExportArchive`s: a *bundle*, one Functional model traced
  from the endpoints on symbolic inputs. A subclassed model's `call` is traced
  layer by layer, so a model without `get_config` (or whose class a fresh
  process cannot import) still rebuilds when its `call` uses Keras layers and
  `keras.ops` only; the worker cuts each endpoint back out of the bundle.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from servekit import peak_memory
from servekit.source_model.input_layout import InputLayout
from servekit.source_model.kinds import all_layers, is_functional
from servekit.errors import ExportError
from servekit.pipeline.request import ExportRequest
from servekit.strategies import keras_file
from servekit.worker.job import EndpointJob, VariableRef, WorkerJob
from servekit.worker.launch import importable_sys_path, run_worker


@dataclasses.dataclass
class BundleEndpoint:
    """One endpoint of a bundle: `trace` is called once on symbolic inputs
    (structured like `layout`) and must return Keras tensors."""

    name: str
    layout: InputLayout
    output_names: Sequence[str]
    trace: Callable[..., Any]


class PortableRebuild:
    """Rebuilds the model under TensorFlow in a fresh worker process."""

    name = "portable_rebuild"

    def unavailable(self, request: ExportRequest) -> Optional[str | ExportError]:
        from servekit import formats

        if request.format not in formats.TENSORFLOW_FORMATS:
            return (f"the TensorFlow worker writes {', '.join(formats.TENSORFLOW_FORMATS)}; a "
                    f"{formats.FORMATS[request.format].description} is exported under torch")
        if request.local_options.get(request.format):
            return (f"the options {sorted(request.local_options[request.format])} are Python objects of this process "
                    "(they cannot travel to a worker)")
        if request.kind == "archive":
            return request.source._portable_unavailable(request)
        try:
            keras_file.preflight(request.source, request.name)
        except ExportError as e:
            if not _traceable_call(request.source):
                return e
        return None

    def write(self, request: ExportRequest, staged: str, workdir: str) -> dict[str, Any]:
        return self.write_formats({request.format: request}, {request.format: staged}, workdir)[request.format]

    def write_formats(self, requests: dict[str, ExportRequest], staged: dict[str, str],
                      workdir: str) -> dict[str, dict[str, Any]]:
        """Writes every format in one worker job: the ONNX model is converted
        from the SavedModel the worker has just written and verified."""
        request = next(iter(requests.values()))
        if request.kind == "archive":
            return request.source._write_portable(staged, workdir, request)
        model = request.source
        model_file = os.path.join(workdir, "model_keras")
        try:
            classes = keras_file.preflight(model, request.name)
            keras_file.save_keras(model, model_file, request.name)
        except ExportError as e:
            if not _traceable_call(model):
                raise
            return _write_traced_model(request, staged, workdir, why=str(e))
        endpoint = request.endpoints[0]
        cases_file, cases_index = request.cases.write(os.path.join(workdir, "cases.npz"))
        peak_memory.mark("Keras directory")
        job = WorkerJob(
            kind="model", keras_file=model_file, outputs=dict(staged),
            model_name=request.name, version=request.version,
            endpoints=(EndpointJob(endpoint.name, endpoint.layout, tuple(endpoint.output_names)),),
            opset=request.opset, layer_names=tuple(request.layer_names), verify=request.verify,
            cases_file=cases_file, cases=tuple(cases_index), lambda_globals=keras_file.lambda_globals(model)[0],
            custom_classes=tuple(classes), sys_path=tuple(importable_sys_path()) if classes else (),
            format_options=_options(request, requests), source_backend=request.backend)
        reports = _per_format(run_worker(job, workdir), staged)
        peak_memory.mark("waiting for the worker")
        return reports


def _options(request: ExportRequest, formats) -> dict[str, dict[str, Any]]:
    """The JSON options of the `formats` a job writes."""
    return {fmt: dict(request.format_options[fmt]) for fmt in formats if request.format_options.get(fmt)}


def _per_format(result: dict[str, Any], staged: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The worker's reports by format; a job that failed as a whole fails every format.
    The worker rebuilds under TensorFlow: its ONNX models come from tf2onnx."""
    if "reports" not in result:
        return {fmt: dict(result) for fmt in staged}
    reports = result["reports"]
    if "onnx" in reports:
        reports["onnx"]["converter"] = "tf2onnx"
    return reports


def _traceable_call(model) -> bool:
    """A subclassed model, whose `call` can be traced into a Functional bundle."""
    import keras

    return isinstance(model, keras.Model) and not is_functional(model) and not isinstance(
        model, keras.Sequential)


def _inference_call(model) -> Callable[..., Any]:
    """`model.call` in inference mode (`training=False` when it takes it)."""
    try:
        takes_training = "training" in inspect.signature(model.call).parameters
    except (TypeError, ValueError):
        takes_training = False
    if takes_training:
        return lambda *args: model.call(*args, training=False)
    return model.call


def _write_traced_model(request: ExportRequest, staged: dict[str, str], workdir: str,
                        why: str) -> dict[str, dict[str, Any]]:
    endpoint = request.endpoints[0]
    traced = BundleEndpoint(endpoint.name, endpoint.layout, endpoint.output_names, _inference_call(request.source))
    try:
        return write_bundle(request, staged, workdir, [traced], [request.source], {})
    except ExportError as e:
        raise ExportError(f"{why}\nTracing its call() into Keras layers did not help either: {e}",
                          model=request.name, layer=e.layer, reason=e.reason) from None


def write_bundle(request: ExportRequest, staged: dict[str, str], workdir: str, endpoints: Sequence[BundleEndpoint],
                 tracked_layers: Sequence[Any], collections: dict[str, list]) -> dict[str, dict[str, Any]]:
    """Traces `endpoints` into one Functional bundle, saves it and runs the worker.

    Args:
        staged: format -> staging path.
        tracked_layers: layers whose variables the artifact lists
            (`variables`, `trainable_variables`, ...).
        collections: variable collections saved as attributes.

    Raises:
        ExportError: an endpoint leaves Keras (its outputs are not Keras
            tensors on symbolic inputs), or a layer cannot be rebuilt.
    """
    import keras

    backend = request.backend
    bundle_inputs, bundle_outputs, job_endpoints = [], [], []
    for ep in endpoints:
        layout = ep.layout
        symbolic = [keras.Input(batch_shape=s.shape, dtype=s.dtype, name=f"{ep.name}__{s.name}")
                    for s in layout.flat]
        try:
            out = ep.trace(*layout.pack(symbolic))
        except Exception as e:  # the user's code met symbolic tensors: reported, with what to do
            raise ExportError(
                f"Endpoint '{ep.name}': on the {backend} backend, servekit rebuilds each endpoint under "
                "TensorFlow from the Keras layers, models and keras.ops it calls, by calling it once on "
                f"symbolic inputs; that failed ({type(e).__name__}: {e}). Write the endpoint with Keras "
                "layers/models and keras.ops only (e.g. fn=model.call or lambda x: model(x, training=True)).",
                reason="untraceable_endpoint") from None
        leaves = keras.tree.flatten(out)
        bad = [type(x).__name__ for x in leaves if not isinstance(x, keras.KerasTensor)]
        if bad or not leaves:
            raise ExportError(
                f"Endpoint '{ep.name}' returned {bad or 'nothing'} instead of Keras tensors when called on "
                f"symbolic inputs: on the {backend} backend endpoints must compute their outputs with "
                "Keras layers/models and keras.ops.", reason="untraceable_endpoint")
        template = keras.tree.pack_sequence_as(out, list(range(len(leaves))))
        job_endpoints.append(EndpointJob(
            ep.name, layout, tuple(ep.output_names),
            inputs_range=(len(bundle_inputs), len(bundle_inputs) + len(symbolic)),
            outputs_range=(len(bundle_outputs), len(bundle_outputs) + len(leaves)),
            output_structure=template))
        bundle_inputs += symbolic
        bundle_outputs += leaves
    try:
        bundle = keras.Model(bundle_inputs, bundle_outputs, name="servekit_bundle")
    except (TypeError, ValueError) as e:
        raise ExportError(f"The endpoints cannot be rebuilt as one Keras graph: {e}",
                          reason="untraceable_endpoint") from None
    classes = keras_file.preflight(bundle, request.name)
    # bundle.variables (unlike .weights) includes RNG seed states; the
    # worker's loaded bundle lists its variables in the same order.
    index = {id(w): i for i, w in enumerate(bundle.variables)}
    values: dict[str, np.ndarray] = {}

    def ref(v) -> VariableRef:
        if id(v) in index:
            return VariableRef(bool(v.trainable), index=index[id(v)])
        key = f"v{len(values)}"
        values[key] = np.asarray(keras.ops.convert_to_numpy(v.value))
        return VariableRef(bool(v.trainable), key=key, name=v.name)

    tracked = tuple(tuple(ref(v) for v in r.variables) for r in tracked_layers)
    job_collections = {name: tuple(ref(v) for v in vs) for name, vs in collections.items()}
    variables_file = None
    if values:
        variables_file = os.path.join(workdir, "variables.npz")
        np.savez(variables_file, **values)
    cases_file, cases_index = request.cases.write(os.path.join(workdir, "cases.npz"))
    bundle_file = os.path.join(workdir, "bundle_keras")
    keras_file.save_keras(bundle, bundle_file, request.name)
    job = WorkerJob(
        kind="archive", keras_file=bundle_file, outputs=dict(staged),
        model_name=request.name, version=request.version, endpoints=tuple(job_endpoints),
        opset=request.opset, layer_names=tuple(layer.name for layer in all_layers(bundle)),
        verify=request.verify, cases_file=cases_file, cases=tuple(cases_index),
        lambda_globals=keras_file.lambda_globals(bundle)[0], custom_classes=tuple(classes),
        sys_path=tuple(importable_sys_path()) if classes else (), tracked=tracked,
        variable_collections=job_collections, variables_file=variables_file,
        format_options=_options(request, staged), source_backend=request.backend)
    return _per_format(run_worker(job, workdir), staged)
