"""Writing one artifact and checking it (shared by the worker and in-process paths)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from typing import Any, Optional, Sequence

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


def write_and_verify(*args, **kwargs) -> dict[str, Any]:
    """`_write_and_verify` with warnings and library logs silenced."""
    with quiet():
        return _write_and_verify(*args, **kwargs)


def _write_and_verify(
    endpoints: Sequence[sk_sm.Endpoint],
    tracked: Sequence[Any],
    collections: dict,
    *,
    fmt: str,
    output: str,
    cases: Sequence[tuple],
    opset: Optional[int],
    model_name: str,
    layer_names: Sequence[str],
    scratch_dir: str,
    version: str,
    options=None,
    case_factory=None,
) -> dict[str, Any]:
    """Builds, writes at `output` (a staging path), reloads and compares.

    Args:
        cases: `servekit.pipeline.cases.Case`s; expected outputs come from
            the source model on its source backend.

        case_factory: optional `f(built_module) -> cases`, used instead of
            `cases` when the cases depend on what was traced (in-process).

    Returns:
        A report dict: `ok`, `endpoints` (Signature JSON), `comparisons`,
        `files`, `opset`, and `message`/`reason` when not ok.
    """
    t0 = time.monotonic()
    built = sk_sm.build_module(endpoints, tracked=tracked, variable_collections=collections)
    sm_dir = output if fmt == "tf_saved_model" else os.path.join(scratch_dir, "twin_saved_model")
    sk_sm.save(built, sm_dir, options=options)
    report: dict[str, Any] = {"ok": True, "endpoints": [s.to_json() for s in built.endpoints], "comparisons": []}
    if case_factory is not None:
        cases = case_factory(built)
    if cases:
        comps = verification.check_saved_model(sm_dir, cases)
        report["comparisons"] += [dict(c.__dict__, artifact="tf_saved_model") for c in comps]
        if not all(c.ok for c in comps):
            what = "SavedModel" if fmt == "tf_saved_model" else "SavedModel (from which the ONNX model is converted)"
            report.update(ok=False, reason="verification_failed",
                          message=f"The {what} does not reproduce the source model:\n"
                                  + verification.describe_failures(comps))
            return report
    if fmt == "onnx":
        serving = built.endpoints[0]
        proto = sk_onnx.convert_saved_model(sm_dir, serving, opset=opset, layer_names=layer_names,
                                            model_name=model_name, producer_version=version)
        sk_onnx.write_onnx(proto, output)
        report["endpoints"] = [serving.to_json()]
        report["opset"] = sk_onnx._opset_of(proto)
        serving_cases = [c for c in cases if c.endpoint == serving.name]
        if serving_cases:
            comps = verification.check_onnx(output, serving_cases)
            report["comparisons"] += [dict(c.__dict__, artifact="onnx") for c in comps]
            if not all(c.ok for c in comps):
                report.update(ok=False, reason="verification_failed",
                              message="The ONNX model does not reproduce the source model:\n"
                                      + verification.describe_failures(comps))
                return report
    report["files"] = artifact_files(output)
    report["seconds"] = time.monotonic() - t0
    return report
