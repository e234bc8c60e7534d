"""The first diverging layer: where a failed verification comes from.

A failed check says which *output* differs; the cause is usually one layer a
converter or a rebuild got wrong. Polygraphy marks every intermediate ONNX
tensor as an output and compares them one by one; servekit knows the Keras
layer graph, so it compares *layers*, in every format a strategy writes:

1. The model's layer graph (Functional or Sequential, nested ones included)
   is walked in topological order; every layer call's outputs become the
   outputs of a *probe* model (same inputs, same layers and weights).
2. The probe is exported by the strategy that failed, to the format that
   failed, into a temporary directory (never committed, not verified).
3. The probe artifact runs on the failing case's inputs, in the runtime the
   check used, and each layer's output is compared with the same layer's
   output on the source backend, at the case's tolerances (the scale rule
   included). The first layer beyond tolerance is the diverging one; when it
   is itself a Functional model, its own layers are probed the same way, on
   the inputs the source gave it.

This runs only after a verification failed, and costs one more export of the
probe per failing strategy (per nesting level). What it cannot do, it says:
a subclassed model's layer graph is its Python `call` (Keras does not record
it), an archive has no single graph, stochastic and stateful endpoints do not
repeat, and the probe's extra outputs may keep a converter from the fusion
that went wrong (then no layer of the probe differs). The result goes into
the failed report (`message`, `layer`, `localization`), and from there into
the `ExportError` (`layer`, `details`).

The artifact's own tensor names for the diverging layer come from the failed
artifact itself: ONNX node outputs and SavedModel ops are named after the
layer's name scope when the converter kept it (tf2onnx does; jax2tf and the
torch exporters do not).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from servekit import formats, verification
from servekit.errors import root_cause

# Probe output names: sorted like the topological order (Keras flattens dicts by key).
_PREFIX = "servekit_probe_"
# How deep into nested Functional models the search goes.
MAX_DEPTH = 3
# Artifact tensor names reported per layer (the last ones: the layer's output).
MAX_TENSOR_NAMES = 3
# "0" turns the search off (a CI that only needs the verdict, not the diagnosis).
DISABLE_ENV = "SERVEKIT_LOCALIZE_DIVERGENCE"
# Formats whose artifacts servekit runs in Python on its cases.
FORMATS = ("tf_saved_model", "onnx", "openvino", "litert")


@dataclasses.dataclass
class Point:
    """One output of one layer call, in topological order."""

    key: str
    layer: Any
    node: Any
    output_index: int
    outputs: int  # how many outputs the call has
    call_index: int  # which call of a layer used more than once
    tensor: Any

    @property
    def name(self) -> str:
        return self.layer.name


def graph_of(model) -> Optional[Any]:
    """The Functional graph of `model` (a Sequential's inner one), or None."""
    import keras

    from servekit.source_model.kinds import is_functional

    if is_functional(model):
        return model
    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        return inner if inner is not None and is_functional(inner) else None
    return None


def probe_points(graph) -> list[Point]:
    """Every output of every layer call of `graph` (not its inputs), in topological order."""
    seen = {id(t) for t in graph.inputs}
    in_graph = {id(n) for nodes in graph._nodes_by_depth.values() for n in nodes}
    points: list[Point] = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            calls = [id(n) for n in op._inbound_nodes if id(n) in in_graph]
            call_index = calls.index(id(node)) if id(node) in calls else 0
            for i, tensor in enumerate(node.output_tensors):
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                points.append(Point("", op, node, i, len(node.output_tensors), call_index, tensor))
    for i, p in enumerate(points):
        p.key = f"{_PREFIX}{i:05d}"
    return points


def probe_model(graph, points: Sequence[Point]):
    """A Functional model with `graph`'s inputs and every point as a named output."""
    import keras

    return keras.Model(graph._inputs_struct, {p.key: p.tensor for p in points}, name=f"{graph.name}_probe")


@dataclasses.dataclass
class Finding:
    """What the probe of one graph found on one case."""

    point: Optional[Point]  # the first diverging layer output, or None
    max_abs_err: float = 0.0
    problem: str = ""
    later: int = 0  # how many layer outputs after it also differ
    compared: int = 0


def first_divergence(points: Sequence[Point], expected: Mapping[str, np.ndarray],
                     actual: Mapping[str, np.ndarray], tolerances) -> Finding:
    """The first point whose artifact output differs from the source's beyond tolerance."""
    finding = Finding(None)
    for p in points:
        if p.key not in expected or p.key not in actual:
            continue
        finding.compared += 1
        c = verification.compare_outputs({p.key: expected[p.key]}, {p.key: actual[p.key]}, tolerances=tolerances)
        if c.ok:
            continue
        if finding.point is None:
            finding.point, finding.max_abs_err = p, c.max_abs_err
            finding.problem = c.problems[0].replace(f"output '{p.key}': ", "")
        else:
            finding.later += 1
    return finding


def explain(strategy, requests: Mapping[str, Any], reports: Mapping[str, dict], staged: Mapping[str, str],
            make_workdir: Callable[[], str], remove_workdir: Callable[[str], None]) -> None:
    """Adds the first diverging layer to each failed report (its verification failed).

    Sets `report["localization"]` (a dict: `localized`, and the layer's
    `name`, `class`, `path`, `max_abs_err`, `artifact_tensors`, ... or `why`
    not), `report["layer"]` when localized, and appends one paragraph to
    `report["message"]`. Never raises: a localization that fails says why.
    """
    t0 = time.monotonic()
    if os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        for report in reports.values():
            report["localization"] = {"localized": False, "why": f"turned off ({DISABLE_ENV}=0)",
                                      "strategy": strategy.name}
        return
    try:
        results = _localize(strategy, requests, reports, staged, make_workdir, remove_workdir)
    except Exception as e:  # localization is a diagnosis: it must never hide the failure it explains
        results = {fmt: {"localized": False, "why": f"the search failed: {root_cause(e)}"} for fmt in reports}
    for fmt, report in reports.items():
        result = dict(results.get(fmt) or {"localized": False, "why": "not attempted"})
        result.update(strategy=strategy.name, format=fmt, seconds=round(time.monotonic() - t0, 2))
        report["localization"] = result
        if result.get("localized"):
            report["layer"] = result["name"]
        report["message"] = report.get("message", "") + "\n" + describe(result)


def describe(result: Mapping[str, Any]) -> str:
    """The paragraph a failed export's message gets."""
    if not result.get("localized"):
        return f"The diverging layer could not be localized: {result.get('why', 'unknown reason')}."
    where = "/".join(result["path"] + [result["name"]])
    output = f", output {result['output_index']}" if result.get("outputs", 1) > 1 else ""
    call = f", call {result['call_index'] + 1}" if result.get("call_index") else ""
    tolerance = result.get("problem", "")
    tolerance = tolerance[tolerance.find("exceeds"):] if "exceeds" in tolerance else tolerance
    text = (f"First diverging layer: '{where}' ({result['class']}{output}{call}): max abs diff "
            f"{result['max_abs_err']:.3g} on endpoint '{result['endpoint']}', batch {result['batch']}"
            + (f" ({tolerance})" if tolerance else "")
            + f"; the {result['before']} layer output(s) before it match the source")
    if result.get("later"):
        text += f", {result['later']} after it differ too"
    tensors = result.get("artifact_tensors") or []
    if tensors:
        text += f". In the artifact: {', '.join(repr(t) for t in tensors)}"
    elif result.get("tensors_note"):
        text += f". {result['tensors_note']}"
    return text + (f". (Found by exporting every layer's output through strategy '{result['strategy']}'.)"
                   if result.get("strategy") else ".")


def _why_not(request) -> Optional[str]:
    if request.kind != "model":
        return "an ExportArchive's endpoints are not one Keras layer graph"
    if not len(request.cases):
        return "there are no verification cases"
    if request.format not in FORMATS:
        return f"servekit runs only {', '.join(FORMATS)} artifacts layer by layer"
    plan = request.endpoints[0]
    if plan.behavior.stochastic or plan.behavior.stateful:
        return "the model is stochastic or stateful: its layers' outputs do not repeat from call to call"
    if graph_of(request.source) is None:
        return (f"'{request.name}' is a subclassed model ({type(request.source).__name__}): Keras does not record "
                "the layer graph of its call(), so its layers cannot be probed one by one. Build it as a "
                "Functional model (or probe its sub-layers as Functional models) to localize the divergence")
    return None


def _failing_case(request, report: Mapping[str, Any]):
    """The first case the report's comparisons say failed (values compared)."""
    failed = [(c.get("endpoint"), c.get("batch")) for c in report.get("comparisons", []) if c.get("problems")]
    cases = [c for c in request.cases if c.values and not c.runs]
    for endpoint, batch in failed:
        for case in cases:
            if case.endpoint == endpoint and case.batch == batch:
                return case
    return cases[0] if cases else None


def _localize(strategy, requests, reports, staged, make_workdir, remove_workdir) -> dict[str, dict]:
    results: dict[str, dict] = {}
    todo: dict[str, Any] = {}
    for fmt, request in requests.items():
        why = _why_not(request)
        case = None if why else _failing_case(request, reports[fmt])
        if why or case is None:
            results[fmt] = {"localized": False, "why": why or "no failing case with compared values"}
        else:  # each layer output at the tolerance the artifact was checked with (quantized: coarse)
            looser = formats.precision_tolerances(fmt, reports[fmt].get("precision"))
            todo[fmt] = (request, verification.with_tolerances(case, looser))
    if not todo:
        return results
    request = next(iter(todo.values()))[0]
    graph = graph_of(request.source)
    plan = request.endpoints[0]
    found = _probe_level(strategy, todo, graph, plan.layout, {f: c.inputs for f, (_, c) in todo.items()},
                         [], make_workdir, remove_workdir, depth=0)
    for fmt, result in found.items():
        if result.get("localized"):
            names = _artifact_tensors(fmt, staged.get(fmt), request.source.name, result)
            if names is None:
                result["tensors_note"] = ("No op of the artifact carries the layer's name scope (the converter "
                                          "fused, folded or renamed them)")
            else:
                result["artifact_tensors"] = names
        results[fmt] = result
    return results


def _probe_level(strategy, todo: Mapping[str, tuple], graph, layout, inputs: Mapping[str, Mapping[str, Any]],
                 path: list[str], make_workdir, remove_workdir, depth: int) -> dict[str, dict]:
    """Probes `graph` (called on `inputs`, flat by `layout`'s names) in every format of `todo`."""
    from servekit.source_model.calls import call_model_flat
    from servekit.source_model.outputs import model_output_names

    points = probe_points(graph)
    if not points:
        return {fmt: {"localized": False, "why": f"'{graph.name}' has no layers to probe"} for fmt in todo}
    probe = probe_model(graph, points)
    names = model_output_names(probe, layout)
    if sorted(names) != sorted(p.key for p in points):
        return {fmt: {"localized": False, "why": f"the probe of '{graph.name}' did not keep its output names"}
                for fmt in todo}
    by_key = {p.key: p for p in points}
    results: dict[str, dict] = {}
    expected: dict[str, dict[str, np.ndarray]] = {}
    for fmt in todo:
        flat = [np.asarray(inputs[fmt][s.name]) for s in layout.flat]
        expected[fmt] = dict(zip(names, call_model_flat(probe, layout, flat)))
    actual = _run_probe(strategy, todo, probe, layout, names, inputs, expected, make_workdir, remove_workdir)
    for fmt, (request, case) in todo.items():
        if isinstance(actual.get(fmt), str):
            results[fmt] = {"localized": False, "why": actual[fmt]}
            continue
        finding = first_divergence(points, expected[fmt], actual[fmt], case.tolerances)
        if finding.point is None:
            results[fmt] = {"localized": False, "why": (
                f"exported with every layer's output marked, no layer output of '{graph.name}' differs beyond "
                f"tolerance (of {finding.compared}); the divergence appears only in the full graph (e.g. a "
                "converter's fusion across layers that the extra outputs prevent)")}
            continue
        p = finding.point
        results[fmt] = {
            "localized": True, "name": p.name, "class": type(p.layer).__name__, "path": list(path),
            "output_index": p.output_index, "outputs": p.outputs, "call_index": p.call_index,
            "max_abs_err": float(finding.max_abs_err), "problem": finding.problem,
            "endpoint": case.endpoint, "batch": case.batch, "before": points.index(p), "later": finding.later,
            "dtype": str(np.asarray(expected[fmt][p.key]).dtype), "shape": list(np.shape(expected[fmt][p.key])),
        }
    # A diverging nested model: the same search among its own layers, on the inputs the source gave it.
    nested = {fmt: r for fmt, r in results.items() if r.get("localized") and depth + 1 < MAX_DEPTH
              and graph_of(by_key[_key_of(points, r)].layer) is not None}
    for fmt, outer in nested.items():
        p = by_key[_key_of(points, outer)]
        inner = graph_of(p.layer)
        try:
            inner_layout, inner_inputs = _nested_inputs(graph, layout, p.node, inner, inputs[fmt], expected[fmt],
                                                        points)
        except ValueError as e:
            outer["inner"] = f"its layers were not probed: {e}"
            continue
        deeper = _probe_level(strategy, {fmt: todo[fmt]}, inner, inner_layout, {fmt: inner_inputs},
                              path + [p.name], make_workdir, remove_workdir, depth + 1)[fmt]
        if deeper.get("localized"):
            deeper["before"] += outer["before"]
            results[fmt] = deeper
        else:
            outer["inner"] = deeper.get("why")
    return results


def _key_of(points: Sequence[Point], result: Mapping[str, Any]) -> str:
    for p in points:
        if p.name == result["name"] and p.output_index == result["output_index"] and \
                p.call_index == result["call_index"]:
            return p.key
    raise KeyError(result["name"])


def _nested_inputs(graph, layout, node, inner, outer_inputs, outer_expected, points):
    """The layout of nested model `inner` and the source's values of its inputs at `node`."""
    import keras

    from servekit.source_model.input_layout import resolve_input_layout

    tensor_kwargs = [k for k, v in node.arguments.kwargs.items() if keras.tree.flatten(v) and any(
        isinstance(x, keras.KerasTensor) for x in keras.tree.flatten(v))]
    if len(node.arguments.args) != 1 or tensor_kwargs:
        raise ValueError("it is called with more than one tensor argument")
    values: dict[int, Any] = {}
    for tensor, name in zip(layout.flatten([graph._inputs_struct]), [s.name for s in layout.flat]):
        values[id(tensor)] = outer_inputs[name]
    for p in points:
        values[id(p.tensor)] = outer_expected[p.key]
    inner_layout = resolve_input_layout(inner)
    given = keras.tree.flatten(node.arguments.args[0])
    wanted = keras.tree.flatten(inner._inputs_struct)
    if len(given) != len(wanted) or any(id(t) not in values for t in given):
        raise ValueError("its inputs do not match its call's arguments")
    by_tensor = {id(w): values[id(g)] for w, g in zip(wanted, given)}
    flat_tensors = inner_layout.flatten([inner._inputs_struct])
    return inner_layout, {s.name: by_tensor[id(t)] for s, t in zip(inner_layout.flat, flat_tensors)}


def _run_probe(strategy, todo, probe, layout, names, inputs, expected, make_workdir,
               remove_workdir) -> dict[str, Any]:
    """Exports `probe` with `strategy` in every format of `todo` (unverified, in a
    temporary directory) and runs it on each format's inputs. Returns format ->
    outputs by name, or a message saying why not."""
    from servekit.pipeline.cases import Case, CaseSet
    from servekit.pipeline.request import EndpointPlan

    workdir = make_workdir()
    out: dict[str, Any] = {}
    try:
        requests, paths = {}, {}
        for fmt, (request, _) in todo.items():
            plan = request.endpoints[0]
            probe_plan = EndpointPlan(plan.name, layout, list(names), behavior=plan.behavior, fn=probe,
                                      kwargs=dict(plan.kwargs))
            requests[fmt] = dataclasses.replace(request, name=probe.name, endpoints=[probe_plan], cases=CaseSet(),
                                                verify=False, source=probe)
            paths[fmt] = os.path.join(workdir, f"probe_{fmt}" + {"openvino": ".xml", "litert": ".tflite"}.get(fmt, ""))
        scratch = os.path.join(workdir, "scratch")
        os.makedirs(scratch)
        try:
            if len(requests) > 1 and hasattr(strategy, "write_formats"):
                reports = strategy.write_formats(requests, paths, scratch)
            else:
                reports = {fmt: strategy.write(r, paths[fmt], scratch) for fmt, r in requests.items()}
        except Exception as e:  # the probe is a different model: its export may fail where the model's did not
            return {fmt: f"the probe model (every layer's output) could not be exported: {root_cause(e)}"
                    for fmt in todo}
        for fmt, (request, case) in todo.items():
            report = reports.get(fmt) or {}
            if not report.get("ok"):
                first = (report.get("message") or "failed").strip().splitlines()[0]
                out[fmt] = f"the probe model (every layer's output) could not be exported: {first}"
                continue
            probe_case = Case(case.endpoint, case.batch, dict(inputs[fmt]), expected[fmt], True, {},
                              case.tolerances)
            try:
                out[fmt] = _run_artifact(fmt, paths[fmt], request, probe_case)
            except Exception as e:  # a runtime refusing the probe: said, not raised
                out[fmt] = f"the probe artifact did not run: {root_cause(e)}"
    finally:
        remove_workdir(workdir)
    return out


def _run_artifact(fmt: str, path: str, request, case) -> dict[str, np.ndarray]:
    """The artifact's outputs on `case`, run the way its format's check runs it."""
    with verification.recording_outputs() as recorded:
        if fmt == "tf_saved_model":
            verification.check_saved_model(path, [case])
        elif fmt == "onnx":
            verification.check_onnx(path, [case])
        elif fmt == "openvino":
            from servekit.formats import openvino

            precision = request.format_options.get("openvino", {}).get("precision", openvino.DEFAULT_PRECISION)
            openvino.check(path, [case], precision)
        else:
            from servekit.formats import litert

            litert.check(path, [case])
    if not recorded:
        raise RuntimeError("the check recorded no outputs")
    return recorded[0][1]


def _artifact_tensors(fmt: str, path: Optional[str], model_name: str,
                      result: Mapping[str, Any]) -> Optional[list[str]]:
    """The failed artifact's tensors (ONNX) or ops (SavedModel) in the layer's name
    scope, its last ones; None when none is (or the artifact is not there)."""
    if not path or not os.path.exists(path):
        return None
    try:
        if fmt == "onnx":
            groups = [_onnx_node_outputs(path)]
        elif fmt == "tf_saved_model":
            groups = _saved_model_ops(path)
        else:
            return None
    except Exception:  # a name lookup is a courtesy: never fails the report
        return None
    scopes = list(result["path"]) + [result["name"]]
    for nested in ([model_name] + scopes, scopes):  # under the model's own scope, if the graph has one
        matched = max((_in_scope(names, nested) for names in groups), key=len, default=[])
        if matched:
            return matched[-MAX_TENSOR_NAMES:]
    return None


def _in_scope(names: Sequence[str], scopes: Sequence[str]) -> list[str]:
    """The names whose '/'-separated parts hold `scopes` one after the other.

    A traced layer's name scope is its name, or its name with a counter
    (`dense_1`) when the graph was traced more than once: the counter is
    the one under which most names match."""
    parts = [n.split(":")[0].split("/")[:-1] for n in names]
    found: list[str] = []
    for suffix in ("", "_1", "_2"):
        wanted = [s + suffix for s in scopes]
        hits = [n for n, ps in zip(names, parts)
                if any(ps[i:i + len(wanted)] == wanted for i in range(len(ps) - len(wanted) + 1))]
        if len(hits) > len(found):
            found = hits
    return found


def _onnx_node_outputs(path: str) -> list[str]:
    import onnx

    from servekit.onnx import onnx_model_file

    model = onnx.load(onnx_model_file(path), load_external_data=False)
    return [out for node in model.graph.node if node.op_type != "Constant" for out in node.output if out]


def _saved_model_ops(path: str) -> list[list[str]]:
    """Op names of each function of the SavedModel (but its checkpoint save/restore),
    without constants and variable reads."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    skip = ("Const", "ReadVariableOp", "NoOp")
    return [[n.name for n in fn.node_def if n.op not in skip] for fn in saved.meta_graphs[0].graph_def.library.function
            if "_traced_save" not in fn.signature.name and "_traced_restore" not in fn.signature.name]
