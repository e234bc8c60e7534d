"""Deterministic inputs a model accepts, for verification.

Ids stay within the model's Embedding and lookup vocabularies, masks are all
ones unless declared otherwise, strings come from the lookup layers'
vocabularies plus one out-of-vocabulary token.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from servekit.errors import ExportError
from servekit.source_model.input_layout import InputLayout
from servekit.source_model.kinds import all_layers, is_functional

# Batch sizes every artifact is verified at (a dynamic batch must not be
# specialized to one of them), and the size of other dynamic dimensions.
VERIFY_BATCH_SIZES = (1, 7)
_DYNAMIC_DIM_SIZE = 4
_OOV_TOKEN = "[servekit-oov]"


def _lookup_vocabularies(model) -> tuple[list[str], list[int], Optional[int]]:
    """String and integer tokens known to lookup layers, and the smallest
    Embedding input_dim of the model (to keep generated ids in range)."""
    strings: list[str] = []
    ints: list[int] = []
    min_dim = None
    for layer in all_layers(model):
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
    if not is_functional(model):
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
                elif is_functional(operation) and operation is not functional:
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

    if not is_functional(model):
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

