"""Writes the small, real export the native verifier's tests run against.

    make_fixtures.py --out DIR

DIR receives the layout of docs/manifest.md:

    manifest.json
    saved_model/    a tf.Module with two signatures:
                      serving_default: features float32[?,3] -> logits float32[?,2]
                      tokens: words string[?], ids int64[?,4]
                              -> lengths int64[?], upper string[?], total int64[?]
                      divide: a int64[?], b int64[?] -> quotient int64[?], constant int64[3]
                              (a // b: fails at run time when b has a zero; constant
                              is a graph constant, whose buffer TensorFlow shares)
    model.onnx      serving_default only (MatMul + Add, symbolic dim 'batch'),
                    the same weights, so both formats agree
    extra.onnx      odd outputs for the ONNX runner's tests (not in the manifest)
    dynamic.tflite  LiteRT, outputs with dynamic dims other than the batch (not in the
                    manifest): x float32[?,?,3] -> scaled = x * 2 + 1 float32[?,?,3],
                    total = sum(x, -1) float32[?,?]
    unwritten.tflite  LiteRT, an output its run keeps in LiteRT's own memory (not in
                    the manifest): x float32[?,4] -> rows = reshape(x, [n, 2, 2])
    reference/      .npy inputs and outputs computed with NumPy
    random/         a second export, of endpoints that are not pure functions:
                      serving_default (SavedModel and ONNX, stochastic):
                        features float32[?,3] -> noisy = features + uniform noise
                        (stochastic), doubled = 2 * features (deterministic)
                      counter (SavedModel, stateful): x float32[?] -> count int64[]
                        (a variable each call increments), shifted = x + count
                    its references come from running the source tf.Module: three
                    successive `counter` calls from the saved (export-time) state

    formats/        serving_default of the main export (the same weights) in the formats
                    converted from the traced serving function, with its own manifest:
                      model.xml + model.bin   OpenVINO IR (openvino.convert_model; tensor
                                              names set to the signature keys)
                      model.tflite            LiteRT (TFLiteConverter.from_concrete_functions),
                                              signature serving_default, batch -1

Weights and inputs are fixed constants, so the references are reproducible, except
the random export's noise, which is random by design.
"""

import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

WEIGHTS = np.array([[0.5, -1.0], [0.25, 2.0], [-0.75, 0.125]], dtype=np.float32)
BIAS = np.array([0.1, -0.2], dtype=np.float32)

# Every file the generator writes, relative to --out; Bazel declares the same list.
SAVED_MODEL_FILES = (
    "saved_model.pb",
    "fingerprint.pb",
    "variables/variables.index",
    "variables/variables.data-00000-of-00001",
)


def features(batch: int) -> np.ndarray:
    return (np.arange(batch * 3, dtype=np.float32).reshape(batch, 3) - 4.0) / 3.0


def logits(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) @ WEIGHTS.astype(np.float64) + BIAS).astype(np.float32)


def write_saved_model(path: str) -> None:
    import tensorflow as tf

    class Demo(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(WEIGHTS, name="w")
            self.b = tf.Variable(BIAS, name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features")])
        def serve(self, features):
            return {"logits": tf.matmul(features, self.w) + self.b}

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name="words"),
            tf.TensorSpec([None, 4], tf.int64, name="ids"),
        ])
        def tokens(self, words, ids):
            return {
                "lengths": tf.cast(tf.strings.length(words), tf.int64),
                "upper": tf.strings.upper(words),
                "total": tf.reduce_sum(ids, axis=1),
            }

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.int64, name="a"),
            tf.TensorSpec([None], tf.int64, name="b"),
        ])
        def divide(self, a, b):
            return {"quotient": tf.math.floordiv(a, b),
                    "constant": tf.constant([1, 2, 3], dtype=tf.int64)}

    module = Demo()
    tf.saved_model.save(module, path, signatures={
        "serving_default": module.serve, "tokens": module.tokens, "divide": module.divide})


