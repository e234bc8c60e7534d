"""`servekit.load`: reload an artifact and call its endpoints by name.

`tf.saved_model.load(p).serve(x)` fails when the loaded object is not kept
alive (its variables are deleted with it). The object `load` returns owns the
loaded artifact, and every endpoint callable it hands out holds a reference to
it, so `servekit.load(p).serve(x)` works.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from servekit import onnxruntime_io
from servekit import signature as sig
from servekit.errors import ExportError


def _to_numpy(x):
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)


class LoadedArtifact:
    """Base class: an artifact with named endpoints.

    Attributes:
        path: what was loaded.
        format: "tf_saved_model", "onnx", "openvino" or "litert".
        signatures: the endpoints' `servekit.signature.Signature`s.
    """

    format = ""

    def __init__(self, path: str):
        self.path = path

    @property
    def endpoint_names(self) -> list[str]:
        return [s.name for s in self.signatures]

    @property
    def signatures(self) -> list[sig.Signature]:  # pragma: no cover - abstract
        raise NotImplementedError

    def call_endpoint(self, name: str, *args, **kwargs) -> dict[str, np.ndarray]:
        """Runs endpoint `name`; returns its outputs by name as NumPy arrays.

        Inputs are given by name (`x1=..., x2=...`), as one dict keyed by
        input name, or positionally in the signature's input order.
        """
        raise NotImplementedError  # pragma: no cover

    def _named_inputs(self, signature: sig.Signature, args, kwargs) -> dict[str, Any]:
        names = [t.name for t in signature.inputs]
        if args and kwargs:
            raise ExportError(f"Endpoint '{signature.name}': give inputs by name or by position, not both.",
                              reason="bad_inputs")
        if len(args) == 1 and isinstance(args[0], Mapping):
            kwargs = dict(args[0])
            args = ()
        if args:
            flat = []
            for a in args:
                if isinstance(a, (list, tuple)):
                    flat.extend(a)
                else:
                    flat.append(a)
            if len(flat) != len(names):
                raise ExportError(f"Endpoint '{signature.name}' takes {len(names)} input(s) {names}; got "
                                  f"{len(flat)}.", reason="bad_inputs")
            kwargs = dict(zip(names, flat))
        missing = sorted(set(names) - set(kwargs))
        extra = sorted(set(kwargs) - set(names))
        if missing or extra:
            raise ExportError(f"Endpoint '{signature.name}' takes inputs {names}; missing {missing}, unknown "
                              f"{extra}.", reason="bad_inputs")
        return kwargs

    def signature(self, name: str) -> sig.Signature:
        for s in self.signatures:
            if s.name == name:
                return s
        raise KeyError(f"No endpoint '{name}' in {self.path}; it has: {', '.join(self.endpoint_names)}.")

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self.endpoint_names:
            return lambda *args, **kwargs: self.call_endpoint(name, *args, **kwargs)
        raise AttributeError(f"{type(self).__name__} at {self.path!r} has no endpoint {name!r}; endpoints: "
                             f"{', '.join(self.endpoint_names)}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.path!r} endpoints={self.endpoint_names}>"


class LoadedSavedModel(LoadedArtifact):
    """A SavedModel; `module` is the object `tf.saved_model.load` returned.

    `loaded.<method>(...)` calls a saved method (e.g. `serve`, taking the
    model's own input structure and returning its output structure) when the
    SavedModel has one, else the signature of that name. Outputs are NumPy.
    """

    format = "tf_saved_model"

    def __init__(self, path: str):
        super().__init__(path)
        import tensorflow as tf

        from servekit.saved_model import read_signatures

        self.module = tf.saved_model.load(path)
        self._signatures = read_signatures(path)
        self._order = {}
        for name, fn in self.module.signatures.items():
            order = [t.name.split(":")[0] for t in fn.inputs if t.dtype != tf.resource]
            keys = set(fn.structured_input_signature[1])
            self._order[name] = [n for n in order if n in keys] if set(order) >= keys else sorted(keys)

    @property
    def signatures(self) -> list[sig.Signature]:
        result = []
        for s in self._signatures:
            order = self._order.get(s.name)
            if order:
                by_name = {t.name: t for t in s.inputs}
                s = sig.Signature(s.name, tuple(by_name[n] for n in order if n in by_name), s.outputs,
                                  s.method_name)
            result.append(s)
        return result

    @property
    def endpoint_names(self) -> list[str]:
        names = [s.name for s in self._signatures]
        return names

    def call_endpoint(self, name: str, *args, **kwargs) -> dict[str, np.ndarray]:
        import tensorflow as tf

        if name not in self.module.signatures:
            raise KeyError(f"No signature '{name}' in {self.path}; it has: {', '.join(self.endpoint_names)}.")
        signature = self.signature(name)
        inputs = self._named_inputs(signature, args, kwargs)
        out = self.module.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: out[k].numpy() for k in [t.name for t in signature.outputs] if k in out}

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("_") or name == "module":
            raise AttributeError(name)
        method = getattr(self.module, name, None)
        if method is not None and callable(method) and name not in ("signatures",):
            import tensorflow as tf

            def call(*args):
                return tf.nest.map_structure(_to_numpy, method(*args))

            call._servekit_owner = self  # keeps the loaded artifact alive as long as `call`
            return call
        return super().__getattr__(name)


class _ServingDefault(LoadedArtifact):
    """An artifact with one endpoint, `serving_default` (ONNX, OpenVINO, LiteRT).

    `loaded.serve(...)` runs it too and returns a single array when the model
    has one output, else a dict by output name.
    """

    _signature: sig.Signature

    @property
    def signatures(self) -> list[sig.Signature]:
        return [self._signature]

    def call_endpoint(self, name: str, *args, **kwargs) -> dict[str, np.ndarray]:
        if name != "serving_default":
            raise KeyError(f"{self.path} ({self.format}) has one endpoint, 'serving_default'; got '{name}'.")
        return self._run(self._named_inputs(self._signature, args, kwargs))

    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getattr__(self, name: str) -> Callable:
        if name == "serve":
            def serve(*args, **kwargs):
                out = self.call_endpoint("serving_default", *args, **kwargs)
                return next(iter(out.values())) if len(out) == 1 else out

            return serve
        return super().__getattr__(name)


class LoadedOnnx(_ServingDefault):
    """An ONNX model in an onnxruntime session (`session`)."""

    format = "onnx"

    def __init__(self, path: str):
        super().__init__(path)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        except ort.capi.onnxruntime_pybind11_state.InvalidProtobuf:
            raise ValueError(f"'{path}' is not an ONNX model (onnxruntime cannot parse it), nor a SavedModel "
                             f"directory, an OpenVINO IR (.xml) or a LiteRT flatbuffer (.tflite).") from None
        self._runner = onnxruntime_io.SessionRunner(self.session)
        self._signature = sig.Signature(
            "serving_default",
            tuple(_ort_tensor(v) for v in self.session.get_inputs()),
            tuple(_ort_tensor(v) for v in self.session.get_outputs()))

    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        feeds = {}
        for k, v in inputs.items():
            v = np.asarray(v)
            feeds[k] = np.array(v.astype(str), dtype=object) if v.dtype.kind in "SO" else v
        names = [t.name for t in self._signature.outputs]
        return dict(zip(names, self._runner.run(names, feeds)))


class LoadedOpenVino(_ServingDefault):
    """An OpenVINO IR compiled on CPU (`compiled`), at the inference precision the IR
    declares (servekit records it; float32 otherwise), as servekit verified it."""

    format = "openvino"

    def __init__(self, path: str):
        super().__init__(path)
        from servekit.formats import openvino

        self.precision = openvino.declared_precision(path)
        ir, self._infer = openvino.infer_function(path, self.precision)
        self.compiled = ir.compiled
        self._signature = sig.Signature(
            "serving_default", tuple(_ov_tensor(n, p) for n, p in zip(ir.input_names, self.compiled.inputs)),
            tuple(_ov_tensor(n, p) for n, p in zip(ir.output_names, self.compiled.outputs)))

    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        return self._infer(inputs)


class LoadedLiteRt(_ServingDefault):
    """A LiteRT flatbuffer's `serving_default` in `ai_edge_litert`'s interpreter (`runner`)."""

    format = "litert"

    def __init__(self, path: str):
        super().__init__(path)
        from servekit.formats import litert

        self.runner, self._infer = litert.infer_function(path)
        inputs, outputs = self.runner.get_input_details(), self.runner.get_output_details()
        self._signature = sig.Signature("serving_default", tuple(_litert_tensor(k, d) for k, d in inputs.items()),
                                        tuple(_litert_tensor(k, d) for k, d in outputs.items()))

    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        out = self._infer(inputs)
        return {t.name: out[t.name] for t in self._signature.outputs}


_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16", "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool", "tensor(string)": "string",
}


def _ort_tensor(value) -> sig.TensorSignature:
    dims = tuple(d if isinstance(d, int) else (d or None) for d in (value.shape or []))
    return sig.TensorSignature(value.name, _ORT_DTYPES.get(value.type, "float32"), dims)


def _ov_tensor(name: str, port) -> sig.TensorSignature:
    dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return sig.TensorSignature(name, _OV_DTYPES.get(str(port.get_element_type()), "float32"), dims)


_OV_DTYPES = {
    "f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16", "i8": "int8", "i16": "int16",
    "i32": "int32", "i64": "int64", "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "boolean": "bool", "string": "string",
}


def _litert_tensor(name: str, details: Mapping[str, Any]) -> sig.TensorSignature:
    dims = tuple(int(d) if d >= 0 else None for d in details.get("shape_signature", details["shape"]))
    return sig.TensorSignature(name, np.dtype(details["dtype"]).name, dims)


# The flatbuffer file identifier of a LiteRT (TFLite) model, at bytes 4-8.
_TFLITE_IDENTIFIER = b"TFL3"


def load(path) -> LoadedArtifact:
    """Loads a SavedModel, ONNX model, OpenVINO IR or LiteRT model for inference.

    Args:
        path: `str` or `pathlib.Path`: a SavedModel directory, an `.onnx` file
            (or the directory of one with external data), an OpenVINO `.xml`
            (its `.bin` beside it) or a `.tflite` file.

    Returns:
        A `LoadedSavedModel` (methods and signatures of the SavedModel), a
        `LoadedOnnx` (onnxruntime), a `LoadedOpenVino` (OpenVINO's CPU plugin,
        at the precision the IR declares) or a `LoadedLiteRt`
        (`ai_edge_litert`). Each has `call_endpoint(name, ...)`, `signatures`
        and an attribute per endpoint; the returned object and the callables
        it hands out keep the artifact alive.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: `path` is none of those formats (a PyTorch `.pt2` says how
            to load it with torch).

    Example:

    ```python
    loaded = servekit.load("out/model")
    y = loaded.serve(x)                                  # like model(x)
    outs = loaded.call_endpoint("serving_default", features=x)  # by name
    ```
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No artifact at '{path}'.")
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "model.onnx")):
        return LoadedOnnx(os.path.join(path, "model.onnx"))  # an ONNX model with external data
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"'{path}' is a directory without saved_model.pb: not a SavedModel.")
        return LoadedSavedModel(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(f"'{path}' is empty.")
    if path.endswith(".xml"):
        return LoadedOpenVino(path)
    if head[4:8] == _TFLITE_IDENTIFIER:
        return LoadedLiteRt(path)
    if head.startswith(b"PK\x03\x04"):  # a zip archive: what torch writes
        raise ValueError(f"'{path}' is a zip archive, as a PyTorch .pt2 is: load a torch ExportedProgram with "
                         "torch.export.load(path).module(), an AOTInductor package with "
                         "torch._inductor.aoti_load_package(path).")
    return LoadedOnnx(path)
