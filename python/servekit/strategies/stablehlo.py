"""JAX modules in SavedModels that the installed TensorFlow can read.

jax2tf embeds the traced JAX function in the SavedModel as a StableHLO
portable artifact (the `module` attribute of an `XlaCallModule` op), which
TensorFlow deserializes when the SavedModel runs. jax serializes for the
StableHLO version about four weeks older than its own (its `WEEK_4`
compatibility requirement: 1.15.0 for jax 0.10.2, whose own is 1.17.0);
TensorFlow 2.21 reads StableHLO up to 1.13.7. What changed between the two
fails to deserialize at run time: jax keeps some `chlo` ops as
`stablehlo.composite` with their decomposition (`top_k`, so
`keras.ops.top_k` and `argpartition`; `keras.ops.erf`, `sinh`, `cosh`,
`arcsin`, `arccos`, `arcsinh`, `arccosh`, `arctanh`), serialized at 1.15 as
`vhlo.composite_v2`, an op StableHLO 1.13.7 does not know. (`logsumexp`,
`softmax`, exact `gelu` lower to plain StableHLO with jax 0.10.2.)

Read at 1.13.7 (`composite_v1`), the composite still fails when a dimension
is dynamic: XlaCallModule refines the dynamic shapes of `main` and of the
functions it calls, not of a composite's decomposition, and refuses the
module ("Module has dynamic shapes": `stablehlo.sort` of `tensor<?x8xf32>`
in `@chlo.top_k.impl`).

So jax2tf functions made under `for_tensorflow()` (servekit's in-process
export and `ExportArchive.add_endpoint` on JAX) serialize, whenever they are
traced, for the older of the version jax would choose and the one
TensorFlow reads (StableHLO's versioned dialect writes the module down to
it), with each composite replaced by a `func.call` of its decomposition,
which XlaCallModule refines like any call (XLA computes the decomposition
for a composite anyway). A module that cannot be written at that version
fails at serialization, with both versions named; a module serialized
elsewhere that TensorFlow cannot read fails verification with the cause
named (`servekit.errors.xla_call_module_cause`).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Optional

from servekit import patching


@functools.lru_cache(maxsize=None)
def tensorflow_version() -> Optional[str]:
    """The StableHLO version this TensorFlow reads (its XlaCallModule's), or
    None when it cannot be asked."""
    try:
        from tensorflow.compiler.mlir.stablehlo import stablehlo
    except ImportError:
        return None
    return str(stablehlo.get_current_version())


def jax_default_version() -> Optional[str]:
    """The StableHLO version jax serializes exported modules for."""
    try:
        from jax._src.lib.mlir.dialects import hlo
    except ImportError:
        return None
    return str(hlo.get_version_from_compatibility_requirement(hlo.StablehloCompatibilityRequirement.WEEK_4))


def target_version() -> Optional[str]:
    """The version servekit serializes for: the older of jax's default and
    TensorFlow's; None when either is unknown."""
    from jax._src.lib.mlir.dialects import hlo

    theirs, ours = jax_default_version(), tensorflow_version()
    if theirs is None or ours is None:
        return None
    return str(hlo.get_smaller_version(theirs, ours))


def _serializer(target: str):
    """jax's `_module_to_bytecode`, for `target` and without composites."""
    from jax._src.export import _export

    def module_to_bytecode(module) -> bytes:
        from servekit.errors import ExportError

        mixed = _export.xb.get_backend().serialize_with_sdy
        try:
            serialized = _export._jax.mlir.serialize_portable_artifact(module, target, mixed)
        except Exception as e:  # the binding raises plain exceptions
            raise ExportError(
                f"jax could not write the traced module as StableHLO {target}, the version TensorFlow "
                f"{_tf_release()} reads (jax's default is {jax_default_version()}): {' '.join(str(e).split())}. "
                "The model uses a StableHLO feature newer than this TensorFlow; rebuild it under TensorFlow "
                "(make its custom layers importable and registered, strategy 'portable_rebuild') or use a jax "
                "and TensorFlow whose StableHLO versions agree.", reason="stablehlo_version_skew") from None
        return decompose_composites(serialized, target, mixed)

    return module_to_bytecode


def decompose_composites(serialized: bytes, target: str, mixed: bool = False) -> bytes:
    """`serialized` (a StableHLO portable artifact) with every
    `stablehlo.composite` replaced by a call of its decomposition, written
    for `target`; the same bytes when it has no composite.

    jax keeps `chlo` ops until serialization, which writes them as
    composites, so the composites are replaced in the serialized module."""
    from jax._src.interpreters import mlir
    from jax._src.lib import _jax
    from jax._src.lib.mlir import ir
    from jax._src.lib.mlir.dialects import func

    with mlir.make_ir_context():
        module = _jax.mlir.deserialize_portable_artifact(serialized)
        composites = []

        def collect(op):
            if op.name == "stablehlo.composite":
                composites.append(op)
            return ir.WalkResult.ADVANCE

        module.operation.walk(collect)
        if not composites:
            return serialized
        for op in composites:
            with ir.InsertionPoint(op), op.location:
                call = func.CallOp([r.type for r in op.results], op.attributes["decomposition"], list(op.operands))
            for old, new in zip(op.results, call.results):
                old.replace_all_uses_with(new)
            op.erase()
        return _jax.mlir.serialize_portable_artifact(module, target, mixed)


def _tf_release() -> str:
    tf = sys.modules.get("tensorflow")
    return getattr(tf, "__version__", "") if tf is not None else ""


_active = 0


@contextlib.contextmanager
def _serializing(target: str):
    """While active, jax serializes for `target`, without composites."""
    global _active
    from jax._src.export import _export

    if _active:
        yield
        return
    original = _export._module_to_bytecode
    _export._module_to_bytecode = _serializer(target)
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        _export._module_to_bytecode = original


def _converting(convert, target: str):
    """`jax2tf.convert`, whose converted functions serialize for `target`
    whenever they are traced."""

    @functools.wraps(convert)
    def convert_for_tensorflow(*args, **kwargs):
        converted = convert(*args, **kwargs)

        @functools.wraps(converted)
        def serializing_for_tensorflow(*a, **k):
            with _serializing(target):
                return converted(*a, **k)

        return serializing_for_tensorflow

    return convert_for_tensorflow


@contextlib.contextmanager
def for_tensorflow():
    """While active, jax serializes modules for the StableHLO version this
    TensorFlow reads, with composites replaced by calls of their
    decompositions; and the functions `jax2tf.convert` returns (Keras's JAX
    `ExportArchive` endpoints) do so whenever they are traced, also after
    (an endpoint called before the archive is written).

    A no-op unless the Keras backend is JAX or jax2tf is imported (a
    `tf.Module` of jax2tf functions), or when jax's export internals are not
    the ones this was written for (jax 0.10)."""
    keras = sys.modules.get("keras")
    on_jax = keras is not None and keras.backend.backend() == "jax"
    if not on_jax and "jax.experimental.jax2tf" not in sys.modules:
        yield
        return
    try:
        from jax._src.export import _export
        from jax.experimental import jax2tf
    except ImportError:
        yield
        return
    known = (hasattr(_export, "_module_to_bytecode") and hasattr(_export, "xb")
             and hasattr(getattr(_export, "_jax", None), "mlir"))
    target = target_version() if known else None
    if target is None or getattr(jax2tf.convert, "_servekit_target", None):
        yield
        return
    with patching.replaced(jax2tf, convert=_converting(jax2tf.convert, target)):
        jax2tf.convert._servekit_target = target
        with _serializing(target):
            yield
