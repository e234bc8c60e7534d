"""Byte-stable artifacts: canonical SavedModel and ONNX protos.

TensorFlow names every traced function with a per-process counter
(`__inference_serve_123`), lists the function library in an order that can
follow hash order, and writes a random `uuid` into `fingerprint.pb`; tf2onnx
suffixes node names with a per-process counter and embeds the source path in
the graph's doc_string. The functions here rewrite those bytes so that the
same model exported twice, in any process, from any directory, gives
byte-identical files. See docs/determinism.md.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Callable, Iterable

_TRAILING_NUMBERS = re.compile(r"((?:_\d+)+)$")
# Names TF numbers with its process-wide counter, the number as group "n":
# while-loop conditions' unused arguments (`..._while_cond_163___redundant_placeholder0`)
# lookup-table initializers (`key_value_init9/LookupTableImportV2`) and the
# gradient registrations of `tf.custom_gradient` (`CustomGradient-10164`).
_COUNTED_NAMES = (
    re.compile(r"_(?P<n>\d+)___redundant_placeholder\d+"),
    re.compile(r"(?:key_value_init|text_file_init)(?P<n>\d+)"),
    re.compile(r"^CustomGradient-(?P<n>\d+)$"),
)
_ONNX_COUNTER = re.compile(r"^(.*?)(__\d+)((?::\d+)?)$")


# ----------------------------------------------------------------------------
# Generic protobuf string rewriting
# ----------------------------------------------------------------------------


def _rewrite_strings(message, fn: Callable[[str], str], bytes_fields: Iterable[str] = ()) -> None:
    """Applies `fn` to every string field (and string map key) of `message`,
    recursively. Bytes fields are rewritten only when named in `bytes_fields`
    (e.g. `AttrValue.s`)."""
    from google.protobuf.descriptor import FieldDescriptor

    bytes_fields = frozenset(bytes_fields)
    stack = [message]
    while stack:
        msg = stack.pop()
        for field, value in msg.ListFields():
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.message_type.GetOptions().map_entry:
                    key_field = field.message_type.fields_by_name["key"]
                    value_field = field.message_type.fields_by_name["value"]
                    items = list(value.items())
                    if key_field.type == FieldDescriptor.TYPE_STRING:
                        renamed = [(fn(k), v) for k, v in items]
                        if any(nk != k for (nk, _), (k, _) in zip(renamed, items)):
                            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                                copies = [(nk, type(v)()) for nk, v in renamed]
                                for (nk, c), (_, v) in zip(copies, renamed):
                                    c.CopyFrom(v)
                                value.clear()
                                for nk, c in copies:
                                    value[nk].CopyFrom(c)
                            else:
                                value.clear()
                                for nk, v in renamed:
                                    value[nk] = v
                            items = list(value.items())
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        stack.extend(v for _, v in items)
                    elif value_field.type == FieldDescriptor.TYPE_STRING:
                        for k, v in items:
                            nv = fn(v)
                            if nv != v:
                                value[k] = nv
                elif _repeated(field):
                    stack.extend(value)
                else:
                    stack.append(value)
            elif field.type == FieldDescriptor.TYPE_STRING:
                if _repeated(field):
                    new = [fn(v) for v in value]
                    if new != list(value):
                        del value[:]
                        value.extend(new)
                else:
                    nv = fn(value)
                    if nv != value:
                        setattr(msg, field.name, nv)
            elif field.type == FieldDescriptor.TYPE_BYTES and field.name in bytes_fields:
                if _repeated(field):
                    new = [_fn_bytes(fn, v) for v in value]
                    if new != list(value):
                        del value[:]
                        value.extend(new)
                else:
                    nv = _fn_bytes(fn, value)
                    if nv != value:
                        setattr(msg, field.name, nv)


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return field.label == field.LABEL_REPEATED  # protobuf < 5


def _fn_bytes(fn, value: bytes) -> bytes:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return value
    new = fn(text)
    return value if new == text else new.encode("utf-8")


# ----------------------------------------------------------------------------
# SavedModel
# ----------------------------------------------------------------------------


def canonical_function_names(names: Iterable[str]) -> dict[str, str]:
    """Maps TF function names to names whose numeric suffix is a rank.

    The numbers TF appends (`__inference_serve_71`) come from a process-wide
    counter: their values depend on everything traced before. Each name is
    given instead its rank among the names with the same stem (the name
    without its trailing `_<number>` groups), ordered by those numbers: the
    same functions get the same names whatever the process traced before.
    """
    names = sorted(set(names))
    stems: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    for name in names:
        m = _TRAILING_NUMBERS.search(name)
        if m:
            numbers = tuple(int(x) for x in m.group(1).split("_")[1:])
            stems.setdefault(name[: m.start()], []).append((numbers, name))
    mapping = {}
    for stem, entries in stems.items():
        for rank, (_, name) in enumerate(sorted(entries)):
            mapping[name] = f"{stem}_{rank}"
    kept = set(names) - set(mapping)
    if len(set(mapping.values()) | kept) != len(names):  # a kept name looks like stem_rank
        mapping = {n: n for n in names}
    return mapping


def _graphs(message):
    """The GraphDefs of a SavedModel, or the GraphDef itself."""
    return [mg.graph_def for mg in message.meta_graphs] if hasattr(message, "meta_graphs") else [message]


def _attrs_named(message, key: str):
    """Every AttrValue called `key` of the nodes, function nodes and function
    arguments of a SavedModel's or GraphDef's graphs."""
    for graph in _graphs(message):
        nodes = list(graph.node)
        for f in graph.library.function:
            nodes += list(f.node_def)
            for arg in f.arg_attr.values():
                if key in arg.attr:
                    yield arg.attr[key]
        for node in nodes:
            if key in node.attr:
                yield node.attr[key]


def _ranks(numbers: Iterable[int]) -> dict[int, int]:
    """Each distinct number's rank among them: counter values that depend on
    what the process did before become the same small numbers in any process."""
    return {n: rank for rank, n in enumerate(sorted(set(numbers)))}


def _rank_numeric(attrs) -> dict[int, int]:
    """Replaces each all-digit string value among `attrs` by its rank.

    Returns:
        The ranks, by the number they replaced.
    """
    attrs = [a for a in attrs if a.s.isdigit()]
    rank = _ranks(int(a.s) for a in attrs)
    for a in attrs:
        a.s = str(rank[int(a.s)]).encode()
    return rank


def canonicalize_user_specified_names(saved_model) -> None:
    """Numeric `_user_specified_name`s are TF tensor ids (a process-wide
    counter) of captured resources; replace each by its rank.

    A function argument for such a capture can carry the id in its name too
    (`convnext_1_..._depthwise_conv_1_610`, a variable captured by an
    XLA-compiled layer call): that suffix gets the same rank, and the
    function's references to the argument follow.
    """
    numbered_args = []  # (function, argument, id) whose name ends in "_<id>"
    for graph in _graphs(saved_model):
        for f in graph.library.function:
            for index, arg in enumerate(f.signature.input_arg):
                attr = f.arg_attr[index].attr.get("_user_specified_name") if index in f.arg_attr else None
                if attr is not None and attr.s.isdigit() and arg.name.endswith(f"_{int(attr.s)}"):
                    numbered_args.append((f, arg, int(attr.s)))
    rank = _rank_numeric(_attrs_named(saved_model, "_user_specified_name"))
    renames: dict[int, tuple[Any, dict[str, str]]] = {}  # id(function) -> (function, old -> new name)
    for f, arg, number in numbered_args:
        renames.setdefault(id(f), (f, {}))[1][arg.name] = f"{arg.name[:-len(str(number))]}{rank[number]}"
    for f, mapping in renames.values():
        kept = {a.name for a in f.signature.input_arg} - set(mapping)
        if len(set(mapping.values()) | kept) != len(f.signature.input_arg):
            continue  # a new name would clash with another argument: keep this function's names
        _rewrite_strings(f, lambda s, _m=mapping: _rename_reference(s, _m))


def _rename_reference(text: str, mapping: dict[str, str]) -> str:
    """`text` with a function-local name (`x`, `x:0`, `^x`) renamed by `mapping`."""
    prefix = "^" if text.startswith("^") else ""
    name, colon, rest = text[len(prefix):].partition(":")
    return prefix + mapping[name] + colon + rest if name in mapping else text


def canonicalize_counted_names(message) -> None:
    """Replaces TF's counter numbers in argument and node names of lookup
    tables and while loops, in custom gradients' registered names
    (`_COUNTED_NAMES`), and numeric `shared_name`s of
    lookup tables, by their rank: a table's name and shared name came from
    how many tables and ops the process had made before (an export after
    another model in a warm worker differed from a fresh one)."""
    numbers: list[set[int]] = [set() for _ in _COUNTED_NAMES]

    def collect(text: str) -> str:
        for found, pattern in zip(numbers, _COUNTED_NAMES):
            found.update(int(m.group("n")) for m in pattern.finditer(text))
        return text

    _rewrite_strings(message, collect, bytes_fields=("s",))
    ranks = [_ranks(found) for found in numbers]

    def renumber(text: str) -> str:
        for rank, pattern in zip(ranks, _COUNTED_NAMES):
            if rank:
                text = pattern.sub(lambda m, _rank=rank: _with_number(m, str(_rank[int(m.group("n"))])), text)
        return text

    if any(ranks):
        _rewrite_strings(message, renumber, bytes_fields=("s",))
    _rank_numeric(_attrs_named(message, "shared_name"))


def _with_number(match: re.Match, number: str) -> str:
    """The text of `match` with its group "n" replaced by `number`."""
    whole, offset = match.group(0), match.start()
    return whole[:match.start("n") - offset] + number + whole[match.end("n") - offset:]


def _rename_counted_functions(message, names) -> None:
    """Renames the functions `names` of `message` by `canonical_function_names`,
    and every reference to them."""
    mapping = {old: new for old, new in canonical_function_names(n for n in names if n).items() if old != new}
    if mapping:
        _rewrite_strings(message, lambda s: mapping.get(s, s), bytes_fields=("s",))


def canonicalize_saved_model_proto(saved_model) -> None:
    """Renames counter-numbered functions and sorts the function library."""
    names = []
    for mg in saved_model.meta_graphs:
        lib = mg.graph_def.library
        names += [f.signature.name for f in lib.function]
        names += [g.function_name for g in lib.gradient] + [g.gradient_func for g in lib.gradient]
    canonicalize_user_specified_names(saved_model)
    _rename_counted_functions(saved_model, names)
    canonicalize_counted_names(saved_model)
    for mg in saved_model.meta_graphs:
        lib = mg.graph_def.library
        funcs = sorted(lib.function, key=lambda f: f.signature.name)
        copies = [type(f)() for f in funcs]
        for c, f in zip(copies, funcs):
            c.CopyFrom(f)
        del lib.function[:]
        lib.function.extend(copies)
        grads = sorted(((g.function_name, g.gradient_func) for g in lib.gradient))
        del lib.gradient[:]
        for fname, gname in grads:
            lib.gradient.add(function_name=fname, gradient_func=gname)


def canonicalize_function_library(graph_def) -> None:
    """Renames a GraphDef's counter-numbered functions by rank, in place.

    Freezing names each function it rewrites `<name>_frozen_<uid>`, with TF's
    process-wide counter. Grappler and tf2onnx then walk nodes and choose
    among equal constants in an order that follows those names (and their
    hashes), so the numbers changed the converted graph's structure, not only
    its names: an RNN converted in a warm worker after other models gave
    other bytes than in a fresh one. Called on every graph before grappler
    (`servekit.onnx`).
    """
    _rename_counted_functions(graph_def, [f.signature.name for f in graph_def.library.function])


def canonicalize_capture_names(graph_def) -> dict[str, str]:
    """Renames a frozen GraphDef's nodes named by a number to their rank, in
    place; returns the renames (old name -> new name).

    A function traced in memory names the placeholders of the variables it
    captures after TF ids that depend on what the process made before; a
    frozen graph turns them into constants of those names, and the weights
    servekit lifts out of large models keep them as ONNX initializer names
    (`81:0` in a fresh worker, `427:0` after a CNN). A SavedModel loaded back
    names them `unknown`, `unknown_0`, ... instead.
    """
    ranks = _ranks(int(node.name) for node in graph_def.node if node.name.isdigit())
    mapping = {str(n): str(rank) for n, rank in ranks.items() if n != rank}
    if mapping:
        _rewrite_strings(graph_def, lambda s: _rename_reference(s, mapping))
    return mapping


def name_signature_dims(saved_model, signatures) -> None:
    """Writes the name of each dynamic dim (`TensorShapeProto.Dim.name`) into
    the signature_def tensor shapes, from servekit's `Signature`s: what ONNX
    says with `dim_param`s, a SavedModel then says too (`batch`, `sequence`,
    dims shared by several inputs and outputs under one name). TensorFlow
    ignores the names when it runs the model; readers of the signature (the
    native verifier, a serving front end) see them."""
    by_name = {s.name: s for s in signatures}
    for mg in saved_model.meta_graphs:
        for key in sorted(mg.signature_def):
            signature = by_name.get(key)
            if signature is None:
                continue
            sdef = mg.signature_def[key]
            for tensors, specs in ((sdef.inputs, signature.inputs), (sdef.outputs, signature.outputs)):
                for spec in specs:
                    if spec.name not in tensors:
                        continue
                    shape = tensors[spec.name].tensor_shape
                    if shape.unknown_rank or len(shape.dim) != len(spec.shape):
                        continue
                    for d, want in zip(shape.dim, spec.shape):
                        if d.size < 0 and isinstance(want, str):
                            d.name = want


def canonicalize_saved_model(export_dir: str, signatures=None) -> None:
    """Rewrites `saved_model.pb` canonically and regenerates `fingerprint.pb`.

    The fingerprint's hashes are recomputed by TensorFlow from the rewritten
    files; its `uuid` (random in TF) is derived from those content hashes.
    With `signatures` (servekit `Signature`s), the names of dynamic dims are
    written into the signature defs (`name_signature_dims`).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(pb_path, "rb") as f:
        saved_model.ParseFromString(f.read())
    canonicalize_saved_model_proto(saved_model)
    if signatures:
        name_signature_dims(saved_model, signatures)
    with open(pb_path, "wb") as f:
        f.write(saved_model.SerializeToString(deterministic=True))
    write_fingerprint(export_dir, saved_model)


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def write_fingerprint(export_dir: str, saved_model=None) -> None:
    """Writes `fingerprint.pb`: TF's hashes where they are stable, our own
    where TF's are not, and a uuid derived from the hashes.

    TF computes `saved_model_checksum` (of the file), `signature_def_hash` and
    `checkpoint_hash` reproducibly. Its `graph_def_program_hash` and
    `saved_object_graph_hash` walk protobuf maps in an order that can change
    from one process to the next (observed: identical saved_model.pb files,
    different `saved_object_graph_hash`), so servekit replaces them with the
    first 8 bytes of the SHA-256 of the deterministic serialization of the
    (canonical) GraphDef and SavedObjectGraph.
    """
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting as fingerprinting_pywrap

    if saved_model is None:
        saved_model = saved_model_pb2.SavedModel()
        with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
            saved_model.ParseFromString(f.read())
    meta = saved_model.meta_graphs[0]
    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString(fingerprinting_pywrap.CreateFingerprintDef(export_dir))
    fingerprint.graph_def_program_hash = _hash64(meta.graph_def.SerializeToString(deterministic=True))
    fingerprint.saved_object_graph_hash = _hash64(meta.object_graph_def.SerializeToString(deterministic=True))
    digest = hashlib.sha256(
        "|".join(str(x) for x in (
            fingerprint.saved_model_checksum, fingerprint.graph_def_program_hash,
            fingerprint.signature_def_hash, fingerprint.saved_object_graph_hash,
            fingerprint.checkpoint_hash)).encode()).digest()
    fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))
    with open(os.path.join(export_dir, "fingerprint.pb"), "wb") as f:
        f.write(fingerprint.SerializeToString(deterministic=True))


