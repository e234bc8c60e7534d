"""Dynamic dimensions: which must be equal, what the outputs' dims are, and
the sizes each one is verified at.

An endpoint's dynamic dimensions are named in its signature: a dynamic
leading dimension is `batch`, any other carries a symbol (`<input>_<axis>`
unless `input_signature`'s polymorphic shapes or `dim_names` declare one).
This module makes those names mean something and plans the verification:

- **Shared dimensions** (`discover`): dims the model requires to be equal get
  one symbol. servekit finds them by *probing* the model on the source
  backend with `keras.backend.compute_output_spec` (a symbolic trace of the
  real call: no computation, no state change): with every dynamic dim at one
  size the model must trace; varying one dim alone fails when it is tied to
  others, and the smallest set of dims that can vary together is one shared
  dimension (keras_hub's `token_ids`, `padding_mask` and `segment_ids` share
  `sequence`). Output dims are named by the input dim they follow (probed at
  two assignments of distinct sizes); a dynamic output dim that follows no
  input dim is `<output>_<axis>`.
- **Sizes** (`DimPlan`): three verification cases, each dynamic dim at 1, at
  an odd size, and at a size past any window or block the model's
  configuration declares (`sliding_window` of Mistral, `sliding_window_size`
  of Gemma 3, ...), within its declared bounds (`max_sequence_length`, ...);
  masks are padded (trailing zeros, never a whole row) in the two longer
  cases. A model that downsamples (strided convolutions and pools) is
  verified past twice its total stride as well: an artifact wrong only once
  its last feature map is larger than 1x1 is not verified at small sizes
  alone. Shared dims get one size per case, distinct dims distinct sizes.
  A size the model refuses (a fixed-length position embedding behind a
  `None` dim), or at which a layer outputs nothing (a pool window larger
  than its input), is replaced by one it accepts, and the plan says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Iterable, Iterator, Optional, Sequence

from servekit import signature as sig
from servekit.errors import ExportError
from servekit.source_model.input_layout import FlatSpec, InputLayout
from servekit.source_model.kinds import all_layers

# Batch size of each verification case (when the batch is dynamic): size 1,
# an odd size, and a small even one for the longest case.
CASE_BATCHES = (1, 7, 2)
# Odd sizes of the middle case, one per distinct dim (7 is the batch's).
ODD_SIZES = (5, 3, 9, 11, 13, 15, 17, 19, 21, 23)
# The longest case when the model declares no window: past common small blocks.
LONG_SIZE = 12
# How far past the largest declared window the longest case goes.
PAST_WINDOW = 3
# The longest case never exceeds this (a window of 4096 is verified up to it).
MAX_SIZE = 2048
# The largest total stride the longest case goes past (twice, plus one): the
# product of a model's strides overstates it where branches downsample side by
# side (Inception), and 65x65 keeps a CNN's long case cheap.
MAX_STRIDE = 32
# Sizes tried, in order, when the wanted ones fail on the source model.
FALLBACK_SIZES = (4, 8, 16, 32, 64, 128, 2, 3, 6)
# The batch probes run at.
PROBE_BATCH = 3

# Attributes of a layer (or `_` + attribute) declaring a window or block over
# the sequence, and an upper bound of its length.
WINDOW_KEYS = ("sliding_window", "sliding_window_size", "attention_window", "local_window_size", "window_size",
               "block_size", "chunk_size", "attention_chunk_size")
BOUND_KEYS = ("max_sequence_length", "sequence_length", "max_position_embeddings", "num_positions",
              "max_length")
# A layer that says it does not use its sliding window.
_WINDOW_SWITCHES = ("use_sliding_window_attention", "use_sliding_window")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the model's configuration says about its dynamic dims: windows
    (`(size, "layer.attribute")`), upper bounds, and the strides of the
    layers that downsample."""

    windows: tuple[tuple[int, str], ...] = ()
    bounds: tuple[tuple[int, str], ...] = ()
    strides: tuple[tuple[int, str], ...] = ()

    @property
    def bound(self) -> Optional[int]:
        return min((b for b, _ in self.bounds), default=None)

    @property
    def window(self) -> Optional[tuple[int, str]]:
        """The largest window, with where it was declared."""
        return max(self.windows, default=None)

    @property
    def total_stride(self) -> int:
        """How much the model downsamples at most: the product of its layers'
        strides (exact along a chain of layers), up to `MAX_STRIDE`."""
        total = 1
        for stride, _ in self.strides:
            total = min(total * stride, MAX_STRIDE)
        return total


