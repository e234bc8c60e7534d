"""servekit.export: every API form and error path, on this process' backend.

Run once per backend (KERAS_BACKEND=tensorflow|jax|torch).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import artifact_checks as checks
import custom_layers
import keras
import matrix_models as mm
import servekit
from servekit.source_model.calls import reference_outputs
from servekit.source_model.input_layout import parse_polymorphic_shape, resolve_input_layout

BACKEND = keras.backend.backend()
SPEC3 = keras.InputSpec(shape=(None, 3), dtype="float32")


def _siblings(path):
    parent = os.path.dirname(path)
    return sorted(n for n in os.listdir(parent) if ".servekit-" in n)


def _outputs(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


# -- input signatures ------------------------------------------------------------


def test_signature_inferred_from_functional_inputs():
    layout = resolve_input_layout(mm.two_inputs_list())
    assert [s.name for s in layout.flat] == ["x1", "x2"]
    assert layout.args == [[0, 1]]
    assert [s.dims for s in layout.flat] == [("batch", 3), ("batch", 4)]


def test_signature_inferred_from_dict_inputs_uses_keys():
    layout = resolve_input_layout(mm.two_inputs_dict())
    assert [s.name for s in layout.flat] == ["x1", "x2"]
    assert layout.args == [{"x1": 0, "x2": 1}]


def test_signature_forms_are_equivalent():
    model = mm.two_inputs_list()
    import tensorflow as tf

    forms = [
        None,
        [[keras.InputSpec(shape=(None, 3), dtype="float32"), keras.InputSpec(shape=(None, 4), dtype="float32")]],
        [keras.InputSpec(shape=(None, 3), dtype="float32"), keras.InputSpec(shape=(None, 4), dtype="float32")],  # flat, for 2 inputs
        [[tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None, 4), tf.float32)]],
        [list(model.inputs)],  # KerasTensors
        [[keras.ops.ones((2, 3)), keras.ops.ones((2, 4))]],  # backend tensors: batch made dynamic
        [[np.ones((5, 3), "float32"), np.ones((5, 4), "float32")]],
    ]
    layouts = [resolve_input_layout(model, f) for f in forms]
    for layout in layouts:
        assert [(s.name, s.dtype, s.shape) for s in layout.flat] == [("x1", "float32", (None, 3)),
                                                                    ("x2", "float32", (None, 4))]
        assert layout.args == [[0, 1]]


def test_spec_names_override_and_are_sanitized():
    layout = resolve_input_layout(mm.mlp(), [keras.InputSpec(shape=(None, 3), dtype="float32", name="my input:0")])
    assert [s.name for s in layout.flat] == ["my_input_0"]


def test_static_batch_in_signature_is_kept():
    layout = resolve_input_layout(mm.mlp(), [keras.InputSpec(shape=(4, 3), dtype="float32")])
    assert layout.flat[0].shape == (4, 3) and layout.flat[0].dims == (4, 3)


def test_bad_signature_element():
    with pytest.raises(servekit.ExportError, match="unsupported input signature element"):
        resolve_input_layout(mm.mlp(), ["not a spec"])
    with pytest.raises(servekit.ExportError, match="needs both `shape` and `dtype`"):
        resolve_input_layout(mm.mlp(), [keras.InputSpec(shape=(None, 3))])


def test_polymorphic_shapes_parsing():
    assert parse_polymorphic_shape("(b, 3)", (None, 3)) == ((None, 3), ("batch", 3))
    assert parse_polymorphic_shape("(batch, t, _)", (None, 6, 4)) == ((None, None, 4), ("batch", "t", 4))
    assert parse_polymorphic_shape("(2, ...)", (None, 6, 4)) == ((2, 6, 4), (2, 6, 4))
    with pytest.raises(servekit.ExportError):
        parse_polymorphic_shape("(b, 3, 4)", (None, 3))


# -- exports ------------------------------------------------------------------------


def test_never_called_sequential_exports_onnx_silently(tmp_path, capfd):
    model = keras.Sequential([keras.Input((3,), name="features"), keras.layers.Dense(2, name="out")],
                             name="seq")
    mm.randomize_weights(model, 3)
    path = str(tmp_path / "seq.onnx")
    capfd.readouterr()
    artifact = servekit.export(model, path, format="onnx", verbose=False, opset_version=13)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)  # verbose=False: not a line, not a log
    assert artifact.opset == 13
    import onnx

    proto = onnx.load(path)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    x = np.random.default_rng(1).standard_normal((5, 3)).astype("float32")
    got = checks.onnx_outputs(path, {"features": x})
    assert checks.max_abs_err({"out": _outputs(model, x)}, got) <= 1e-5


def test_subclassed_model_with_custom_layer(tmp_path):
    model = custom_layers.TinySubclassed(name="tiny")
    x = np.random.default_rng(2).standard_normal((4, 3)).astype("float32")
    model(x)
    mm.randomize_weights(model, 4)
    path = str(tmp_path / "tiny")
    artifact = servekit.export(model, path, verbose=False)
    default = artifact.endpoint("serving_default")
    assert [t.name for t in default.inputs] == ["inputs"] and [t.name for t in default.outputs] == ["output_0"]
    got = checks.saved_model_outputs(path, {"inputs": x})
    assert checks.max_abs_err({"output_0": _outputs(model, x)}, got) <= 1e-5


def test_subclassed_model_never_called_is_refused(tmp_path):
    path = str(tmp_path / "never")
    with pytest.raises(servekit.ExportError, match="never been called") as info:
        servekit.export(custom_layers.TinySubclassed(name="never_called"), path, verbose=False)
    assert "never_called" in str(info.value) and "input_signature" in str(info.value)
    assert not os.path.exists(path) and _siblings(path) == []


def test_layer_class_not_importable(tmp_path):
    """A class no fresh process can import is exported in-process on the source
    backend; on torch, where only the portable rebuild writes SavedModels, the
    error says why each strategy could not."""

    class LocalScale(keras.layers.Layer):  # defined in a function: no worker can import it
        def call(self, x):
            return x * 2.0

    inp = keras.Input((3,), name="features")
    model = keras.Model(inp, LocalScale(name="local_scale")(keras.layers.Dense(2, name="d")(inp)), name="local")
    path = str(tmp_path / "local")
    if BACKEND != "torch":
        artifact = servekit.export(model, path, verbose=False)
        assert artifact.strategy == "in_process"
        x = np.ones((2, 3), "float32")
        got = checks.saved_model_outputs(path, {"features": x})
        assert checks.max_abs_err({"local_scale": _outputs(model, x)}, got) <= 1e-5
        assert artifact.endpoint("serve").outputs[0].name == "local_scale"
        assert checks.find_leaks(path) == []
    else:
        with pytest.raises(servekit.ExportError, match="local_scale") as info:
            servekit.export(model, path, verbose=False)
        message = str(info.value)
        assert info.value.layer == "local_scale" and "register_keras_serializable" in message
        assert "portable_rebuild (skipped)" in message and "in_process (skipped)" in message
        assert "torch_xla" in message
        assert not os.path.exists(path) and _siblings(path) == []
    # Its ONNX export works on every backend (tf2onnx, jax2onnx or torch.onnx in-process).
    onnx_path = str(tmp_path / "local.onnx")
    artifact = servekit.export(model, onnx_path, format="onnx", verbose=False)
    assert artifact.strategy == "in_process"
    x = np.random.default_rng(9).standard_normal((7, 3)).astype("float32")
    got = checks.onnx_outputs(onnx_path, {"features": x})
    assert checks.max_abs_err({"local_scale": _outputs(model, x)}, got) <= 1e-5


def test_a_model_keras_cannot_reload_is_named_with_the_cause(tmp_path):
    """A get_config() that leaves out an argument breaks Keras's own save and
    load: the portable rebuild says so, with Keras's message and the fix; the
    in-process export still writes a SavedModel where the backend allows."""
    inp = keras.Input((3,), name="features")
    model = keras.Model(inp, custom_layers.ForgetfulDense(4, name="forgetful")(inp), name="forgetful_model")
    path = str(tmp_path / "forgetful")
    if BACKEND != "torch":
        artifact = servekit.export(model, path, verbose=False)
        assert artifact.strategy == "in_process"
        return
    with pytest.raises(servekit.ExportError) as info:
        servekit.export(model, path, verbose=False)
    message = str(info.value)
    assert "portable_rebuild (failed): Model 'forgetful_model' does not survive Keras's own save and load" in message
    assert "forgetful" in message and "get_config() that leaves out a constructor argument" in message
    assert "value=[" not in message  # Keras's dump of the weights is left out
    assert not os.path.exists(path) and _siblings(path) == []


def test_backend_bound_layer(tmp_path):
    """A layer wrapping backend code cannot be rebuilt under TensorFlow; the
    in-process strategy exports it where its backend has a converter."""
    inp = keras.Input((3,), name="features")
    if BACKEND == "torch":
        import torch

        layer = keras.layers.TorchModuleWrapper(torch.nn.Linear(3, 2), output_shape=(None, 2), name="torch_linear")
    elif BACKEND == "jax":
        def call_fn(params, inputs):
            return inputs @ params["w"]

        layer = keras.layers.JaxLayer(call_fn, params={"w": np.ones((3, 2), "float32")}, name="jax_linear")
    else:
        # TensorFlow has no backend-bound wrapper layer (an ONNX-impossible
        # layer is checked in test_onnx_impossible_layer_is_refused): the
        # preflight accepts plain layers.
        from servekit.strategies import keras_file

        model = keras.Model(inp, keras.layers.Dense(2, name="plain")(inp), name="plain")
        assert keras_file.preflight(model, "plain") == []
        return
    model = keras.Model(inp, layer(inp), name="bound")
    path = str(tmp_path / "bound")
    if BACKEND == "jax":  # jax2tf converts the wrapped JAX function in-process
        artifact = servekit.export(model, path, verbose=False)
        assert artifact.strategy == "in_process"
        x = np.random.default_rng(2).standard_normal((7, 3)).astype("float32")
        got = checks.saved_model_outputs(path, {"features": x})
        assert checks.max_abs_err({artifact.endpoint("serve").outputs[0].name: _outputs(model, x)}, got) <= 1e-5
        return
    with pytest.raises(servekit.ExportError) as info:
        servekit.export(model, path, verbose=False)
    assert info.value.layer == layer.name and layer.name in str(info.value)
    assert "rewrite it with Keras layers" in str(info.value)
    assert not os.path.exists(path) and _siblings(path) == []


def test_onnx_impossible_layer_is_refused(tmp_path):
    """TextVectorization splits strings: no ONNX op does that."""
    inp = keras.Input((1,), dtype="string", name="text")
    vec = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=4, vocabulary=["a", "b", "c"],
                                         name="vectorizer")
    out = keras.layers.Embedding(10, 2, name="embedding")(vec(inp))
    model = keras.Model(inp, out, name="vectorized")
    path = str(tmp_path / "vectorized.onnx")
    with pytest.raises(servekit.ExportError) as info:
        servekit.export(model, path, format="onnx", verbose=False)
    message = str(info.value)
    assert info.value.layer == "vectorizer" and "'vectorizer'" in message, message
    assert "tf_saved_model" in message and "Nothing was written" in message
    assert not os.path.exists(path) and _siblings(path) == []


def test_jax_only_arguments(tmp_path):
    model = mm.gru(1)
    seq = keras.InputSpec(shape=(None, None, 4), dtype="float32")  # dynamic time too
    path = str(tmp_path / "gru_poly.onnx")
    kwargs = dict(is_static=True, jax2tf_kwargs={"polymorphic_shapes": ["(b, t, 4)"]})
    if BACKEND != "jax":
        with pytest.raises(servekit.ExportError, match="jax backend only"):
            servekit.export(model, path, format="onnx", verbose=False, input_signature=[seq], **kwargs)
        assert not os.path.exists(path)
        return
    inp = keras.Input((None, 4), name="sequence")
    model = keras.Model(inp, model.get_layer("logits")(model.get_layer("gru")(inp)), name="gru_dynamic")
    artifact = servekit.export(model, path, format="onnx", verbose=False,
                               input_signature=[keras.InputSpec(shape=(None, 6, 4), dtype="float32")], **kwargs)
    assert artifact.endpoint("serving_default").inputs[0].shape == ("batch", "t", 4)
    session = checks.onnx_session(path)
    assert session.get_inputs()[0].shape == ["batch", "t", 4]
    rng = np.random.default_rng(3)
    for batch, steps in ((1, 2), (7, 9)):
        x = rng.standard_normal((batch, steps, 4)).astype("float32")
        got = checks.onnx_outputs(path, {"sequence": x})
        assert checks.max_abs_err({"logits": _outputs(model, x)}, got) <= 1e-5


def test_argument_errors(tmp_path):
    model = mm.mlp()
    path = str(tmp_path / "x")
    with pytest.raises(servekit.ExportError, match="Unknown format"):
        servekit.export(model, path, format="pickle")
    with pytest.raises(servekit.ExportError, match="Unknown argument"):
        servekit.export(model, path, bogus=1)
    with pytest.raises(servekit.ExportError, match="opset_version applies to format='onnx'"):
        servekit.export(model, path, opset_version=17)
    with pytest.raises(servekit.ExportError, match="opset_version must be"):
        servekit.export(model, path, format="onnx", opset_version=7)
    with pytest.raises(servekit.ExportError, match="keras.Model or a tf.Module"):
        servekit.export(keras.layers.Dense(2), path)
    assert issubclass(servekit.ExportError, ValueError)
    assert not os.path.exists(path)


# -- verbose, atomic writes, verification ----------------------------------------------


def test_verbose_summary(tmp_path, capfd):
    model = mm.mlp(5)
    capfd.readouterr()
    servekit.export(model, str(tmp_path / "loud.onnx"), format="onnx", verbose=True)
    out, err = capfd.readouterr()
    assert "endpoint serving_default: (features float32[batch,3]) -> (logits float32[batch,2])" in out
    assert "loud.onnx" in out and "verified: batch 1, 2, 7" in out and ("KiB" in out or " B" in out)
    assert "kernel" not in out and "Variable" not in out  # a summary, not a variable dump
    assert len(out.splitlines()) <= 6 and err == ""


def test_failed_verification_writes_nothing_and_keeps_old_artifact(tmp_path, monkeypatch):
    inp = keras.Input((3,), name="features")
    out = custom_layers.SkewedLayer(name="skewed")(keras.layers.Dense(2, name="dense")(inp))
    model = keras.Model(inp, out, name="skewed_model")
    sm_path, onnx_path = str(tmp_path / "artifact"), str(tmp_path / "artifact.onnx")
    # Artifacts already there must survive a failed export untouched.
    os.makedirs(os.path.join(sm_path, "variables"))
    with open(os.path.join(sm_path, "saved_model.pb"), "wb") as f:
        f.write(b"previous artifact")
    with open(onnx_path, "wb") as f:
        f.write(b"previous onnx")
    before_sm, before_onnx = checks.read_tree(sm_path), checks.read_tree(onnx_path)
    monkeypatch.setenv("SERVEKIT_TEST_SKEW", "0.5")  # the worker does not see it: outputs differ by 0.5
    for path, fmt in ((sm_path, "tf_saved_model"), (onnx_path, "onnx")):
        with pytest.raises(servekit.ExportError) as info:  # the worker's rebuild alone
            servekit.export(model, path, format=fmt, verbose=False, strategy="portable_rebuild")
        message = str(info.value)
        assert info.value.reason == "verification_failed"
        assert "skewed_model" in message and "output 'skewed'" in message and "max abs diff 0.5" in message
        assert "Nothing was written" in message
        assert _siblings(path) == []
    assert checks.read_tree(sm_path) == before_sm and checks.read_tree(onnx_path) == before_onnx
    # verify=False skips the check and replaces the previous artifact.
    servekit.export(model, sm_path, verbose=False, verify=False)
    names = os.listdir(sm_path)
    assert "saved_model.pb" in names and "fingerprint.pb" in names
    assert checks.read_tree(sm_path)["saved_model.pb"] != b"previous artifact"
    assert _siblings(sm_path) == []


def test_reference_outputs_on_source_backend():
    """The lead's build tool names reference outputs with this function."""
    rng = np.random.default_rng(9)
    for name in ("text_classifier", "two_inputs_dict"):
        model = mm.build(name, seed=2)
        named = mm.sample_inputs(name, 3, rng)
        expected = mm.source_outputs(name, model, named)
        by_name = reference_outputs(model, named)
        structured = reference_outputs(model, mm.structured(name, named))
        assert list(by_name) == mm.OUTPUT_NAMES[name] == list(structured)
        for key in expected:
            np.testing.assert_array_equal(by_name[key], expected[key])
            np.testing.assert_array_equal(structured[key], expected[key])


