"""The job the source process hands to the export worker, and the worker's report.

Both sides use these types: the portable strategy builds a `WorkerJob` and
`launch.run_worker` writes it as `job.json` into the private work directory;
the worker (`servekit.worker.run`) reads it back with `WorkerJob.read`. JSON
keeps the hand-over inspectable (a failing export's work directory can be
replayed with `python -m servekit.worker job.json`); the dataclasses keep both
sides agreeing on its fields.

Example:

```python
job = WorkerJob(kind="model", keras_file="model_keras", outputs={"onnx": "staged.onnx"},
                model_name="mlp", version="0.4.0", endpoints=[EndpointJob("serve", layout, ["output_0"])])
job.write("job.json")
assert WorkerJob.read("job.json") == job
```
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from typing import Any, Literal, Optional

from servekit.source_model.input_layout import InputLayout, from_json_struct, to_json_struct


@dataclasses.dataclass(frozen=True)
class CustomClass:
    """A non-Keras class of the model, and how the worker imports it: by module
    name, or from `file` for a module that was loaded by path (a model file of
    the build tool). `layer` names one layer of that class, for errors."""

    module: str
    qualname: str
    names: tuple[str, ...]
    layer: str = ""
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
        return {"module": self.module, "qualname": self.qualname, "names": list(self.names),
                "layer": self.layer, "file": self.file}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CustomClass":
        return cls(data["module"], data["qualname"], tuple(data["names"]), data.get("layer", ""),
                   data.get("file"))


@dataclasses.dataclass(frozen=True)
class VariableRef:
    """A variable of a tracked layer or collection: either the bundle's
    variable at `index`, or a value saved under `key` in the job's
    variables file (a variable the bundle's graph does not use)."""

    trainable: bool
    index: Optional[int] = None
    key: Optional[str] = None
    name: Optional[str] = None

    def __post_init__(self):
        if (self.index is None) == (self.key is None):
            raise ValueError("A VariableRef names either a bundle index or a saved value key.")

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VariableRef":
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class EndpointJob:
    """One endpoint to rebuild. For a bundle, the endpoint's inputs and
    outputs are the slices `inputs_range`/`outputs_range` of the bundle's flat
    inputs and outputs, and `output_structure` packs the outputs (a nest of
    flat output indices)."""

    name: str
    layout: InputLayout
    output_names: tuple[str, ...]
    inputs_range: Optional[tuple[int, int]] = None
    outputs_range: Optional[tuple[int, int]] = None
    output_structure: Any = None

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "layout": self.layout.to_json(), "output_names": list(self.output_names)}
        if self.inputs_range is not None:
            out.update(inputs_range=list(self.inputs_range), outputs_range=list(self.outputs_range),
                       output_structure=to_json_struct(self.output_structure))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EndpointJob":
        bundle = "inputs_range" in data
        return cls(
            data["name"], InputLayout.from_json(data["layout"]), tuple(data["output_names"]),
            tuple(data["inputs_range"]) if bundle else None,
            tuple(data["outputs_range"]) if bundle else None,
            from_json_struct(data["output_structure"]) if bundle else None)


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """Everything the worker needs to write and verify the artifacts of one export.

    Attributes:
        kind: "model" (`keras_file` is the model; one endpoint calls it) or
            "archive" (`keras_file` is a Functional bundle of every endpoint).
        keras_file: the model saved in the Keras format (an unzipped directory,
            `servekit.strategies.keras_file.save_keras`) that the worker loads.
        outputs: format ("tf_saved_model", "onnx") -> the staging path the
            worker writes (never the final path). Both formats in one job
            cost one trace: the ONNX model is converted from the SavedModel.
        model_name, version: for errors and the artifact's metadata.
        endpoints: what to rebuild, in signature order.
        opset: ONNX opset (None: servekit's default).
        layer_names: the source model's layer names (ONNX node naming).
        verify: whether to compare with `cases`.
        cases_file, cases: the source backend's verification cases
            (`servekit.pipeline.cases.CaseSet.write`).
        lambda_globals: how to rebuild the globals of Lambda layers.
        custom_classes: non-Keras classes the worker imports.
        sys_path: entries the worker prepends to sys.path (custom modules).
        tracked, variable_collections, variables_file: for archives, the
            variables of each tracked layer and collection.
        format_options: format -> its JSON options (`openvino`:
            `precision`; `litert`: converter attributes).
        source_backend: the backend the model was built and checked on; the
            rebuild computes what it computes differently as it does
            (`servekit.source_model.backend_semantics`).
    """

    kind: Literal["model", "archive"]
    keras_file: str
    outputs: dict[str, str]
    model_name: str
    version: str
    endpoints: tuple[EndpointJob, ...]
    opset: Optional[int] = None
    layer_names: tuple[str, ...] = ()
    verify: bool = True
    cases_file: Optional[str] = None
    cases: tuple[dict[str, Any], ...] = ()
    lambda_globals: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    custom_classes: tuple[CustomClass, ...] = ()
    sys_path: tuple[str, ...] = ()
    tracked: tuple[tuple[VariableRef, ...], ...] = ()
    variable_collections: dict[str, tuple[VariableRef, ...]] = dataclasses.field(default_factory=dict)
    variables_file: Optional[str] = None
    format_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    source_backend: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "keras_file": self.keras_file, "outputs": dict(self.outputs),
            "model_name": self.model_name, "version": self.version,
            "endpoints": [e.to_json() for e in self.endpoints], "opset": self.opset,
            "layer_names": list(self.layer_names), "verify": self.verify,
            "cases_file": self.cases_file, "cases": list(self.cases), "lambda_globals": self.lambda_globals,
            "custom_classes": [c.to_json() for c in self.custom_classes], "sys_path": list(self.sys_path),
            "tracked": [[r.to_json() for r in refs] for refs in self.tracked],
            "variable_collections": {k: [r.to_json() for r in refs]
                                     for k, refs in self.variable_collections.items()},
            "variables_file": self.variables_file, "format_options": self.format_options,
            "source_backend": self.source_backend,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WorkerJob":
        return cls(
            kind=data["kind"], keras_file=data["keras_file"], outputs=dict(data["outputs"]),
            model_name=data["model_name"], version=data["version"],
            endpoints=tuple(EndpointJob.from_json(e) for e in data["endpoints"]), opset=data.get("opset"),
            layer_names=tuple(data.get("layer_names", ())), verify=data.get("verify", True),
            cases_file=data.get("cases_file"), cases=tuple(data.get("cases", ())),
            lambda_globals=dict(data.get("lambda_globals", {})),
            custom_classes=tuple(CustomClass.from_json(c) for c in data.get("custom_classes", ())),
            sys_path=tuple(data.get("sys_path", ())),
            tracked=tuple(tuple(VariableRef.from_json(r) for r in refs) for refs in data.get("tracked", ())),
            variable_collections={k: tuple(VariableRef.from_json(r) for r in refs)
                                  for k, refs in data.get("variable_collections", {}).items()},
            variables_file=data.get("variables_file"), format_options=dict(data.get("format_options", {})),
            source_backend=data.get("source_backend", ""))

    def write(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, sort_keys=True)

    @classmethod
    def read(cls, path: str) -> "WorkerJob":
        with open(path) as f:
            return cls.from_json(json.load(f))
