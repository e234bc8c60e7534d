"""Building and writing SavedModels (the TensorFlow side of every export).

This module imports TensorFlow. It runs in the export worker (a fresh
TensorFlow-backend process, see `servekit.worker`) and, on the
TensorFlow backend, in-process for `ExportArchive` and `tf.Module` exports.

Every endpoint becomes:

- a method on the saved root object, taking the same (possibly nested)
  arguments as the exported function and returning what it returns (so
  `loaded.serve(x)` behaves like `model(x)`), and
- a signature (`loaded.signatures[name]`) taking flat, named tensors and
  returning a dict of named tensors. The first endpoint is also the
  `serving_default` signature unless an endpoint of that name exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from servekit import determinism
from servekit import patching
from servekit import signature as sig
from servekit.errors import ExportError
from servekit.source_model.input_layout import InputLayout, layout_from_signature
from servekit.source_model.names import endpoint_output_names

import keras
import tensorflow as tf

SERVING_DEFAULT = "serving_default"


def tf_dtype(dtype: str) -> tf.DType:
    return tf.string if dtype == "string" else tf.as_dtype(dtype)


def arg_specs(layout: InputLayout) -> list[Any]:
    """The structured `tf.TensorSpec`s of an endpoint's positional arguments."""
    specs = [tf.TensorSpec(s.shape, tf_dtype(s.dtype), name=s.name) for s in layout.flat]
    return layout.pack(specs)


def flat_specs(layout: InputLayout) -> list[tf.TensorSpec]:
    return [tf.TensorSpec(s.shape, tf_dtype(s.dtype), name=s.name) for s in layout.flat]


def is_tf_function(fn) -> bool:
    return isinstance(fn, tf.types.experimental.GenericFunction)


@dataclasses.dataclass
class Endpoint:
    """One endpoint to write.

    Args:
        name: endpoint (method and signature) name.
        fn: a Python callable taking the positional arguments described by
            `layout`, or a `tf.function` (then `layout` may be None and the
            function must have been traced).
        layout: the inputs; None for an already traced `tf.function`.
        output_names: names of the flat outputs; None to name them like
            `tf.saved_model.save` (dict keys, or `output_0`, `output_1`, ...).
    """

    name: str
    fn: Callable
    layout: Optional[InputLayout] = None
    output_names: Optional[Sequence[str]] = None


@dataclasses.dataclass
class BuiltModule:
    root: Any
    signatures: dict[str, Any]
    endpoints: list[sig.Signature]
    layouts: dict[str, InputLayout]
    methods: dict[str, Any]


class _LayerRecorder:
    """Records every Keras layer called while tracing (to find lookup tables)."""

    def __init__(self):
        self.layers: dict[int, Any] = {}

    @contextlib.contextmanager
    def recording(self):
        try:
            from keras.src.layers.layer import Layer
        except ImportError:  # no keras: nothing to record
            yield
            return
        original = Layer.__call__
        recorder = self

        def __call__(layer, *args, **kwargs):
            recorder.layers.setdefault(id(layer), layer)
            return original(layer, *args, **kwargs)

        with patching.replaced(Layer, __call__=__call__):
            yield


@contextlib.contextmanager
def _tracing(recorder: _LayerRecorder) -> Iterator[None]:
    """What every endpoint trace runs under: the layers recorded, channels-first
    kernels written channels-last, layers that assume sizes known while
    tracing written for unknown ones (`servekit.source_model.graph_mode`)."""
    from servekit.source_model import graph_mode

    with recorder.recording(), _channels_last_kernels(), graph_mode.unknown_sizes_traced():
        yield


# Keras's TensorFlow convolutions, each with `inputs` and `data_format` arguments.
_CONVOLUTIONS = ("conv", "depthwise_conv", "separable_conv", "conv_transpose")