# ----------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------


def _onnx_graphs(graph):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _onnx_graphs(attr.g)
            for g in attr.graphs:
                yield from _onnx_graphs(g)


def _replace_repeated(container, values) -> None:
    del container[:]
    container.extend(values)


_LOOKUP_PAIRS = {
    # op_type: (key attributes, value attributes); exactly one of each is set.
    "CategoryMapper": (("cats_strings",), ("cats_int64s",)),
    "LabelEncoder": (("keys_strings", "keys_int64s", "keys_floats"),
                     ("values_strings", "values_int64s", "values_floats")),
}


def _sort_lookup_attributes(node) -> None:
    """Sorts the key/value pairs of lookup nodes: tf2onnx exports TF hash
    tables in hash order, which changes from process to process."""
    pairs = _LOOKUP_PAIRS.get(node.op_type)
    if not pairs:
        return
    attrs = {a.name: a for a in node.attribute}
    keys = next((attrs[n] for n in pairs[0] if n in attrs), None)
    values = next((attrs[n] for n in pairs[1] if n in attrs), None)
    if keys is None or values is None:
        return

    def items(a):
        return list(a.strings) if a.strings else list(a.ints) if a.ints else list(a.floats)

    k, v = items(keys), items(values)
    if len(k) != len(v):
        return
    order = sorted(range(len(k)), key=lambda i: (k[i], v[i]))
    for attr, seq in ((keys, k), (values, v)):
        field = "strings" if attr.strings else "ints" if attr.ints else "floats"
        _replace_repeated(getattr(attr, field), [seq[i] for i in order])