def write_onnx(path: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", ["features", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
        ],
        name="serving_default",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(BIAS, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="servekit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def write_extra_onnx(path: str) -> None:
    """An ONNX model that exercises the ONNX runner's corners (not in the manifest):
    `doubled` declares ['batch', 3] but has 2*batch rows (a wrong shape prediction),
    `same` is `x` reshaped to [?, 3] (an unnamed dim; ONNX Runtime's Reshape may hand
    back the caller's own buffer), `words_out` is a string output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes=[
            helper.make_node("Concat", ["x", "x"], ["doubled"], axis=0),
            helper.make_node("Reshape", ["x", "rows_of_3"], ["same"]),
            helper.make_node("Identity", ["words"], ["words_out"]),
        ],
        name="extra",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
                helper.make_tensor_value_info("words", TensorProto.STRING, ["n"])],
        outputs=[helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", 3]),
                 helper.make_tensor_value_info("same", TensorProto.FLOAT, [None, 3]),
                 helper.make_tensor_value_info("words_out", TensorProto.STRING, ["n"])],
        initializer=[numpy_helper.from_array(np.array([-1, 3], dtype=np.int64), "rows_of_3")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="servekit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def write_dynamic_litert(path: str) -> None:
    """dynamic.tflite: two outputs whose non-batch dims follow the input's, so that
    only LiteRT's run sizes them (two, so that the layouts LiteRT reports for them
    are read at the right stride). `scaled` is a product with a constant kernel
    through a reshape to a computed shape, as Keras's layers trace: its size is
    known only once the kernels have run (cc/litert_model.cc)."""
    import tensorflow as tf

    kernel = tf.constant(2.0 * np.eye(3), tf.float32)

    class Dynamic(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"scaled": tf.tensordot(x, kernel, 1) + 1.0, "total": tf.reduce_sum(x, axis=-1)}

    module = Dynamic()
    write_litert(path, module.serve.get_concrete_function(), module)


def write_unwritten_litert(path: str) -> None:
    """unwritten.tflite: an output LiteRT's run keeps in its own memory: a reshape
    to a shape computed in the graph, which its kernel makes a dynamic tensor."""
    import tensorflow as tf

    class Unwritten(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"rows": tf.reshape(x, tf.stack([tf.shape(x)[0], 2, 2]))}

    module = Unwritten()
    write_litert(path, module.serve.get_concrete_function(), module)


class _RandomExport:
    """The tf.Module of the random/ export; built lazily (TensorFlow imports slowly)."""

    @staticmethod
    def build():
        import tensorflow as tf

        class Random(tf.Module):
            def __init__(self):
                super().__init__()
                self.count = tf.Variable(0, dtype=tf.int64, name="count")

            @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features")])
            def serve(self, features):
                return {"noisy": features + tf.random.uniform(tf.shape(features)),
                        "doubled": features * 2.0}

            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
            def counter(self, x):
                count = self.count.assign_add(1)
                return {"count": tf.identity(count), "shifted": x + tf.cast(count, tf.float32)}

        return Random()


def write_random_onnx(path: str) -> None:
    """serving_default of the random export in ONNX: RandomUniformLike (no seed, so
    every run draws anew) added to the input, and the input doubled."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes=[
            helper.make_node("RandomUniformLike", ["features"], ["noise"], low=0.0, high=1.0),
            helper.make_node("Add", ["features", "noise"], ["noisy"]),
            helper.make_node("Mul", ["features", "two"], ["doubled"]),
        ],
        name="serving_default",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        outputs=[helper.make_tensor_value_info("noisy", TensorProto.FLOAT, ["batch", 3]),
                 helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="servekit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def write_random_export(out: str) -> None:
    import tensorflow as tf

    os.makedirs(os.path.join(out, "reference"), exist_ok=True)
    module = _RandomExport.build()
    # Saved first: the artifact holds the export-time state (count = 0).
    tf.saved_model.save(module, os.path.join(out, "saved_model"),
                        signatures={"serving_default": module.serve, "counter": module.counter})
    write_random_onnx(os.path.join(out, "model.onnx"))

    reference = []

    def case(endpoint, index, inputs, outputs):
        entry = {"endpoint": endpoint, "batch": len(next(iter(inputs.values()))), "inputs": {}, "outputs": {}}
        for kind, tensors in (("in", inputs), ("out", outputs)):
            for name, value in tensors.items():
                rel = f"reference/{endpoint}.{index}.{kind}.{name}.npy"
                np.save(os.path.join(out, rel), np.asarray(value), allow_pickle=False)
                entry["inputs" if kind == "in" else "outputs"][name] = rel
        reference.append(entry)

    x = features(2)
    case("serving_default", 0, {"features": x}, {k: v.numpy() for k, v in module.serve(x).items()})
    # The source model's successive calls, from the state the artifact was saved in.
    for call in range(3):
        xs = np.array([0.5, -1.5], dtype=np.float32) * (call + 1)
        case("counter", call, {"x": xs}, {k: v.numpy() for k, v in module.counter(xs).items()})

    manifest = {
        "servekit_manifest": 1,
        "model": "random_fixture",
        "source_backend": "tensorflow",
        "tools": {"tensorflow": tf.__version__},
        "artifacts": [
            {"format": "tf_saved_model", "path": "saved_model", "tags": ["serve"],
             "files": {f: sha256(os.path.join(out, "saved_model", f)) for f in SAVED_MODEL_FILES}},
            {"format": "onnx", "path": "model.onnx", "opset": 17,
             "files": {"model.onnx": sha256(os.path.join(out, "model.onnx"))}},
        ],
        "endpoints": [
            {"name": "serving_default", "method_name": "tensorflow/serving/predict",
             "formats": ["tf_saved_model", "onnx"], "stochastic": True,
             "inputs": [{"name": "features", "dtype": "float32", "shape": ["batch", 3]}],
             "outputs": [{"name": "noisy", "dtype": "float32", "shape": ["batch", 3], "stochastic": True},
                         {"name": "doubled", "dtype": "float32", "shape": ["batch", 3]}]},
            {"name": "counter", "method_name": "tensorflow/serving/predict",
             "formats": ["tf_saved_model"], "stateful": True,
             "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch"]}],
             "outputs": [{"name": "count", "dtype": "int64", "shape": []},
                         {"name": "shifted", "dtype": "float32", "shape": ["batch"]}]},
        ],
        "reference": reference,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def _serving_function():
    """The main export's serving_default as a concrete function, and the module holding it."""
    import tensorflow as tf

    class Serve(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(WEIGHTS, name="w")
            self.b = tf.Variable(BIAS, name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features")])
        def serve(self, features):
            return {"logits": tf.matmul(features, self.w) + self.b}

    module = Serve()
    return module.serve.get_concrete_function(), module


def write_openvino(xml_path: str, concrete) -> None:
    """The IR as python/servekit/formats/openvino.py writes it: ports named by the
    signature keys, f32 declared in rt_info."""
    import openvino as ov

    model = ov.convert_model(concrete)
    (param,) = model.get_parameters()
    (result,) = model.get_results()
    param.set_friendly_name("features")
    param.output(0).get_tensor().set_names({"features"})
    result.set_friendly_name("logits")
    result.input_value(0).get_tensor().set_names({"logits"})
    model = ov.Model([result], [param], "tiny_fixture")
    model.set_rt_info("f32", ["runtime_options", "INFERENCE_PRECISION_HINT"])
    ov.save_model(model, xml_path, compress_to_fp16=False)


def write_litert(path: str, concrete, module) -> None:
    import tensorflow as tf

    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module).convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)


