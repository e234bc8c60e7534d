"""What an export asks for: the typed request every strategy reads.

The source process describes an export once, as an `ExportRequest`; strategies
read it, and the portable strategy turns it into the worker's `WorkerJob`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from servekit.source_model.input_layout import InputLayout
from servekit.source_model.kinds import all_layers
from servekit.pipeline.behavior import Behavior
from servekit.pipeline.cases import CaseSet


@dataclasses.dataclass
class EndpointPlan:
    """One endpoint to export.

    Args:
        name: the method and signature name.
        layout: its inputs (flat named specs and argument structure); None for
            a traced `tf.function` whose trace says it.
        output_names: names of its flat outputs, or None to name them like
            `tf.saved_model.save` (dict keys, `output_0`, ...).
        behavior: how it behaves across calls (probed on the source backend).
        fn: the source callable (model, layer call, function or `tf.function`).
        kwargs: backend keyword arguments (`jax2tf_kwargs`, `is_static`).
    """

    name: str
    layout: Optional[InputLayout]
    output_names: Optional[list[str]]
    behavior: Behavior = dataclasses.field(default_factory=Behavior)
    fn: Any = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ExportRequest:
    """An export of one model (`servekit.export`) or archive (`ExportArchive`).

    Args:
        kind: "model" or "archive".
        format: "tf_saved_model" or "onnx".
        name: the model's (or "ExportArchive") name, for messages and graphs.
        backend: the source Keras backend.
        endpoints: the endpoints; a model has one, `serve`.
        cases: verification cases computed on the source backend (empty when
            `verify` is False).
        verify: whether artifacts are reloaded and compared before commit.
        opset: the ONNX opset, or None for the default.
        source: the Keras model, or the `ExportArchive`.
        options: `tf.saved_model.SaveOptions` (archives on TensorFlow/JAX).
        version: servekit's version, written into ONNX `producer_version`.
        format_options: format -> options that travel to a worker as JSON
            (`openvino`: `precision`; `litert`: converter attributes).
        local_options: format -> options only this process holds (a LiteRT
            `representative_dataset`): only the in-process strategy takes them.
    """

    kind: str
    format: str
    name: str
    backend: str
    endpoints: list[EndpointPlan]
    cases: CaseSet
    verify: bool = True
    opset: Optional[int] = None
    source: Any = None
    options: Any = None
    version: str = "0"
    format_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    local_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def stateful(self) -> bool:
        return any(e.behavior.stateful for e in self.endpoints)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in all_layers(self.source)] if self.kind == "model" else []
