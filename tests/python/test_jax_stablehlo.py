"""JAX -> SavedModel through jax2tf with ops that jax keeps as StableHLO
composites (`keras.ops.top_k`, `argpartition`, `erf`, `sinh`, `arcsin`, ...).

jax 0.10.2 serializes for StableHLO 1.15 (`vhlo.composite_v2`); TensorFlow
2.21's XlaCallModule reads up to 1.13.7, and does not refine the dynamic
shapes of a composite's decomposition. servekit serializes for the version
TensorFlow reads and replaces composites by calls of their decompositions
(`servekit.strategies.stablehlo`); where a module it did not serialize fails
anyway, the error names the versions. The in-process strategy is pinned: it
is the road that runs jax2tf (the portable rebuild traces under TensorFlow).

    python test_jax_stablehlo.py OUT_DIR   # the export, in a separate process

JAX backend only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import keras

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax2tf runs on the JAX backend")


class Composites(keras.layers.Layer):
    """A custom layer (defined here, so only the in-process strategy can
    export it) whose ops lower to `stablehlo.composite` on jax 0.10.2, with
    `logsumexp` and `softmax` beside them."""

    def __init__(self, argpartition=True, **kwargs):
        super().__init__(**kwargs)
        self.argpartition = argpartition

    def call(self, x):
        ops = keras.ops
        values, indices = ops.top_k(x, 3)
        squashed = ops.tanh(x)[:, :2]
        parts = [values, ops.cast(indices, "float32"), ops.logsumexp(x, axis=-1, keepdims=True),
                 ops.softmax(x)[:, :2], ops.erf(x)[:, :2], ops.sinh(x)[:, :2], ops.cosh(x)[:, :2],
                 ops.arcsinh(x)[:, :2], ops.arccosh(ops.abs(x[:, :2]) + 1.5), ops.arctanh(squashed * 0.5),
                 ops.arcsin(squashed), ops.arccos(squashed)]
        if self.argpartition:
            parts.append(ops.cast(ops.argpartition(x, 2)[:, :1], "float32"))
        return ops.concatenate(parts, axis=-1)


def composites_model(argpartition=True):
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8,), name="x")
    dense = keras.layers.Dense(8, name="dense")  # names fixed: the same model in every process
    model = keras.Model(inputs, Composites(argpartition, name="composites")(dense(inputs)), name="composites_model")
    model(np.ones((2, 8), "float32"))
    return model


def export_saved_model(path: str):
    import servekit

    return servekit.export(composites_model(), path, format="tf_saved_model", strategy="in_process", verbose=True)


def _top_k_fn(x):
    import jax

    return jax.lax.top_k(x, 3)[0]


def _xla_call_modules(path: str) -> list[bytes]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = saved.meta_graphs[0].graph_def
    nodes = list(graph.node) + [n for fn in graph.library.function for n in fn.node_def]
    return [n.attr["module"].s for n in nodes if n.op == "XlaCallModule"]


def _tensorflow_reads(module: bytes) -> str:
    """The module's text, after TensorFlow's own StableHLO has deserialized
    it (which raises when it cannot)."""
    from jax._src.interpreters import mlir
    from jax._src.lib import _jax
    from tensorflow.compiler.mlir.stablehlo import stablehlo

    stablehlo.deserialize_portable_artifact_str(module)
    with mlir.make_ir_context():
        return str(_jax.mlir.deserialize_portable_artifact(module))


# -- the versions and the mechanism ---------------------------------------------


def test_servekit_serializes_what_tensorflow_reads():
    import jax
    import jax.numpy as jnp
    from jax._src.lib.mlir.dialects import hlo

    from servekit.strategies import stablehlo

    tf_version, jax_version, target = (stablehlo.tensorflow_version(), stablehlo.jax_default_version(),
                                       stablehlo.target_version())
    assert tf_version and jax_version and target
    assert target == hlo.get_smaller_version(jax_version, tf_version)
    arg = jax.ShapeDtypeStruct((2, 8), jnp.float32)
    default = jax.export.export(jax.jit(_top_k_fn))(arg).mlir_module_serialized
    if hlo.get_smaller_version(jax_version, tf_version) != jax_version:
        # The pinned stack's skew (jax 0.10.2: 1.15.0; TensorFlow 2.21: 1.13.7).
        with pytest.raises(Exception, match="deserialize"):
            _tensorflow_reads(default)
    with stablehlo.for_tensorflow():
        ours = jax.export.export(jax.jit(_top_k_fn))(arg).mlir_module_serialized
    assert f"StableHLO_v{target}".encode() in ours
    text = _tensorflow_reads(ours)
    assert "stablehlo.composite" not in text
    assert "chlo.top_k.impl" in text  # the decomposition, called


def test_decompose_composites_keeps_a_module_without_them():
    import jax
    import jax.numpy as jnp

    from servekit.strategies import stablehlo

    exported = jax.export.export(jax.jit(jnp.sin))(jax.ShapeDtypeStruct((2,), jnp.float32))
    plain = exported.mlir_module_serialized
    assert stablehlo.decompose_composites(plain, stablehlo.jax_default_version()) is plain


# -- the export roads -------------------------------------------------------------


def test_saved_model_of_composite_ops_verifies(tmp_path):
    import artifact_checks as checks
    from servekit.strategies import stablehlo

    path = str(tmp_path / "composites")
    artifact = export_saved_model(path)  # verified by servekit at batch 1 and 7
    assert artifact.strategy == "in_process"
    model = composites_model()
    x = np.random.default_rng(3).normal(size=(5, 8)).astype("float32")
    got = checks.saved_model_outputs(path, {"x": x})
    np.testing.assert_allclose(got["composites"], keras.ops.convert_to_numpy(model(x)), atol=1e-5)
    modules = _xla_call_modules(path)
    assert modules
    for module in modules:
        assert f"StableHLO_v{stablehlo.target_version()}".encode() in module
        assert "stablehlo.composite" not in _tensorflow_reads(module)


def test_archive_endpoint_called_before_write_out(tmp_path):
    """Keras traces a JAX endpoint when it is first called: the jax2tf function
    servekit's ExportArchive made serializes for TensorFlow then too."""
    import servekit

    class Local(Composites):  # not importable: no portable rebuild, the in-process strategy saves the archive
        pass

    keras.utils.set_random_seed(7)
    inputs = keras.Input((8,), name="x")
    model = keras.Model(inputs, Local(False, name="composites")(keras.layers.Dense(8)(inputs)))
    archive = servekit.ExportArchive()
    archive.track(model)
    serve = archive.add_endpoint("serve", model.call,
                                 input_signature=[keras.InputSpec(shape=(None, 8), dtype="float32")])
    x = np.random.default_rng(4).normal(size=(3, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(serve(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5)
    artifact = archive.write_out(str(tmp_path / "archive"), verbose=False)
    assert artifact.strategy == "in_process"


def test_tf_module_of_a_jax2tf_function(tmp_path):
    import servekit
    import tensorflow as tf
    from jax.experimental import jax2tf

    module = tf.Module()
    module.f = tf.function(jax2tf.convert(_top_k_fn, polymorphic_shapes=["(b, 8)"]),
                           input_signature=[tf.TensorSpec((None, 8), tf.float32)], autograph=False)
    servekit.export(module, str(tmp_path / "module"), verbose=False)


def test_module_traced_before_names_the_version_skew(tmp_path):
    """A jax2tf function traced before servekit sees it keeps jax's
    serialization; TensorFlow's error names only the node, servekit's the
    versions and what to do."""
    import servekit
    import tensorflow as tf
    from jax._src.lib.mlir.dialects import hlo
    from jax.experimental import jax2tf

    from servekit.strategies import stablehlo

    tf_version, jax_version = stablehlo.tensorflow_version(), stablehlo.jax_default_version()
    if hlo.get_smaller_version(jax_version, tf_version) == jax_version:
        pytest.skip(f"jax serializes StableHLO {jax_version}, which TensorFlow (StableHLO {tf_version}) reads")
    module = tf.Module()
    module.f = tf.function(jax2tf.convert(_top_k_fn, polymorphic_shapes=["(b, 8)"]),
                           input_signature=[tf.TensorSpec((None, 8), tf.float32)], autograph=False)
    module.f.get_concrete_function()  # traced outside servekit
    with pytest.raises(servekit.ExportError) as info:
        servekit.export(module, str(tmp_path / "module"), verbose=False)
    message = str(info.value)
    assert f"jax serialized it as StableHLO {jax_version} (op 'vhlo.composite_v2')" in message
    assert f"this TensorFlow reads StableHLO up to {tf_version}" in message
    assert "for_tensorflow()" in message and "Graph execution error" not in message
    assert not os.path.exists(tmp_path / "module")


def test_onnx_of_composite_ops_verifies(tmp_path):
    """ONNX from JAX is jax2onnx's (no StableHLO serialization); the same ops
    convert, except argpartition (jax2onnx: 'scatter pattern not supported')."""
    import servekit

    artifact = servekit.export(composites_model(argpartition=False), str(tmp_path / "composites.onnx"),
                               format="onnx", strategy="in_process", verbose=False)
    assert artifact.converter == "jax2onnx"


def test_saved_model_is_byte_identical_across_processes(tmp_path):
    import artifact_checks as checks

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    out_a.mkdir()
    out_b.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in sys.path if p and os.path.isdir(p)])
    env.pop("PYTHONHASHSEED", None)
    child = subprocess.run([sys.executable, os.path.abspath(__file__), str(out_b)], cwd=str(tmp_path), env=env,
                           capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    export_saved_model(str(out_a / "composites"))
    tree_a, tree_b = checks.read_tree(str(out_a / "composites")), checks.read_tree(str(out_b / "composites"))
    assert sorted(tree_a) == sorted(tree_b)
    assert [name for name in tree_a if tree_a[name] != tree_b[name]] == []
    assert checks.find_leaks(str(out_a / "composites")) == []


# -- the message, from TensorFlow's text --------------------------------------------

_SKEW = """Graph execution error:

Detected at node XlaCallModule defined at (most recent call last):
<stack traces unavailable>
Cannot deserialize computation: UNKNOWN: -:58:11: error: unregistered operation 'vhlo.composite_v2' found in \
dialect ('vhlo') that does not allow unknown operations
-:58:11: note: in bytecode version 6 produced by: StableHLO_v1.15.0
<unknown>:0: error: failed to deserialize portable artifact using StableHLO_v1.13.7

	 [[{{node XlaCallModule}}]]
	 [[StatefulPartitionedCall/StatefulPartitionedCall/XlaCallModule]] [Op:__inference_signature_wrapper_198]"""

_DYNAMIC = """Graph execution error:

Detected at node XlaCallModule defined at (most recent call last):
Module has dynamic shapes: UNKNOWN: -:58:11: error: 'stablehlo.dynamic_iota' op has dynamic shapes
-:58:11: error: 'func.func' op has dynamic shapes
"func.func"() <{function_type = (tensor<?x8xf32>) -> (tensor<?x3xf32>, tensor<?x3xi32>), \
sym_name = "chlo.top_k.impl", sym_visibility = "private"}> ({
	 [[StatefulPartitionedCall/StatefulPartitionedCall/XlaCallModule]] [Op:__inference_signature_wrapper_198]"""

_LAPACK = """Graph execution error:

Detected at node XlaCallModule defined at (most recent call last):
No FFI handler registered for lapack_spotrf_ffi on a platform Host (canonical host)
	 [[{{node XlaCallModule}}]] [Op:__inference_converted_fun_tf_12]"""


def test_root_cause_names_the_stablehlo_versions():
    from servekit.errors import root_cause

    class InvalidArgumentError(Exception):
        pass

    skew = root_cause(InvalidArgumentError(_SKEW))
    assert skew.startswith("InvalidArgumentError: TensorFlow's XlaCallModule could not read the module")
    assert "StableHLO 1.15.0 (op 'vhlo.composite_v2')" in skew and "reads StableHLO up to 1.13.7" in skew
    dynamic = root_cause(InvalidArgumentError(_DYNAMIC))
    assert "'chlo.top_k.impl' is the decomposition of a stablehlo.composite" in dynamic
    class NotFoundError(Exception):
        pass

    lapack = root_cause(NotFoundError(_LAPACK))  # keras.ops.cholesky, qr, svd, eigh, inv, solve on JAX
    assert "no kernel for the custom call 'lapack_spotrf_ffi'" in lapack and "portable_rebuild" in lapack
    other = root_cause(InvalidArgumentError("Graph execution error:\n\nsomething\n[[node Add]]"))
    assert re.fullmatch(r"InvalidArgumentError: Graph execution error: \.\.\. \[\[node Add\]\]", other)


if __name__ == "__main__":
    export_saved_model(os.path.join(sys.argv[1], "composites"))