def write_formats_export(out: str) -> None:
    """formats/: serving_default as OpenVINO IR and LiteRT, with the main export's
    reference cases (copied) and a manifest of its own."""
    import shutil

    os.makedirs(os.path.join(out, "reference"), exist_ok=True)
    concrete, module = _serving_function()
    write_openvino(os.path.join(out, "model.xml"), concrete)
    write_litert(os.path.join(out, "model.tflite"), concrete, module)
    reference = []
    for batch in (1, 4):
        entry = {"endpoint": "serving_default", "batch": batch, "inputs": {}, "outputs": {}}
        for kind, name in (("in", "features"), ("out", "logits")):
            rel = f"reference/serving_default.b{batch}.{kind}.{name}.npy"
            shutil.copyfile(os.path.join(out, "..", rel), os.path.join(out, rel))
            entry["inputs" if kind == "in" else "outputs"][name] = rel
        reference.append(entry)
    manifest = {
        "servekit_manifest": 1,
        "model": "tiny_fixture_formats",
        "source_backend": "tensorflow",
        "tools": {"numpy": np.__version__},
        "artifacts": [
            {"format": "openvino", "path": "model.xml", "converter": "openvino.convert_model",
             "precision": "float32",
             "files": {f: sha256(os.path.join(out, f)) for f in ("model.xml", "model.bin")}},
            {"format": "litert", "path": "model.tflite", "converter": "tflite_converter",
             "precision": "float32",
             "files": {"model.tflite": sha256(os.path.join(out, "model.tflite"))}},
        ],
        "endpoints": [
            {"name": "serving_default", "method_name": "tensorflow/serving/predict",
             "formats": ["openvino", "litert"],
             "inputs": [{"name": "features", "dtype": "float32", "shape": ["batch", 3]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]},
        ],
        "tolerances": {"float32": {"atol": 1e-5, "rtol": 0.0}},
        "reference": reference,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    os.makedirs(os.path.join(out, "reference"), exist_ok=True)

    write_saved_model(os.path.join(out, "saved_model"))
    write_onnx(os.path.join(out, "model.onnx"))
    write_extra_onnx(os.path.join(out, "extra.onnx"))
    write_dynamic_litert(os.path.join(out, "dynamic.tflite"))
    write_unwritten_litert(os.path.join(out, "unwritten.tflite"))

    reference = []

    def case(endpoint, batch, inputs, outputs):
        entry = {"endpoint": endpoint, "batch": batch, "inputs": {}, "outputs": {}}
        for kind, tensors in (("in", inputs), ("out", outputs)):
            for name, value in tensors.items():
                rel = f"reference/{endpoint}.b{batch}.{kind}.{name}.npy"
                np.save(os.path.join(out, rel), value, allow_pickle=False)
                entry["inputs" if kind == "in" else "outputs"][name] = rel
        reference.append(entry)

    for batch in (1, 4):
        x = features(batch)
        case("serving_default", batch, {"features": x}, {"logits": logits(x)})
    words = np.array([b"alpha", b"", b"gamma ray"], dtype="S")
    ids = np.arange(12, dtype=np.int64).reshape(3, 4) - 5
    case("tokens", 3, {"words": words, "ids": ids}, {
        "lengths": np.array([len(w) for w in words], dtype=np.int64),
        "upper": np.array([w.upper() for w in words], dtype="S"),
        "total": ids.sum(axis=1),
    })
    a = np.array([7, -9], dtype=np.int64)
    b = np.array([2, 4], dtype=np.int64)
    case("divide", 2, {"a": a, "b": b}, {"quotient": a // b, "constant": np.array([1, 2, 3], dtype=np.int64)})

    saved_model_files = {f: sha256(os.path.join(out, "saved_model", f)) for f in SAVED_MODEL_FILES}
    written = sorted(
        os.path.relpath(os.path.join(d, f), os.path.join(out, "saved_model"))
        for d, _, files in os.walk(os.path.join(out, "saved_model")) for f in files)
    if written != sorted(SAVED_MODEL_FILES):
        print(f"make_fixtures: TensorFlow wrote {written}, expected {sorted(SAVED_MODEL_FILES)}",
              file=sys.stderr)
        return 1

    manifest = {
        "servekit_manifest": 1,
        "model": "tiny_fixture",
        "source_backend": "tensorflow",
        "tools": {"numpy": np.__version__},
        "artifacts": [
            {"format": "tf_saved_model", "path": "saved_model", "tags": ["serve"],
             "files": saved_model_files},
            {"format": "onnx", "path": "model.onnx", "opset": 17,
             "files": {"model.onnx": sha256(os.path.join(out, "model.onnx"))}},
        ],
        "endpoints": [
            {"name": "serving_default", "method_name": "tensorflow/serving/predict",
             "formats": ["tf_saved_model", "onnx"],
             "inputs": [{"name": "features", "dtype": "float32", "shape": ["batch", 3]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]},
            {"name": "tokens", "method_name": "tensorflow/serving/predict",
             "formats": ["tf_saved_model"],
             "inputs": [{"name": "words", "dtype": "string", "shape": ["batch"]},
                        {"name": "ids", "dtype": "int64", "shape": ["batch", 4]}],
             "outputs": [{"name": "lengths", "dtype": "int64", "shape": ["batch"]},
                         {"name": "upper", "dtype": "string", "shape": ["batch"]},
                         {"name": "total", "dtype": "int64", "shape": ["batch"]}]},
            {"name": "divide", "method_name": "tensorflow/serving/predict",
             "formats": ["tf_saved_model"],
             "inputs": [{"name": "a", "dtype": "int64", "shape": ["batch"]},
                        {"name": "b", "dtype": "int64", "shape": ["batch"]}],
             "outputs": [{"name": "quotient", "dtype": "int64", "shape": ["batch"]},
                         {"name": "constant", "dtype": "int64", "shape": [3]}]},
        ],
        "tolerances": {"float32": {"atol": 1e-5, "rtol": 0.0}},
        "reference": reference,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    write_random_export(os.path.join(out, "random"))
    write_formats_export(os.path.join(out, "formats"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
