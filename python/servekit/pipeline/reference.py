"""Running the source endpoint: behavior probe and verification cases.

Everything here runs in the source process, on the source backend. The same
function serves `servekit.export`, `ExportArchive` and the build tool, so
batch choice, the randomness/state checks and the case order are defined once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from servekit.source_model import dims
from servekit.source_model.input_layout import InputLayout
from servekit.source_model.sample_inputs import generate_inputs, input_ranges_for, mask_inputs
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
        raise ExportError(f"{what} failed on generated inputs on the {backend} backend: {type(e).__name__}: {e}"
                          f"{_known_cause(str(e))}", model=model, reason="source_failed") from None


def _known_cause(message: str) -> str:
    if "only supports the NHWC tensor format on the CPU" in message:
        # TensorFlow runs channels-first convolutions on a CPU through oneDNN only, which it
        # turns on by itself on CPUs with AVX-512 (VNNI, BF16) or AMX.
        return ("\nTensorFlow's CPU kernels run a channels-first convolution only with oneDNN, which TensorFlow "
                "turns on by itself on some CPUs only: set TF_ENABLE_ONEDNN_OPTS=1 in the environment before "
                "TensorFlow is imported, or build the model with data_format='channels_last'.")
    return ""


def guarded(call: SourceCall, what: str, backend: str, model: Optional[str] = None) -> SourceCall:
    """`call`, its failures reported by `blaming_the_source`."""
    def wrapped(flat: Sequence[np.ndarray]) -> list[np.ndarray]:
        with blaming_the_source(what, backend, model):
            return call(flat)

    return wrapped


def verify_batches(layout: InputLayout) -> list[int]:
    """Batch sizes to verify: 1, 7 and 2 when every input has a dynamic
    batch, else the static batch size."""
    return dims.case_batches(layout)


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
    plan: Optional[dims.DimPlan] = None,
) -> tuple[behavior_lib.Behavior, list[Case]]:
    """Probes an endpoint and computes its verification cases; see
    `make_planned_cases`, which also returns the sizes' plan."""
    behavior, cases, _ = make_planned_cases(endpoint, layout, output_names, call, variables, vocab_source, batches,
                                            inputs, input_ranges, plan)
    return behavior, cases


def make_planned_cases(
    endpoint: str,
    layout: InputLayout,
    output_names: Sequence[str],
    call: SourceCall,
    variables: Sequence[Any],
    vocab_source: Any = None,
    batches: Optional[Sequence[int]] = None,
    inputs: Optional[Sequence[Sequence[np.ndarray]]] = None,
    input_ranges: Optional[dict] = None,
    plan: Optional[dims.DimPlan] = None,
) -> tuple[behavior_lib.Behavior, list[Case], Optional[dims.DimPlan]]:
    """Probes an endpoint and computes its verification cases.

    Args:
        endpoint: the signature name the cases are for.
        layout: its inputs.
        output_names: the names of its flat outputs.
        call: runs the source endpoint on flat inputs.
        variables: every variable the endpoint may change; restored after.
        vocab_source: a model/layer whose lookup vocabularies and embedding
            sizes keep generated inputs meaningful.
        batches: batch sizes, one case each (default: the plan's).
        inputs: flat inputs per case, instead of generated ones.
        input_ranges: declared value ranges of generated inputs, by name
            (`source_model.sample_inputs.input_ranges_for`); ids that index an Embedding
            of `vocab_source` are kept in range without it.
        plan: the cases' sizes (`source_model.dims`); default: 1, an odd
            size and a long one per dynamic dim, unprobed. When the source
            fails at a planned size, every dynamic non-batch dim falls back
            to 4 (what servekit always verified) and the plan says so.

    Returns:
        `(behavior, cases, plan)`: a stateful endpoint's cases are successive
        calls from the current state; a stochastic output's cases carry
        `behavior.STATISTICS_CALLS` repeated source outputs in `runs`; `plan`
        is the plan the cases follow (None for given `inputs`).
    """
    if inputs is not None:
        batches = [int(np.shape(flat[0])[0]) if flat and np.ndim(flat[0]) else 1 for flat in inputs]
        behavior, cases = _cases(endpoint, layout, output_names, call, variables, batches, inputs,
                                 [{} for _ in inputs])
        return behavior, cases, None
    plan = plan or dims.plan_for(vocab_source, layout)
    if batches:
        plan = dataclasses.replace(plan, cases=[
            dataclasses.replace(plan.cases[i % len(plan.cases)], batch=int(b)) for i, b in enumerate(batches)])
    ranges = input_ranges_for(vocab_source, input_ranges)
    masks = [m for m in mask_inputs(layout) if m not in (input_ranges or {})]

    def attempt(plan: dims.DimPlan):
        window = plan.limits.window[0] if plan.limits.window else None
        inputs = [generate_inputs(layout, c.batch, model=vocab_source, ranges=ranges, sizes=c.dims,
                                  padded=masks if c.padded else (), window=window) for c in plan.cases]
        sizes = [c.all_sizes(plan.batch_dynamic) for c in plan.cases]
        return _cases(endpoint, layout, output_names, call, variables, [c.batch for c in plan.cases], inputs, sizes)

    try:
        with dims.quiet_size_one():
            behavior, cases = attempt(plan)
    except ExportError as e:
        if e.reason != "source_failed" or not any(c.dims for c in plan.cases):
            raise
        legacy = plan.legacy()
        if legacy.cases == plan.cases:
            raise
        with dims.quiet_size_one():
            behavior, cases = attempt(legacy)  # failing too, it raises what servekit always said
        plan = legacy
    return behavior, cases, plan


def _cases(endpoint, layout, output_names, call, variables, batches, inputs, sizes):
    names = [s.name for s in layout.flat]
    largest = max(range(len(inputs)), key=lambda i: (batches[i], sum(np.size(x) for x in inputs[i])))
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
        # fewer per export.
        outputs = [probed[0] if behavior.exact and i == largest else call(flat) for i, flat in enumerate(inputs)]
    cases = []
    stochastic_names = [output_names[i] for i in behavior.stochastic_outputs if i < len(output_names)]
    for batch, flat, outs, case_sizes in zip(batches, inputs, outputs, sizes):
        runs: dict[str, list[np.ndarray]] = {}
        if stochastic_names:
            with behavior_lib.VariableSnapshot(variables):
                repeated = [call(flat) for _ in range(behavior_lib.STATISTICS_CALLS)]
            for i in behavior.stochastic_outputs:
                runs[output_names[i]] = [r[i] for r in repeated]
        cases.append(Case(endpoint, batch, dict(zip(names, flat)), dict(zip(output_names, outs)), True, runs,
                          sizes=dict(case_sizes)))
    return behavior, cases