@contextlib.contextmanager
def _channels_last_kernels() -> Iterator[None]:
    """While tracing, a channels-first convolution is a channels-last one between
    two transposes, and a channels-first bias add a broadcast add.

    Keras traces `Conv2D(data_format="channels_first")` (and 1-D, 3-D,
    depthwise, separable, transposed) as TensorFlow's NCHW convolution, whose
    CPU kernels exist only with oneDNN: the export worker and the Bazel action
    turn oneDNN off (the same kernels on every machine), and a serving binary
    may not have it either. Such a SavedModel failed with "The Conv2D op
    currently only supports the NHWC tensor format on the CPU", and a torch
    model (whose users often work channels-first) had no other road to one.
    The transposes cost little next to the convolution, and the converters
    fold them (tf2onnx, OpenVINO) or fuse them (LiteRT). Keras adds the bias of
    a channels-first layer with an NCHW `BiasAdd`, which the TFLite converter
    mis-lowers for 3-D tensors ("'tf.Transpose' op x should be of the same
    rank with y"): here it is an `Add` of the bias shaped to broadcast over
    the channels, the same sums.
    """
    import inspect

    from keras.src import backend
    from keras.src.backend.tensorflow import nn
    from keras.src.backend.tensorflow import numpy as tf_numpy

    originals = {name: getattr(nn, name) for name in _CONVOLUTIONS}
    original_add = tf_numpy.add

    def channels_last(original):
        signature = inspect.signature(original)

        def convolution(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if backend.standardize_data_format(bound.arguments["data_format"]) != "channels_first":
                return original(*args, **kwargs)
            x = tf.convert_to_tensor(bound.arguments["inputs"])
            rank = len(x.shape)
            bound.arguments["inputs"] = tf.transpose(x, [0, *range(2, rank), 1])
            bound.arguments["data_format"] = "channels_last"
            return tf.transpose(original(*bound.args, **bound.kwargs), [0, rank - 1, *range(1, rank - 1)])

        return convolution

    def add(x1, x2):
        # Keras's TensorFlow `add` takes an `x2` that squeezes to x1's dim 1 (and not its
        # last) for a channels-first bias: the broadcast it means, without NCHW.
        if isinstance(x1, (int, float)) or isinstance(x2, (int, float)):
            return original_add(x1, x2)
        x1, x2 = backend.convert_to_tensor(x1), backend.convert_to_tensor(x2)
        channels = [d for d in x2.shape.as_list() if d is None or d > 1]
        shape = x1.shape.as_list()
        if not (len(channels) == 1 and channels[0] is not None and len(shape) > 2
                and shape[1] == channels[0] != shape[-1]):
            return original_add(x1, x2)
        dtype = backend.result_type(x1.dtype, x2.dtype)
        bias = tf.reshape(backend.convert_to_tensor(x2, dtype), [1, channels[0]] + [1] * (len(shape) - 2))
        return tf.add(backend.convert_to_tensor(x1, dtype), bias)

    with patching.replaced(nn, **{name: channels_last(original) for name, original in originals.items()}), \
            patching.replaced(tf_numpy, add=add):
        yield


def _relaxed_batch(spec):
    if isinstance(spec, tf.TensorSpec) and spec.shape.rank:
        shape = [None] + spec.shape.as_list()[1:]
        return tf.TensorSpec(shape, spec.dtype, name=spec.name)
    return spec


def _traced_concrete(fn, name: str):
    """The concrete function of a traced `tf.function`, batch dim relaxed."""
    concretes = fn._list_all_concrete_functions()
    if not concretes:
        raise ExportError(
            f"Endpoint '{name}': the tf.function {getattr(fn, '__name__', fn)!r} has never been called, so its "
            "input shapes are unknown. Call it once, or pass input_signature=[keras.InputSpec(...)] to "
            "add_endpoint().", reason="bad_signature")
    first = concretes[0]
    args, kwargs = first.structured_input_signature
    if kwargs:
        raise ExportError(f"Endpoint '{name}': keyword arguments ({sorted(kwargs)}) are not supported in "
                          "endpoint functions; make them positional.", reason="bad_signature")
    relaxed = tf.nest.map_structure(_relaxed_batch, args)
    try:
        return fn.get_concrete_function(*relaxed), relaxed
    except (TypeError, ValueError, tf.errors.OpError):  # the trace needs its static batch: keep it
        return first, args


def _collect_resources(layers: Sequence[Any]) -> list[Any]:
    """Lookup tables (TrackableResources) held by Keras layers."""
    from tensorflow.saved_model.experimental import TrackableResource

    found: dict[int, Any] = {}
    todo = list(layers)
    visited = set()
    while todo:
        layer = todo.pop()
        if id(layer) in visited:
            continue
        visited.add(id(layer))
        if isinstance(layer, TrackableResource):
            found.setdefault(id(layer), layer)
            continue
        try:
            sublayers = list(layer._flatten_layers(include_self=False, recursive=True))
        except AttributeError:  # a TF trackable, not a layer
            sublayers = []
        todo.extend(sublayers)
        for value in list(vars(layer).values()):
            if isinstance(value, TrackableResource):
                found.setdefault(id(value), value)
    return list(found.values())


def _output_signatures(concrete, names: Sequence[str], batch_dynamic: bool,
                       output_dims=None) -> tuple[sig.TensorSignature, ...]:
    """The traced outputs' signatures, dynamic dims named (`output_dims`:
    the layout's, see `source_model.dims.name_output_dims`)."""
    from servekit.source_model.dims import name_output_dims

    outputs = concrete.structured_outputs
    result = []
    for name in names:
        t = outputs[name]
        dims = [None if d is None else int(d) for d in (t.shape.as_list() if t.shape.rank is not None else [])]
        dtype = "string" if t.dtype == tf.string else t.dtype.name
        result.append(sig.TensorSignature(name, dtype, tuple(dims)))
    return name_output_dims(result, output_dims, batch_dynamic)


def build_module(
    endpoints: Sequence[Endpoint],
    tracked: Sequence[Any] = (),
    variable_collections: Optional[dict[str, Sequence[Any]]] = None,
    output_dtypes: Optional[Mapping[str, Mapping[str, str]]] = None,
) -> BuiltModule:
    """Traces the endpoints and assembles the trackable root to save.

    Args:
        endpoints: the endpoints, in registration order.
        tracked: Keras layers/models and TF trackables to keep on the root
            (`variables`, `trainable_variables`, `non_trainable_variables`
            list their variables; their lookup tables are saved).
        variable_collections: name -> list of variables, saved as attributes.
        output_dtypes: endpoint name -> output name -> dtype, for a trace
            that computes in float32 what the model computes in float16 or
            bfloat16 (`servekit.source_model.precision`): its floating
            outputs are cast to the dtypes the model's own trace gave them.

    Returns:
        A `BuiltModule`.
    """
    if not endpoints:
        raise ExportError("No endpoints to export: call add_endpoint() first.", reason="no_endpoint")
    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = []
    root.trainable_variables = []
    root.non_trainable_variables = []
    recorder = _LayerRecorder()
    signatures: dict[str, Any] = {}
    endpoint_sigs: list[sig.Signature] = []
    layouts: dict[str, InputLayout] = {}
    methods: dict[str, Any] = {}
    concretes = []

    for ep in endpoints:
        if ep.layout is None:
            if not is_tf_function(ep.fn):
                raise ExportError(
                    f"Endpoint '{ep.name}': {getattr(ep.fn, '__name__', ep.fn)!r} is not a tf.function, so it needs "
                    "an input_signature, e.g. add_endpoint(name, fn, input_signature=[keras.InputSpec(shape=(None, "
                    "3), dtype='float32')]).", reason="bad_signature")
            with _tracing(recorder):
                method_concrete, arg_sig = _traced_concrete(ep.fn, ep.name)
            layout = layout_from_signature(list(arg_sig), arg_names=_arg_names(ep.fn),
                                           where=f"endpoint '{ep.name}'")
            method = ep.fn
            concretes.append(method_concrete)
            names_box: dict[str, Any] = {}
            sig_fn = tf.function(_signature_wrapper(method, layout, ep.output_names, names_box,
                                                    (output_dtypes or {}).get(ep.name)),
                                 input_signature=flat_specs(layout), autograph=False)
            with _tracing(recorder):
                concrete = sig_fn.get_concrete_function()
        else:
            # The signature function traces the user's function once, inline
            # (so converters see one graph); the method calls it and gives the
            # outputs back their original structure.
            layout = ep.layout
            names_box = {}
            sig_fn = tf.function(_signature_wrapper(ep.fn, layout, ep.output_names, names_box,
                                                    (output_dtypes or {}).get(ep.name)),
                                 input_signature=flat_specs(layout), autograph=False)
            with _tracing(recorder):
                concrete = sig_fn.get_concrete_function()
            method = tf.function(_restructurer(sig_fn, layout, names_box), input_signature=arg_specs(layout),
                                 autograph=False)
            concretes.append(method.get_concrete_function())
        layouts[ep.name] = layout
        methods[ep.name] = method
        concretes.append(concrete)
        setattr(root, ep.name, method)
        signatures[ep.name] = concrete
        batch_dynamic = any(s.dims and s.dims[0] == sig.BATCH_DIM for s in layout.flat)
        endpoint_sigs.append(sig.Signature(
            name=ep.name, inputs=layout.tensor_signatures(),
            outputs=_output_signatures(concrete, names_box["names"], batch_dynamic, layout.output_dims)))

    if SERVING_DEFAULT not in signatures:
        first = endpoint_sigs[0]
        signatures[SERVING_DEFAULT] = signatures[first.name]
        endpoint_sigs.insert(0, dataclasses.replace(first, name=SERVING_DEFAULT))
        layouts[SERVING_DEFAULT] = layouts[first.name]
    else:
        endpoint_sigs.sort(key=lambda s: s.name != SERVING_DEFAULT)

    # Variables used by the endpoints (like Keras' ExportArchive), in a
    # deterministic order: the order of captures follows object ids.
    used, seen = [], set()
    for c in concretes:
        for v in list(c.trainable_variables) + list(c.variables):
            if id(v) not in seen:
                seen.add(id(v))
                used.append(v)
    root._all_variables = _stable_variable_order(used, tracked)

    keras_layers = []
    for resource in tracked:
        if hasattr(resource, "trainable_variables") and hasattr(resource, "_flatten_layers"):
            root.variables += tf_variables(resource.variables)
            root.trainable_variables += tf_variables(resource.trainable_variables)
            root.non_trainable_variables += tf_variables(resource.non_trainable_variables)
            keras_layers.append(resource)
        else:
            keras_layers.append(resource)
    resources = _collect_resources(keras_layers + list(recorder.layers.values()))
    root._misc_assets = resources
    for name, variables in (variable_collections or {}).items():
        setattr(root, name, tf_variables(variables))
    return BuiltModule(root, signatures, endpoint_sigs, layouts, methods)


def _restructurer(sig_fn, layout: InputLayout, box: dict):
    """A function of the original arguments calling the signature function
    and packing its named outputs into the original output structure."""

    def method(*args):
        out = sig_fn(*layout.flatten(list(args)))
        return tf.nest.pack_sequence_as(box["structure"], [out[n] for n in box["names"]])

    if layout.arg_names:  # the reloaded method takes the same keywords as the source function
        import inspect

        method.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in layout.arg_names])
    return method


