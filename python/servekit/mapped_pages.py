"""Hands a memory-mapped file's pages back to the kernel while a runtime works.

A runtime that maps an artifact's weights and lays out its own copy of them
(OpenVINO's CPU plugin packs every MatMul weight when it compiles and first
runs an IR) reads each mapped page once; the pages stay resident beside the
copy it made, so checking the artifact holds its weights twice. One that
computes from the mapping (LiteRT's built-in kernels) ends a check with the
whole file resident. They are clean pages of a file: the kernel can drop
them and read them again from the file if they are used. `paged_out` asks it
to, every `every_s` seconds, for as long as its block runs.

It uses `MADV_PAGEOUT` (Linux 5.4+), never `MADV_DONTNEED`: should the
mapping be gone and its addresses reused by the time the thread runs,
paging memory out loses nothing (anonymous memory goes to swap or stays),
where dropping it would. Elsewhere (not Linux, an older kernel) the block
runs unchanged, at the memory it took before.

Example:

```python
with mapped_pages.paged_out(ir_bin_path):
    compiled = core.compile_model(xml_path, "CPU")
    compiled.create_infer_request().infer(inputs)
```
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import threading
from typing import Iterator

_MADV_PAGEOUT = 21
_log = logging.getLogger(__name__)


def mapped_ranges(path: str) -> list[tuple[int, int]]:
    """(start, length) of this process' read-only mappings of `path`, from
    `/proc/self/maps`; empty where there is none (or no `/proc`)."""
    target = os.path.realpath(path)
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == target and "w" not in fields[1]:
                    start, end = (int(v, 16) for v in fields[0].split("-"))
                    ranges.append((start, end - start))
    except OSError:
        return []
    return ranges


def page_out(path: str) -> int:
    """Pages out this process' read-only mappings of `path` once.

    Returns:
        How many mappings were paged out (0: none, or the kernel cannot).
    """
    madvise = _madvise()
    if madvise is None:
        return 0
    done = 0
    for start, length in mapped_ranges(path):
        if madvise(start, length, _MADV_PAGEOUT) == 0:
            done += 1
        else:
            _log.debug("madvise(MADV_PAGEOUT) of %s failed: errno %d", path, ctypes.get_errno())
    return done


@contextlib.contextmanager
def paged_out(path: str, every_s: float = 0.05) -> Iterator[None]:
    """Pages out the read-only mappings of `path` every `every_s` seconds while
    the block runs, from a daemon thread; the block's own work is untouched (a
    page it needs again is read from the file). The block must keep what maps
    the file alive until it ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            page_out(path)

    thread = threading.Thread(target=loop, name="servekit-page-out", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@functools.lru_cache(maxsize=None)
def _madvise():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc (nor Linux): nothing to page out
        return None
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise
