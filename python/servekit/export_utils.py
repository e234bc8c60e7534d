"""Input signatures, tensor names, generated inputs and reference outputs.

Everything here runs in the *source* process, on whatever Keras backend it
uses, and never imports TensorFlow unless the backend is TensorFlow: an
`InputLayout` describes the endpoint's inputs as a flat list of named
`FlatSpec`s plus the structure of the positional arguments, which is all the
TensorFlow-side exporter needs to rebuild the call.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from servekit import signature as sig
from servekit.errors import ExportError

# Name of the single positional argument when nothing better is known.
_AUTO_TENSOR_NAME = re.compile(r"^keras_tensor(_\d+)?$")
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")

# Sizes used for generated verification inputs.
VERIFY_BATCH_SIZES = (1, 7)
_DYNAMIC_DIM_SIZE = 4
_OOV_TOKEN = "[servekit-oov]"


def backend_name() -> str:
    """Returns the name of the Keras backend of this process."""
    import keras

    return keras.backend.backend()


def sanitize_name(name: str) -> str:
    """Makes `name` usable as a SavedModel signature key and ONNX tensor name."""
    name = _INVALID_NAME_CHARS.sub("_", str(name))
    if not name or not (name[0].isalnum() or name[0] == "."):
        name = "t" + name if name else "t"
    return name


def unique_names(names: Iterable[str]) -> list[str]:
    """Sanitizes names and makes them unique with `_1`, `_2`, ... suffixes."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        name = sanitize_name(name)
        candidate = name
        while candidate in seen:
            seen[name] += 1
            candidate = f"{name}_{seen[name]}"
        seen.setdefault(candidate, 0)
        result.append(candidate)
    return result


@dataclasses.dataclass(frozen=True)
class FlatSpec:
    """One input tensor of an endpoint.

    Args:
        name: signature key / ONNX input name.
        dtype: a Keras dtype string ("float32", "int64", "string", ...).
        shape: static sizes, `None` for dynamic dimensions.
        dims: the manifest `Dim` of each dimension: "batch" for a dynamic
            leading dimension, a symbol name or None for other dynamic ones.
    """

    name: str
    dtype: str
    shape: tuple
    dims: tuple

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "dims": list(self.dims)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FlatSpec":
        return cls(data["name"], data["dtype"], tuple(data["shape"]), tuple(data["dims"]))

    def tensor_signature(self) -> sig.TensorSignature:
        return sig.TensorSignature(self.name, manifest_dtype(self.dtype), self.dims)


def manifest_dtype(dtype: str) -> str:
    dtype = str(dtype)
    return "string" if dtype in ("string", "str", "object", "bytes") else dtype