def _signature_wrapper(method, layout: InputLayout, output_names, box: dict,
                       output_dtypes: Optional[Mapping[str, str]] = None):
    """A function of flat named tensors returning a dict of named outputs
    (floating ones cast to `output_dtypes[name]` where given)."""

    def signature_wrapper(*flat):
        out = method(*layout.pack(list(flat)))
        box["structure"] = out
        leaves = tf.nest.flatten(out)
        if output_names is not None and len(output_names) != len(leaves):
            raise ExportError(f"Endpoint returned {len(leaves)} outputs; expected {len(output_names)} "
                              f"({list(output_names)}).", reason="bad_outputs")
        names = endpoint_output_names(out, output_names)
        box["names"] = names
        if output_dtypes:
            leaves = [_cast_floating(leaf, output_dtypes.get(name)) for name, leaf in zip(names, leaves)]
        return dict(zip(names, leaves))

    return signature_wrapper


def _cast_floating(tensor, dtype: Optional[str]):
    """`tensor` cast to `dtype` when both are floating and differ."""
    if dtype is None or not tensor.dtype.is_floating or tensor.dtype.name == dtype:
        return tensor
    target = tf.as_dtype(dtype)
    return tf.cast(tensor, target) if target.is_floating else tensor


def _variable_handle_id(v):
    try:
        return id(v.handle)
    except (AttributeError, ValueError):  # no resource handle
        return id(v)


