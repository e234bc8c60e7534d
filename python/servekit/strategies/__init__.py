"""Export strategies: the ways an artifact can be produced, tried in order.

- `portable.PortableRebuild`: the model is saved as `.keras` and rebuilt under
  TensorFlow in a fresh worker process (`servekit.worker`). Its
  artifacts do not depend on anything the calling process did, so they are
  byte-reproducible across processes and directories, and every backend reaches
  both formats (torch -> SavedModel, JAX CNNs -> ONNX, lookup layers -> ONNX).
- `in_process.InProcess`: the way Keras exports, on the source backend in this
  process (TensorFlow: traced here; JAX: jax2tf for SavedModel, jax2onnx for
  ONNX; torch: torch.onnx for ONNX), with servekit's naming, canonical bytes and
  verification applied to the result. It exports what cannot be rebuilt
  elsewhere: subclassed models without `get_config`, classes defined in
  `__main__` or a function, layers bound to their backend.
- `cross_backend.CrossBackendRebuild` (last): the `.keras` archive rebuilt in
  a fresh torch worker for the torch formats (ExportedProgram, AOTInductor) of
  TensorFlow and JAX models; and for ONNX, under JAX, then torch, for
  jax2onnx / torch.onnx when tf2onnx and the source backend's own converter
  both failed.

`DEFAULT_ORDER` tries the portable rebuild first, because its artifacts are
reproducible whatever the calling process did before the export; the first
strategy whose artifact verifies wins (see `servekit.pipeline.core`).
"""

from __future__ import annotations

import contextlib
import dataclasses

from servekit.strategies.cross_backend import CrossBackendRebuild
from servekit.strategies.in_process import InProcess
from servekit.strategies.portable import PortableRebuild

DEFAULT_ORDER = (PortableRebuild(), InProcess(), CrossBackendRebuild())
BY_NAME = {s.name: s for s in DEFAULT_ORDER}


def resolve(strategy: str | None):
    """The strategies to try for `strategy` ("auto" or None: all, in order)."""
    if strategy in (None, "auto"):
        return DEFAULT_ORDER
    if strategy not in BY_NAME:
        from servekit.errors import ExportError

        raise ExportError(f"Unknown strategy {strategy!r}; expected 'auto' or one of {sorted(BY_NAME)}.",
                          reason="bad_argument")
    return (BY_NAME[strategy],)


def worker_starting_now(chosen, request, formats=None) -> contextlib.AbstractContextManager:
    """Warm export workers for this export, started now, when a worker will
    run (`request` needs no cases to tell): the TensorFlow worker when the
    portable rebuild will, the torch worker when the cross-backend rebuild
    will write a torch format (of a TensorFlow or JAX model). Each imports its
    libraries while the caller probes the model and computes the reference
    outputs, seconds in a fresh process, and stays warm for the thread's next
    export (`launch.lingering_worker`). `formats`: every format of the export
    (default: `request.format`)."""
    from servekit import formats as formats_lib
    from servekit.worker import launch

    formats = list(formats or [request.format])
    portable = next((s for s in chosen if s.name == PortableRebuild.name), None)
    tensorflow = portable is not None and any(
        not portable.unavailable(dataclasses.replace(request, format=fmt)) for fmt in formats)
    cross = next((s for s in chosen if s.name == CrossBackendRebuild.name), None)
    torch_formats = [fmt for fmt in formats if fmt in formats_lib.TORCH_FORMATS]
    torch = cross is not None and bool(torch_formats) and request.backend != "torch" and any(
        not cross.unavailable(dataclasses.replace(request, format=fmt)) for fmt in torch_formats)
    if tensorflow or torch:
        return launch.lingering_worker(tensorflow=tensorflow, cross=("torch",) if torch else ())
    return contextlib.nullcontext()
