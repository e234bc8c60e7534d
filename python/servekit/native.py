"""servekit.native: the native (C++) verifier, from Python.

The C++ runners load a SavedModel through the TensorFlow C API and an ONNX model
through the ONNX Runtime C++ API, check feeds against the signature, validate an
export against its manifest.json and measure latency. This module is a thin,
documented face of the `servekit._native` extension (built by Bazel as
//python/servekit:_native.so)::

    from servekit import native

    model = native.load("export/model.onnx", intra_op_threads=1)
    model.signatures                    # (Signature(name='serving_default', ...),)
    out = model.run("serving_default", {"features": x})   # {"logits": array}

    report = native.validate("export/manifest.json")
    assert report.passed, report.to_text()

Reports are the C++ library's own types, bound as Python classes (no JSON in
between): `validate` returns a `VerifyReport` (`passed`, `failures`, per-artifact
`parity` and `stays_random`, per-endpoint `stochastic`/`stateful`, `to_text()`,
`to_json()`), `compare` a `CompareReport` (two artifacts of one model on A's
reference inputs: `passed`, `cases`, `first_divergence`), `benchmark` a
`BenchmarkReport`.

Errors raise ValueError (a bad argument or feed, a corrupt file), LookupError (a
missing file, endpoint or tensor), NotImplementedError (something servekit does not
support, e.g. sparse tensors) or RuntimeError (a runtime failure, no GPU); the
exception's `status_code` names servekit's status code. Messages are precise, e.g.
"endpoint 'serving_default' input 'features': expected float32[batch,3], got
int64[2,3]".

`Model.run` releases the GIL while the runtime works, views C-contiguous input
arrays without copying them, and returns arrays that view the runtime's result
buffers (string outputs are object arrays of bytes). A Model may be shared by
threads.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

from servekit import _native
from servekit.signature import Signature, TensorSignature

__all__ = [
    "CALLER_THREAD",
    "BenchmarkReport",
    "CompareReport",
    "Device",
    "Format",
    "InferencePrecision",
    "LatencyStats",
    "LoadOptions",
    "Model",
    "OnnxOptimization",
    "VerifyReport",
    "benchmark",
    "benchmark_loop",
    "compare",
    "load",
    "runner_and_bare_loops",
    "runner_and_bare_onnxruntime_loops",
    "summarize_latencies",
    "validate",
]

# The extension's types, as they are.
Format = _native.Format
Device = _native.Device
OnnxOptimization = _native.OnnxOptimization
InferencePrecision = _native.InferencePrecision
LoadOptions = _native.LoadOptions
VerifyReport = _native.VerifyReport
CompareReport = _native.CompareReport
BenchmarkReport = _native.BenchmarkReport
LatencyStats = _native.LatencyStats

# `inter_op_threads` value: ops run in the calling thread (LoadOptions::kCallerThread).
CALLER_THREAD: int = _native.CALLER_THREAD


def _member(enum: Any, value: Any, what: str) -> Any:
    """`value` as a member of the extension's `enum`: a member already, or its name."""
    if isinstance(value, enum):
        return value
    members = enum.__members__
    if isinstance(value, str) and value.lower() in members:
        return members[value.lower()]
    raise ValueError(f"{what} must be one of {', '.join(members)}, not {value!r}")


def _signature(s: "_native.Signature") -> Signature:
    return Signature(
        name=s.name,
        method_name=s.method_name,
        inputs=tuple(TensorSignature(t.name, t.dtype, t.shape) for t in s.inputs),
        outputs=tuple(TensorSignature(t.name, t.dtype, t.shape) for t in s.outputs),
    )


