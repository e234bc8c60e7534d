"""Running the source endpoint: behavior probe and verification cases.

Everything here runs in the source process, on the source backend. The same
function serves `servekit.export`, `ExportArchive` and the build tool, so
batch choice, the randomness/state checks and the case order are defined once.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from servekit.source_model.input_layout import InputLayout
from servekit.source_model.sample_inputs import VERIFY_BATCH_SIZES, generate_inputs, input_ranges_for
from servekit.errors import ExportError
from servekit.pipeline import behavior as behavior_lib
from servekit.pipeline.cases import Case

# A flat-inputs -> flat-outputs call of the source endpoint.
SourceCall = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@contextlib.contextmanager
def blaming_the_source(what: str, backend: str, model: Optional[str] = None) -> Iterator[None]:
    """Reports a failure of the user's code in this block as an `ExportError`
    that names it (`what`: "Model 'mlp'", "Endpoint 'serve'") and keeps its message."""
    try:
        yield
    except ExportError:
        raise
    except Exception as e:  # the user's model or function failed: say which, with its own message
        raise ExportError(f"{what} failed on generated inputs on the {backend} backend: {type(e).__name__}: {e}",
                          model=model, reason="source_failed") from None


def guarded(call: SourceCall, what: str, backend: str, model: Optional[str] = None) -> SourceCall:
    """`call`, its failures reported by `blaming_the_source`."""
    def wrapped(flat: Sequence[np.ndarray]) -> list[np.ndarray]:
        with blaming_the_source(what, backend, model):
            return call(flat)

    return wrapped


def verify_batches(layout: InputLayout) -> list[int]:
    """Batch sizes to verify: 1 and 7 when every input has a dynamic batch,
    else the static batch size."""
    if layout.flat and all(s.shape and s.shape[0] is None for s in layout.flat):
        return list(VERIFY_BATCH_SIZES)
    return [next((s.shape[0] for s in layout.flat if s.shape and s.shape[0] is not None), 1)]


def make_cases(
    endpoint: str,
    layout: InputLayout,
    output_names: Sequence[str],
    call: SourceCall,
    variables: Sequence[Any],
    vocab_source: Any = None,
    batches: Optional[Sequence[int]] = None,
    inputs: Optional[Sequence[Sequence[np.ndarray]]] = None,
    input_ranges: Optional[dict] = None,
) -> tuple[behavior_lib.Behavior, list[Case]]:
    """Probes an endpoint and computes its verification cases.

    Args:
        endpoint: the signature name the cases are for.
        layout: the endpoint's inputs.
        output_names: the names of its flat outputs.
        call: runs the source endpoint on flat inputs.
        variables: every variable the endpoint may change; restored after.
        vocab_source: a model/layer whose lookup vocabularies and embedding
            sizes keep generated inputs meaningful.
        batches: batch sizes (default `verify_batches(layout)`).
        inputs: flat inputs per case, instead of generated ones.
        input_ranges: declared value ranges of generated inputs, by name
            (`source_model.sample_inputs.input_ranges_for`); ids that index an Embedding
            of `vocab_source` are kept in range without it.

    Returns:
        `(behavior, cases)`. A stateful endpoint's cases are successive calls
        from the current state; a stochastic output's cases carry
        `behavior.STATISTICS_CALLS` repeated source outputs in `runs`.
    """
    if inputs is None:
        batches = list(batches or verify_batches(layout))
        ranges = input_ranges_for(vocab_source, input_ranges)
        inputs = [generate_inputs(layout, b, model=vocab_source, ranges=ranges) for b in batches]
    else:
        batches = [int(np.shape(flat[0])[0]) if flat and np.ndim(flat[0]) else 1 for flat in inputs]
    names = [s.name for s in layout.flat]
    largest = max(range(len(inputs)), key=lambda i: batches[i])  # most elements to tell randomness by
    probed: list[list[np.ndarray]] = []  # the probe's first call

    def recorded(flat: Sequence[np.ndarray]) -> list[np.ndarray]:
        outputs = call(flat)
        if not probed:
            probed.append(outputs)
        return outputs

    behavior = behavior_lib.probe(recorded, inputs[largest], variables)
    with behavior_lib.VariableSnapshot(variables):
        # In order: state advances as in the artifact. An exact endpoint has
        # just given the largest case's outputs from this very state (the
        # probe's first call), so that case is not run again: one source call
        # of the five an export of a dynamic-batch model makes.
        outputs = [probed[0] if behavior.exact and i == largest else call(flat) for i, flat in enumerate(inputs)]
    cases = []
    stochastic_names = [output_names[i] for i in behavior.stochastic_outputs if i < len(output_names)]
    for batch, flat, outs in zip(batches, inputs, outputs):
        runs: dict[str, list[np.ndarray]] = {}
        if stochastic_names:
            with behavior_lib.VariableSnapshot(variables):
                repeated = [call(flat) for _ in range(behavior_lib.STATISTICS_CALLS)]
            for i in behavior.stochastic_outputs:
                runs[output_names[i]] = [r[i] for r in repeated]
        cases.append(Case(endpoint, batch, dict(zip(names, flat)), dict(zip(output_names, outs)), True, runs))
    return behavior, cases
