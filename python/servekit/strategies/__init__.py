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
reproducible whatever the calling process did before the export, and it alone
covers every format from every backend; the first strategy whose artifact
verifies wins (see `servekit.pipeline.core`). One exception: ONNX of a small JAX or
torch model is first converted in process with the converter Keras's
`model.export` runs (jax2onnx, TorchScript; `in_process.converts_before_rebuild`):
1.5-6x faster than the rebuild where it verifies; where it does not (real
architectures: ViT, BERT, Llama), the rebuild follows, 0-0.8 s later than alone.
The in-process strategy's other converters (torch's dynamo exporter) keep their
place after the rebuild.
"""

from __future__ import annotations

import contextlib
import dataclasses

from servekit.strategies.cross_backend import CrossBackendRebuild
from servekit.strategies.in_process import InProcess
from servekit.strategies.portable import PortableRebuild

_PORTABLE, _CROSS = PortableRebuild(), CrossBackendRebuild()
DEFAULT_ORDER = (InProcess("before_rebuild"), _PORTABLE, InProcess("after_rebuild"), _CROSS)
# The build's order (`servekit.build`): the rebuild first for every export, whose
# artifacts serve as fast or faster (tf2onnx's graphs; measured side by side by
# //python/servekit/bench:onnx_converters) and where export time is cached anyway.
REBUILD_FIRST_ORDER = (_PORTABLE, InProcess(), _CROSS)
ORDERS = {"auto": DEFAULT_ORDER, "rebuild_first": REBUILD_FIRST_ORDER}
BY_NAME = {s.name: s for s in REBUILD_FIRST_ORDER}


def resolve(strategy: str | None):
    """The strategies to try for `strategy`: an order ("auto" or None: the
    default; "rebuild_first"), or one strategy by name."""
    strategy = strategy or "auto"
    if strategy in ORDERS:
        return ORDERS[strategy]
    if strategy not in BY_NAME:
        from servekit.errors import ExportError

        raise ExportError(f"Unknown strategy {strategy!r}; expected one of {sorted(ORDERS)} (orders) or "
                          f"{sorted(BY_NAME)}.", reason="bad_argument")
    return (BY_NAME[strategy],)


def worker_starting_now(chosen, request, formats=None) -> contextlib.AbstractContextManager:
    """Warm export workers for this export (`launch.lingering_worker`), when a
    worker may run (`request` needs no cases to tell): the TensorFlow worker
    when the portable rebuild may, the torch worker when the cross-backend
    rebuild will write a torch format (of a TensorFlow or JAX model). Each is
    started now where it goes first, so that it imports its libraries while the
    caller probes the model and computes the reference outputs (seconds in a
    fresh process); the TensorFlow worker behind an in-process conversion
    starts only if that fails. Both stay warm for the thread's next export.
    `formats`: every format of the export (default: `request.format`)."""
    from servekit import formats as formats_lib
    from servekit.worker import launch

    formats = list(formats or [request.format])
    requests = [dataclasses.replace(request, format=fmt) for fmt in formats]
    portable = next((s for s in chosen if s.name == PortableRebuild.name), None)
    rebuilds = portable is not None and any(not portable.unavailable(one) for one in requests)
    # Started now where the rebuild goes first; else at its first job, if any (then warm for the next).
    tensorflow_now = any(_rebuilds_first(chosen, one) for one in requests)
    cross = next((s for s in chosen if s.name == CrossBackendRebuild.name), None)
    torch = cross is not None and request.backend != "torch" and any(
        not cross.unavailable(one) for one in requests if one.format in formats_lib.TORCH_FORMATS)
    if rebuilds or torch:
        return launch.lingering_worker(tensorflow=tensorflow_now, cross=("torch",) if torch else ())
    return contextlib.nullcontext()


def _rebuilds_first(chosen, request) -> bool:
    """Whether the portable rebuild is the first strategy `chosen` tries for
    `request` (one converting in process before it would not need the worker
    unless it failed: the worker then starts at the rebuild's job)."""
    from servekit.pipeline import core as pipeline

    for strategy in chosen:
        if strategy.name == PortableRebuild.name:
            return not strategy.unavailable(request)
        if pipeline.applies(strategy, request) and not strategy.unavailable(request):
            return False
    return False