class _Unportable:
    factor = 3.0


_UNPORTABLE = _Unportable()
_CHANNEL_SCALES = np.array([0.5, 2.0, -1.0], "float32")


@pytest.mark.parametrize("strategy", ["portable_rebuild", "in_process"])
def test_saved_model_stores_each_weight_once(tmp_path, strategy):
    # Keras's own export saves each weight twice (the Keras variable and the
    # tf.Variable behind it are two checkpoint objects).
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    if strategy == "in_process" and BACKEND == "torch":
        with pytest.raises(servekit.ExportError, match="in_process"):
            servekit.export(model, str(tmp_path / "m"), format="tf_saved_model", strategy=strategy)
        return
    servekit.export(model, str(tmp_path / "m"), format="tf_saved_model", strategy=strategy, verbose=False)
    keys = tf.train.load_checkpoint(str(tmp_path / "m" / "variables" / "variables")).get_variable_to_shape_map()
    assert sorted(shape for key, shape in keys.items() if key.endswith("VARIABLE_VALUE")) == [[2], [3, 2]]


def test_lambda_layers_get_their_globals(tmp_path):
    """Keras saves a Lambda's bytecode, not its globals: servekit carries modules,
    importable functions, constants and NumPy arrays over, and refuses anything else."""
    inp = keras.Input((3,), name="features")
    x = keras.layers.Lambda(lambda t: keras.ops.tanh(t) * 2.0 * _CHANNEL_SCALES, name="scaled_tanh")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="logits")(x), name="with_lambda")
    mm.randomize_weights(model, 6)
    path = str(tmp_path / "lambda")
    assert servekit.export(model, path, verbose=False).strategy == "portable_rebuild"
    xs = np.random.default_rng(4).standard_normal((7, 3)).astype("float32")
    assert checks.max_abs_err({"logits": _outputs(model, xs)},
                              checks.saved_model_outputs(path, {"features": xs})) <= 1e-5

    bad = keras.Model(inp, keras.layers.Lambda(lambda t: t * _UNPORTABLE.factor, output_shape=(3,),
                                               name="uses_object")(inp), name="bad_lambda")
    bad_path = str(tmp_path / "bad_lambda")
    if BACKEND != "torch":
        artifact = servekit.export(bad, bad_path, verbose=False)
        assert artifact.strategy == "in_process"
        assert checks.max_abs_err({"uses_object": _outputs(bad, xs)},
                                  checks.saved_model_outputs(bad_path, {"features": xs})) <= 1e-5
    else:  # a torch SavedModel needs the portable rebuild, which cannot carry the global
        with pytest.raises(servekit.ExportError, match="_UNPORTABLE") as info:
            servekit.export(bad, bad_path, verbose=False)
        assert info.value.layer == "uses_object" and "arguments=" in str(info.value)
        assert not os.path.exists(bad_path) and _siblings(bad_path) == []