@dataclasses.dataclass
class InputLayout:
    """The inputs of one endpoint: flat named specs and the argument structure.

    `args` is a list with one entry per positional argument of the endpoint
    function; each entry is a nested structure (dict/list/tuple) whose leaves
    are indices into `flat`.
    """

    flat: list[FlatSpec]
    args: list[Any]
    arg_names: Optional[list[str]] = None  # the endpoint's parameter names, when known

    def pack(self, flat_values: Sequence[Any]) -> list[Any]:
        """Rebuilds the positional arguments from flat values."""
        return [_map_leaves(lambda i: flat_values[i], a) for a in self.args]

    def flatten(self, structured_args: Sequence[Any]) -> list[Any]:
        """Flattens positional arguments (same structure as `args`) to flat values."""
        values: list[Any] = [None] * len(self.flat)

        def visit(template, value):
            if isinstance(template, dict):
                if not isinstance(value, dict):
                    raise ExportError(f"Expected a dict with keys {sorted(template)}, got {type(value).__name__}.",
                                      reason="bad_inputs")
                for k, t in template.items():
                    if k not in value:
                        raise ExportError(f"Input '{k}' is missing; expected keys {sorted(template)}.",
                                          reason="bad_inputs")
                    visit(t, value[k])
            elif isinstance(template, (list, tuple)):
                if not isinstance(value, (list, tuple)) or len(value) != len(template):
                    raise ExportError(f"Expected a list of {len(template)} inputs.", reason="bad_inputs")
                for t, v in zip(template, value):
                    visit(t, v)
            else:
                values[template] = value

        if len(structured_args) != len(self.args):
            raise ExportError(f"Expected {len(self.args)} positional input(s), got {len(structured_args)}.",
                              reason="bad_inputs")
        for t, v in zip(self.args, structured_args):
            visit(t, v)
        return values

    def coerce(self, inputs: Any) -> list[np.ndarray]:
        """Accepts inputs as a dict keyed by flat input name, a flat list,
        the positional-args list, or a single array; returns flat arrays."""
        names = [s.name for s in self.flat]
        if isinstance(inputs, dict) and set(inputs) == set(names):
            return [np.asarray(inputs[n]) for n in names]
        if not isinstance(inputs, (list, tuple)) or (len(self.args) == 1 and not isinstance(self.args[0], int)):
            inputs = [inputs]
        if len(inputs) == len(self.args):
            try:
                return [np.asarray(v) for v in self.flatten(list(inputs))]
            except ExportError:
                if len(inputs) != len(self.flat):
                    raise
        if len(inputs) == len(self.flat):
            return [np.asarray(v) for v in inputs]
        raise ExportError(f"Cannot match the given inputs to the inputs {names}.", reason="bad_inputs")

    def to_json(self) -> dict[str, Any]:
        return {"flat": [s.to_json() for s in self.flat], "args": to_json_struct(self.args),
                "arg_names": self.arg_names}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "InputLayout":
        return cls([FlatSpec.from_json(s) for s in data["flat"]], from_json_struct(data["args"]),
                   data.get("arg_names"))

    def tensor_signatures(self) -> tuple[sig.TensorSignature, ...]:
        return tuple(s.tensor_signature() for s in self.flat)


def all_layers(model) -> list[Any]:
    """`model` and every layer nested in it (just `[model]` for a non-Keras object)."""
    try:
        return list(model._flatten_layers(include_self=True, recursive=True))
    except AttributeError:  # not a Keras layer
        return [model]


def _map_leaves(fn, struct):
    if isinstance(struct, dict):
        return {k: _map_leaves(fn, v) for k, v in struct.items()}
    if isinstance(struct, list):
        return [_map_leaves(fn, v) for v in struct]
    if isinstance(struct, tuple):
        return tuple(_map_leaves(fn, v) for v in struct)
    return fn(struct)


def to_json_struct(struct):
    """A nest of dicts/lists/tuples as JSON that keeps tuples and key order."""
    if isinstance(struct, dict):
        return {"dict": [[k, to_json_struct(v)] for k, v in struct.items()]}
    if isinstance(struct, tuple):
        return {"tuple": [to_json_struct(v) for v in struct]}
    if isinstance(struct, list):
        return {"list": [to_json_struct(v) for v in struct]}
    return struct


def from_json_struct(data):
    """The inverse of `to_json_struct`."""
    if isinstance(data, dict):
        if "dict" in data:
            return {k: from_json_struct(v) for k, v in data["dict"]}
        if "tuple" in data:
            return tuple(from_json_struct(v) for v in data["tuple"])
        return [from_json_struct(v) for v in data["list"]]
    if isinstance(data, list):  # plain list (older layouts)
        return [from_json_struct(v) for v in data]
    return data


# ----------------------------------------------------------------------------
# Input signatures
# ----------------------------------------------------------------------------


def _is_tf_tensor_spec(x) -> bool:
    return type(x).__name__ == "TensorSpec" and type(x).__module__.startswith("tensorflow")


def _is_leaf_spec(x) -> bool:
    import keras

    if isinstance(x, (keras.InputSpec, keras.KerasTensor, np.ndarray)) or _is_tf_tensor_spec(x):
        return True
    try:
        return bool(keras.ops.is_tensor(x))
    except (TypeError, ValueError, AttributeError):  # not a tensor of any backend
        return False