class Model:
    """A loaded SavedModel or ONNX model (see `load`)."""

    def __init__(self, native_model: "_native.Model") -> None:
        self._model = native_model
        # The extension's bound method itself: no Python frame per call.
        self.run = native_model.run

    def run(self, endpoint: str, inputs: Mapping[str, Any]) -> dict:  # noqa: F811 (replaced per instance)
        """Runs `endpoint` on {input name: array}; returns {output name: array}."""
        return self._model.run(endpoint, inputs)

    @property
    def path(self) -> str:
        return self._model.path

    @property
    def format(self) -> str:
        """'tf_saved_model' or 'onnx'."""
        return self._model.format.name

    @property
    def options(self) -> LoadOptions:
        """The `LoadOptions` the model was loaded with."""
        return self._model.options

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._model.endpoints

    @property
    def signatures(self) -> tuple[Signature, ...]:
        """The endpoints as `servekit.signature.Signature`s. ONNX dims carry their
        symbolic names; SavedModel dynamic dims are None."""
        return tuple(_signature(s) for s in self._model.signatures)

    def signature(self, endpoint: str) -> Signature:
        for s in self.signatures:
            if s.name == endpoint:
                return s
        raise LookupError(f"No endpoint '{endpoint}' in {self.path}; it has: {', '.join(self.endpoints)}.")

    def __repr__(self) -> str:
        return f"servekit.native.Model({self.format}, {self.path!r})"


def _load_options(intra_op_threads: int, inter_op_threads: int, device: Union[str, Any],
                  tags: Optional[Sequence[str]] = None, optimization: Union[str, Any] = "all",
                  openvino_precision: Union[str, Any] = "f32") -> LoadOptions:
    return LoadOptions(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                       device=_member(Device, device, "device"), tags=list(tags or []),
                       optimization=_member(OnnxOptimization, optimization, "optimization"),
                       openvino_precision=_member(InferencePrecision, openvino_precision, "openvino_precision"))


def load(
    path: str,
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    device: Union[str, Any] = "cpu",
    tags: Optional[Sequence[str]] = None,
    format: Optional[Union[str, Any]] = None,
    optimization: Union[str, Any] = "all",
    openvino_precision: Union[str, Any] = "f32",
) -> Model:
    """Loads an artifact: a SavedModel directory, an .onnx, .xml (OpenVINO IR),
    .tflite (LiteRT) file or a .pt2 AOTInductor package.

    Args:
        path: the artifact.
        intra_op_threads, inter_op_threads: runtime thread pools; 0 is the runtime's
            default. `inter_op_threads=CALLER_THREAD` (-1) runs every op in the
            thread that calls `run`: the lowest single-stream latency on
            TensorFlow, whose one-thread pool sleeps between calls.
        device: "cpu" or "gpu" (or a `Device`); "gpu" fails clearly where the
            runtime has no GPU.
        tags: SavedModel MetaGraph tags (default ["serve"]).
        format: "tf_saved_model", "onnx", "openvino", "litert", "torch_aoti" (or a
            `Format`); detected from the path by default.
        optimization: ONNX Runtime graph optimization: "disabled", "basic",
            "extended", "all" (or an `OnnxOptimization`).
        openvino_precision: OpenVINO's CPU inference precision, "f32" (default)
            or "bf16" (or an `InferencePrecision`).
    """
    options = _load_options(intra_op_threads, inter_op_threads, device, tags, optimization, openvino_precision)
    fmt = None if format is None else _member(Format, format, "format")
    return Model(_native.load(str(path), options, fmt))


def validate(
    manifest_path: str,
    format: Optional[Union[str, Any]] = None,
    *,
    cross_format: bool = True,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    device: Union[str, Any] = "cpu",
) -> VerifyReport:
    """Checks an export against its manifest.json, like `servekit_verify validate`:
    artifact digests, loading, signatures, reference parity, stochastic and stateful
    endpoints (docs/manifest.md) and (both formats) SavedModel-vs-ONNX parity.
    Returns the `VerifyReport`, which is truthy when everything passed. Raises only
    when the manifest itself cannot be used."""
    fmt = None if format is None else _member(Format, format, "format")
    return _native.validate(str(manifest_path), fmt, cross_format,
                            _load_options(intra_op_threads, inter_op_threads, device))