@pytest.mark.skipif(BACKEND != "jax", reason="the jitted reference call is JAX's")
def test_jitted_reference_calls_match_eager_ones_and_let_the_model_go(tmp_path):
    # A JAX model's reference calls run under jax.jit, cached per model: the cache must not keep
    # a model (and its weights) alive once the caller drops it, and its state updates (a
    # seed generator's) must land in the model as an eager call's would.
    import gc
    import weakref

    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="tanh", name="dense")(inputs))
    x = np.random.default_rng(4).normal(size=(5, 4)).astype("float32")
    got = reference_outputs(model, {"x": x})
    np.testing.assert_allclose(got["dense"], np.asarray(model(x)), rtol=1e-6, atol=1e-6)

    noisy = keras.Model(inputs, keras.layers.Lambda(
        lambda t, g=keras.random.SeedGenerator(7): t + keras.random.normal(keras.ops.shape(t), seed=g))(inputs))
    assert not np.array_equal(reference_outputs(noisy, {"x": x})["lambda"], reference_outputs(noisy, {"x": x})["lambda"])

    dropped = weakref.ref(model)
    del model, got
    gc.collect()
    assert dropped() is None


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's own CPU kernels")
def test_a_model_tensorflow_cannot_run_on_this_cpu_is_refused_with_the_setting_it_needs(tmp_path):
    # Without oneDNN (TensorFlow's default on CPUs without AVX-512 or AMX; forced off here)
    # a channels-first convolution does not run on the CPU: the source model itself fails.
    import subprocess
    import sys

    script = (
        "import keras, servekit\n"
        "i = keras.Input((3, 8, 8), name='images')\n"
        "m = keras.Model(i, keras.layers.Conv2D(4, 3, data_format='channels_first')(i))\n"
        "try:\n"
        f"    servekit.export(m, {str(tmp_path / 'm.onnx')!r}, format='onnx', verbose=False)\n"
        "except servekit.ExportError as e:\n"
        "    print(e.reason, str(e))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"})
    assert run.stdout.startswith("source_failed"), run.stdout + run.stderr[-2000:]
    assert "only supports the NHWC tensor format" in run.stdout
    assert "set TF_ENABLE_ONEDNN_OPTS=1" in run.stdout and "data_format='channels_last'" in run.stdout
    assert not os.listdir(tmp_path)