def _spec_fields(x, where: str) -> tuple[tuple, str, Optional[str]]:
    """(shape, dtype, name) of one leaf of an input signature."""
    import keras

    if isinstance(x, keras.InputSpec):
        if x.shape is None or x.dtype is None:
            raise ExportError(f"{where}: keras.InputSpec needs both `shape` and `dtype`; got {x}.",
                              reason="bad_signature")
        return tuple(x.shape), keras.backend.standardize_dtype(x.dtype), x.name
    if _is_tf_tensor_spec(x):
        if x.shape.rank is None:
            raise ExportError(f"{where}: tf.TensorSpec of unknown rank is not supported; give a shape.",
                              reason="bad_signature")
        return tuple(x.shape.as_list()), keras.backend.standardize_dtype(x.dtype.name), x.name
    if isinstance(x, keras.KerasTensor):
        name = x.name if x.name and not _AUTO_TENSOR_NAME.match(x.name) else None
        if name is None:
            hist = getattr(x, "_keras_history", None)
            op = getattr(hist, "operation", None) if hist else None
            if op is not None and type(op).__name__ == "InputLayer":
                name = op.name
        return (None,) + tuple(x.shape)[1:], keras.backend.standardize_dtype(x.dtype), name
    if isinstance(x, np.ndarray) or keras.ops.is_tensor(x):
        shape = tuple(int(d) for d in x.shape)
        dtype = "string" if isinstance(x, np.ndarray) and x.dtype.kind in "SUO" else keras.backend.standardize_dtype(x.dtype)
        return ((None,) + shape[1:]) if shape else shape, dtype, None
    from servekit.errors import ExportTypeError

    raise ExportTypeError(
        f"{where}: unsupported input signature element {x!r} of type {type(x).__name__} (Unsupported x={x} of "
        f"the type ({type(x)})). Use keras.InputSpec, tf.TensorSpec, a KerasTensor or a tensor.",
        reason="bad_signature",
    )


def layout_from_signature(
    input_signature: Sequence[Any],
    name_hints: Optional[Sequence[Optional[str]]] = None,
    arg_names: Optional[Sequence[str]] = None,
    where: str = "input_signature",
) -> InputLayout:
    """Builds an `InputLayout` from a Keras-style input signature.

    Args:
        input_signature: one structure per positional argument.
        name_hints: names to use, by flat position, for unnamed leaves.
        arg_names: the function's parameter names, used for unnamed leaves
            when there are no hints (like `tf.function` does).
        where: what to call the signature in error messages.
    """
    raw: list[tuple[tuple, str, Optional[str], tuple]] = []  # shape, dtype, name, path

    def visit(x, path):
        if isinstance(x, dict):
            return {k: visit(v, path + (str(k),)) for k, v in x.items()}
        if isinstance(x, (list, tuple)) and not _is_leaf_spec(x):
            seq = [visit(v, path + (i,)) for i, v in enumerate(x)]
            return tuple(seq) if isinstance(x, tuple) else seq
        shape, dtype, name = _spec_fields(x, where)
        raw.append((shape, dtype, name, path))
        return len(raw) - 1

    args = [visit(a, (j,)) for j, a in enumerate(input_signature)]
    names = []
    for i, (shape, dtype, name, path) in enumerate(raw):
        str_path = [p for p in path[1:] if isinstance(p, str)]
        if str_path:
            # Dict inputs are named by their keys (not by the Python parameter).
            candidate = "_".join(str_path)
        elif name:
            candidate = name
        elif name_hints is not None and i < len(name_hints) and name_hints[i]:
            candidate = name_hints[i]
        elif arg_names is not None and path[0] < len(arg_names):
            nested = [str(p) for p in path[1:]]
            candidate = "_".join([arg_names[path[0]]] + nested)
        else:
            candidate = "inputs" if len(raw) == 1 else f"input_{i}"
        names.append(candidate)
    names = unique_names(names)
    flat = []
    for (shape, dtype, _, _), name in zip(raw, names):
        flat.append(FlatSpec(name, dtype, tuple(shape), named_dims(name, shape)))
    keep_names = arg_names is not None and len(arg_names) >= len(args) and all(n.isidentifier() for n in arg_names)
    return InputLayout(flat, args, list(arg_names[:len(args)]) if keep_names else None)


def named_dims(name: str, shape: Sequence[Optional[int]]) -> tuple:
    """Manifest dims of an input: a dynamic leading dim is `batch`, any other
    dynamic dim `<input>_<axis>` (so ONNX shows every dynamic dim by name)."""
    return tuple(sig.BATCH_DIM if (d is None and i == 0) else (f"{name}_{i}" if d is None else int(d))
                 for i, d in enumerate(shape))