def _int_attribute(layer, key: str) -> Optional[int]:
    for name in (key, "_" + key):
        value = getattr(layer, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            return value
    return None


def _downsampling_stride(layer) -> Optional[int]:
    """The largest stride of a convolution or pool that downsamples (not a
    transposed convolution's, which upsamples), or None."""
    strides = getattr(layer, "strides", None)
    if "Transpose" in type(layer).__name__:
        return None
    if isinstance(strides, int) and not isinstance(strides, bool):
        strides = (strides,)
    if not isinstance(strides, (tuple, list)) or not strides or not all(isinstance(s, int) for s in strides):
        return None
    return max(strides) if max(strides) > 1 else None


def declared_limits(model) -> Limits:
    """Windows and length bounds the layers of `model` declare as attributes,
    and the strides of those that downsample."""
    windows, bounds, strides = {}, {}, []
    for layer in all_layers(model):
        name = getattr(layer, "name", type(layer).__name__)
        uses_window = all(getattr(layer, s, True) is not False for s in _WINDOW_SWITCHES)
        for key in WINDOW_KEYS if uses_window else ():
            value = _int_attribute(layer, key)
            if value is not None:
                windows.setdefault(value, f"{name}.{key}")
        for key in BOUND_KEYS:
            value = _int_attribute(layer, key)
            if value is not None:
                bounds.setdefault(value, f"{name}.{key}")
        stride = _downsampling_stride(layer)
        if stride is not None:
            strides.append((stride, f"{name}.strides"))
    return Limits(tuple(sorted(windows.items())), tuple(sorted(bounds.items())), tuple(strides))


@dataclasses.dataclass(frozen=True)
class CaseSizes:
    """The sizes of one verification case: its batch, each dynamic dim's
    symbol -> size, and whether masks are padded."""

    batch: int
    dims: dict[str, int] = dataclasses.field(default_factory=dict)
    padded: bool = False

    def all_sizes(self, batch_dynamic: bool = True) -> dict[str, int]:
        """Every dynamic dim's size, `batch` included when it is dynamic."""
        return ({sig.BATCH_DIM: self.batch} if batch_dynamic else {}) | dict(self.dims)


@dataclasses.dataclass
class DimPlan:
    """The verification cases' sizes and what chose them.

    Args:
        cases: one `CaseSizes` per case, in order.
        batch_dynamic: whether the batch is a dynamic dim (verified at several sizes).
        limits: the windows and bounds the model declares.
        notes: symbol -> why its sizes are not the ones wanted (the model
            refused some), for the manifest and the summary.
        probed: sizes were checked on the source model (`compute_output_spec`).
    """

    cases: list[CaseSizes]
    batch_dynamic: bool = True
    limits: Limits = Limits()
    notes: dict[str, str] = dataclasses.field(default_factory=dict)
    probed: bool = False

    def verified(self) -> dict[str, list[int]]:
        """Each dynamic dim's sizes over the cases, `batch` first."""
        sizes: dict[str, set[int]] = {}
        for case in self.cases:
            for name, size in case.all_sizes(self.batch_dynamic).items():
                sizes.setdefault(name, set()).add(size)
        return {name: sorted(values) for name, values in sizes.items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        """The manifest's `dims` entry: per dynamic dim, the sizes verified
        and, where they apply, the window passed, the bound and a note."""
        window, bound = self.limits.window, self.limits.bound
        out: dict[str, dict[str, Any]] = {}
        for name, sizes in self.verified().items():
            entry: dict[str, Any] = {"verified": sizes}
            if name != sig.BATCH_DIM:
                if window is not None:
                    entry["window"] = window[0]
                if bound is not None:
                    entry["max"] = bound
            if name in self.notes:
                entry["note"] = self.notes[name]
            out[name] = entry
        return out

    def legacy(self) -> "DimPlan":
        """The same batches with every non-batch dim at 4 (what servekit verified
        before it planned sizes): the fallback when an unprobed plan fails."""
        symbols = {s for c in self.cases for s in c.dims}
        note = "the planned sizes failed on the source endpoint; verified at 4 only"
        return DimPlan([CaseSizes(c.batch, {s: 4 for s in c.dims}) for c in self.cases], self.batch_dynamic,
                       self.limits, {s: note for s in symbols}, self.probed)


@contextlib.contextmanager
def quiet_size_one() -> Iterator[None]:
    """Silences what Keras warns about a dim of size 1 that servekit chose
    (a softmax over one key): the model is fine, the size is the test's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"You are using a softmax over axis", category=UserWarning)
        yield


def layout_symbols(layout: InputLayout) -> list[str]:
    """The symbols of the non-batch dynamic dims of `layout`, in input order."""
    seen: dict[str, None] = {}
    for spec in layout.flat:
        for axis, (size, dim) in enumerate(zip(spec.shape, spec.dims)):
            if size is None and isinstance(dim, str) and dim != sig.BATCH_DIM:
                seen.setdefault(dim)
    return list(seen)


def batch_is_dynamic(layout: InputLayout) -> bool:
    return bool(layout.flat) and all(s.shape and s.shape[0] is None for s in layout.flat)


def case_batches(layout: InputLayout) -> list[int]:
    """Batch size of each case: 1, 7 and 2 when every input has a dynamic
    batch, else the static batch size (three times when other dims are
    dynamic, once otherwise)."""
    if batch_is_dynamic(layout):
        return list(CASE_BATCHES)
    static = next((s.shape[0] for s in layout.flat if s.shape and s.shape[0] is not None), 1)
    return [static] * (len(CASE_BATCHES) if layout_symbols(layout) else 1)


def wanted_sizes(symbols: Sequence[str], limits: Limits, cases: int = 3) -> list[dict[str, int]]:
    """Per case, the size each symbol should be verified at (see the module
    docstring): 1; an odd size (distinct per symbol); past the window and
    twice the total stride (or at the bound, when they reach it)."""
    bound = limits.bound or MAX_SIZE
    window = limits.window
    long = window[0] + PAST_WINDOW if window else LONG_SIZE
    if limits.total_stride > 1:
        long = max(long, 2 * limits.total_stride + 1)
    long = min(long, bound, MAX_SIZE)
    plans = []
    for k in range(cases):
        sizes = {}
        for j, s in enumerate(symbols):
            if k == 0:
                size = 1
            elif k == 1:
                size = ODD_SIZES[j % len(ODD_SIZES)]
            else:
                size = long + j
            sizes[s] = max(1, min(size, bound))
        plans.append(sizes)
    return plans


def unprobed_plan(layout: InputLayout, limits: Limits = Limits()) -> DimPlan:
    """The wanted sizes, unchecked (an endpoint servekit cannot probe)."""
    symbols = layout_symbols(layout)
    batches = case_batches(layout)
    wanted = wanted_sizes(symbols, limits, len(batches))
    return DimPlan([CaseSizes(b, w, padded=k > 0) for k, (b, w) in enumerate(zip(batches, wanted))],
                   batch_is_dynamic(layout), limits)


# ---------------------------------------------------------------------------
# Probing the source model
# ---------------------------------------------------------------------------


class Probe:
    """Traces a Keras model symbolically at given sizes; memoized.

    `shapes(batch, sizes)` is the model's flat output shapes with the batch
    and every symbol at the given sizes, or None if the model fails there.
    """

    def __init__(self, model, layout: InputLayout):
        self.model = model
        self.layout = layout
        self.calls = 0
        self._cache: dict[Any, Optional[list[tuple]]] = {}

    @staticmethod
    def available(model, layout: InputLayout) -> bool:
        import keras

        return (isinstance(model, keras.Model) and bool(layout.flat)
                and not any(s.dtype == "string" for s in layout.flat))

    def shapes(self, batch: int, sizes: dict[str, int]) -> Optional[list[tuple]]:
        key = (batch, tuple(sorted(sizes.items())))
        if key not in self._cache:
            self._cache[key] = self._trace(batch, sizes)
        return self._cache[key]

    def accepts(self, batch: int, sizes: dict[str, int]) -> bool:
        return self.shapes(batch, sizes) is not None

    def _trace(self, batch: int, sizes: dict[str, int]) -> Optional[list[tuple]]:
        import keras
        from keras.src import backend

        self.calls += 1
        specs = [keras.KerasTensor(concrete_shape(s, batch, sizes), dtype=s.dtype) for s in self.layout.flat]
        model = self.model
        with _empty_layer_outputs_seen() as empty:
            try:
                out = backend.compute_output_spec(lambda *args: model(*args, training=False),
                                                  *self.layout.pack(specs))
            except Exception:  # the model refuses these sizes (shape mismatch, fixed lengths, ...)
                return None
        # A layer that outputs nothing (a pool window larger than its input: JAX returns an empty
        # tensor where TensorFlow fails) makes no size to verify at: what follows is a mean of
        # nothing (NaN) or an empty output, on which converters disagree.
        return None if empty else [tuple(x.shape) for x in keras.tree.flatten(out)]


@contextlib.contextmanager
def _empty_layer_outputs_seen() -> Iterator[list[str]]:
    """While the block runs, the names of the layers called whose outputs have a
    dim of size 0."""
    import keras
    from keras.src.layers.layer import Layer

    from servekit import patching

    empty: list[str] = []
    original = Layer.__call__

    def __call__(layer, *args, **kwargs):
        outputs = original(layer, *args, **kwargs)
        if any(0 in tuple(getattr(x, "shape", ()) or ()) for x in keras.tree.flatten(outputs)):
            empty.append(layer.name)
        return outputs

    with patching.replaced(Layer, __call__=__call__):
        yield empty


def concrete_shape(spec: FlatSpec, batch: int, sizes: dict[str, int], default: int = 4) -> tuple[int, ...]:
    """`spec`'s shape with the batch and each symbol at its size."""
    shape = []
    for axis, (size, dim) in enumerate(zip(spec.shape, spec.dims)):
        if size is not None:
            shape.append(int(size))
        elif axis == 0 and dim == sig.BATCH_DIM:
            shape.append(batch)
        else:
            shape.append(int(sizes.get(dim, default)) if isinstance(dim, str) else default)
    return tuple(shape)


def _positions(layout: InputLayout) -> dict[str, list[tuple[int, int, int]]]:
    """symbol -> its (input index, axis, rank) positions."""
    out: dict[str, list[tuple[int, int, int]]] = {}
    for i, spec in enumerate(layout.flat):
        for axis, (size, dim) in enumerate(zip(spec.shape, spec.dims)):
            if size is None and isinstance(dim, str) and dim != sig.BATCH_DIM:
                out.setdefault(dim, []).append((i, axis, len(spec.shape)))
    return out


def is_auto_name(symbol: str, layout: InputLayout) -> bool:
    """True for a symbol servekit made up (`<input>_<axis>` at its own
    position), False for one the caller declared."""
    return any(symbol == f"{layout.flat[i].name}_{axis}" for i, axis, _ in _positions(layout).get(symbol, []))


def _baseline(probe: Probe, symbols: Sequence[str], limits: Limits) -> Optional[int]:
    """One size every symbol can take at once, or None."""
    candidates = [ODD_SIZES[0], *FALLBACK_SIZES[:1], *(b for b, _ in limits.bounds), *FALLBACK_SIZES[1:]]
    for size in dict.fromkeys(candidates):
        if probe.accepts(PROBE_BATCH, {s: size for s in symbols}):
            return size
    return None


def _groups(probe: Probe, symbols: Sequence[str], base: int, positions) -> list[list[str]]:
    """Partitions `symbols` into dims the model requires to be equal. A
    symbol that cannot leave `base` even when every other dim moves with it
    (the model fixes its size) is a group of its own."""
    other = base + 2

    def moves(members: Iterable[str]) -> bool:
        members = set(members)
        return probe.accepts(PROBE_BATCH, {s: (other if s in members else base) for s in symbols})

    def kinship(s: str, t: str) -> tuple:
        axes_s = {(axis, rank) for _, axis, rank in positions[s]}
        axes_t = {(axis, rank) for _, axis, rank in positions[t]}
        return (not (axes_s & axes_t), not ({a for a, _ in axes_s} & {a for a, _ in axes_t}))

    groups, assigned = [], set()
    for s in symbols:
        if s in assigned:
            continue
        members = [s]
        if not moves(members):
            rest = sorted((t for t in symbols if t not in assigned and t != s), key=lambda t: kinship(s, t))
            found = False
            for t in rest:
                members.append(t)
                if moves(members):
                    found = True
                    break
            if not found:
                groups.append([s])
                assigned.add(s)
                continue
            for t in list(members[1:]):  # the smallest set that moves together
                trial = [u for u in members if u != t]
                if moves(trial):
                    members = trial
        groups.append(members)
        assigned.update(members)
    return groups


def _group_names(groups: list[list[str]], layout: InputLayout, positions) -> dict[str, str]:
    """symbol -> the name of its group: a declared name; `sequence` for dims
    at axis 1 of several inputs; else the first member's name."""
    rename: dict[str, str] = {}
    taken = set(layout_symbols(layout))
    for group in groups:
        declared = [s for s in group if not is_auto_name(s, layout)]
        if len(set(declared)) > 1:
            raise ExportError(
                f"The dims named {sorted(set(declared))} must be equal: the model fails when they differ. Give them "
                "one name (dim_names / polymorphic_shapes).", reason="bad_signature")
        if declared:
            name = declared[0]
        elif len(group) > 1 and all(axis == 1 for s in group for _, axis, _ in positions[s]) \
                and "sequence" not in taken:
            name = "sequence"
            taken.add(name)
        else:
            name = group[0]
        for s in group:
            rename[s] = name
    return rename


def renamed(layout: InputLayout, rename: dict[str, str]) -> InputLayout:
    """`layout` with its dim symbols renamed."""
    flat = [FlatSpec(s.name, s.dtype, s.shape, tuple(rename.get(d, d) if isinstance(d, str) else d for d in s.dims))
            for s in layout.flat]
    return dataclasses.replace(layout, flat=flat)


def _sizes_for(probe: Probe, symbols: Sequence[str], wanted: list[dict[str, int]], batches: Sequence[int],
               base: int, limits: Limits) -> tuple[list[dict[str, int]], dict[str, str]]:
    """The wanted sizes, each refused one replaced by a size the model accepts
    with every other dim at `base` (its declared lengths, 4, 8, ...)."""
    accepted: dict[str, dict[int, bool]] = {s: {} for s in symbols}

    def alone(s: str, size: int) -> bool:
        if size not in accepted[s]:
            sizes = {t: base for t in symbols}
            sizes[s] = size
            accepted[s][size] = probe.accepts(PROBE_BATCH, sizes)
        return accepted[s][size]

    pool = [*(b for b, _ in limits.bounds), *FALLBACK_SIZES, base]
    refused: dict[str, list[int]] = {}
    result = []
    for k, (batch, want) in enumerate(zip(batches, wanted)):
        if probe.accepts(batch, want):
            result.append(dict(want))
            continue
        sizes = {}
        for s in symbols:
            if alone(s, want[s]):
                sizes[s] = want[s]
                continue
            refused.setdefault(s, []).append(want[s])
            used = {r[s] for r in result}
            choices = [c for c in dict.fromkeys(pool) if alone(s, c)] or [base]
            sizes[s] = next((c for c in choices if c not in used), choices[0])
        if not probe.accepts(batch, sizes):
            for s in symbols:
                if sizes[s] != base:
                    refused.setdefault(s, []).append(sizes[s])
            sizes = {s: base for s in symbols}
        result.append(sizes)
    notes = {}
    for s, sizes in refused.items():
        got = sorted({r[s] for r in result})
        notes[s] = (f"the model fails at size {', '.join(map(str, sorted(set(sizes))))}; verified at "
                    f"{', '.join(map(str, got))}")
    return result, notes


def _output_names(probe: Probe, layout: InputLayout, plans: Sequence[tuple[int, dict[str, int]]]
                  ) -> Optional[list[tuple]]:
    """Per flat output, each axis's symbol (or None): the dim it equals at
    every probed assignment, where no other dim has that size."""
    observed = []
    for batch, sizes in plans:
        shapes = probe.shapes(batch, sizes)
        if shapes is None:
            return None
        named = {sig.BATCH_DIM: batch} if batch_is_dynamic(layout) else {}
        named.update(sizes)
        observed.append((named, shapes))
    if not observed:
        return None
    result = []
    for o in range(len(observed[0][1])):
        axes = []
        for axis in range(len(observed[0][1][o])):
            candidates = None
            for named, shapes in observed:
                size = shapes[o][axis]
                here = {n for n, v in named.items() if v == size and list(named.values()).count(v) == 1}
                candidates = here if candidates is None else candidates & here
            axes.append(next(iter(candidates)) if candidates and len(candidates) == 1 else None)
        result.append(tuple(axes))
    return result


def discover(model, layout: InputLayout, limits: Optional[Limits] = None) -> tuple[InputLayout, DimPlan]:
    """Shared dims, output dim names and verification sizes of a Keras model.

    Returns:
        `(layout, plan)`: `layout` with shared dims renamed to one symbol and
        `output_dims` set when the model could be probed; the cases' sizes.

    Raises:
        ExportError: two declared names must be equal.
    """
    limits = declared_limits(model) if limits is None else limits
    symbols = layout_symbols(layout)
    if not symbols or not Probe.available(model, layout):
        return layout, unprobed_plan(layout, limits)
    with quiet_size_one():
        return _discover(model, layout, limits, symbols)


def _discover(model, layout: InputLayout, limits: Limits, symbols: list[str]) -> tuple[InputLayout, DimPlan]:
    probe = Probe(model, layout)
    base = _baseline(probe, symbols, limits)
    if base is None:  # the model refuses every uniform size: verify what was asked, and say so if it fails
        return layout, unprobed_plan(layout, limits)
    positions = _positions(layout)
    groups = _groups(probe, symbols, base, positions)
    rename = _group_names(groups, layout, positions)
    layout = renamed(layout, rename)
    probe = Probe(model, layout)
    symbols = layout_symbols(layout)
    batches = case_batches(layout)
    wanted = wanted_sizes(symbols, limits, len(batches))
    sizes, notes = _sizes_for(probe, symbols, wanted, batches, base, limits)
    plan = DimPlan([CaseSizes(b, s, padded=k > 0) for k, (b, s) in enumerate(zip(batches, sizes))],
                   batch_is_dynamic(layout), limits, notes, probed=True)
    distinct = [(b, s) for b, s in zip(batches, sizes) if b > 1 or any(v > 1 for v in s.values())]
    output_dims = _output_names(probe, layout, distinct[-2:]) if len(distinct) >= 2 else None
    return dataclasses.replace(layout, output_dims=output_dims), plan


def plan_for(model, layout: InputLayout) -> DimPlan:
    """The verification sizes of an endpoint whose dims are already named
    (an `ExportArchive` endpoint, a `tf.Module` signature): unprobed."""
    return unprobed_plan(layout, declared_limits(model) if model is not None else Limits())


def apply_dim_names(layout: InputLayout, dim_names: Optional[dict[str, Any]], where: str = "dim_names") -> InputLayout:
    """Names dims as declared: input name -> a polymorphic shape string
    (`"(batch, sequence)"`) or a sequence of names, ints and None (None or `_`
    keeps the dim as it is).

    Raises:
        ExportError: an unknown input, or a shape of the wrong rank.
    """
    if not dim_names:
        return layout
    from servekit.source_model.input_layout import parse_polymorphic_shape

    known = {s.name for s in layout.flat}
    unknown = sorted(set(dim_names) - known)
    if unknown:
        raise ExportError(f"{where} names {unknown}, which are not inputs ({sorted(known)}).", reason="bad_argument")
    flat = []
    for spec in layout.flat:
        declared = dim_names.get(spec.name)
        if declared is None:
            flat.append(spec)
            continue
        if not isinstance(declared, str):
            declared = "(" + ", ".join("_" if d is None else str(d) for d in declared) + ")"
        shape, dims = parse_polymorphic_shape(declared, spec.shape)
        flat.append(FlatSpec(spec.name, spec.dtype, shape, dims))
    return dataclasses.replace(layout, flat=flat)


def name_output_dims(outputs: Sequence[sig.TensorSignature], output_dims: Optional[Sequence[Sequence]],
                     batch_dynamic: bool) -> tuple[sig.TensorSignature, ...]:
    """Output signatures with every dynamic dim named: by the input dim it
    follows (`output_dims`, from `discover`), else `batch` for a leading dim
    of a dynamic-batch endpoint, else `<output>_<axis>`. Static dims stay."""
    result = []
    for i, t in enumerate(outputs):
        known = output_dims[i] if output_dims is not None and i < len(output_dims) else None
        if known is not None and len(known) != len(t.shape):
            known = None
        dims = []
        for axis, d in enumerate(t.shape):
            if isinstance(d, int):
                dims.append(d)
                continue
            name = known[axis] if known is not None else None
            if name is None and known is None and axis == 0 and batch_dynamic:
                name = sig.BATCH_DIM
            dims.append(name or f"{t.name}_{axis}")
        result.append(dataclasses.replace(t, shape=tuple(dims)))
    return tuple(result)