def tf_variables(variables) -> list:
    """The `tf.Variable`s behind Keras variables.

    A Keras variable on the TensorFlow backend is a checkpoint object of its
    own that saves its `tf.Variable`'s value: a SavedModel tracking both (as
    Keras's own export does, through `variables` and the endpoints' captures)
    stores every weight twice.
    """
    backing = []
    for v in variables:
        value = v.value if isinstance(v, keras.Variable) else None
        backing.append(value if isinstance(value, tf.Variable) else v)
    return backing


def _stable_variable_order(variables, tracked) -> list:
    """Orders variables as the tracked layers list them, then by name/shape."""
    rank: dict[int, int] = {}
    for resource in tracked:
        for v in list(getattr(resource, "variables", []) or []):
            for key in (id(v), _variable_handle_id(v), id(getattr(v, "value", None))):
                rank.setdefault(key, len(rank))
            inner = getattr(v, "_value", None)
            if inner is not None:
                rank.setdefault(id(inner), len(rank))

    def key(iv):
        i, v = iv
        r = rank.get(id(v), rank.get(_variable_handle_id(v)))
        name = getattr(v, "name", "") or ""
        shape = str(getattr(v, "shape", ""))
        return (0 if r is not None else 1, r if r is not None else 0, name, shape, i)

    return [v for _, v in sorted(enumerate(variables), key=key)]