def model_input_names(model) -> list[Optional[str]]:
    """Names of a Functional/Sequential model's inputs, in flat order."""
    import keras

    inputs = getattr(model, "_inputs_struct", None)
    if inputs is None:
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
            return []
    if inputs is None:
        return []
    names = []
    for path, leaf in keras.tree.flatten_with_path(inputs):
        str_path = [p for p in path if isinstance(p, str)]
        if str_path:
            names.append("_".join(str_path))
        else:
            names.append(_spec_fields(leaf, "model input")[2])
    return names


def resolve_input_layout(model, input_signature=None, polymorphic_shapes=None) -> InputLayout:
    """The `InputLayout` of `model`'s forward pass.

    Args:
        model: a built Keras model.
        input_signature: optional; one structure per positional argument of
            `model.call` (Keras semantics). A flat list of N specs for a
            Functional model with N inputs is also accepted.
        polymorphic_shapes: optional jax2tf-style shape strings, one structure
            per positional argument; non-integer dimensions become dynamic.

    Returns:
        An `InputLayout`.

    Raises:
        ExportError: the model was never built/called and no signature given.
    """
    import keras

    model_name = getattr(model, "name", type(model).__name__)
    hints = model_input_names(model)
    if input_signature is None:
        if isinstance(model, keras.Sequential):
            if not model.built or not getattr(model, "inputs", None):
                raise ExportError(
                    f"Model '{model_name}' has not been built, so its inputs are unknown (It must be built before "
                    "export). Start it with "
                    "keras.Input(shape=...), call it once, or pass input_signature=[keras.InputSpec(...)].",
                    model=model_name, reason="not_built")
            input_signature = list(model.inputs)
        elif _is_functional(model):
            input_signature = [model._inputs_struct]
        else:
            shapes = getattr(model, "_build_shapes_dict", None)
            if not shapes or not getattr(model, "built", False) or not getattr(model, "_called", True):
                raise ExportError(
                    f"Model '{model_name}' ({type(model).__name__}) has never been called, so its inputs are "
                    "unknown (It must be called at least once before export). Call it once on real data, or pass "
                    "input_signature=[keras.InputSpec(shape=..., dtype=...)].", model=model_name,
                    reason="not_built")
            dtype = getattr(model, "input_dtype", None) or "float32"
            input_signature = [_shape_struct_to_specs(v, dtype) for v in shapes.values()]
    else:
        if not isinstance(input_signature, (list, tuple)) or _is_leaf_spec(input_signature):
            input_signature = [input_signature]
        input_signature = list(input_signature)
        n_model_inputs = len(hints)
        if (_is_functional(model) and n_model_inputs > 1 and len(input_signature) == n_model_inputs
                and all(_is_leaf_spec(x) for x in input_signature)):
            input_signature = [input_signature]
    layout = layout_from_signature(input_signature, name_hints=hints, where=f"input_signature of '{model_name}'")
    layout.arg_names = _call_arg_names(model, len(layout.args))
    if polymorphic_shapes is not None:
        layout = apply_polymorphic_shapes(layout, polymorphic_shapes)
    return layout


