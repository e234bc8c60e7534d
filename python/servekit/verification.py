"""Comparing an artifact's outputs with the source model's.

An output element passes when `|actual - expected| <= atol + rtol * |expected|`
(docs/manifest.md); integer, bool and string outputs must be equal. Shapes and
names must match exactly.

Scale. An absolute tolerance proves nothing about an output whose values are
themselves of its size (keras_hub's MobileNet with random weights outputs
about 3e-5; float32's atol is 1e-5). When a floating output's scale (its
largest finite |value| in the reference) is below `SCALE_FLOOR * atol`, the
absolute term becomes `SCALED_ATOL * scale`: the check is then relative to
the output's own size, and `check_kind` calls it "scaled" (the manifest
records it per output). At the other end, an output larger than 1 is never held
closer than its dtype's default atol per unit of its scale (float32: 1e-5 x
scale, about 84 float32 epsilons): a sum's roundings grow with its terms, and a
model whose outputs are about 1e4 differs from its own SavedModel, run as a
graph, by about 1e-2 (measured: two `Dense` layers with weights of standard
deviation 3, 1.2e-6 of the scale). That check is "scaled" too. For a lossy precision (a tolerance with a relative
term, such as bfloat16's) the fraction is at least `SCALED_RTOL_FACTOR * rtol`
and the term never exceeds `atol`: a bfloat16 model's roundings add up over its
layers to a few of its units at the output's scale (measured: 1.3-1.6% of it
between TensorFlow's eager and graph runs of a small bfloat16 MLP, and between
JAX and ONNX Runtime), which `1e-3` of the scale would call a failure. The
native verifier applies the same rule (cc/parity.cc).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np

# (atol, rtol) per dtype; the manifest's defaults.
TOLERANCES = {
    "float32": (1e-5, 0.0),
    "float64": (1e-7, 0.0),
    "float16": (1e-2, 1e-2),
    "bfloat16": (1e-2, 1e-2),
}


# An output at least this many atols large is checked with atol as it is.
SCALE_FLOOR = 100.0
# Below that, the absolute term is this fraction of the output's scale,
SCALED_ATOL = 1e-3
# or, for a tolerance with a relative term, this many times that term.
SCALED_RTOL_FACTOR = 3.0


def output_scale(expected: np.ndarray) -> float:
    """The largest finite |value| of a floating reference output (0 if none)."""
    values = np.abs(np.asarray(expected, dtype=np.float64))
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else 0.0


def scaled_fraction(rtol: float = 0.0) -> float:
    """The fraction of an output's scale that a "scaled" check allows."""
    return max(SCALED_ATOL, SCALED_RTOL_FACTOR * rtol)


def unit_atol(dtype: str) -> float:
    """The error an output of `dtype` may have per unit of its scale: the
    dtype's default atol (float32 for dtypes without one)."""
    return TOLERANCES.get(dtype, TOLERANCES["float32"])[0]


def effective_atol(atol: float, scale: float, rtol: float = 0.0, dtype: str = "float32") -> float:
    """The absolute term used for an output of `scale` (see the module doc):
    at least `unit_atol(dtype) * scale` for an output larger than 1; for a
    small one, never below `SCALED_ATOL * atol`, so an all-zero output is not
    held to exact zeros, and never above `atol`."""
    relative_floor = unit_atol(dtype) * scale
    if relative_floor > atol:
        return relative_floor
    if scale >= SCALE_FLOOR * atol:
        return atol
    return min(atol, scaled_fraction(rtol) * max(scale, atol))


def coarse_tolerance(fraction: float) -> tuple[float, float, float]:
    """A tolerance relative to each output's scale: every element within
    `fraction * scale` of the source (for declared lossy precisions such as
    a quantized LiteRT model, whose error follows the output's range, not each
    element). The scale is the output's largest over its endpoint's cases
    (`endpoint_scales`): a case of one row can have a scale far below the
    range the quantizer calibrated. A third entry in a tolerance tuple; the
    scale rule does not apply to it."""
    return (0.0, 0.0, float(fraction))


def endpoint_scales(cases) -> dict[tuple[str, str], float]:
    """`(endpoint, output) -> ` the output's largest scale over the cases
    compared by value: the unit of a coarse tolerance."""
    scales: dict[tuple[str, str], float] = {}
    for case in cases:
        if not case.values:
            continue
        for name, expected in case.expected.items():
            if name not in case.runs and np.asarray(expected).dtype.kind not in "iubSUO":
                key = (case.endpoint, name)
                scales[key] = max(scales.get(key, 0.0), output_scale(expected))
    return scales