def _arg_names(fn) -> Optional[list[str]]:
    try:
        return list(fn.function_spec.fullargspec.args)
    except AttributeError:  # not a tf.function with a function_spec
        try:
            import inspect

            return [p for p in inspect.signature(fn.python_function).parameters]
        except (AttributeError, TypeError, ValueError):  # no inspectable signature
            return None


def save(built: BuiltModule, path: str, options=None) -> None:
    """Writes the SavedModel and makes its bytes canonical."""
    from servekit.source_model import graph_mode

    # Saving traces the Keras model's own call too: under the same rewrites as its endpoints.
    with graph_mode.unknown_sizes_traced():
        tf.saved_model.save(built.root, path, signatures=built.signatures, options=options)
    determinism.canonicalize_saved_model(path, built.endpoints)


def save_module(module, path: str, signatures=None, options=None) -> list[sig.Signature]:
    """Saves a plain `tf.Module` with `tf.saved_model.save` signature rules,
    canonicalizes it and returns its signatures (read back from disk)."""
    tf.saved_model.save(module, path, signatures=signatures, options=options)
    determinism.canonicalize_saved_model(path)
    return read_signatures(path)


def read_signatures(path: str) -> list[sig.Signature]:
    """Reads the signature defs of a SavedModel without loading it."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    meta = saved_model.meta_graphs[0]
    result = []
    for key in sorted(meta.signature_def, key=lambda k: (k != SERVING_DEFAULT, k)):
        if key.startswith("__"):  # __saved_model_init_op
            continue
        sdef = meta.signature_def[key]

        def tensors(m, batch_dynamic):
            out = []
            for name in m:
                info = m[name]
                dtype = tf.as_dtype(info.dtype)
                dims = []
                if not info.tensor_shape.unknown_rank:
                    for i, d in enumerate(info.tensor_shape.dim):
                        # servekit writes dim names into the signature (`determinism`); older ones have none.
                        unnamed = sig.BATCH_DIM if (i == 0 and batch_dynamic) else None
                        dims.append((d.name or unnamed) if d.size < 0 else int(d.size))
                out.append(sig.TensorSignature(name, "string" if dtype == tf.string else dtype.name, tuple(dims)))
            return tuple(out)

        ins = [sdef.inputs[k] for k in sdef.inputs]
        batch_dynamic = any(i.tensor_shape.dim and i.tensor_shape.dim[0].size < 0 for i in ins)
        result.append(sig.Signature(name=key, inputs=tensors(sdef.inputs, batch_dynamic),
                                    outputs=tensors(sdef.outputs, batch_dynamic),
                                    method_name=sdef.method_name or "tensorflow/serving/predict"))
    return result


def to_feed(values: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {k: tf.constant(v) for k, v in values.items()}