# -- the default order -------------------------------------------------------------


ONNX_CONVERTER_IN_PROCESS = {"jax": "jax2onnx", "torch": "torch.onnx (TorchScript)"}


@pytest.fixture()
def as_a_script(monkeypatch):
    """Outside the session's warm_worker() block, as a user's script runs; the
    lingering worker this test's exports start is shut down after it."""
    from servekit.worker import launch

    monkeypatch.setattr(launch._local, "warm", None, raising=False)
    monkeypatch.setattr(launch._local, "lingering", None, raising=False)
    yield launch._local
    worker = getattr(launch._local, "lingering", None)
    if worker is not None:
        worker.shutdown()


def test_onnx_of_a_small_model_is_converted_first_as_keras_converts_it(tmp_path, as_a_script):
    model = mm.mlp()
    artifact = servekit.export(model, str(tmp_path / "m.onnx"), format="onnx", verbose=False)
    if BACKEND == "tensorflow":  # the rebuild converts with tf2onnx, as Keras does on TensorFlow
        assert (artifact.strategy, artifact.converter) == ("portable_rebuild", "tf2onnx")
        return
    assert (artifact.strategy, artifact.converter) == ("in_process", ONNX_CONVERTER_IN_PROCESS[BACKEND])
    assert as_a_script.lingering.pid is None  # no TensorFlow worker was started for it
    inputs = mm.sample_inputs("mlp", 5, np.random.default_rng(0))
    assert checks.max_abs_err(mm.source_outputs("mlp", model, inputs),
                              checks.onnx_outputs(str(tmp_path / "m.onnx"), inputs)) < 1e-5