def check_kind(expected: np.ndarray, atol: float) -> str:
    """"absolute" when the output is checked with `atol` as it is, "scaled"
    when the scale rule replaced it (a tiny output, or one so large that
    float32 cannot hold `atol`)."""
    expected = np.asarray(expected)
    return "absolute" if effective_atol(atol, output_scale(expected), dtype=str(expected.dtype)) == atol \
        else "scaled"


def parse_tolerance(text: str) -> tuple[str, tuple[float, float]]:
    """`DTYPE=ATOL[,RTOL]` (a command line's tolerance) as `(dtype, (atol, rtol))`.

    Raises:
        ValueError: the text is not of that form; the message shows it.
    """
    malformed = ValueError(f"expected DTYPE=ATOL[,RTOL] (e.g. float32=1e-5,1e-4), got {text!r}")
    dtype, eq, values = text.partition("=")
    atol, _, rtol = values.partition(",")
    if not (dtype and eq and atol):
        raise malformed
    try:
        return dtype, (float(atol), float(rtol or 0.0))
    except ValueError:
        raise malformed from None


def tolerances_for(model, declared: Optional[Mapping[str, tuple]] = None) -> dict[str, tuple[float, float]]:
    """The tolerances an export of `model` is checked with, over `TOLERANCES`:
    `declared` (by dtype name) over those the model's precision implies.

    A model with a mixed-precision dtype policy (some layer computes in
    float16 or bfloat16) has float32 outputs that carry the rounding of its
    compute dtype, which another runtime does not reproduce to float32
    precision: they get that dtype's tolerance. Likewise a float64 output of
    a model none of whose layers computes in float64 (a float32 result cast
    at the end) carries float32 rounding, and gets float32's tolerance.
    """
    import keras

    from servekit.source_model.kinds import all_layers

    compute = {str(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", None))
               for layer in all_layers(model) if not isinstance(layer, keras.layers.InputLayer)}
    outputs = {str(getattr(x, "dtype", None)) for x in keras.tree.flatten(getattr(model, "outputs", None) or [])}
    implied = {}
    if "float64" in outputs and "float64" not in compute:
        implied["float64"] = TOLERANCES["float32"]
    for reduced in ("float16", "bfloat16"):  # bfloat16 last: the coarser one wins
        if reduced in compute:
            implied = {dtype: TOLERANCES[reduced] for dtype in ("float32", *implied)}
    return {**implied, **{str(d): (float(t[0]), float(t[1])) for d, t in (declared or {}).items()}}


@dataclasses.dataclass
class Comparison:
    """Result of comparing one case (one batch) of one endpoint."""

    endpoint: str
    batch: int
    max_abs_err: float
    problems: list[str]
    # The dtypes of the floating outputs outside their tolerance: what a declared tolerance names.
    dtypes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_string(a: np.ndarray) -> bool:
    return a.dtype.kind in "SUO"


def _as_bytes(a: np.ndarray) -> np.ndarray:
    flat = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in np.asarray(a, dtype=object).ravel()]
    return np.array(flat, dtype=object).reshape(np.shape(a))


