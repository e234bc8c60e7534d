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
    assert report.passed, "\\n".join(report.failures)

Errors raise ValueError (a bad argument or feed, a corrupt file), LookupError (a
missing file, endpoint or tensor), NotImplementedError (something servekit does not
support, e.g. sparse tensors) or RuntimeError (a runtime failure, no GPU). Messages
are precise, e.g. "endpoint 'serving_default' input 'features': expected
float32[batch,3], got int64[2,3]".

`Model.run` releases the GIL while the runtime works, views C-contiguous input
arrays without copying them, and returns arrays that view the runtime's result
buffers (string outputs are object arrays of bytes). A Model may be shared by
threads.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from servekit import _native
from servekit.signature import Signature

__all__ = [
    "CALLER_THREAD",
    "Model",
    "ValidationReport",
    "benchmark",
    "benchmark_loop",
    "load",
    "runner_and_bare_onnxruntime_loops",
    "validate",
]


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
        return self._model.format

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._model.endpoints)

    @property
    def signatures(self) -> tuple[Signature, ...]:
        """The endpoints as `servekit.signature.Signature`s. ONNX dims carry their
        symbolic names; SavedModel dynamic dims are None."""
        return tuple(Signature.from_json(s) for s in self._model.signatures)

    def signature(self, endpoint: str) -> Signature:
        for s in self.signatures:
            if s.name == endpoint:
                return s
        raise LookupError(f"No endpoint '{endpoint}' in {self.path}; it has: {', '.join(self.endpoints)}.")

    def __repr__(self) -> str:
        return f"servekit.native.Model({self.format}, {self.path!r})"


# `inter_op_threads` value: ops run in the calling thread (LoadOptions::kCallerThread).
CALLER_THREAD: int = _native.CALLER_THREAD


def load(
    path: str,
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    device: str = "cpu",
    tags: Optional[Sequence[str]] = None,
    format: Optional[str] = None,
    optimization: str = "all",
) -> Model:
    """Loads a SavedModel directory or an .onnx file.

    Args:
        path: the artifact.
        intra_op_threads, inter_op_threads: runtime thread pools; 0 is the runtime's
            default. `inter_op_threads=CALLER_THREAD` (-1) runs every op in the
            thread that calls `run`: the lowest single-stream latency on
            TensorFlow, whose one-thread pool sleeps between calls.
        device: "cpu" or "gpu"; "gpu" fails clearly where the runtime has no GPU.
        tags: SavedModel MetaGraph tags (default ["serve"]).
        format: "tf_saved_model" or "onnx"; detected from the path by default.
        optimization: ONNX Runtime graph optimization: "disabled", "basic", "extended", "all".
    """
    return Model(_native.load(str(path), intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                              device=device, tags=list(tags or []), format=format, optimization=optimization))


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """What `validate` found. `failures` has one precise line per problem."""

    passed: bool
    failures: tuple[str, ...]
    details: dict  # the full report: per artifact digests, signatures, parity; cross-format parity

    def __bool__(self) -> bool:
        return self.passed


def validate(
    manifest_path: str,
    format: Optional[str] = None,
    *,
    cross_format: bool = True,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    device: str = "cpu",
) -> ValidationReport:
    """Checks an export against its manifest.json, like `servekit_verify validate`:
    artifact digests, loading, signatures, reference parity and (both formats)
    SavedModel-vs-ONNX parity. Raises only when the manifest itself cannot be used."""
    details = _native.validate(str(manifest_path), format=format, cross_format=cross_format,
                               intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                               device=device)
    return ValidationReport(passed=bool(details["passed"]), failures=tuple(details["failures"]), details=details)


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
) -> dict:
    """Latency (p50/p90/p99/max) and throughput per batch size, like
    `servekit_verify bench`. `inputs` are tiled along dim 0 to each batch (random
    data matching the signature when None); `iterations` calls per batch, or a
    `seconds` budget (100 calls when both are 0). `bare_ort` (ONNX) also times a
    bare Ort::Session::Run loop and reports the runner's overhead ratio."""
    return _native.benchmark(_unwrap(model), endpoint=endpoint, batches=list(batches), iterations=iterations,
                             seconds=seconds, warmup=warmup, inputs=inputs, bare_ort=bare_ort, seed=seed)


def benchmark_loop(model: Model, endpoint: str, inputs: Mapping[str, Any], warmup: int = 10,
                   iterations: int = 100, seconds: float = 0.0) -> list[int]:
    """Per-call latencies in ns of the native runner's own C++ loop (no Python per
    call): `warmup` untimed calls, then at least `iterations` calls and `seconds`."""
    return _native.benchmark_loop(_unwrap(model), endpoint, inputs, warmup, iterations, seconds)


def runner_and_bare_onnxruntime_loops(model: Model, inputs: Mapping[str, Any], warmup: int = 10,
                                      iterations: int = 100, seconds: float = 0.0) -> tuple[list[int], list[int]]:
    """Per-call latencies in ns of the native runner on an ONNX `model` and of a
    bare `Ort::Session::Run` loop over values built once (what
    onnxruntime_perf_test measures) on the same session, alternating call by call
    so that their ratio is the runner's own overhead, whatever the machine does."""
    return _native.runner_and_bare_onnxruntime_loops(_unwrap(model), inputs, warmup, iterations, seconds)
