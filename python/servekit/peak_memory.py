"""Peak resident memory of each stage of an export, for the memory benchmark.

Off unless the environment variable `SERVEKIT_MEMORY_TRACE` names a file (the
export worker inherits it): then each `mark(stage)` appends one JSON line to
it, with the peak resident memory of this process since its previous mark (the
stage that just ended) and what is still resident at its end, and resets the
peak. `tools/onnx_over_2gb.py` sets it and reports the stages of the exporting
process and of the export worker. Each mark reads `/proc/self/status` once
(Linux only: elsewhere, and when off, `mark` does nothing).

Example:

```python
peak_memory.mark("freeze")  # the peak since the previous mark was the freezing's
```
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

TRACE_ENV = "SERVEKIT_MEMORY_TRACE"


def status_bytes(pid: int | str = "self") -> Optional[dict[str, int]]:
    """`VmRSS` and `VmHWM` (peak) of a process, in bytes, from `/proc`; None
    when the process is gone or the system has no `/proc`."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024  # kB
    return found if len(found) == 2 else None


def mark(stage: str) -> None:
    """Records the stage of this process that ends now, when tracing is on."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    now = status_bytes()
    if now is None:
        return
    record = {"pid": os.getpid(), "stage": stage, "peak_bytes": now["VmHWM"], "rss_bytes": now["VmRSS"],
              "time": time.time()}
    with open(path, "a") as f:  # one line per write: the two processes' lines do not interleave
        f.write(json.dumps(record) + "\n")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS: the next stage's peak is its own
    except OSError:  # no permission: the next peaks are cumulative, which the trace shows
        pass