def compare_outputs(
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    endpoint: str = "serving_default",
    batch: int = 0,
    tolerances: Optional[Mapping[str, tuple]] = None,
    values: bool = True,
    scales: Optional[Mapping[str, float]] = None,
) -> Comparison:
    """Compares named outputs.

    Args:
        expected: outputs of the source model, by name.
        actual: outputs of the artifact, by name.
        values: False to compare only names, shapes and dtypes (endpoints whose
            outputs are random, e.g. a training-mode forward pass with dropout).
        scales: output name -> its scale over every case of the endpoint, the
            unit of a coarse tolerance (`endpoint_scales`); by default each
            case's own.

    Returns:
        A `Comparison`; `problems` says, per output, what differed.
    """
    tolerances = dict(TOLERANCES, **(tolerances or {}))
    problems, dtypes = [], []
    worst = 0.0
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        problems.append(f"output names differ: missing {missing}, unexpected {extra}")
    for name in expected:
        if name not in actual:
            continue
        e, a = np.asarray(expected[name]), np.asarray(actual[name])
        if e.shape != a.shape:
            problems.append(f"output '{name}': shape {a.shape}, expected {e.shape}")
            continue
        if _is_string(e) or _is_string(a):
            if not (_is_string(e) and _is_string(a)):
                problems.append(f"output '{name}': dtype {a.dtype}, expected {e.dtype}")
            elif values and not np.array_equal(_as_bytes(e), _as_bytes(a)):
                n = int(np.sum(_as_bytes(e) != _as_bytes(a)))
                problems.append(f"output '{name}': {n} string element(s) differ")
            continue
        if e.dtype.kind in "iub" or a.dtype.kind in "iub":
            if e.dtype.kind != a.dtype.kind and not (e.dtype.kind in "iu" and a.dtype.kind in "iu"):
                problems.append(f"output '{name}': dtype {a.dtype}, expected {e.dtype}")
            elif values and not np.array_equal(e, a):
                diff = float(np.max(np.abs(e.astype(np.float64) - a.astype(np.float64)))) if e.size else 0.0
                worst = max(worst, diff)
                problems.append(f"output '{name}': integer values differ (max abs diff {diff:g}); ints must be exact")
            continue
        if not values:
            continue
        atol, rtol, *coarse = tolerances.get(str(e.dtype), tolerances["float32"])
        e64, a64 = e.astype(np.float64), a.astype(np.float64)
        if e.size:
            if not np.array_equal(np.isnan(e64), np.isnan(a64)):
                problems.append(f"output '{name}': NaN positions differ")
                continue
            mask = ~np.isnan(e64)
            diff = np.abs(e64 - a64)[mask]
            err = float(diff.max()) if diff.size else 0.0
            worst = max(worst, err)
            scale = output_scale(e64)
            coarse_fraction = coarse[0] if coarse else 0.0
            if coarse_fraction:
                scale = max(scale, (scales or {}).get(name, 0.0))
                used_atol = coarse_fraction * max(scale, np.finfo(np.float32).tiny)
            else:
                used_atol = effective_atol(atol, scale, rtol, str(e.dtype))
            limit = used_atol + rtol * np.abs(e64[mask])
            if np.any(diff > limit):
                if coarse_fraction:
                    unit = f"{coarse_fraction:g} x the output's scale over the endpoint's cases"
                elif used_atol > atol:
                    unit = f"{unit_atol(str(e.dtype)):g} per unit of the output's scale"
                else:
                    unit = f"{scaled_fraction(rtol):g} x the output's scale"
                scaled = "" if used_atol == atol else f" ({unit} {scale:.3g})"
                problems.append(f"output '{name}': max abs diff {err:.3g} exceeds atol={used_atol:g}{scaled} "
                                f"rtol={rtol:g}")
                dtypes.append(str(e.dtype))
    return Comparison(endpoint, batch, worst, problems, dtypes)


def describe_failures(comparisons: Sequence[Comparison]) -> str:
    lines = []
    for c in comparisons:
        for p in c.problems:
            lines.append(f"  endpoint '{c.endpoint}', batch {c.batch}: {p}")
    return "\n".join(lines)


def failure(comparisons: Sequence[Comparison], artifact: str, source: str = "the source model") -> dict:
    """The report fields of an artifact that failed its comparisons:
    `ok: False`, the reason, a message naming each failing case and the
    dtypes of the outputs outside their tolerance (`tolerance_dtypes`)."""
    return {"ok": False, "reason": "verification_failed",
            "message": f"The {artifact} does not reproduce {source}:\n" + describe_failures(comparisons),
            "tolerance_dtypes": sorted({dtype for c in comparisons for dtype in c.dtypes})}


def record(report: dict, comparisons: Sequence[Comparison], artifact: str, what: str) -> dict:
    """Adds an artifact's comparisons to a strategy's `report` (tagged with
    `artifact`), and its failure (naming `what`) if one differs."""
    report.setdefault("comparisons", []).extend(dict(c.__dict__, artifact=artifact) for c in comparisons)
    if not all(c.ok for c in comparisons):
        report.update(failure(comparisons, what))
    return report


def with_tolerances(case, tolerances: Mapping[str, tuple]):
    """`case` checked with `tolerances` over its own (a declared precision loosens them)."""
    if not tolerances:
        return case
    import copy

    looser = copy.copy(case)
    looser.tolerances = {**(getattr(case, "tolerances", None) or {}), **tolerances}
    return looser


def _check_runs(case, run_again, results: list) -> None:
    """Compares the stochastic outputs of `case` by statistics over repeated calls."""
    from servekit.pipeline.behavior import compare_statistics

    if not case.runs:
        return
    artifact_runs: dict[str, list] = {n: [] for n in case.runs}
    for _ in range(len(next(iter(case.runs.values())))):
        out = run_again(case.inputs)
        for n in artifact_runs:
            artifact_runs[n].append(out[n])
    problems = []
    for name, source_runs in case.runs.items():
        problem = compare_statistics(source_runs, artifact_runs[name])
        if problem:
            problems.append(f"stochastic output '{name}': {problem}")
    results.append(Comparison(case.endpoint, case.batch, 0.0, problems))