def compare(
    a: str,
    b: str,
    *,
    format_a: Optional[Union[str, Any]] = None,
    format_b: Optional[Union[str, Any]] = None,
    endpoint: Optional[str] = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    device: Union[str, Any] = "cpu",
) -> CompareReport:
    """Two artifacts of one model against each other, like `servekit_verify compare`:
    both run on the reference inputs of A's manifest, B's outputs compared with A's
    by name at the looser of the two manifests' tolerances. `a`, `b`: an artifact
    (its export's manifest.json beside it), an export directory or a manifest.json;
    `format_a`/`format_b` pick the artifact of an export. Returns the `CompareReport`
    (truthy when every output agrees; `first_divergence`). Raises ValueError when
    the signatures do not match, LookupError for a missing path or format."""
    fa = None if format_a is None else _member(Format, format_a, "format_a")
    fb = None if format_b is None else _member(Format, format_b, "format_b")
    return _native.compare(str(a), str(b), fa, fb, endpoint, _load_options(intra_op_threads, inter_op_threads, device))


def _unwrap(model: Any) -> "_native.Model":
    return model._model if isinstance(model, Model) else model


def benchmark(
    model: Model,
    endpoint: str = "serving_default",
    *,
    batches: Sequence[int] = (1,),
    iterations: int = 0,
    seconds: float = 0.0,
    warmup: int = 10,
    inputs: Optional[Mapping[str, Any]] = None,
    bare_ort: bool = False,
    seed: int = 1,
) -> BenchmarkReport:
    """Latency (p50/p90/p99/max) and throughput per batch size, like
    `servekit_verify bench`. `inputs` are tiled along dim 0 to each batch (random
    data matching the signature when None); `iterations` calls per batch, or a
    `seconds` budget (100 calls when both are 0). `bare_ort` also times the
    runtime's bare C/C++ loop (ONNX, OpenVINO, LiteRT, AOTInductor; see
    `runner_and_bare_loops`) and reports the runner's overhead ratio."""
    return _native.benchmark(_unwrap(model), endpoint=endpoint, batches=list(batches), iterations=iterations,
                             seconds=seconds, warmup=warmup, inputs=inputs, bare_ort=bare_ort, seed=seed)


def summarize_latencies(latencies_ns: Sequence[int]) -> LatencyStats:
    """Mean, min, p50/p90/p99 and max in microseconds of per-call latencies in ns,
    with the benchmark's one percentile definition (nearest rank: the p-th
    percentile of n samples is the ceil(p/100 * n)-th smallest), shared by the C++
    benchmark and the Python driver."""
    return _native.summarize_latencies(list(latencies_ns))


def benchmark_loop(model: Model, endpoint: str, inputs: Mapping[str, Any], warmup: int = 10,
                   iterations: int = 100, seconds: float = 0.0) -> list[int]:
    """Per-call latencies in ns of the native runner's own C++ loop (no Python per
    call): `warmup` untimed calls, then at least `iterations` calls and `seconds`."""
    return _native.benchmark_loop(_unwrap(model), endpoint, inputs, warmup, iterations, seconds)


def runner_and_bare_loops(model: Model, inputs: Mapping[str, Any], warmup: int = 10,
                          iterations: int = 100, seconds: float = 0.0) -> tuple[list[int], list[int]]:
    """Per-call latencies in ns of the native runner on `model` (handed its previous
    outputs back, as a serving loop does) and of the runtime's bare C/C++ loop over
    inputs built once, alternating call by call so that their ratio is the runner's
    own overhead, whatever the machine does. The bare loops: `Ort::Session::Run` on
    the same session (what onnxruntime_perf_test measures), OpenVINO's
    `InferRequest::infer()` (benchmark_app), `LiteRtRunCompiledModel`,
    `AOTIModelPackageLoader::run`. ValueError for a SavedModel (no bare loop)."""
    return _native.runner_and_bare_onnxruntime_loops(_unwrap(model), inputs, warmup, iterations, seconds)


# Its name from when ONNX Runtime was the only runtime with a bare loop.
runner_and_bare_onnxruntime_loops = runner_and_bare_loops
