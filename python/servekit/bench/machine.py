"""What machine a benchmark ran on: CPU, cores, memory, GPU, load, package versions.

Shared by the benchmark drivers of `servekit.bench`; imports nothing heavy, so a
driver can describe the machine without loading TensorFlow or the native module.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
import subprocess
from typing import Any, Optional, Sequence


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory and GPU (if any) of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    memory_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib, "gpu": gpu,
            "platform": platform.platform()}


def load_average() -> Optional[list[float]]:
    """The 1/5/15-minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def package_versions(distributions: Sequence[str]) -> dict[str, Optional[str]]:
    """Installed versions of `distributions`, read from package metadata (no import).

    A name given as "a|b" is looked up as "a", then "b" (e.g.
    "tensorflow|tensorflow-cpu"), and recorded under "a"; a missing one is None.
    """
    versions: dict[str, Optional[str]] = {}
    for spec in distributions:
        names = spec.split("|")
        versions[names[0]] = None
        for name in names:
            try:
                versions[names[0]] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions
