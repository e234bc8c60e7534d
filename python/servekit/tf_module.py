"""Exporting plain `tf.Module` objects (no Keras) with `tf.saved_model.save` rules.

Signatures follow TensorFlow's rules: `signatures` may be a `tf.function` with
an `input_signature`, a concrete function, or a dict of them keyed by
signature name; when omitted, the module's single `tf.function` with an
input signature (or its `serving_default` attribute) becomes
`serving_default`. Signature inputs are named after the function's
arguments (or TensorSpec names); outputs are a dict's keys, or `output_0`,
`output_1`, ... for a tensor or a list.

On top of `tf.saved_model.save`, servekit writes atomically, makes the bytes
canonical and, unless `verify=False`, reloads the SavedModel and compares
every signature with the original function on generated inputs.
"""

from __future__ import annotations

import os
import time
from typing import Any

from servekit.source_model.input_layout import FlatSpec, InputLayout
from servekit import signature as sig
from servekit import summary
from servekit import version
from servekit.errors import ExportError, xla_call_module_cause
from servekit.pipeline import core as pipeline
from servekit.pipeline import reference
from servekit.pipeline.cases import CaseSet
from servekit.pipeline.request import EndpointPlan, ExportRequest
from servekit.strategies import stablehlo


def _canonical_signatures(module, signatures):
    """TF's own canonicalization: {key: concrete fn taking kwargs, returning a dict}."""
    from tensorflow.python.saved_model import save as tf_save
    from tensorflow.python.saved_model import signature_serialization

    if signatures is None:
        signatures = signature_serialization.find_function_to_export(tf_save._AugmentedGraphView(module))
    concrete, _, _ = signature_serialization.canonicalize_signatures(signatures)
    return signatures, concrete


def _layout_of(concrete) -> InputLayout:
    specs = concrete.structured_input_signature[1]
    flat = []
    for name in concrete._arg_keywords:  # signature order
        spec = specs[name]
        shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else ()
        dtype = "string" if spec.dtype.name == "string" else spec.dtype.name
        flat.append(FlatSpec(name, dtype, shape, sig.dims_from_shape(shape)))
    return InputLayout(flat, [{s.name: i for i, s in enumerate(flat)}])


def _endpoint_signatures(concrete) -> tuple[sig.Signature, ...]:
    result = []
    for key in sorted(concrete, key=lambda k: (k != "serving_default", k)):
        fn = concrete[key]
        layout = _layout_of(fn)
        batch_dynamic = any(s.shape and s.shape[0] is None for s in layout.flat)
        outputs = []
        for name in sorted(fn.structured_outputs):
            spec = fn.structured_outputs[name]
            shape = spec.shape.as_list() if spec.shape.rank is not None else []
            dims = tuple((sig.BATCH_DIM if (i == 0 and batch_dynamic) else None) if d is None else int(d)
                         for i, d in enumerate(shape))
            outputs.append(sig.TensorSignature(name, "string" if spec.dtype.name == "string" else spec.dtype.name,
                                               dims))
        result.append(sig.Signature(key, layout.tensor_signatures(), tuple(outputs)))
    return tuple(result)


def export_module(module, filepath, verbose: bool = True, verify: bool = True, signatures=None, options=None,
                  **kwargs: Any) -> sig.ExportedArtifact:
    """Exports a `tf.Module` as a SavedModel (see the module docstring).

    Args:
        module: a `tf.Module` (or other TF trackable) with `tf.function`s.
        filepath: the SavedModel directory (replaced atomically).
        verbose: print a short summary.
        verify: reload and compare each signature with the original function.
        signatures: as for `tf.saved_model.save`.
        options: `tf.saved_model.SaveOptions`.

    Returns:
        The `ExportedArtifact`.
    """
    import tensorflow as tf

    if kwargs:
        raise ExportError(f"Unknown argument(s) for exporting a tf.Module: {sorted(kwargs)}.",
                          reason="bad_argument")
    t0 = time.monotonic()
    filepath = os.fspath(filepath)
    name = getattr(module, "name", None) or type(module).__name__
    try:
        with stablehlo.for_tensorflow():  # jax2tf functions traced here: for this TensorFlow's StableHLO
            signatures, concrete = _canonical_signatures(module, signatures)
    except (ValueError, TypeError) as e:
        raise ExportError(f"tf.Module '{name}': invalid signatures: {e}", model=name, reason="bad_signature") from None
    plans, cases = [], CaseSet()
    for key, fn in concrete.items():
        layout = _layout_of(fn)
        names = sorted(fn.structured_outputs)

        def call(flat, _fn=fn, _layout=layout, _names=names):
            out = _fn(**{s.name: tf.constant(v) for s, v in zip(_layout.flat, flat)})
            return [out[n].numpy() for n in _names]

        plan = EndpointPlan(key, layout, names, fn=fn)
        if verify:
            try:
                plan.behavior, made = reference.make_cases(key, layout, names, call, list(module.variables))
            except Exception as e:  # the module's own function fails here
                cause = xla_call_module_cause(str(e))
                if cause is None:
                    raise
                raise ExportError(f"tf.Module '{name}': signature '{key}' does not run in this process. {cause}",
                                  model=name, reason="xla_call_module_failed") from None
            for case in made:
                cases.add(case)
        plans.append(plan)
    request = ExportRequest("module", "tf_saved_model", name, "tensorflow", plans, cases, verify=verify,
                            source=module, options=options, version=version.__version__)
    strategy = _SaveModule(signatures)
    report, attempts = pipeline.run(request, filepath, [strategy], what=f"tf.Module '{name}'")
    behaviors = {p.name: p.behavior for p in plans}
    endpoints = tuple(s.with_behavior(behaviors[s.name]) for s in _endpoint_signatures(concrete))
    artifact = sig.ExportedArtifact("tf_saved_model", filepath, endpoints, strategy=report["strategy"])
    if verbose:
        report["strategy_line"] = pipeline.describe(attempts)
        summary.print_summary(artifact, name, "tensorflow", report, time.monotonic() - t0)
    return artifact


class _SaveModule:
    """The one strategy for a plain `tf.Module`: it is TensorFlow code, saved
    in this process with `tf.saved_model.save` and made canonical."""

    name = "in_process"

    def __init__(self, signatures):
        self._signatures = signatures

    def unavailable(self, request: ExportRequest):
        return None

    def write(self, request: ExportRequest, staged: str, workdir: str) -> dict[str, Any]:
        import tensorflow as tf

        from servekit import saved_model as sk_sm
        from servekit import verification

        try:
            with stablehlo.for_tensorflow():  # saving traces the functions again
                sk_sm.save_module(request.source, staged, signatures=self._signatures, options=request.options)
        except (ValueError, TypeError, AssertionError, tf.errors.OpError) as e:
            raise ExportError(f"tf.Module '{request.name}' could not be saved: {e}", model=request.name,
                              reason="export_failed") from None
        report: dict[str, Any] = {"ok": True, "endpoints": [], "comparisons": []}
        comps = verification.check_saved_model(staged, request.cases) if len(request.cases) else []
        report["comparisons"] = [c.__dict__ for c in comps]
        if not all(c.ok for c in comps):
            report.update(verification.failure(comps, "SavedModel", source="the module"))
        return report
