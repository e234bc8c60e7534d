"""Signature keys and dim names: sanitized, unique, and chosen as Keras and
`tf.saved_model.save` choose them."""

from __future__ import annotations

import re
from typing import Iterable, Optional, Sequence

from servekit import signature as sig

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


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



def positional_names(fn) -> Optional[list[str]]:
    """The names of `fn`'s positional parameters, or None if unknown."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]



def named_dims(name: str, shape: Sequence[Optional[int]]) -> tuple:
    """Manifest dims of an input: a dynamic leading dim is `batch`, any other
    dynamic dim `<input>_<axis>` (so ONNX shows every dynamic dim by name)."""
    return tuple(sig.BATCH_DIM if (d is None and i == 0) else (f"{name}_{i}" if d is None else int(d))
                 for i, d in enumerate(shape))


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

