"""Writing the TensorFlow worker's artifacts from one trace, then checking them."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
import warnings
from typing import Any, Callable, Optional, Sequence

from servekit import formats
from servekit import onnx_bfloat16
from servekit import peak_memory
from servekit import onnx as sk_onnx
from servekit.atomic import artifact_files
from servekit import saved_model as sk_sm
from servekit import settings
from servekit import verification
from servekit.errors import ExportError

# Above this many bytes of variables, the traced model is freed (collected and its heap
# trimmed) between writing the artifacts and checking them: the check reloads each
# artifact, which would otherwise hold the weights a second time beside the model.
# Below it, the collection would cost a small export more than the memory is worth.
# The environment variable moves the bar (tests take small models down that road).
FREE_BEFORE_CHECKING_BYTES = 2**28
FREE_BEFORE_CHECKING_ENV = "SERVEKIT_FREE_BEFORE_CHECKING_BYTES"

_log = logging.getLogger(__name__)


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


@dataclasses.dataclass
class _Written:
    """An artifact at its staging path, not yet checked.

    Attributes:
        report: its report so far (`ok`, `endpoints`, format details).
        check: the cases it runs -> their comparisons.
        cases: the cases it is checked on, at its tolerances.
        seconds: the time its writing took.
        finish: what is left of its writing, done once the model is released
            (its report fields), or None.
    """

    fmt: str
    report: dict[str, Any]
    check: Callable[[Sequence[Any]], list[Any]]
    cases: list[Any]
    seconds: float
    finish: Optional[Callable[[], dict[str, Any]]] = None

    @property
    def what(self) -> str:
        return "SavedModel" if self.fmt == "tf_saved_model" else formats.FORMATS[self.fmt].description


def _write_and_verify(
    build: Callable[..., sk_sm.BuiltModule],
    *,
    outputs: dict[str, str],
    cases: Sequence[Any],
    opset: Optional[int],
    model_name: str,
    layer_names: Sequence[str],
    scratch_dir: str,
    version: str,
    format_options: Optional[dict[str, dict[str, Any]]] = None,
    release_memory: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, Any]]:
    """Traces the endpoints once, writes every format at its staging path,
    then reloads each artifact and compares it with the cases.

    Every format is written from the same traced module: the SavedModel; the
    ONNX model converted in memory (`servekit.onnx.convert_module`: the
    graph tf2onnx would load back from that SavedModel); the OpenVINO IR and
    the LiteRT flatbuffer converted from the traced serving function
    (`servekit.formats.openvino`, `.litert`).

    Only then is anything checked, with the traced module released: a model
    of `FREE_BEFORE_CHECKING_BYTES` or more is collected (`release_memory`)
    before the first artifact is reloaded, and each reloaded artifact after
    its check, so the weights are resident once: in the model or in the
    artifact being checked. Such a model's LiteRT flatbuffer is converted
    after the release too, from the SavedModel of its trace, so that the
    converter's copies of the weights do not sit beside the model's. The
    SavedModel, when written, is checked first: if it fails, so does every
    format converted from its trace (an error while converting is raised
    only after the SavedModel passed). Asked for
    converted formats only, a failing one makes `build` trace the model
    again to write a SavedModel twin in `scratch_dir` and check it, to tell
    a wrong trace from a wrong conversion.

    Args:
        build: traces the endpoints (`servekit.saved_model.build_module`);
            what it returns holds the only reference to the model (a call
            while an earlier trace lives traces the same model again). It is
            called again only to blame a failure on the trace, and with
            `builtin_trace_for=<format>` for the ONNX, LiteRT or OpenVINO model
            of a trace they cannot take (`servekit.formats.builtin_trace`;
            `unfused_gelu=True` too for a LiteRT conversion that left an exact
            GELU unfused).
        outputs: format -> staging path (any of
            `servekit.formats.TENSORFLOW_FORMATS`).
        cases: `servekit.pipeline.cases.Case`s; expected outputs come from
            the source model on its source backend.
        format_options: format -> its options (`openvino`: `precision`;
            `litert`: converter attributes, `split_options`'s portable half).
        release_memory: collects garbage and returns freed memory to the
            system (the worker's `servekit.worker.isolation.release_memory`).

    Returns:
        format -> report: `ok`, `endpoints` (Signature JSON), `comparisons`,
        `files`, `opset` (ONNX), and `message`/`reason` when not ok.
    """
    t0 = time.monotonic()
    built = build()
    peak_memory.mark("trace")
    serving = built.endpoints[0]
    serving_cases = [c for c in cases if c.endpoint == serving.name]
    written: list[_Written] = []
    conversion_error: Optional[Exception] = None
    large = frees_before_checking(_variable_bytes(built))
    if "tf_saved_model" in outputs:
        path = outputs["tf_saved_model"]
        sk_sm.save(built, path)
        peak_memory.mark("SavedModel write")
        written.append(_Written("tf_saved_model", {"ok": True, "endpoints": [s.to_json() for s in built.endpoints]},
                                lambda cs: verification.check_saved_model(path, cs), list(cases),
                                time.monotonic() - t0))
    try:
        for fmt, write in (("onnx", _onnx), ("openvino", _openvino), ("litert", _litert)):
            if fmt in outputs:
                t1 = time.monotonic()
                converted = write(built, serving, outputs[fmt], model_name, (format_options or {}).get(fmt, {}),
                                  opset=opset, layer_names=layer_names, version=version, build=build,
                                  scratch_dir=scratch_dir, large=large, release_memory=release_memory)
                written.append(_Written(fmt, dict(converted.report, ok=True, endpoints=[serving.to_json()]),
                                        converted.check,
                                        [verification.with_tolerances(c, converted.tolerances) for c in serving_cases],
                                        time.monotonic() - t1, converted.finish))
    except Exception as e:  # raised below, unless the SavedModel's failure explains it
        if "tf_saved_model" not in outputs or not cases:
            raise
        conversion_error = e
    del built
    if large:
        release_memory()
        peak_memory.mark("release the model")
    for artifact in [a for a in written if a.finish is not None]:
        t1 = time.monotonic()
        try:
            artifact.report.update(artifact.finish())
        except Exception as e:  # as above
            if "tf_saved_model" not in outputs or not cases:
                raise
            conversion_error = conversion_error or e
            written.remove(artifact)
        artifact.seconds += time.monotonic() - t1
        release_memory()  # what the converter leaves, before the first artifact is reloaded

    reports: dict[str, dict[str, Any]] = {}
    saved_model_comparisons: list[dict[str, Any]] = []
    for artifact in written:
        t1 = time.monotonic()
        report = artifact.report
        report["comparisons"] = list(saved_model_comparisons)
        if artifact.cases:
            comparisons = artifact.check(artifact.cases)
            if large:  # the reloaded artifact, before the next one loads
                release_memory()
            peak_memory.mark(f"{artifact.what} verification")
            verification.record(report, comparisons, artifact.fmt, artifact.what)
            if artifact.fmt == "tf_saved_model":
                saved_model_comparisons = report["comparisons"]
                if not report["ok"]:
                    return {fmt: report if fmt == "tf_saved_model" else dict(report, **verification.failure(
                        comparisons, f"SavedModel (from which the {formats.FORMATS[fmt].description} is converted)"))
                            for fmt in outputs}
            elif not report["ok"] and "tf_saved_model" not in outputs:
                _blame_the_trace(build, scratch_dir, serving_cases, report, artifact.what)
        if report["ok"]:
            report["files"] = artifact_files(outputs[artifact.fmt])
            report["seconds"] = artifact.seconds + time.monotonic() - t1
        reports[artifact.fmt] = report
    if conversion_error is not None:
        raise conversion_error
    return reports


def frees_before_checking(weight_bytes: int) -> bool:
    """Whether a model of `weight_bytes` is large (`FREE_BEFORE_CHECKING_BYTES`,
    or its environment variable): freed before its artifacts are checked, and
    checked with the weights once (mapped files paged out, LiteRT's built-in
    kernels)."""
    return weight_bytes >= settings.bytes_setting(FREE_BEFORE_CHECKING_ENV, FREE_BEFORE_CHECKING_BYTES)


def _variable_bytes(built: sk_sm.BuiltModule) -> int:
    return sum((v.shape.num_elements() or 0) * v.dtype.size for v in built.root.variables)


def _blame_the_trace(build, scratch_dir: str, cases, report: dict[str, Any], artifact: str) -> None:
    """After a converted artifact failed: writes the SavedModel twin of the
    same trace and, if it fails too, blames the trace, not the converter."""
    twin_dir = os.path.join(scratch_dir, "twin_saved_model")
    if not os.path.exists(twin_dir):
        sk_sm.save(build(), twin_dir)
    twin = verification.check_saved_model(twin_dir, cases)
    if not all(c.ok for c in twin):
        report.update(verification.failure(twin, f"SavedModel (from whose trace the {artifact} is converted)"))


@dataclasses.dataclass
class _Converted:
    """What a writer made of the trace.

    Attributes:
        report: the artifact's report fields.
        check: the cases it runs -> their comparisons.
        tolerances: what the format declares over the cases' own.
        finish: the rest of the writing, to do once the model is released (its
            report fields), or None.
    """

    report: dict[str, Any]
    check: Callable[[Sequence[Any]], list[Any]]
    tolerances: dict
    finish: Optional[Callable[[], dict[str, Any]]] = None


# Each writer: (traced module, serving signature, staging path, model name, the format's
# options, **the export's settings) -> _Converted.

def _onnx(built, serving, staged: str, model_name: str, options: dict[str, Any], *, opset, layer_names,
          version, build, **_settings) -> _Converted:
    built = _builtin_trace(built, serving, "onnx", build)
    weights: dict = {}  # lifted weights of a model with external data, streamed from the variables
    proto = sk_onnx.convert_module(built, serving, opset=opset, layer_names=layer_names, model_name=model_name,
                                   producer_version=version, weights=weights)
    peak_memory.mark("ONNX tidy")
    sk_onnx.write_onnx(proto, staged, weights)
    peak_memory.mark("ONNX write")
    casts_weights = onnx_bfloat16.casts_weights(proto)
    return _Converted({"opset": sk_onnx._opset_of(proto)},
                      lambda cs: verification.check_onnx(staged, cs, casts_weights=casts_weights), {})


def _builtin_trace(built, serving, fmt: str, build, unfused_gelu: bool = False):
    """The trace the converter of `fmt` takes: `built`, or a second trace with
    what it cannot take written another way (`servekit.formats.builtin_trace`;
    with `unfused_gelu`, always, exact GELUs included)."""
    from servekit.formats import builtin_trace

    if not unfused_gelu and not builtin_trace.needs_builtin_trace(built.signatures[serving.name], fmt):
        return built
    return build(builtin_trace_for=fmt, unfused_gelu=unfused_gelu)


def _litert_flatbuffer(built, serving, options: dict[str, Any], model_name: str) -> tuple[bytes, str]:
    from servekit.formats import litert

    concrete = built.signatures[serving.name]
    return litert.convert(litert.from_concrete(concrete, built.root), options, model_name,
                          likely_cause=lambda: litert.likely_cause(concrete), weight_bytes=_variable_bytes(built))


def _openvino(built, serving, staged: str, model_name: str, options: dict[str, Any], *, build, scratch_dir: str,
              large: bool, **_settings) -> _Converted:
    from servekit.formats import openvino

    built = _builtin_trace(built, serving, "openvino", build)
    precision = options.get("precision", openvino.DEFAULT_PRECISION)
    try:
        model = openvino.convert(built.signatures[serving.name], serving, model_name, precision)
    except ExportError as e:
        if not openvino.needs_saved_model(e):
            raise
        # A lookup table: OpenVINO's frontend initializes it only from a SavedModel's
        # initializer, not from a function that captures it.
        twin_dir = os.path.join(scratch_dir, "openvino_saved_model")
        sk_sm.save(built, twin_dir)
        model = openvino.convert_saved_model(twin_dir, serving, model_name, precision)
    peak_memory.mark("OpenVINO conversion")
    xml = openvino.write(model, staged)
    peak_memory.mark("OpenVINO write")
    report = {"converter": "openvino.convert_model", "precision": openvino.PRECISIONS[precision]}
    return _Converted(report, lambda cs: openvino.check(xml, cs, precision, page_out_weights=large),
                      openvino.tolerances(precision))


def _litert(built, serving, staged: str, model_name: str, options: dict[str, Any], *, build, scratch_dir: str,
            large: bool, release_memory: Callable[[], None], **_settings) -> _Converted:
    from servekit.formats import litert, litert_lifted

    built = _builtin_trace(built, serving, "litert", build)
    quantized = litert.quantizes(options)
    report = {"precision": "quantized" if quantized else "float32"}
    tolerances = litert.quantized_tolerances() if quantized else {}
    check = lambda cs: litert.check(staged, cs, delegates=not large, page_out_weights=large)  # noqa: E731
    if not quantized and _variable_bytes(built) >= settings.bytes_setting(litert_lifted.LIFT_ENV,
                                                                            litert_lifted.LIFT_BYTES):
        converter = _litert_lifted(built, serving, staged, model_name, options, build)
        if converter is not None:
            return _Converted({"converter": converter, **report}, check, tolerances)
    if large:
        return _Converted(report, check, tolerances,
                          _litert_after_release(built, serving, staged, model_name, options, build, scratch_dir,
                                                release_memory))
    try:
        flatbuffer, converter = _litert_flatbuffer(built, serving, options, model_name)
    except ExportError as e:
        if not litert.unfused_gelu(e):
            raise
        built = _builtin_trace(built, serving, "litert", build, unfused_gelu=True)
        flatbuffer, converter = _litert_flatbuffer(built, serving, options, model_name)
    peak_memory.mark("LiteRT conversion")
    litert.write(flatbuffer, staged, serving, model_name)
    del flatbuffer
    peak_memory.mark("LiteRT write")
    litert.read_signature(staged, serving, model_name)
    return _Converted({"converter": converter, **report}, check, tolerances)


def _litert_lifted(built, serving, staged: str, model_name: str, options: dict[str, Any], build) -> Optional[str]:
    """Converts and writes the LiteRT model with the weights lifted out of the
    graph the converter sees (`servekit.formats.litert_lifted`), streamed from
    the model's variables into the file. Returns the converter's description,
    or None where lifting does not apply."""
    from servekit.formats import litert, litert_lifted

    def convert(built):
        concrete = built.signatures[serving.name]
        return litert_lifted.convert(concrete, options, model_name)

    try:
        try:
            conversion = convert(built)
        except ExportError as e:
            if not litert.unfused_gelu(e):
                raise
            built = _builtin_trace(built, serving, "litert", build, unfused_gelu=True)
            conversion = convert(built)
    except ExportError as e:  # the plain road converts what the converter takes only with constant weights
        _log.info("LiteRT conversion with the weights lifted failed (%s); converting them as constants.", e)
        peak_memory.mark("LiteRT conversion, weights lifted: failed")
        return None
    if conversion is None:
        return None
    peak_memory.mark("LiteRT conversion, weights lifted")
    litert_lifted.write(conversion, staged, serving, model_name)
    peak_memory.mark("LiteRT write")
    litert.read_signature(staged, serving, model_name)
    return conversion.converter


def _litert_after_release(built, serving, staged: str, model_name: str, options: dict[str, Any], build,
                          scratch_dir: str, release_memory: Callable[[], None]) -> Callable[[], dict[str, Any]]:
    """Saves the trace LiteRT converts as a SavedModel now; returns its
    conversion, to run once the model is released: the TFLite converter
    converts a traced function through a SavedModel anyway, and its copies of
    the weights (about 3x) then do not sit beside the model's.

    The returned function holds no reference to the model; it traces it again
    (`build`) only for a conversion that left an exact GELU unfused, and frees
    it (`release_memory`) before converting again.
    """
    from servekit.formats import litert

    saved_model = os.path.join(scratch_dir, "litert_saved_model")
    concrete = built.signatures[serving.name]
    cause = litert.likely_cause(concrete)
    weight_bytes = _variable_bytes(built)
    litert.save_for_conversion(concrete, built.root, saved_model)
    del built, concrete
    peak_memory.mark("LiteRT's SavedModel")

    def convert() -> tuple[bytes, str]:
        return litert.convert(litert.from_saved_model(saved_model), options, model_name,
                              likely_cause=lambda: cause, weight_bytes=weight_bytes)

    def finish() -> dict[str, Any]:
        try:
            flatbuffer, converter = convert()
        except ExportError as e:
            if not litert.unfused_gelu(e):
                raise
            retraced = build(builtin_trace_for="litert", unfused_gelu=True)
            shutil.rmtree(saved_model)
            litert.save_for_conversion(retraced.signatures[serving.name], retraced.root, saved_model)
            del retraced
            release_memory()
            peak_memory.mark("LiteRT's SavedModel, traced again with exact GELUs written out")
            flatbuffer, converter = convert()
        peak_memory.mark("LiteRT conversion")
        litert.write(flatbuffer, staged, serving, model_name)
        del flatbuffer
        peak_memory.mark("LiteRT write")
        litert.read_signature(staged, serving, model_name)
        return {"converter": converter}

    return finish
