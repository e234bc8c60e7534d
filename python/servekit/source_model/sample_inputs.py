"""Deterministic inputs a model accepts, for verification.

Ids stay within the model's Embedding and lookup vocabularies, masks are all
ones or padded with trailing zeros (never a whole row) unless declared
otherwise, strings come from the lookup layers' vocabularies plus one
out-of-vocabulary token.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from servekit.errors import ExportError
from servekit.source_model.input_layout import InputLayout
from servekit.source_model.kinds import all_layers, is_functional

# The size of a dynamic dimension no plan gives a size to (the batch sizes
# and the sizes each dynamic dimension is verified at: `source_model.dims`).
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


def mask_inputs(layout: InputLayout) -> list[str]:
    """Inputs that are masks of valid positions along axis 1: integer or
    boolean, rank 2 or more, named `mask` or `*_mask`."""
    return [s.name for s in layout.flat
            if _MASK_NAME.search(s.name) and len(s.shape) >= 2 and str(s.dtype).startswith(("int", "uint", "bool"))]


def padded_mask(shape: tuple, dtype: str, rng: np.random.Generator, window: Optional[int] = None) -> np.ndarray:
    """A padding mask: along axis 1, each row's first `n` positions valid (1)
    and the rest padding (0); the first row is unpadded, the others of random
    lengths. No query may be left with nothing to attend to (its outputs
    would be whatever each backend makes of an empty softmax): `n >= 1`, and
    under a sliding `window` the padding is shorter than the window
    (`n > length - window`), so the last query still sees a valid key."""
    length = shape[1]
    least = max(1, length - window + 1) if window else 1
    valid = np.concatenate([[length], rng.integers(least, length + 1, size=max(shape[0] - 1, 0))])[:shape[0]]
    mask = np.arange(length)[None, :] < valid[:, None]
    mask = mask.reshape(mask.shape + (1,) * (len(shape) - 2))
    return np.broadcast_to(mask, shape).astype(dtype)


def generate_inputs(layout: InputLayout, batch: int, seed: int = 0, model=None,
                    ranges: Optional[dict] = None, sizes: Optional[dict] = None,
                    padded: Sequence[str] = (), window: Optional[int] = None) -> list[np.ndarray]:
    """Deterministic inputs for verification, one array per flat input.

    Floats are standard normal, integers small non-negative ids (within the
    model's Embedding/IntegerLookup range), strings drawn from the model's
    StringLookup/TextVectorization vocabularies plus one out-of-vocabulary
    token, booleans random. An input with a range in `ranges` (by name,
    `(low, high)`, high exclusive; see `input_ranges_for`) draws uniformly
    from it: integers from `range(low, high)`, floats from `[low, high)`.
    bfloat16 inputs are drawn as float32 ones, then rounded to
    `ml_dtypes.bfloat16` arrays. Dynamic dims other than the batch take
    their size from `sizes` (by symbol; default 4). Inputs named in
    `padded` are padding masks with trailing zeros (`padded_mask`, shorter
    than a sliding `window`).
    """
    rng = np.random.default_rng(seed + 1000 * batch + sum(int(v) * 7919 ** (i + 1)
                                                          for i, v in enumerate((sizes or {}).values())) % (1 << 31))
    strings, ints, min_dim = _lookup_vocabularies(model) if model is not None else ([], [], None)
    ranges = ranges or {}
    sizes = sizes or {}
    out = []
    for spec in layout.flat:
        shape = tuple(batch if (i == 0 and d is None) else
                      ((sizes.get(n, _DYNAMIC_DIM_SIZE) if isinstance(n, str) else _DYNAMIC_DIM_SIZE) if d is None
                       else d)
                      for i, (d, n) in enumerate(zip(spec.shape, spec.dims)))
        dtype = spec.dtype
        if spec.name in padded and len(shape) >= 2 and shape[1] > 1:
            out.append(padded_mask(shape, dtype, rng, window))
            continue
        if spec.name in ranges and dtype != "string":
            low, high = ranges[spec.name]
            if dtype.startswith(("int", "uint")) or dtype == "bool":
                values = rng.integers(int(low), int(high), size=shape)
            else:
                values = rng.uniform(low, high, size=shape)
            out.append(_as_dtype(np.asarray(values), dtype))
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
            out.append(_as_dtype(rng.standard_normal(size=shape), dtype))
    return out


def _as_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """`values` as `dtype`; bfloat16 as `ml_dtypes.bfloat16` (rounded to nearest),
    which every backend and runtime servekit feeds takes for a bfloat16 input."""
    if dtype == "bfloat16":
        import ml_dtypes

        return values.astype(np.float32).astype(ml_dtypes.bfloat16)
    return values.astype(dtype)