@pytest.mark.skipif(BACKEND == "tensorflow", reason="ONNX from JAX and torch")
@pytest.mark.parametrize("case", ["rebuild_first", "verify=False", "large"])
def test_onnx_is_rebuilt_first_when_asked_unverified_or_large(tmp_path, monkeypatch, case):
    kwargs = {"strategy": "rebuild_first"} if case == "rebuild_first" else {}
    if case == "verify=False":  # nothing would send a wrong conversion on to the rebuild
        kwargs["verify"] = False
    if case == "large":  # a large model takes the bounded-memory road
        monkeypatch.setenv("SERVEKIT_FREE_BEFORE_CHECKING_BYTES", "64")
    artifact = servekit.export(mm.mlp(), str(tmp_path / "m.onnx"), format="onnx", verbose=False, **kwargs)
    assert (artifact.strategy, artifact.converter) == ("portable_rebuild", "tf2onnx")


@pytest.mark.skipif(BACKEND == "tensorflow", reason="ONNX from JAX and torch")
def test_a_model_keras_converter_cannot_take_is_rebuilt_and_says_why(tmp_path, capfd):
    model = mm.text_classifier()  # string inputs: neither jax2onnx nor TorchScript takes them
    artifact = servekit.export(model, str(tmp_path / "m.onnx"), format="onnx", verbose=True)
    assert (artifact.strategy, artifact.converter) == ("portable_rebuild", "tf2onnx")
    line = next(x for x in capfd.readouterr().out.splitlines() if "strategy portable_rebuild" in x)
    assert f"in_process failed: {ONNX_CONVERTER_IN_PROCESS[BACKEND].split(' ')[0]}" in line


@pytest.mark.skipif(BACKEND == "tensorflow", reason="ONNX from JAX and torch")
def test_the_default_order_tries_the_quick_converters_first_and_the_dynamo_exporter_after_the_rebuild():
    import types

    from servekit import strategies
    from servekit.pipeline import core as pipeline

    request = types.SimpleNamespace(format="onnx", kind="model", backend=BACKEND, verify=True, source=mm.mlp())
    tried = [(s.name, s.onnx_converters(request) if s.name == "in_process" else ())
             for s in strategies.DEFAULT_ORDER if pipeline.applies(s, request)]
    quick = {"jax": "jax2onnx", "torch": "TorchScript"}[BACKEND]
    after = [("in_process", ("dynamo",))] if BACKEND == "torch" else []
    assert tried == [("in_process", (quick,)), ("portable_rebuild", ()), *after, ("cross_backend_rebuild", ())]
