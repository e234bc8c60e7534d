"""Writing one artifact and checking it (shared by the worker and in-process paths)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from typing import Any, Optional, Sequence

from servekit import formats
from servekit import peak_memory
from servekit import onnx as sk_onnx
from servekit.atomic import artifact_files
from servekit import saved_model as sk_sm
from servekit import verification


@contextlib.contextmanager
def quiet():
    """Silences Python warnings and TF/absl/tf2onnx loggers (in-process writes
    must print nothing when verbose=False)."""
    loggers = [logging.getLogger(n) for n in ("tensorflow", "absl", "tf2onnx", "h5py")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def write_and_verify(*args, **kwargs) -> dict[str, dict[str, Any]]:
    """`_write_and_verify` with warnings and library logs silenced."""
    with quiet():
        return _write_and_verify(*args, **kwargs)


def _write_and_verify(
    endpoints: Sequence[sk_sm.Endpoint],
    tracked: Sequence[Any],
    collections: dict,
    *,
    outputs: dict[str, str],
    cases: Sequence[Any],
    opset: Optional[int],
    model_name: str,
    layer_names: Sequence[str],
    scratch_dir: str,
    version: str,
    format_options: Optional[dict[str, dict[str, Any]]] = None,
) -> dict[str, dict[str, Any]]:
    """Builds the endpoints once, writes every format at its staging path,
    reloads each artifact and compares it with the cases.

    The endpoints are traced once. The SavedModel, when asked for, is
    written and verified first; the ONNX model is converted from the same
    traced module, in memory (`servekit.onnx.convert_module`: the graph
    tf2onnx would load back from that SavedModel). Asked for ONNX only, no
    SavedModel is written unless the ONNX model fails: then its twin is
    written in `scratch_dir` and checked, to tell a wrong trace from a wrong
    conversion.

    The OpenVINO IR and the LiteRT flatbuffer are converted from the same
    traced serving function (`servekit.formats.openvino`, `.litert`).

    Args:
        outputs: format -> staging path (any of
            `servekit.formats.TENSORFLOW_FORMATS`).
        cases: `servekit.pipeline.cases.Case`s; expected outputs come from
            the source model on its source backend.
        format_options: format -> its options (`openvino`: `precision`;
            `litert`: converter attributes, `split_options`'s portable half).

    Returns:
        format -> report: `ok`, `endpoints` (Signature JSON), `comparisons`,
        `files`, `opset` (ONNX), and `message`/`reason` when not ok.
    """
    t0 = time.monotonic()
    built = sk_sm.build_module(endpoints, tracked=tracked, variable_collections=collections)
    peak_memory.mark("trace")
    sm_report: dict[str, Any] = {"ok": True, "endpoints": [s.to_json() for s in built.endpoints], "comparisons": []}
    if "tf_saved_model" in outputs:
        sk_sm.save(built, outputs["tf_saved_model"])
        peak_memory.mark("SavedModel write")
    if cases and "tf_saved_model" in outputs:
        comps = verification.check_saved_model(outputs["tf_saved_model"], cases)
        peak_memory.mark("SavedModel verification")
        sm_report["comparisons"] = [dict(c.__dict__, artifact="tf_saved_model") for c in comps]
        if not all(c.ok for c in comps):
            reports = {"tf_saved_model": dict(sm_report, **verification.failure(comps, "SavedModel"))}
            if "onnx" in outputs:
                reports["onnx"] = dict(sm_report, **verification.failure(
                    comps, "SavedModel (from which the ONNX model is converted)"))
            return reports
    reports: dict[str, dict[str, Any]] = {}
    if "tf_saved_model" in outputs:
        sm_report["files"] = artifact_files(outputs["tf_saved_model"])
        sm_report["seconds"] = time.monotonic() - t0
        reports["tf_saved_model"] = sm_report
    if "onnx" in outputs:
        t1 = time.monotonic()
        output = outputs["onnx"]
        serving = built.endpoints[0]
        weights: dict = {}  # lifted weights of a model with external data, streamed from the variables
        proto = sk_onnx.convert_module(built, serving, opset=opset, layer_names=layer_names,
                                       model_name=model_name, producer_version=version, weights=weights)
        peak_memory.mark("ONNX tidy")
        sk_onnx.write_onnx(proto, output, weights)
        del weights
        peak_memory.mark("ONNX write")
        report: dict[str, Any] = {"ok": True, "endpoints": [serving.to_json()], "opset": sk_onnx._opset_of(proto),
                                  "comparisons": list(sm_report["comparisons"])}
        serving_cases = [c for c in cases if c.endpoint == serving.name]
        if serving_cases:
            comps = verification.check_onnx(output, serving_cases)
            peak_memory.mark("ONNX verification")
            report["comparisons"] += [dict(c.__dict__, artifact="onnx") for c in comps]
            if not all(c.ok for c in comps):
                report.update(verification.failure(comps, "ONNX model"))
                if "tf_saved_model" not in outputs:
                    _blame_the_trace(built, scratch_dir, serving_cases, report, "ONNX model")
        if report["ok"]:
            report["files"] = artifact_files(output)
            report["seconds"] = time.monotonic() - t1
        reports["onnx"] = report
    for fmt, write in (("openvino", _openvino), ("litert", _litert)):
        if fmt in outputs:
            t1 = time.monotonic()
            serving = built.endpoints[0]
            serving_cases = [c for c in cases if c.endpoint == serving.name]
            report = {"ok": True, "endpoints": [serving.to_json()], "comparisons": list(sm_report["comparisons"])}
            report.update(write(built, serving, outputs[fmt], serving_cases, model_name,
                                (format_options or {}).get(fmt, {})))
            if not report["ok"] and serving_cases and "tf_saved_model" not in outputs:
                _blame_the_trace(built, scratch_dir, serving_cases, report, formats.FORMATS[fmt].description)
            if report["ok"]:
                report["seconds"] = time.monotonic() - t1
            reports[fmt] = report
    return reports


def _blame_the_trace(built, scratch_dir: str, cases, report: dict[str, Any], artifact: str) -> None:
    """After a converted artifact failed: writes the SavedModel twin of the
    same trace and, if it fails too, blames the trace, not the converter."""
    twin_dir = os.path.join(scratch_dir, "twin_saved_model")
    if not os.path.exists(twin_dir):
        sk_sm.save(built, twin_dir)
    twin = verification.check_saved_model(twin_dir, cases)
    if not all(c.ok for c in twin):
        report.update(verification.failure(twin, f"SavedModel (from whose trace the {artifact} is converted)"))


def _openvino(built, serving, staged: str, cases, model_name: str, options: dict[str, Any]) -> dict[str, Any]:
    from servekit.formats import openvino

    precision = options.get("precision", openvino.DEFAULT_PRECISION)
    model = openvino.convert(built.signatures[serving.name], serving, model_name, precision)
    xml = openvino.write(model, staged)
    report: dict[str, Any] = {"converter": "openvino.convert_model", "precision": openvino.PRECISIONS[precision]}
    return _checked(report, "openvino", "OpenVINO IR", lambda cs: openvino.check(xml, cs, precision), cases,
                    openvino.tolerances(precision))


def _litert(built, serving, staged: str, cases, model_name: str, options: dict[str, Any]) -> dict[str, Any]:
    from servekit.formats import litert

    flatbuffer, converter = litert.convert(litert.from_concrete(built.signatures[serving.name], built.root),
                                           options, model_name)
    litert.write(litert.in_signature_order(flatbuffer, serving, model_name), staged)
    litert.read_signature(staged, serving, model_name)
    quantized = litert.quantizes(options)
    report: dict[str, Any] = {"converter": converter, "precision": "quantized" if quantized else "float32"}
    return _checked(report, "litert", "LiteRT model", lambda cs: litert.check(staged, cs), cases,
                    litert.quantized_tolerances() if quantized else {})


def _checked(report: dict[str, Any], fmt: str, what: str, check, cases, tolerances) -> dict[str, Any]:
    """`report` with `check`'s comparisons of the cases, each at `tolerances`
    over its own (a declared precision). (The pipeline lists the committed files.)"""
    if cases:
        verification.record(report, check([verification.with_tolerances(c, tolerances) for c in cases]), fmt, what)
    return report