def canonicalize_onnx(model, producer_version: str) -> None:
    """Strips doc strings and metadata, renumbers tf2onnx name counters.

    tf2onnx makes names unique with a process-wide counter (`MatMul__12`). Each
    such name is given instead the rank of its counter among the names that
    share its stem, in the order the names first appear in the graph.
    """
    model.doc_string = ""
    model.producer_name = "servekit"
    model.producer_version = producer_version
    model.domain = ""
    model.model_version = 0
    del model.metadata_props[:]
    counters: dict[str, list[int]] = {}
    seen: dict[str, None] = {}

    def note(name: str) -> None:
        if name and name not in seen:
            seen[name] = None
            m = _ONNX_COUNTER.match(name)
            if m:
                counters.setdefault(m.group(1) + m.group(3), []).append(int(m.group(2)[2:]))

    graphs = list(_onnx_graphs(model.graph))
    for g in graphs:
        for init in g.initializer:
            note(init.name)
        for node in g.node:
            note(node.name)
            for n in list(node.input) + list(node.output):
                note(n)
    rank = {stem: _ranks(nums) for stem, nums in counters.items()}

    def rename(name: str) -> str:
        m = _ONNX_COUNTER.match(name)
        if not m:
            return name
        stem = m.group(1) + m.group(3)
        return f"{m.group(1)}__{rank[stem][int(m.group(2)[2:])]}{m.group(3)}"

    mapping = {n: rename(n) for n in seen}
    if len(set(mapping.values())) != len(mapping):  # pragma: no cover - would need a stem clash
        mapping = {n: n for n in seen}
    for g in graphs:
        for node in g.node:
            _sort_lookup_attributes(node)
        g.doc_string = ""
        del g.value_info[:]
        for init in g.initializer:
            init.name = mapping.get(init.name, init.name)
            init.doc_string = ""
        for node in g.node:
            node.doc_string = ""
            # torch.onnx's dynamo exporter records each node's Python stack
            # trace (source paths) and module hierarchy here.
            del node.metadata_props[:]
            node.name = mapping.get(node.name, node.name)
            _replace_repeated(node.input, [mapping.get(n, n) for n in node.input])
            _replace_repeated(node.output, [mapping.get(n, n) for n in node.output])
        for vi in list(g.input) + list(g.output):
            vi.doc_string = ""
            vi.name = mapping.get(vi.name, vi.name)