# Set by `recording_outputs`: where `_check` puts each case's artifact outputs.
_recorded: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("servekit_recorded_outputs", default=None)


@contextlib.contextmanager
def recording_outputs() -> Iterator[list]:
    """Collects `(case, outputs)` for every case a check runs in this block,
    whatever the format (`servekit.pipeline.localize` reads a probe
    artifact's outputs through its format's own check)."""
    recorded: list = []
    token = _recorded.set(recorded)
    try:
        yield recorded
    finally:
        _recorded.reset(token)


def _check(cases, run) -> list[Comparison]:
    """Runs each case once, in order (stateful endpoints advance as the source
    did), then the repeated calls of stochastic outputs."""
    results = []
    sink = _recorded.get()
    scales = endpoint_scales(cases)
    for case in cases:
        actual = run(case.endpoint, case.inputs)
        if sink is not None:
            sink.append((case, actual))
        expected = case.expected
        stochastic = set(case.runs)
        comp = compare_outputs({n: v for n, v in expected.items() if n not in stochastic},
                               {n: v for n, v in actual.items() if n not in stochastic},
                               case.endpoint, case.batch, values=case.values,
                               tolerances=getattr(case, "tolerances", None),
                               scales={n: v for (e, n), v in scales.items() if e == case.endpoint})
        for name in sorted(stochastic):
            if name not in actual:
                comp.problems.append(f"output '{name}' is missing")
                continue
            shape_only = compare_outputs({name: expected[name]}, {name: actual[name]}, case.endpoint, case.batch,
                                         values=False)
            comp.problems.extend(shape_only.problems)
        results.append(comp)
    for case in cases:
        _check_runs(case, lambda inputs, _ep=case.endpoint: run(_ep, inputs), results)
    return results


def check_saved_model(path: str, cases) -> list[Comparison]:
    """Reloads a SavedModel and runs each case through its signature.

    Args:
        path: the SavedModel directory.
        cases: `servekit.pipeline.cases.Case`s, run in order on one fresh load.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(path)

    def run(endpoint, inputs):
        out = loaded.signatures[endpoint](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    results = _check(list(cases), run)
    del loaded
    return results


def _casts_weights(path_or_bytes) -> bool:
    """Whether an ONNX model reads its weights through bfloat16 casts (`servekit.onnx_bfloat16`)."""
    import onnx

    from servekit import onnx_bfloat16

    if isinstance(path_or_bytes, str):
        model_proto = onnx.load(path_or_bytes, load_external_data=False)
    else:
        model_proto = onnx.load_from_string(path_or_bytes)
    return onnx_bfloat16.casts_weights(model_proto)


def check_onnx(path_or_bytes, cases, casts_weights: Optional[bool] = None) -> list[Comparison]:
    """Runs each case through onnxruntime (same `cases` as `check_saved_model`).

    `casts_weights`: whether the model reads its weights through bfloat16 casts
    (`servekit.onnx_bfloat16.casts_weights` of its ModelProto, which a writer
    has at hand); None reads the model file to find out."""
    import onnxruntime as ort

    from servekit import onnxruntime_io

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if isinstance(path_or_bytes, str):
        from servekit.onnx import onnx_model_file

        path_or_bytes = onnx_model_file(path_or_bytes)  # external data: ORT loads it beside the model file
    if casts_weights is None:
        casts_weights = _casts_weights(path_or_bytes)
    if casts_weights:
        # Folding the weights' casts (what serving does) would hold every weight a
        # second time (in float32: twice the bytes of a bfloat16 one), to check
        # values the casts give exactly. The graph runs as written instead, in its
        # own order (what reads only weights sits right before its first use), each
        # cast freed after use. Any optimization, not only folding, adds nodes that
        # this order puts after every cast.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    session = ort.InferenceSession(path_or_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    runner = onnxruntime_io.SessionRunner(session)
    names = [o.name for o in session.get_outputs()]

    def run(endpoint, inputs):
        feeds = {k: (np.asarray(v, dtype=object).astype(str).astype(object) if np.asarray(v).dtype.kind == "S"
                     else v) for k, v in inputs.items()}
        return dict(zip(names, runner.run(names, feeds)))

    return _check(list(cases), run)
