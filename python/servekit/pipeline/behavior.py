"""What a source endpoint does besides computing: draw random numbers, update state.

Keras exports such endpoints as they are: an exported dropout-in-training-mode or
`keras.random` layer stays random, and a layer that updates a non-trainable
variable in `call` keeps updating it in the artifact. servekit must still verify
them, so before any export it *probes* each endpoint on the source backend:

- **stateful**: a call changes a variable other than a `SeedGenerator` state
  (e.g. a counter incremented in `call`). The reference cases are then the
  endpoint's successive calls from the export-time state, and an artifact must
  advance its state the same way (compared call by call, in order).
- **stochastic**: two calls on the same input give different outputs, and not
  because of state (seed generator states advance on every call). Outputs that
  stayed equal are still compared value for value; the others are compared by
  name, dtype, shape, finiteness and statistics over repeated calls, and the
  artifact must stay random (two calls differ).

Every probe restores the variables it touched: exporting never changes the
model (Keras's own suite checks that an exported counter starts where the model
left it).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from servekit.errors import ExportError

# Calls of the same input that tell a random endpoint from a deterministic one.
PROBE_CALLS = 3
# Repeated calls per case for the statistics of stochastic outputs.
STATISTICS_CALLS = 16
# Per-element tolerance of the mean of stochastic outputs, in standard errors.
STATISTICS_SIGMAS = 6.0


@dataclasses.dataclass(frozen=True)
class Behavior:
    """How an endpoint behaves across calls (recorded in the manifest).

    Args:
        stochastic: some outputs differ between calls on the same input.
        stateful: a call updates variables other than RNG seed states.
        stochastic_outputs: indices (in flat output order) of the outputs
            that differ between calls.
        state_variables: paths of the variables a call updates.
    """

    stochastic: bool = False
    stateful: bool = False
    stochastic_outputs: tuple[int, ...] = ()
    state_variables: tuple[str, ...] = ()  # paths of the variables a call updates

    @property
    def state_layer(self) -> Optional[str]:
        """The layer owning the first updated variable (its path's parent)."""
        for path in self.state_variables:
            parts = path.split("/")
            if len(parts) > 1:
                return parts[-2]
        return None

    @property
    def exact(self) -> bool:
        return not (self.stochastic or self.stateful)

    def to_json(self) -> dict[str, Any]:
        return {"stochastic": self.stochastic, "stateful": self.stateful,
                "stochastic_outputs": list(self.stochastic_outputs)}

    @classmethod
    def from_json(cls, data: Optional[dict[str, Any]]) -> "Behavior":
        data = data or {}
        return cls(bool(data.get("stochastic")), bool(data.get("stateful")),
                   tuple(data.get("stochastic_outputs", ())))


def _is_seed_state(variable) -> bool:
    path = str(getattr(variable, "path", "") or getattr(variable, "name", ""))
    return "seed_generator" in path or path.endswith("seed_generator_state")


def _value(variable) -> np.ndarray:
    """The variable's current value, read-only and possibly a view of the
    variable (`source_model.variables.read_only_view`): copy it to keep it."""
    from servekit.source_model.variables import read_only_view

    return read_only_view(variable)


class VariableSnapshot:
    """The values of some variables, to restore after calling the source model.

    Variables a call can change (non-trainable ones) are copied, and
    trainable ones while their copies total at most `COPY_BYTES`. The other
    trainable variables (an embedding table, a decoder's projections, each
    small but many) are only fingerprinted: copying a model's weights would
    double its memory for a change no inference call makes (a 1.6B-parameter
    decoder's 64 MiB projections each fitted a per-variable limit, and the
    snapshot held a second copy of all its weights); if one does change,
    `restore` raises instead of leaving the model altered.

    Example:

    ```python
    with VariableSnapshot(model.variables):
        model(x)  # may advance a counter or a seed state
    # the variables hold their previous values again
    ```
    """

    COPY_BYTES = 64 * 2**20

    def __init__(self, variables: Iterable[Any]):
        seen: set[int] = set()
        self._saved: list[tuple[Any, np.ndarray | bytes]] = []
        trainable_copied = 0
        for v in variables:
            if id(v) in seen:
                continue
            seen.add(id(v))
            value = _value(v)
            copy = not getattr(v, "trainable", False) or trainable_copied + value.nbytes <= self.COPY_BYTES
            if copy and getattr(v, "trainable", False):
                trainable_copied += value.nbytes
            kept = (value if value.flags.owndata else value.copy()) if copy else _digest(value)
            self._saved.append((v, kept))
            del value  # a view of a large variable: dropped before the next one is read

    def changed(self) -> list[Any]:
        """The variables whose value differs from the snapshot."""
        return [v for v, old in self._saved if self._differs(v, old)]

    def restore(self) -> None:
        """Assigns the saved values to the variables that changed (only those:
        assigning copies).

        Raises:
            ExportError: a fingerprinted (large, trainable) variable changed.
        """
        for v, old in self._saved:
            if not self._differs(v, old):
                continue
            if isinstance(old, bytes):
                name = getattr(v, "path", None) or getattr(v, "name", "")
                raise ExportError(
                    f"Calling the model changed its trainable variable '{name}', of which servekit kept a "
                    f"fingerprint, not a copy (it copies {self.COPY_BYTES >> 20} MiB of trainable variables at "
                    "most), so it cannot restore it; the model now holds the changed values. Make the layer keep "
                    "state in a non-trainable variable.",
                    reason="stateful_trainable")
            v.assign(old)

    @staticmethod
    def _differs(variable, old: np.ndarray | bytes) -> bool:
        value = _value(variable)
        if isinstance(old, bytes):
            return _digest(value) != old
        return not np.array_equal(value, old, equal_nan=old.dtype.kind == "f")

    def __enter__(self) -> "VariableSnapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def _digest(value: np.ndarray) -> bytes:
    # Hashed as bytes: a buffer of ml_dtypes' bfloat16 ('E') cannot be exported.
    raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    return hashlib.blake2b(raw.data, digest_size=16).digest() + str((value.dtype, value.shape)).encode()


def model_variables(*objects: Any) -> list[Any]:
    """Every variable of the given layers/models, seed states included."""
    out = []
    for obj in objects:
        if obj is None:
            continue
        out += list(getattr(obj, "variables", []) or [])
    return out


def probe(call: Callable[[Sequence[np.ndarray]], list[np.ndarray]], flat_inputs: Sequence[np.ndarray],
          variables: Sequence[Any]) -> Behavior:
    """Calls an endpoint `PROBE_CALLS` times on the same inputs and says how it behaved.

    The first call runs from the variables' current state (callers reuse its
    outputs for an exact endpoint).

    Args:
        call: runs the source endpoint on flat inputs, returns flat outputs.
        flat_inputs: one generated case.
        variables: the variables the endpoint may touch (restored afterwards).

    Returns:
        The endpoint's `Behavior`.
    """
    with VariableSnapshot(variables) as snapshot:
        first = call(flat_inputs)
        state = [v for v in snapshot.changed() if not _is_seed_state(v)]
        stateful = bool(state)
        # Three calls: two draws of a small random output (dropout on a few
        # active units) can coincide by chance; three rarely do.
        later = [call(flat_inputs) for _ in range(PROBE_CALLS - 1)]
    state_paths = tuple(str(getattr(v, "path", None) or getattr(v, "name", "")) for v in state)
    differing = tuple(i for i, a in enumerate(first) if any(not _equal(a, other[i]) for other in later))
    if stateful:
        # A counter output differs because of the state, which the ordered
        # reference sequence checks exactly; only outputs that also differ
        # from the same state are random.
        with VariableSnapshot(variables):
            again = call(flat_inputs)
        random = tuple(i for i, (a, b) in enumerate(zip(first, again)) if not _equal(a, b))
        if not random:
            with VariableSnapshot(variables) as snapshot:
                call(flat_inputs)
                seeds = [v for v in snapshot.changed() if _is_seed_state(v)]
            random = differing if seeds and _differs_with_fresh_seeds(call, flat_inputs, variables) else ()
        return Behavior(stochastic=bool(random), stateful=True, stochastic_outputs=random,
                        state_variables=state_paths)
    return Behavior(stochastic=bool(differing), stateful=False, stochastic_outputs=differing)


def _differs_with_fresh_seeds(call, flat_inputs, variables) -> bool:
    """Stateful endpoint with seed states: do outputs depend on the seeds?"""
    with VariableSnapshot(variables):
        a = call(flat_inputs)
    with VariableSnapshot(variables):
        for v in variables:
            if _is_seed_state(v):
                v.assign(_value(v) + 1)
        b = call(flat_inputs)
    return any(not _equal(x, y) for x, y in zip(a, b))


def _equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def compare_statistics(source_runs: Sequence[np.ndarray], artifact_runs: Sequence[np.ndarray]) -> Optional[str]:
    """Compares one stochastic output across repeated calls of both sides.

    Three checks, each at `STATISTICS_SIGMAS` standard errors: the mean over
    all elements per call (a two-sample test over the calls, robust to noise
    shared between elements), the per-element means (scale floored by the
    average spread, so elements that happened not to vary do not make it
    zero), and, over 8 elements or more, the spread itself (average standard
    deviation within a factor of 1.5). The artifact must also still vary
    between calls.

    Returns:
        None when they agree, else what differed.
    """
    s = np.stack([np.asarray(r, dtype=np.float64) for r in source_runs])
    a = np.stack([np.asarray(r, dtype=np.float64) for r in artifact_runs])
    if s.shape != a.shape:
        return f"shape {a.shape[1:]}, expected {s.shape[1:]}"
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(s)):
        return "non-finite values where the source model has none"
    if s.size and np.all(a == a[:1]):
        return "the artifact gave the same values on every call: it is no longer random"
    if not s.size:
        return None
    n = s.shape[0]
    k = STATISTICS_SIGMAS
    per_call_s, per_call_a = s.reshape(n, -1).mean(1), a.reshape(n, -1).mean(1)
    atol = 1e-5 * (1.0 + abs(float(per_call_s.mean())))
    gap = abs(float(per_call_s.mean() - per_call_a.mean()))
    if gap > k * float(np.sqrt((per_call_s.var(ddof=1) + per_call_a.var(ddof=1)) / n)) + atol:
        return f"the mean over all elements differs by {gap:.3g} between {n} calls of each"
    sd_s, sd_a = s.std(0, ddof=1), a.std(0, ddof=1)
    spread = float(np.sqrt(np.mean((sd_s ** 2 + sd_a ** 2) / 2)))
    standard_error = np.maximum(np.sqrt((sd_s ** 2 + sd_a ** 2) / n), spread / np.sqrt(n))
    diff = np.abs(s.mean(0) - a.mean(0))
    if np.any(diff > k * standard_error + atol):
        return f"a per-element mean over {n} calls differs by up to {float(diff.max()):.3g}"
    mean_sd_s, mean_sd_a = float(sd_s.mean()), float(sd_a.mean())
    if sd_s.size >= 8 and mean_sd_s > 0 and not (1 / 1.5 <= mean_sd_a / mean_sd_s <= 1.5):
        return f"the spread between calls is {mean_sd_a:.3g}, the source's {mean_sd_s:.3g}"
    return None
