"""What a long-lived process forgets between two jobs.

The warm export worker and the build tool as a Bazel persistent worker run
many jobs in one process. A job imports user code (model files, custom layer
modules) that can change before the next job; the installed libraries cannot.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
from typing import Iterator

_INSTALLED = tuple(sorted({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}))
_SERVEKIT = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep


@contextlib.contextmanager
def one_job() -> Iterator[None]:
    """Restores `sys.path` after the block and forgets the modules imported in
    it from outside the Python installation and servekit, so the next job
    imports user code afresh (a model file edited between two builds)."""
    modules, path = set(sys.modules), list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            origin = getattr(sys.modules.get(name), "__file__", None)
            if origin and not os.path.realpath(origin).startswith(_INSTALLED + (_SERVEKIT,)):
                del sys.modules[name]


# A warm worker resident over this after a job exits instead of waiting for the next
# one (SERVEKIT_WORKER_RETIRE_BYTES): a safety net for memory a library keeps after every
# reference is gone (as TensorFlow's gradient registry kept a 1.59B decoder's 6 GB until
# `_drop_custom_gradients`), which an idle worker would hold while the native validation
# of that export runs.
RETIRE_BYTES = 4 * 2**30


def holds_too_much() -> bool:
    """Whether this process is resident over `RETIRE_BYTES` (or the
    `SERVEKIT_WORKER_RETIRE_BYTES` setting)."""
    from servekit import peak_memory

    limit = int(os.environ.get("SERVEKIT_WORKER_RETIRE_BYTES") or RETIRE_BYTES)
    now = peak_memory.status_bytes()
    return now is not None and now["VmRSS"] > limit


def _drop_custom_gradients() -> None:
    """Unregisters every `tf.custom_gradient` TensorFlow registered while tracing.

    Tracing a function that calls one (Keras's SiLU does: `tf.nn.silu`) puts
    a `CustomGradient-<n>` entry in TensorFlow's process-wide gradient
    registry, whose closure holds the traced graph; the graph captures the
    model's variables, so their buffers outlive every Python reference to the
    model (a 1.59B-parameter decoder's 6 GB stayed resident). Nothing here
    takes gradients of a finished job's graphs, and a SavedModel records its
    custom gradients when it is written, before this runs.
    """
    ops = sys.modules.get("tensorflow.python.framework.ops")
    if ops is None:  # TensorFlow never imported: nothing registered
        return
    registry = ops._gradient_registry._registry
    for name in [n for n in registry if n.startswith("CustomGradient-")]:
        del registry[name]


def release_memory() -> None:
    """Collects what the last job left and hands freed heap pages back to the system.

    glibc keeps freed memory in its arenas, so an idle long-lived process
    stays at the peak of its largest job; Bazel 4.2.3 never stops idle
    persistent workers, and several of them left after a `bazel test //...`
    made the next build swap. Called after a job is answered, while nobody
    waits on this process (and by the export worker between writing a large
    model's artifacts and checking them).

    TensorFlow's custom gradients traced so far are unregistered first
    (`_drop_custom_gradients`): each holds its traced graph, and through the
    graph's captures every variable the graph read, for the life of the
    process.
    """
    _drop_custom_gradients()
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return
    libc.malloc_trim(0)