def positional_names(fn) -> Optional[list[str]]:
    """The names of `fn`'s positional parameters, or None if unknown."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _call_arg_names(model, count: int) -> Optional[list[str]]:
    names = positional_names(model.call)
    if not names or len(names) < count or not all(n.isidentifier() for n in names[:count]):
        return None
    return names[:count]


def _is_functional(model) -> bool:
    import keras

    from keras.src.models.functional import Functional

    return isinstance(model, Functional) and not isinstance(model, keras.Sequential)


def _shape_struct_to_specs(structure, dtype):
    import keras

    if isinstance(structure, dict):
        return {k: _shape_struct_to_specs(v, dtype) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        if all(isinstance(d, (int, type(None))) for d in structure):
            return keras.InputSpec(shape=(None,) + tuple(structure)[1:], dtype=dtype)
        specs = [_shape_struct_to_specs(v, dtype) for v in structure]
        return tuple(specs) if isinstance(structure, tuple) else specs  # the call's own structure
    raise ExportError(f"Cannot infer an input signature from the recorded shape {structure!r}.",
                      reason="bad_signature")


def parse_polymorphic_shape(text: Optional[str], shape: tuple) -> tuple[tuple, tuple]:
    """Parses one jax2tf polymorphic shape string against a static shape.

    Returns `(shape, dims)`: integer tokens are static, `_` keeps the given
    dimension, `...` keeps the rest, anything else (a symbol or an expression)
    becomes a dynamic dimension named after it ("batch" for the first one).
    """
    if text is None:
        return tuple(shape), sig.dims_from_shape(shape)
    body = text.strip()
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    tokens = [t.strip() for t in body.split(",") if t.strip()]
    new_shape, dims = [], []
    for i, tok in enumerate(tokens):
        if tok == "...":
            for j in range(i, len(shape)):
                new_shape.append(shape[j])
                dims.append(sig.dims_from_shape(shape)[j])
            break
        if i >= len(shape):
            raise ExportError(f"polymorphic shape {text!r} has more dimensions than the input shape {shape}.",
                              reason="bad_signature")
        if tok == "_":
            new_shape.append(shape[i])
            dims.append(sig.dims_from_shape(shape)[i])
        elif re.fullmatch(r"\d+", tok):
            if shape[i] is not None and int(tok) != shape[i]:
                raise ExportError(f"polymorphic shape {text!r} says {tok} for dimension {i}, but the input "
                                  f"shape is {shape}.", reason="bad_signature")
            new_shape.append(int(tok))
            dims.append(int(tok))
        else:
            new_shape.append(None)
            dims.append(sig.BATCH_DIM if i == 0 else sanitize_name(tok))
    if len(new_shape) != len(shape):
        raise ExportError(f"polymorphic shape {text!r} has {len(new_shape)} dimensions; the input has "
                          f"{len(shape)}.", reason="bad_signature")
    return tuple(new_shape), tuple(dims)


def apply_polymorphic_shapes(layout: InputLayout, polymorphic_shapes) -> InputLayout:
    """Applies jax2tf `polymorphic_shapes` (one structure per argument)."""
    if isinstance(polymorphic_shapes, str) or polymorphic_shapes is None:
        polymorphic_shapes = [polymorphic_shapes]
    polymorphic_shapes = list(polymorphic_shapes)
    if len(polymorphic_shapes) != len(layout.args):
        if len(layout.args) == 1 and len(polymorphic_shapes) == len(layout.flat):
            polymorphic_shapes = [_map_leaves(lambda i: polymorphic_shapes[i], layout.args[0])]
        else:
            raise ExportError(f"polymorphic_shapes has {len(polymorphic_shapes)} entries; the endpoint takes "
                              f"{len(layout.args)} argument(s).", reason="bad_signature")
    flat = list(layout.flat)

    def visit(template, poly):
        if isinstance(template, dict):
            for k, t in template.items():
                visit(t, poly.get(k) if isinstance(poly, dict) else poly)
        elif isinstance(template, (list, tuple)):
            for j, t in enumerate(template):
                visit(t, poly[j] if isinstance(poly, (list, tuple)) else poly)
        else:
            spec = flat[template]
            shape, dims = parse_polymorphic_shape(poly, spec.shape)
            flat[template] = FlatSpec(spec.name, spec.dtype, shape, dims)

    for t, p in zip(layout.args, polymorphic_shapes):
        visit(t, p)
    return InputLayout(flat, layout.args, layout.arg_names)


# ----------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------


def output_leaf_names(structure) -> list[str]:
    """Names for the leaves of an output structure, in `keras.tree.flatten` order.

    Dict outputs are named by their keys (joined with "_" when nested), the
    outputs of a Functional model by the layer that produced them, anything
    else `output_0`, `output_1`, ... like `tf.saved_model.save`.
    """
    import keras

    flat = keras.tree.flatten_with_path(structure)
    raw = []
    for i, (path, leaf) in enumerate(flat):
        str_path = [str(p) for p in path if isinstance(p, str)]
        hist = getattr(leaf, "_keras_history", None)
        if str_path:
            raw.append("_".join(str(p) for p in path))
        elif hist is not None and getattr(hist, "operation", None) is not None:
            op = hist.operation
            name = op.name
            n_out = len(keras.tree.flatten(getattr(op, "output", [None]))) if hasattr(op, "_inbound_nodes") else 1
            if hist.tensor_index and n_out > 1:
                name = f"{name}_{hist.tensor_index}"
            raw.append(name)
        else:
            raw.append(f"output_{i}")
    return unique_names(raw)


def endpoint_output_names(structure, known: Optional[Sequence[str]] = None) -> list[str]:
    """Names of an endpoint's flat outputs, as its signature keys.

    `known` names (a model's output layers) when they match the number of
    outputs; else the keys of a dict, sorted like `tf.nest.flatten` sorts
    them; else `output_0`, `output_1`, ... like `tf.saved_model.save`.
    """
    import keras

    leaves = keras.tree.flatten(structure)
    if known is not None and len(known) == len(leaves):
        return list(known)
    if isinstance(structure, dict) and all(isinstance(k, str) for k in structure) and len(structure) == len(leaves):
        return unique_names(sorted(structure))
    return [f"output_{i}" for i in range(len(leaves))]


def model_output_structure(model, layout: InputLayout):
    """The symbolic output structure of `model` called on `layout`'s inputs."""
    import keras

    if _is_functional(model):
        return model._outputs_struct
    if isinstance(model, keras.Sequential) and getattr(model, "outputs", None):
        outs = model.outputs
        return outs[0] if len(outs) == 1 else outs
    args = layout.pack([keras.KerasTensor(s.shape, dtype=s.dtype, name=s.name) for s in layout.flat])
    return model.compute_output_spec(*args)


def model_output_names(model, layout: InputLayout) -> list[str]:
    """Output names of `model` (see `output_leaf_names`)."""
    return output_leaf_names(model_output_structure(model, layout))


def output_specs(model, layout: InputLayout, names: Sequence[str]) -> list[sig.TensorSignature]:
    """Output `TensorSignature`s of `model` called on `layout`'s inputs."""
    import keras

    structure = model_output_structure(model, layout)
    flat = keras.tree.flatten(structure)
    result = []
    batch_dynamic = any(s.dims and s.dims[0] == sig.BATCH_DIM for s in layout.flat)
    for name, leaf in zip(names, flat):
        shape = tuple(leaf.shape)
        dims = tuple(
            (sig.BATCH_DIM if (i == 0 and batch_dynamic) else None) if d is None else int(d)
            for i, d in enumerate(shape))
        result.append(sig.TensorSignature(name, manifest_dtype(keras.backend.standardize_dtype(leaf.dtype)), dims))
    return result


# ----------------------------------------------------------------------------
# Generated inputs and reference outputs
# ----------------------------------------------------------------------------


def _lookup_vocabularies(model) -> tuple[list[str], list[int], Optional[int]]:
    """String and integer tokens known to lookup layers, and the smallest
    Embedding input_dim of the model (to keep generated ids in range)."""
    strings: list[str] = []
    ints: list[int] = []
    min_dim = None
    layers = []
    try:
        layers = list(model._flatten_layers(include_self=True, recursive=True))
    except AttributeError:  # not a layer: no vocabularies to draw from
        pass
    for layer in layers:
        kind = type(layer).__name__
        if kind in ("StringLookup", "IntegerLookup", "TextVectorization"):
            try:
                vocab = list(layer.get_vocabulary())
            except (AttributeError, ValueError, RuntimeError):  # not adapted yet
                vocab = []
            for tok in vocab[:50]:
                if isinstance(tok, bytes):
                    tok = tok.decode("utf-8", "replace")
                if isinstance(tok, str) and tok not in ("", "[UNK]"):
                    strings.append(tok)
                elif isinstance(tok, (int, np.integer)) and kind == "IntegerLookup":
                    ints.append(int(tok))
        if kind == "Embedding":
            dim = int(getattr(layer, "input_dim", 0) or 0)
            if dim:
                min_dim = dim if min_dim is None else min(min_dim, dim)
    return strings, ints, min_dim


def embedding_input_ranges(model) -> dict[str, tuple[int, int]]:
    """Id ranges of the integer inputs that feed an `Embedding` directly.

    An input whose values index an `Embedding` (or a subclass, such as
    keras_hub's `ReversibleEmbedding`) must stay below its `input_dim`: token
    ids below the vocabulary size, segment ids below the number of segments.
    Inputs are followed into nested Functional models (a keras_hub backbone
    called on the outer model's inputs). Keyed by input name; an input that
    feeds several embeddings gets the smallest range.
    """
    import keras

    ranges: dict[str, tuple[int, int]] = {}
    if not _is_functional(model):
        return ranges
    roots = {id(t): t.name for t in keras.tree.flatten(model.inputs)}

    def visit(functional, names: dict[int, str], depth: int) -> None:
        if depth > 8:  # nesting deeper than any real model: stop rather than recurse forever
            return
        for operation in functional.operations:
            for node in getattr(operation, "_inbound_nodes", []):
                tensors = list(node.input_tensors)
                if isinstance(operation, keras.layers.Embedding) and tensors and id(tensors[0]) in names:
                    name = names[id(tensors[0])]
                    high = int(operation.input_dim)
                    ranges[name] = (0, min(high, ranges.get(name, (0, high))[1]))
                elif _is_functional(operation) and operation is not functional:
                    inner = keras.tree.flatten(operation.inputs)
                    mapped = {id(i): names[id(t)] for i, t in zip(inner, tensors) if id(t) in names}
                    if mapped:
                        visit(operation, mapped, depth + 1)

    visit(model, roots, 0)
    return ranges


# Integer or boolean inputs named like this are masks of valid positions
# (keras_hub's `padding_mask`, Hugging Face's `attention_mask`): verified with
# every position valid, as a zero can mask a whole row, whose outputs are then
# whatever each backend computes for nothing to attend to.
_MASK_NAME = re.compile(r"(^|_)mask$")


def mask_input_ranges(model) -> dict[str, tuple[int, int]]:
    """All-ones ranges, `(1, 2)`, for a Functional model's integer or
    boolean inputs named `mask` or `*_mask`."""
    import keras

    if not _is_functional(model):
        return {}
    return {t.name: (1, 2) for t in keras.tree.flatten(model.inputs)
            if _MASK_NAME.search(t.name or "") and str(t.dtype).startswith(("int", "uint", "bool"))}


def input_ranges_for(model, declared: Optional[dict] = None) -> dict[str, tuple[float, float]]:
    """The value range of each input that has one: `declared` (by input
    name, `(low, high)`, high exclusive) over those inferred from embeddings
    and mask names (`mask_input_ranges`).

    Raises:
        ExportError: a declared name is not an input of the model, or a range
            is not `(low, high)` with low < high.
    """
    ranges: dict[str, tuple[float, float]] = {}
    if model is not None:
        ranges.update(mask_input_ranges(model))
        ranges.update(embedding_input_ranges(model))
    for name, value in (declared or {}).items():
        try:
            low, high = value
            ok = low < high
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ExportError(f"input_ranges[{name!r}] = {value!r}: expected (low, high) with low < high, high "
                              "exclusive (e.g. (1, 2) for a padding mask of ones).", reason="bad_argument")
        ranges[name] = (low, high)
    return ranges


def generate_inputs(layout: InputLayout, batch: int, seed: int = 0, model=None,
                    ranges: Optional[dict] = None) -> list[np.ndarray]:
    """Deterministic inputs for verification, one array per flat input.

    Floats are standard normal, integers small non-negative ids (within the
    model's Embedding/IntegerLookup range), strings drawn from the model's
    StringLookup/TextVectorization vocabularies plus one out-of-vocabulary
    token, booleans random. An input with a range in `ranges` (by name,
    `(low, high)`, high exclusive; see `input_ranges_for`) draws uniformly
    from it: integers from `range(low, high)`, floats from `[low, high)`.
    """
    rng = np.random.default_rng(seed + 1000 * batch)
    strings, ints, min_dim = _lookup_vocabularies(model) if model is not None else ([], [], None)
    ranges = ranges or {}
    out = []
    for spec in layout.flat:
        shape = tuple(batch if (i == 0 and d is None) else (_DYNAMIC_DIM_SIZE if d is None else d)
                      for i, d in enumerate(spec.shape))
        dtype = spec.dtype
        if spec.name in ranges and dtype != "string":
            low, high = ranges[spec.name]
            if dtype.startswith(("int", "uint")) or dtype == "bool":
                values = rng.integers(int(low), int(high), size=shape)
            else:
                values = rng.uniform(low, high, size=shape)
            out.append(np.asarray(values).astype("float32" if dtype == "bfloat16" else dtype))
            continue
        if dtype == "string":
            pool = np.array((strings or ["a", "b", "c"]) + [_OOV_TOKEN], dtype=object)
            values = rng.choice(pool, size=shape) if shape else rng.choice(pool)
            out.append(np.asarray(values, dtype=object).astype(bytes))
        elif dtype == "bool":
            out.append(rng.integers(0, 2, size=shape).astype(bool))
        elif dtype.startswith(("int", "uint")):
            if ints:
                pool = np.array(ints + [max(ints) + 1000], dtype=np.int64)
                values = rng.choice(pool, size=shape)
            else:
                high = min(3, min_dim) if min_dim else 3
                values = rng.integers(0, high, size=shape)
            out.append(np.asarray(values).astype(dtype))
        else:
            np_dtype = "float32" if dtype == "bfloat16" else dtype
            out.append(rng.standard_normal(size=shape).astype(np_dtype))
    return out


def to_numpy(x) -> np.ndarray:
    """Converts a backend tensor (or TF tensor) to a NumPy array."""
    import keras

    if type(x).__module__.startswith("tensorflow"):
        return np.asarray(x.numpy())
    try:
        return np.asarray(keras.ops.convert_to_numpy(x))
    except (TypeError, ValueError, AttributeError):  # already host data
        return np.asarray(x)


def _call_functional_raw(model, flat_inputs):
    """Runs a Functional model layer by layer without converting its inputs to
    backend tensors (needed for string inputs on JAX and torch, where the
    preprocessing layers run TensorFlow ops on any backend). Nested Functional
    models are run the same way."""
    import keras

    def operation_fn(op):
        if _is_functional(op):
            def call_nested(*args, **kwargs):
                outs = op._run_through_graph(keras.tree.flatten(args[0]), operation_fn=operation_fn)
                return outs[0] if isinstance(outs, (list, tuple)) and len(outs) == 1 else outs

            return call_nested
        if isinstance(op, keras.layers.Layer):
            return functools.partial(op, training=False)
        return op

    outputs = model._run_through_graph(list(flat_inputs), operation_fn=operation_fn)
    return keras.tree.flatten(outputs)


def call_model_flat(model, layout: InputLayout, flat_inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Calls `model` in inference mode on flat inputs; returns flat NumPy outputs."""
    import keras

    backend = keras.backend.backend()
    has_strings = any(s.dtype == "string" for s in layout.flat)
    if has_strings and backend != "tensorflow" and _is_functional(model):
        import tensorflow as tf  # the lookup layers run TF ops on every backend

        flat = _call_functional_raw(model, [tf.constant(v) for v in flat_inputs])
        return [to_numpy(x) for x in flat]
    if has_strings and backend != "tensorflow":
        raise ExportError(
            f"Model '{model.name}' takes string inputs, which the {backend} backend cannot hold as tensors, "
            "and it is not a Functional model, so servekit cannot run it to compute reference outputs. "
            "Build it as a Functional model (keras.Input(dtype='string') -> StringLookup -> ...).",
            model=model.name, reason="unsupported_input")
    args = layout.pack(list(flat_inputs))
    outputs = model(*args, training=False)
    return [to_numpy(x) for x in keras.tree.flatten(outputs)]


def reference_outputs(model, inputs, input_signature=None) -> dict[str, np.ndarray]:
    """Runs `model` on its own (source) backend and names its outputs.

    Args:
        model: a Keras model.
        inputs: a dict keyed by input name, a flat list of arrays, or the
            structure `model` is called with.
        input_signature: optional, as for `servekit.export`.

    Returns:
        A dict from output name (the SavedModel signature key / ONNX output
        name `servekit.export` gives it) to a NumPy array.

    Example:

    ```python
    outs = servekit.export_utils.reference_outputs(model, {"features": x})
    outs["logits"].shape  # (batch, 2)
    ```
    """
    layout = resolve_input_layout(model, input_signature)
    flat = layout.coerce(inputs)
    names = model_output_names(model, layout)
    values = call_model_flat(model, layout, flat)
    return dict(zip(names, values))
