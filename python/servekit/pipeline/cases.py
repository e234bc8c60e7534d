"""Verification cases: inputs and the outputs the source model computed on them.

A `Case` is one call of one endpoint. Cases of an endpoint are run on a freshly
loaded artifact in the order they were made, once each: for a stateful endpoint
they are the source's successive calls from the export-time state. Outputs named
in `runs` are stochastic: instead of one expected value they carry the source's
outputs over repeated calls, compared by statistics (`pipeline.behavior`).

`CaseSet` stores cases in one `.npz` plus a JSON index, which is how they travel
to the export worker (no pickling).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np


def storable(a) -> np.ndarray:
    """An array `np.save`/`np.savez` store without pickling and any `.npy` reader
    can type: strings as bytes, bfloat16 as float32.

    `.npy` has no bfloat16: NumPy writes `ml_dtypes.bfloat16` as an opaque `<V2`.
    Widening is exact, and `restored` narrows back where the dtype says bfloat16
    (the case file here, the manifest's reference data in the native verifier).
    """
    a = np.asarray(a)
    if a.dtype.kind in "OU":
        flat = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in a.ravel().tolist()]
        return np.array(flat, dtype=bytes).reshape(a.shape) if flat else np.zeros(a.shape, dtype="S1")
    if a.dtype.name == "bfloat16":
        return a.astype(np.float32)
    return a


def restored(stored: np.ndarray, dtype: str) -> np.ndarray:
    """An array `storable` wrote, back as `dtype` (the name of the original's):
    float32 narrows to `ml_dtypes.bfloat16` for "bfloat16"; others are as stored."""
    if dtype == "bfloat16":
        import ml_dtypes

        return stored.astype(ml_dtypes.bfloat16)
    return stored


@dataclasses.dataclass
class Case:
    """One verification call.

    Args:
        endpoint: the signature name.
        batch: the batch size (for messages).
        inputs: input arrays by signature key.
        expected: the source's outputs by output name.
        values: False to compare names, dtypes and shapes only.
        runs: output name -> the source's outputs over repeated calls, for
            stochastic outputs (compared by statistics, not value for value).
        tolerances: `(atol, rtol)` by dtype over `verification.TOLERANCES`
            (the export's `tolerances`), or None for the defaults.
        sizes: the size of each dynamic dim in this case, by symbol
            (`batch` included when it is dynamic); empty when unknown.
    """

    endpoint: str
    batch: int
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    values: bool = True
    runs: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    tolerances: Optional[dict[str, tuple[float, float]]] = None
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)


class CaseSet:
    """An ordered list of cases that can be written for the export worker."""

    def __init__(self, cases: Optional[list[Case]] = None):
        self.cases: list[Case] = list(cases or [])

    def add(self, case: Case) -> None:
        self.cases.append(case)

    def __iter__(self):
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def for_endpoint(self, name: str) -> list[Case]:
        return [c for c in self.cases if c.endpoint == name]

    def write(self, path: str) -> tuple[Optional[str], list[dict[str, Any]]]:
        """Writes the arrays to `path` (.npz); returns `(path, index)`."""
        if not self.cases:
            return None, []
        arrays: dict[str, np.ndarray] = {}

        def key(value, widened: dict[str, str]) -> str:
            k = f"a{len(arrays)}"
            arrays[k] = storable(value)
            if np.asarray(value).dtype.name == "bfloat16":
                widened[k] = "bfloat16"  # stored as float32: `read` narrows it back
            return k

        index = []
        for c in self.cases:
            widened: dict[str, str] = {}
            index.append({
                "endpoint": c.endpoint, "batch": c.batch, "values": c.values,
                "inputs": {n: key(v, widened) for n, v in c.inputs.items()},
                "expected": {n: key(v, widened) for n, v in c.expected.items()},
                "runs": {n: [key(v, widened) for v in vs] for n, vs in c.runs.items()},
                "tolerances": c.tolerances, "sizes": c.sizes, "dtypes": widened,
            })
        np.savez(path, **arrays)
        return path, index

    @classmethod
    def read(cls, path: Optional[str], index: list[dict[str, Any]]) -> "CaseSet":
        if not path:
            return cls()
        stored = np.load(path, allow_pickle=False)

        def array(k: str, entry: dict[str, Any]) -> np.ndarray:
            return restored(stored[k], entry.get("dtypes", {}).get(k, ""))

        cases = []
        for entry in index:
            cases.append(Case(
                entry["endpoint"], entry["batch"],
                {n: array(k, entry) for n, k in entry["inputs"].items()},
                {n: array(k, entry) for n, k in entry["expected"].items()},
                entry["values"],
                {n: [array(k, entry) for k in ks] for n, ks in entry.get("runs", {}).items()},
                {d: tuple(t) for d, t in entry["tolerances"].items()} if entry.get("tolerances") else None,
                {k: int(v) for k, v in entry.get("sizes", {}).items()}))
        return cls(cases)
