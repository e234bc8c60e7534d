"""An endpoint's inputs: flat named specs plus the argument structure.

`resolve_input_layout` reads them from a built model or a Keras-style
`input_signature`; `apply_polymorphic_shapes` applies jax2tf shape strings.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

import numpy as np

from servekit import signature as sig
from servekit.errors import ExportError, ExportTypeError
from servekit.source_model.kinds import is_functional
from servekit.source_model.names import named_dims, positional_names, sanitize_name, unique_names

# The name Keras gives a tensor it was not told a name for.
_AUTO_TENSOR_NAME = re.compile(r"^keras_tensor(_\d+)?$")


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
    are indices into `flat`. `output_dims`, when the source model was probed
    (`source_model.dims.discover`), names each axis of each flat output by
    the input dim it follows (None where it follows none); the output
    signatures every converter reports are named with it
    (`dims.name_output_dims`).
    """

    flat: list[FlatSpec]
    args: list[Any]
    arg_names: Optional[list[str]] = None  # the endpoint's parameter names, when known
    output_dims: Optional[list[tuple]] = None

    def pack(self, flat_values: Sequence[Any]) -> list[Any]:
        """Rebuilds the positional arguments from flat values."""
        return [map_leaves(lambda i: flat_values[i], a) for a in self.args]

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
        data = {"flat": [s.to_json() for s in self.flat], "args": to_json_struct(self.args),
                "arg_names": self.arg_names}
        if self.output_dims is not None:
            data["output_dims"] = [list(dims) for dims in self.output_dims]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "InputLayout":
        output_dims = data.get("output_dims")
        return cls([FlatSpec.from_json(s) for s in data["flat"]], from_json_struct(data["args"]),
                   data.get("arg_names"), [tuple(d) for d in output_dims] if output_dims is not None else None)

    def tensor_signatures(self) -> tuple[sig.TensorSignature, ...]:
        return tuple(s.tensor_signature() for s in self.flat)

def map_leaves(fn, struct):
    """`struct` with `fn` applied to each leaf (dicts, lists and tuples kept)."""
    if isinstance(struct, dict):
        return {k: map_leaves(fn, v) for k, v in struct.items()}
    if isinstance(struct, list):
        return [map_leaves(fn, v) for v in struct]
    if isinstance(struct, tuple):
        return tuple(map_leaves(fn, v) for v in struct)
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


def _is_tf_tensor_spec(x) -> bool:
    return type(x).__name__ == "TensorSpec" and type(x).__module__.startswith("tensorflow")


def is_leaf_spec(x) -> bool:
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
        if isinstance(x, (list, tuple)) and not is_leaf_spec(x):
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
        elif is_functional(model):
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
        if not isinstance(input_signature, (list, tuple)) or is_leaf_spec(input_signature):
            input_signature = [input_signature]
        input_signature = list(input_signature)
        n_model_inputs = len(hints)
        if (is_functional(model) and n_model_inputs > 1 and len(input_signature) == n_model_inputs
                and all(is_leaf_spec(x) for x in input_signature)):
            input_signature = [input_signature]
    layout = layout_from_signature(input_signature, name_hints=hints, where=f"input_signature of '{model_name}'")
    layout.arg_names = _call_arg_names(model, len(layout.args))
    if polymorphic_shapes is not None:
        layout = apply_polymorphic_shapes(layout, polymorphic_shapes)
    return layout


def _call_arg_names(model, count: int) -> Optional[list[str]]:
    names = positional_names(model.call)
    if not names or len(names) < count or not all(n.isidentifier() for n in names[:count]):
        return None
    return names[:count]


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
            polymorphic_shapes = [map_leaves(lambda i: polymorphic_shapes[i], layout.args[0])]
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

