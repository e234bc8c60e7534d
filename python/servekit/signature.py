"""The signature model shared by the export library, the manifest and the verifier.

A `Signature` is what a serving runtime promises its callers: an endpoint name and,
for each input and output, a tensor name, a dtype and a shape. It is the contract
`manifest.json` records (docs/manifest.md) and the native verifier checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

DTYPES = (
    "float16", "bfloat16", "float32", "float64",
    "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
    "bool", "string",
)

BATCH_DIM = "batch"

# One dimension: an int is static, a str is dynamic with that symbolic name,
# None is dynamic without a name.
Dim = Union[int, str, None]


@dataclasses.dataclass(frozen=True)
class TensorSignature:
    """One input or output of an endpoint.

    Args:
        name: the signature key (SavedModel) and graph input/output name (ONNX).
        dtype: one of `DTYPES`.
        shape: one `Dim` per dimension.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    stochastic: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(
                f"Tensor '{self.name}': unsupported dtype '{self.dtype}'; "
                f"expected one of {', '.join(DTYPES)}."
            )
        object.__setattr__(self, "shape", tuple(self.shape))

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.stochastic:
            data["stochastic"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TensorSignature":
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]),
                   stochastic=bool(data.get("stochastic", False)))


@dataclasses.dataclass(frozen=True)
class Signature:
    """An endpoint: its name, its method name and its inputs and outputs, in order.

    `stochastic`: some outputs (those marked `stochastic`) differ between calls
    on the same input; `stateful`: a call updates the artifact's variables
    (see `servekit.pipeline.behavior`). `dims`: per dynamic dimension symbol,
    how it was verified (`{"verified": [sizes], "window": w, "max": m,
    "note": "..."}`; `servekit.source_model.dims.DimPlan.describe`), empty
    when unknown.
    """

    name: str
    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]
    method_name: str = "tensorflow/serving/predict"
    stochastic: bool = False
    stateful: bool = False
    dims: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "method_name": self.method_name,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "stochastic": self.stochastic,
            "stateful": self.stateful,
        }
        if self.dims:
            data["dims"] = {k: dict(v) for k, v in self.dims.items()}
        return data

    def with_behavior(self, behavior) -> "Signature":
        """This signature marked with a `pipeline.behavior.Behavior` (by output index)."""
        outputs = tuple(dataclasses.replace(t, stochastic=i in behavior.stochastic_outputs)
                        for i, t in enumerate(self.outputs))
        return dataclasses.replace(self, outputs=outputs, stochastic=behavior.stochastic,
                                   stateful=behavior.stateful)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Signature":
        return cls(
            name=data["name"],
            method_name=data.get("method_name", "tensorflow/serving/predict"),
            inputs=tuple(TensorSignature.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSignature.from_json(t) for t in data["outputs"]),
            stochastic=bool(data.get("stochastic", False)),
            stateful=bool(data.get("stateful", False)),
            dims={k: dict(v) for k, v in (data.get("dims") or {}).items()},
        )


@dataclasses.dataclass(frozen=True)
class ExportedArtifact:
    """What `servekit.export` wrote: the format, the path and its endpoints.

    `endpoints[0]` is `serving_default`. An ONNX artifact has exactly one
    endpoint. `strategy` names the export strategy that produced the artifact
    ("portable_rebuild" or "in_process", see `servekit.strategies`);
    `converter` the tool that made it, where several could ("tf2onnx",
    "jax2onnx", "torch.onnx (TorchScript)", "openvino.convert_model",
    "tflite_converter", "torch.export", ...); `precision` the precision the
    artifact was verified at, where the format lets it differ from the
    model's (OpenVINO "float32"/"bfloat16", LiteRT "float32"/"quantized").
    """

    format: str
    path: str
    endpoints: tuple[Signature, ...]
    opset: Optional[int] = None
    strategy: Optional[str] = None
    converter: Optional[str] = None
    precision: Optional[str] = None

    def endpoint(self, name: str) -> Signature:
        for signature in self.endpoints:
            if signature.name == name:
                return signature
        known = ", ".join(s.name for s in self.endpoints)
        raise KeyError(f"No endpoint '{name}' in {self.path}; it has: {known}.")


def dims_from_shape(shape: Sequence[Optional[int]], batch_name: str = BATCH_DIM) -> tuple[Dim, ...]:
    """Turns a Keras-style shape into `Dim`s, naming a dynamic leading dim `batch`."""
    return tuple(
        (batch_name if i == 0 else None) if d is None else int(d) for i, d in enumerate(shape)
    )
