"""ONNX export: converting the SavedModel's serving signature with tf2onnx, then tidying.

The ONNX model is converted from the `serving_default` signature of the
SavedModel servekit builds: in memory from the traced module
(`convert_module`, the export worker: no SavedModel written and loaded back
just to be converted), or from a SavedModel on disk (`convert_saved_model`).
Both freeze the graph tf2onnx's saved-model path would (which also converts
lookup tables: `LookupTableFindV2` becomes an ai.onnx.ml `LabelEncoder` on
the table's keys and values), and give the same ONNX model but for a few
names (`convert_module`). Afterwards:

- graph inputs and outputs are named exactly like the signature keys and
  ordered like the model's inputs and outputs;
- a dynamic batch dimension is the `dim_param` "batch", other dynamic
  dimensions carry their polymorphic-shape symbol or stay unnamed;
- doc strings (tf2onnx writes the source path there) and metadata are removed,
  name counters renumbered (see `servekit.determinism`);
- every node must be a standard ONNX op, or the conversion fails with the op
  and the Keras layer it came from.

This module imports TensorFlow and tf2onnx; it runs in the export worker.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import weakref
from typing import Any, Optional, Sequence

from servekit import determinism
from servekit import frozen_weights
from servekit import onnx_bfloat16
from servekit import patching
from servekit import peak_memory
from servekit import settings
from servekit import signature as sig
from servekit.errors import ExportError, root_cause

DEFAULT_OPSET = 17
# An ONNX file is one protobuf message, and protobuf cannot serialize one over
# 2 GiB. Above this many bytes of tensor data (room left for the graph), the
# tensors go to an external data file: the artifact at the export path is then
# a directory holding `model.onnx` and `model.onnx.data`. The environment
# variable lowers it (tests exercise the layout with small models).
EXTERNAL_DATA_ENV = "SERVEKIT_ONNX_EXTERNAL_DATA_BYTES"
EXTERNAL_DATA_BYTES = 2**31 - 2**27
# Models with at least this many bytes of variables are converted with their
# weights lifted (see `_roads`); the environment variable moves the bar (tests
# take small models down those roads).
LIFT_ENV = "SERVEKIT_ONNX_LIFT_BYTES"
LIFT_MODEL_BYTES = 64 * 2**20
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


@contextlib.contextmanager
def _quiet():
    """Silences tf2onnx/TF loggers and stdout/stderr chatter."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow", "absl")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield captured
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def _deterministic_tf2onnx():
    """Makes a conversion independent of what the process did before it.

    Four things tf2onnx's optimizers depend on varied with the process'
    history, so an RNN's ONNX file changed with every conversion in one
    process (a warm worker), and between processes:

    - `Graph.extract_sub_graph_nodes` returns a set of nodes as a list: in
      the order of their memory addresses. Node order decides which of two
      equal nodes or constants survives. Here it keeps the graph's order
      (each node once, as the set had it).
    - tf2onnx suffixes the nodes it inserts with a process-wide counter
      (`Less__1247`), and optimizers order by name: each conversion starts it
      afresh (names only need to be unique within one graph).
    - TF names frozen functions `<name>_frozen_<uid>`: every graph grappler
      sees gets canonical function names first
      (`determinism.canonicalize_function_library`).
    - The einsum optimizer names its constants after object ids
      (`einsum140005827768144_ba_sum_axes`) and caches decompositions, with
      those names, for the whole process: its names are numbered in order of
      use, and its cache is replaced by `_einsum_plan`'s.
    """
    import numpy as np
    from tf2onnx import graph as tf2onnx_graph
    from tf2onnx import tf_loader
    from tf2onnx import utils
    from tf2onnx.optimizer import einsum_optimizer

    original_optimize = tf_loader.tf_optimize
    original_extract = tf2onnx_graph.Graph.extract_sub_graph_nodes
    einsum_numbers: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()
    numbers_used = [0]
    planned: dict = {}  # this conversion's plans, as tf2onnx's cache had them

    def einsum_name(op) -> str:  # tf2onnx: 'einsum%d_%s' % (id(self), ...), a memory address
        if op not in einsum_numbers:
            einsum_numbers[op] = numbers_used[0]
            numbers_used[0] += 1
        return "einsum%d_%s" % (einsum_numbers[op], op.name[:2])

    def optimize_einsum(equation, dtype, optimize=True, cache=True, opset=None, decompose=True, strategy="ml"):
        key = (equation, opset, optimize, np.dtype(dtype).str, decompose, strategy)
        if key not in planned:
            planned[key] = _einsum_plan(key, lambda: einsum_optimizer.CachedEinsum.build_einsum(
                equation, opset, optimize, dtype, decompose=decompose, strategy=strategy), numbers_used)
        return planned[key]

    def tf_optimize(input_names, output_names, graph_def):
        determinism.canonicalize_function_library(graph_def)
        return original_optimize(input_names, output_names, graph_def)

    def extract_sub_graph_nodes(self, *args, **kwargs):
        found = set(original_extract(self, *args, **kwargs))
        # Each node once: tf2onnx's node list can hold a node twice (a bidirectional
        # LSTM's, whose layers then wrote their weights twice), which its set hid.
        ordered = list(dict.fromkeys(node for node in self.get_nodes() if node in found))
        return ordered + sorted(found.difference(ordered), key=lambda node: node.name)

    utils.INTERNAL_NAME = 1
    with patching.replaced(tf_loader, tf_optimize=tf_optimize), \
            patching.replaced(tf2onnx_graph.Graph, extract_sub_graph_nodes=extract_sub_graph_nodes), \
            patching.replaced(einsum_optimizer.EinsumSubOp, _onnx_name=einsum_name), \
            patching.replaced(einsum_optimizer, optimize_einsum=optimize_einsum):
        yield


# The einsum optimizer's choice per (equation, opset, optimize, dtype, decompose,
# strategy), for the process: (the equation it chose, how many einsum names choosing it used).
_EINSUM_PLANS: dict = {}


def _einsum_plan(key, build, numbers_used: list):
    """What tf2onnx's einsum optimizer keeps of an equation it optimized: the
    equivalent equation it chose (`equation_`), which it then decomposes
    afresh. Choosing evaluates every permutation of the equation's letters
    (most of a transformer's conversion time), and depends on nothing but
    `key`: it is done once per process. tf2onnx's own cache did that too, but
    held names of an earlier conversion, so each conversion used to start
    with an empty cache and choose again.

    The names a fresh conversion gives its nodes are kept: choosing numbered
    einsum names, so a plan made in an earlier conversion advances this
    conversion's numbering (`numbers_used`) by as many names as choosing it
    used, as choosing it here would have. The first conversion's bytes and
    every later one's are those of a cold process.
    """
    import types

    plan = _EINSUM_PLANS.get(key)
    if plan is None:
        before = numbers_used[0]
        equation = build().equation_
        plan = _EINSUM_PLANS[key] = (equation, numbers_used[0] - before)
    else:
        numbers_used[0] += plan[1]
    return types.SimpleNamespace(equation_=plan[0])


def _patch_tf2onnx() -> None:
    try:  # Keras' numpy>=2 compatibility patch for tf2onnx
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
    except ImportError:  # a keras without the patch: tf2onnx runs as it is
        pass


def _layer_of(op_name: str, layer_names: Sequence[str]) -> Optional[str]:
    """The Keras layer whose name scope an op name sits in, if any."""
    parts = op_name.split("/")
    best = None
    for part in parts:
        base = part
        for name in layer_names:
            if base == name or (base.startswith(name + "_") and base[len(name) + 1:].isdigit()):
                best = name
    return best


def convert_saved_model(
    saved_model_dir: str,
    endpoint: sig.Signature,
    opset: Optional[int] = None,
    layer_names: Sequence[str] = (),
    model_name: str = "model",
    producer_version: str = "0",
    weights: Optional[dict] = None,
):
    """Converts one signature of a SavedModel to an ONNX `ModelProto`.

    Args:
        saved_model_dir: the SavedModel (written by servekit).
        endpoint: the signature to convert; its tensor names, order and
            dimension names are imposed on the ONNX graph.
        opset: ONNX opset (default 17).
        layer_names: Keras layer names, to say which layer an unsupported op
            belongs to.
        weights: for a model `write_onnx` will write with external data, an
            empty dict that receives the lifted weights the `ModelProto`
            leaves out (pass it to `write_onnx`, which streams them to the
            data file). None: every tensor is in the `ModelProto`.

    Returns:
        The ONNX `ModelProto`.

    Raises:
        ExportError: an op has no ONNX equivalent, or conversion failed.
    """
    from tf2onnx import tf_loader

    def freeze(road: str):
        frozen = tf_loader.from_saved_model(
            saved_model_dir, None, None, tag=["serve"], signatures=[endpoint.name],
            return_initialized_tables=True, return_tensors_to_rename=True, large_model=road == "lean")
        return (*frozen, {})  # the loaded functions' captures are tf2onnx's: `_captured_tables` cannot see them

    return _convert(freeze, saved_model_variables_bytes(saved_model_dir), endpoint, opset, layer_names, model_name,
                    producer_version, weights)


def convert_module(
    built,
    endpoint: sig.Signature,
    opset: Optional[int] = None,
    layer_names: Sequence[str] = (),
    model_name: str = "model",
    producer_version: str = "0",
    weights: Optional[dict] = None,
):
    """Converts one endpoint of a module servekit traced to an ONNX `ModelProto`,
    without writing it as a SavedModel.

    The signature function is called from a new function, as a loaded
    SavedModel's signature calls the saved one, and frozen with the module's
    variables and tables: the graph tf2onnx gets is the one it would load back
    from the module's SavedModel, node names included, so the ONNX model is
    the one `convert_saved_model` gives for that SavedModel, but for two
    kinds of names: the functions of loops and conditionals keep their traced
    names, which a loaded SavedModel prefixes with `__inference_` (an RNN's
    node names), and captured variables are named by rank
    (`determinism.canonicalize_capture_names`), where a loaded SavedModel
    says `unknown_<n>` (the lifted weights of models over 64 MiB). Writing
    the SavedModel and loading it back cost an ONNX-only export of a small
    model half its time.

    Args:
        built: the module (`servekit.saved_model.build_module`).
        endpoint: the signature to convert (one of `built.endpoints`).
        opset, layer_names, model_name, producer_version, weights: as for
            `convert_saved_model`.

    Returns:
        The ONNX `ModelProto`.

    Raises:
        ExportError: an op has no ONNX equivalent, or conversion failed.
    """
    import tensorflow as tf
    from tf2onnx import tf_loader

    signature_fn = built.signatures[endpoint.name]
    specs, _ = signature_fn.structured_input_signature  # flat, named like the signature's inputs

    def freeze(road: str):
        # A new caller per road: tf2onnx's freezing takes the tables out of
        # the function's captures and, on TF 2.13+, never puts them back.
        caller = tf.function(lambda *flat: signature_fn(*flat), autograph=False)
        function = caller.get_concrete_function(*specs)
        inputs = [t.name for t in function.inputs][:len(specs)]  # then come the captures
        outputs = [t.name for t in function.outputs]
        renames = dict(zip(inputs, (s.name for s in specs)))
        renames.update(zip(outputs, sorted(function.structured_outputs)))
        captured_tables = _captured_tables(function)  # before tf2onnx swaps the captures
        graph_def, tables = tf_loader.from_trackable(built.root, function, inputs, outputs, road == "lean")
        renamed = determinism.canonicalize_capture_names(graph_def)
        captured_tables = {renamed.get(name, name): handle for name, handle in captured_tables.items()}
        return graph_def, inputs, outputs, tables, renames, captured_tables

    weight_bytes = sum(v.shape.num_elements() * v.dtype.size for v in signature_fn.variables)
    return _convert(freeze, weight_bytes, endpoint, opset, layer_names, model_name, producer_version, weights)


def _convert(freeze, weight_bytes: int, endpoint: sig.Signature, opset: Optional[int], layer_names: Sequence[str],
             model_name: str, producer_version: str, weights: Optional[dict] = None):
    """`freeze(road)` -> (frozen GraphDef, input and output tensor names,
    initialized tables, tensor renames), as tf2onnx's loaders return them,
    and the lookup tables the function captures (`_captured_tables`);
    converted by the first of `_roads(weight_bytes)` that works, then tidied.
    `weights`: see `convert_saved_model`."""
    _patch_tf2onnx()
    from servekit import tf2onnx_handlers  # noqa: F401  (registers the handlers tf2onnx lacks)

    opset = opset or DEFAULT_OPSET
    with _quiet() as chatter, _deterministic_tf2onnx(), onnx_bfloat16.tf2onnx_bfloat16():
        roads = _roads(weight_bytes)
        for attempt, road in enumerate(roads, 1):
            try:
                model_proto = _tf2onnx(freeze, endpoint, opset, road, weights)
                break
            except ExportError:
                raise
            except Exception as e:  # tf2onnx raises bare exceptions
                if attempt < len(roads):
                    continue  # the lean road misses lookup tables in functions; the next one does not
                raise ExportError(
                    f"Model '{model_name}': tf2onnx could not convert the graph to ONNX ({root_cause(e)}). "
                    "Export format='tf_saved_model' instead, or replace the layer that uses this op.",
                    model=model_name, reason="conversion_failed") from None
    _finish(model_proto, endpoint, layer_names, model_name, producer_version, chatter.getvalue())
    return model_proto


def _finish(model_proto, endpoint: sig.Signature, layer_names: Sequence[str], model_name: str,
            producer_version: str, chatter: str) -> None:
    """What every converter's graph goes through, in place: standard ops only,
    bfloat16 computed as ONNX Runtime's CPU can, the signature's names and dims,
    canonical bytes, and a size protobuf can hold."""
    _check_standard_ops(model_proto, layer_names, model_name, chatter)
    onnx_bfloat16.lower_bfloat16(model_proto)
    _impose_signature(model_proto, endpoint)
    determinism.canonicalize_onnx(model_proto, producer_version)
    model_proto.graph.name = model_name
    _check_in_memory(model_proto)


def _roads(weight_bytes: int) -> tuple[str, ...]:
    """How to convert a model with this many bytes of variables, in order:

    - "plain": tf2onnx as it is (small models: its copies of each constant
      cost little, and its constant folding through weights keeps the graph
      smallest);
    - "lean": tf2onnx's large-model freezing (no 2 GB limit, no grappler pass
      over the weights), the weights lifted out, then grappler on what is left;
    - "lifted": tf2onnx's regular freezing, then the weights lifted out (for
      what the lean road cannot freeze, such as lookup tables; below 2 GB only).
    """
    if weight_bytes > external_data_threshold():
        return ("lean",)
    if weight_bytes >= lift_threshold():
        return ("lean", "lifted")
    return ("plain",)


def _tf2onnx(freeze, endpoint: sig.Signature, opset: int, road: str, weights: Optional[dict] = None):
    """Converts the graph `freeze(road)` gives by one of `_roads`: the ONNX
    `ModelProto`, with tf2onnx's names (`_impose_signature` renames them)."""
    import tensorflow as tf
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common

    values: list = []  # the lean road's weights, as the variables hold them
    with frozen_weights.weights_left_out(values) if road == "lean" else contextlib.nullcontext():
        graph_def, inputs, outputs, tables, renames, captured_tables = freeze(road)
    peak_memory.mark("freeze")
    lifted: frozen_weights.LiftedWeights = {}
    if road == "plain":
        graph_def = _inline_xla_calls(graph_def, inputs, outputs)
    else:
        gc.collect()  # what tf2onnx loaded or froze sits in reference cycles: a copy of every weight
        if road == "lean":  # what tf2onnx's regular freezing repairs
            graph_def = tf_loader.fix_freezing_errors(tf_loader.fix_freezing_errors_part2(graph_def))
        lifted = frozen_weights.lift_weights(graph_def, values)
        del values
        inputs = list(inputs) + [name + ":0" for name in lifted]
        if road == "lean":
            graph_def = _optimized(_without_xla_marks(graph_def), inputs, outputs, weights=list(lifted))
            tables.update(_tables_of_lookups(graph_def, captured_tables))
        else:
            graph_def = _inline_xla_calls(graph_def, inputs, outputs)
        peak_memory.mark("lift weights")
    # Map graph placeholders to signature keys by name, not by position.
    wanted_inputs = {t.name for t in endpoint.inputs}
    for tensor_name in inputs:
        base = tensor_name.split(":")[0]
        if base in wanted_inputs:
            renames[tensor_name] = base
    with tf.device("/cpu:0"):
        # Never tf2onnx's large-model mode: it still copies constants on every optimizer pass.
        model_proto, _ = _convert_common(
            graph_def, name="model", opset=opset, input_names=inputs, output_names=outputs,
            tensors_to_rename=renames, initialized_tables=tables)
    del graph_def  # its memory, before the weights are copied back
    peak_memory.mark("conversion")
    _restore_weights(model_proto, lifted, weights)
    peak_memory.mark("restore weights")
    return model_proto


def _captured_tables(function) -> dict[str, Any]:
    """The lookup tables a concrete function captures: its placeholder's node
    name -> the table's resource handle (every resource but a variable)."""
    import tensorflow as tf

    variables = {id(v.handle) for v in function.graph.variables}
    return {internal.name.split(":")[0]: external for external, internal in function.graph.captures
            if external.dtype == tf.resource and id(external) not in variables}


# tf2onnx's lookup ops, which find their table by the `shared_name` of a `HashTableV2` node.
_LOOKUP_OPS = ("LookupTableFindV2", "LookupTableSizeV2")


def _tables_of_lookups(graph_def, captured_tables: dict[str, Any]) -> dict[bytes, tuple]:
    """Makes each captured table a lookup reads a `HashTableV2` node again, in
    place; returns their contents (shared name -> keys, values).

    The lean road's freezing keeps a model's calls as functions, so tf2onnx
    finds no lookup beside the placeholder of the table it captures, and
    leaves the placeholder ("Could not determine table shared name"). Once
    grappler has inlined the calls (`_optimized`), each lookup reads the
    placeholder (through `Identity`s); the table's contents are exported
    from its handle, under a name made from the placeholder's (which the
    capture renaming made reproducible).
    """
    from tensorflow.python.ops import lookup_ops
    from tf2onnx import tf_loader, tf_utils

    by_name = {node.name: node for node in graph_def.node}
    found: dict[str, Any] = {}
    for node in graph_def.node:
        if node.op not in _LOOKUP_OPS:
            continue
        source = by_name.get(node.input[0].split(":")[0])
        while source is not None and source.op == "Identity":
            source = by_name.get(source.input[0].split(":")[0])
        if source is None or source.op != "Placeholder" or source.name not in captured_tables:
            continue
        if node.op == "LookupTableFindV2":  # a size-only lookup alone leaves the table's dtypes unknown
            found[source.name] = tf_utils.HashTableInfo(f"servekit_table_{source.name}".encode(),
                                                        node.attr["Tin"].type, node.attr["Tout"].type)
    contents = {}
    for name, info in found.items():
        keys, values = lookup_ops.lookup_table_export_v2(captured_tables[name], info.key_dtype, info.val_dtype)
        contents[info.shared_name] = (keys.numpy(), values.numpy())
    tf_loader.replace_placeholders_with_tables(graph_def, found)
    return contents


def saved_model_variables_bytes(saved_model_dir: str) -> int:
    """Size of a SavedModel's variable files: about what its frozen graph holds."""
    variables = os.path.join(saved_model_dir, "variables")
    if not os.path.isdir(variables):
        return 0
    return sum(os.path.getsize(os.path.join(variables, n)) for n in os.listdir(variables))


# The location a lifted weight's initializer names, with its key in `weights`,
# until `write_onnx` streams the weight into the data file.
_PENDING_LOCATION = "servekit:pending:"


def _restore_weights(model_proto, lifted: frozen_weights.LiftedWeights,
                     weights: Optional[dict] = None) -> None:
    """Makes the graph inputs `frozen_weights.lift_weights` created initializers again.

    Each weight is copied into its initializer, one at a time, unless
    `weights` is a dict: then the initializer names the weight, which stays in
    `weights` (in the variable it was read from) until `write_onnx` writes it
    into the file, the model's or its external data file.
    """
    if not lifted:
        return
    import numpy as np
    import onnx
    import tensorflow as tf

    graph = model_proto.graph
    names = {name + ":0": name for name in lifted}
    kept = [vi for vi in graph.input if vi.name not in names and vi.name not in lifted]
    found = {vi.name for vi in graph.input} - {vi.name for vi in kept}
    if len(found) != len(lifted):
        raise ExportError("tf2onnx dropped or renamed lifted weights "
                          f"{sorted(set(lifted) - {names.get(n, n) for n in found})}.", reason="conversion_failed")
    del graph.input[:]
    graph.input.extend(kept)
    rank = {name: i for i, name in enumerate(lifted)}  # graph order
    for value_name in sorted(found, key=lambda n: rank[names.get(n, n)]):
        tf_dtype, dims, data = lifted.pop(names.get(value_name, value_name))  # one copy alive at a time
        tensor = graph.initializer.add()
        tensor.name = value_name
        np_dtype = np.dtype(tf.dtypes.as_dtype(tf_dtype).as_numpy_dtype)
        tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(np_dtype)
        tensor.dims.extend(dims)
        if weights is not None:
            key = str(len(weights))
            weights[key] = data
            tensor.data_location = onnx.TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", _PENDING_LOCATION + key
        else:
            tensor.raw_data = data if isinstance(data, bytes) else data.tobytes()


_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")
_XLA_MARKS = ("_XlaMustCompile", "_noinline")


def _inline_xla_calls(graph_def, inputs: Sequence[str], outputs: Sequence[str]):
    """Inlines the functions Keras compiles with XLA into the frozen graph.

    Keras's TensorFlow backend wraps some ops in `tf.function(jit_compile=True)`
    because TensorFlow's CPU kernels lack them (grouped convolutions, e.g.
    ConvNeXt's depthwise `Conv2D(groups=C)`; channels-first 3D convolutions).
    Grappler never inlines a function marked for XLA, so tf2onnx would see a
    `StatefulPartitionedCall` it cannot convert. The body is plain TensorFlow
    ops (a grouped `Conv2D` is an ONNX `Conv` with `group`): the marks are
    removed and grappler runs again, which inlines it.
    """
    if not _has_xla_marks(graph_def):
        return graph_def
    return _optimized(_without_xla_marks(graph_def), inputs, outputs)


def _has_xla_marks(graph_def) -> bool:
    return any(n.op in _CALL_OPS and any(m in n.attr for m in _XLA_MARKS) for n in graph_def.node)


def _without_xla_marks(graph_def):
    """Removes the marks that keep grappler from inlining a function (in place)."""
    for node in graph_def.node:
        if node.op in _CALL_OPS:
            for mark in _XLA_MARKS:
                if mark in node.attr:
                    del node.attr[mark]
    for function in graph_def.library.function:
        for mark in _XLA_MARKS:
            if mark in function.attr:
                del function.attr[mark]
    return graph_def


def _optimized(graph_def, inputs: Sequence[str], outputs: Sequence[str], weights: Sequence[str] = ()):
    """tf2onnx's grappler pass (function inlining, constant folding, pruning),
    without a copy of the lifted weights named in `weights`
    (`frozen_weights.optimized_without_weight_copies`)."""
    import tensorflow as tf
    from tf2onnx import tf_loader

    def optimize(graph_def):
        with tf.Graph().as_default():  # grappler exports a meta graph: graph mode
            return tf_loader.tf_optimize(list(inputs), list(outputs), graph_def)

    return frozen_weights.optimized_without_weight_copies(graph_def, weights, optimize)


def _check_standard_ops(model_proto, layer_names, model_name, chatter: str) -> None:
    import onnx.defs

    bad = []
    for node in model_proto.graph.node:
        domain = node.domain or ""
        if domain not in _STANDARD_DOMAINS or not onnx.defs.has(node.op_type, domain):
            bad.append(node)
    if not bad:
        return
    node = bad[0]
    layer = _layer_of(node.name, layer_names)
    where = f"layer '{layer}'" if layer else f"node '{node.name}'"
    ops = sorted({n.op_type for n in bad})
    hint = ""
    if any(op.startswith(("StringSplit", "RegexReplace", "StaticRegex", "StringLower", "StringStrip",
                          "Substr", "StringNGrams")) for op in ops):
        hint = (" ONNX has no string splitting/normalization ops: tokenize outside the model and feed "
                "pre-split tokens to a StringLookup layer, or export format='tf_saved_model'.")
    else:
        hint = " Export format='tf_saved_model' instead, or replace this layer with standard Keras layers."
    raise ExportError(
        f"Model '{model_name}': {where} uses TensorFlow op(s) {', '.join(ops)} that have no ONNX "
        f"equivalent in opset {_opset_of(model_proto)}.{hint}",
        model=model_name, layer=layer, reason="unsupported_op")


def _opset_of(model_proto) -> int:
    for o in model_proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 0


def _set_dims(value_info, dims) -> None:
    tensor_type = value_info.type.tensor_type
    shape_dims = tensor_type.shape.dim
    if len(shape_dims) != len(dims):
        del shape_dims[:]
        for _ in dims:
            shape_dims.add()
    for d, want in zip(shape_dims, dims):
        if isinstance(want, int):
            if not d.HasField("dim_value"):
                d.dim_value = want
            continue
        d.Clear()
        if want:
            d.dim_param = want


def _impose_signature(model_proto, endpoint: sig.Signature) -> None:
    graph = model_proto.graph
    by_name_in = {vi.name: vi for vi in graph.input}
    by_name_out = {vi.name: vi for vi in graph.output}
    want_in = [t.name for t in endpoint.inputs]
    want_out = [t.name for t in endpoint.outputs]
    if set(by_name_in) != set(want_in) or set(by_name_out) != set(want_out):
        raise ExportError(
            f"ONNX conversion produced inputs {sorted(by_name_in)} and outputs {sorted(by_name_out)}; expected "
            f"{want_in} and {want_out}.", reason="conversion_failed")
    ins = [type(by_name_in[n])() for n in want_in]
    for c, n in zip(ins, want_in):
        c.CopyFrom(by_name_in[n])
    outs = [type(by_name_out[n])() for n in want_out]
    for c, n in zip(outs, want_out):
        c.CopyFrom(by_name_out[n])
    del graph.input[:]
    graph.input.extend(ins)
    del graph.output[:]
    graph.output.extend(outs)
    for vi, t in zip(graph.input, endpoint.inputs):
        _set_dims(vi, t.shape)
    for vi, t in zip(graph.output, endpoint.outputs):
        _set_dims(vi, t.shape)


def _check_in_memory(model_proto) -> None:
    """onnx.checker on a model small enough to serialize; larger ones are
    checked by `write_onnx`, from their files. Weights the conversion left
    out (in `weights`, until `write_onnx`) are checked as the graph inputs
    they were converted as: the checker would look for a file holding them."""
    import onnx

    if _tensor_bytes(model_proto) > external_data_threshold():
        return
    left_out = [t for t in model_proto.graph.initializer if _is_left_out(t)]
    if not left_out:
        onnx.checker.check_model(model_proto)
        return
    lifted = onnx.ModelProto()
    lifted.CopyFrom(model_proto)  # small: the weights are not in it
    kept = [t for t in lifted.graph.initializer if not _is_left_out(t)]
    del lifted.graph.initializer[:]
    lifted.graph.initializer.extend(kept)
    lifted.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in left_out)
    onnx.checker.check_model(lifted)


def _left_out_key(tensor) -> Optional[str]:
    """The key in `weights` of the weight `_restore_weights` left out of this
    initializer, or None for a tensor that holds its data."""
    location = tensor.external_data[0].value if tensor.external_data else ""
    return location[len(_PENDING_LOCATION):] if location.startswith(_PENDING_LOCATION) else None


def _is_left_out(tensor) -> bool:
    return _left_out_key(tensor) is not None


def external_data_threshold() -> int:
    """Bytes of tensor data above which `write_onnx` writes external data."""
    return settings.bytes_setting(EXTERNAL_DATA_ENV, EXTERNAL_DATA_BYTES)


def lift_threshold() -> int:
    """Bytes of variables from which weights are converted lifted (`_roads`)."""
    return settings.bytes_setting(LIFT_ENV, LIFT_MODEL_BYTES)


def _tensor_bytes(model_proto) -> int:
    """Bytes of tensor data in the main graph's initializers and Constant nodes.

    Computed from shapes and dtypes: reading `raw_data` would copy it, and
    protobuf cannot size a message over 2 GiB.
    """
    import math

    import onnx

    total = 0
    for tensor in onnx.external_data_helper._get_all_tensors(model_proto):
        if tensor.data_type == onnx.TensorProto.STRING:
            total += tensor.ByteSize()
        else:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            total += itemsize * math.prod(tensor.dims)
    return total


def onnx_model_file(path: str) -> str:
    """The ONNX model file of an artifact: `path` itself, or `path/model.onnx`
    for an artifact with external data."""
    return os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path


def write_onnx(model_proto, path: str, weights: Optional[dict] = None) -> None:
    """Writes `model_proto` at `path`, canonically (byte-reproducible).

    A model whose tensors exceed `external_data_threshold()` is written as a
    directory `path` with `model.onnx` (the graph, tensors referenced by a
    relative location) and `model.onnx.data` (every tensor over 1 KiB, in
    graph order, at 64-byte aligned offsets): ONNX Runtime loads it from the
    model file's path, in Python and natively.

    Args:
        weights: what the conversion left out of `model_proto` (its
            `weights` argument): written into the data file from where they
            are, without a copy.
    """
    if _tensor_bytes(model_proto) <= external_data_threshold():
        with open(path, "wb") as f:
            if weights:
                _write_with_weights(f, model_proto, weights)
            else:
                f.write(model_proto.SerializeToString(deterministic=True))
        os.chmod(path, 0o644)
        return
    from onnx import external_data_helper

    os.makedirs(path)
    external_data_helper.convert_model_to_external_data(
        model_proto, all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024, convert_attribute=True)
    _write_external_tensors(model_proto, os.path.join(path, DATA_FILE), weights or {})
    model_file = os.path.join(path, MODEL_FILE)
    with open(model_file, "wb") as f:
        f.write(model_proto.SerializeToString(deterministic=True))
    for name in (MODEL_FILE, DATA_FILE):
        os.chmod(os.path.join(path, name), 0o644)
    import onnx

    onnx.checker.check_model(model_file)  # by path: the checker reads the external data itself


_ALIGNMENT = 64


def _write_external_tensors(model_proto, data_path: str, weights: dict) -> None:
    """Moves each tensor marked external into `data_path`, in graph order,
    and records its offset and length (what onnx's own writer does, with a
    fixed order and alignment so that the bytes are reproducible). A weight
    the conversion left in `weights` is written from its array."""
    from onnx import external_data_helper

    offset = 0
    with open(data_path, "wb") as f:
        for tensor in external_data_helper._get_all_tensors(model_proto):
            if not external_data_helper.uses_external_data(tensor):
                continue
            key = _left_out_key(tensor)
            if key is not None:
                data = weights.pop(key)
            elif tensor.HasField("raw_data"):
                data = tensor.raw_data
            else:
                continue
            pad = (-offset) % _ALIGNMENT
            f.write(b"\0" * pad)
            offset += pad
            length = _write_weight(f, data)
            del data  # the array or bytes, before the next weight
            _set_external_data(tensor, offset, length)
            offset += length
            tensor.ClearField("raw_data")
    if weights:
        raise ExportError(f"The ONNX model does not name the lifted weights {sorted(weights)} it was converted with.",
                          reason="conversion_failed")


# Field numbers in onnx.proto of what `_write_with_weights` splices.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


def _write_with_weights(f, model_proto, weights: dict) -> None:
    """Writes `model_proto` as one file with the weights it left out in
    `weights` as its initializers' `raw_data`, each streamed from its
    variable: the bytes `SerializeToString(deterministic=True)` gives for the
    model with the weights copied in, without that copy, nor the
    serialization's.

    Protobuf writes a message's fields in field-number order, each message
    field as its tag, its length and its bytes: the model is its fields before
    `graph`, the graph, its fields after; the graph likewise around its
    initializers, and a left-out initializer around its `raw_data`.
    """
    import onnx

    records = []  # per initializer: (its bytes before and after raw_data, the left-out weight or None)
    for tensor in model_proto.graph.initializer:
        if not _is_left_out(tensor):
            records.append((tensor.SerializeToString(deterministic=True), b"", None))
            continue
        kept = onnx.TensorProto()
        kept.CopyFrom(tensor)  # no data: the weight is in `weights`
        kept.ClearField("data_location")
        del kept.external_data[:]
        data = weights.pop(_left_out_key(tensor))
        records.append((*_serialized_around(kept, _TENSOR_RAW_DATA), data))
    if weights:
        raise ExportError(f"The ONNX model does not name the lifted weights {sorted(weights)} it was converted with.",
                          reason="conversion_failed")

    def data_bytes(data) -> int:
        return len(data) if isinstance(data, bytes) else data.nbytes

    def length(head: bytes, tail: bytes, data) -> int:  # of a tensor's serialization
        return len(head) + (0 if data is None else _field_bytes(_TENSOR_RAW_DATA, data_bytes(data))) + len(tail)

    graph_head, graph_tail = _serialized_around(model_proto.graph, _GRAPH_INITIALIZER)
    graph_length = (len(graph_head) + sum(_field_bytes(_GRAPH_INITIALIZER, length(*r)) for r in records)
                    + len(graph_tail))
    model_head, model_tail = _serialized_around(model_proto, _MODEL_GRAPH)
    f.write(model_head + _field_key(_MODEL_GRAPH, graph_length) + graph_head)
    for i, (head, tail, data) in enumerate(records):
        f.write(_field_key(_GRAPH_INITIALIZER, length(head, tail, data)) + head)
        if data is not None:
            f.write(_field_key(_TENSOR_RAW_DATA, data_bytes(data)))
            _write_weight(f, data)
            records[i] = (head, tail, None)  # the array, before the next weight
            del data
        f.write(tail)
    f.write(graph_tail + model_tail)


def _serialized_around(message, number: int) -> tuple[bytes, bytes]:
    """`message`'s serialization without its field `number`, split where that
    field's bytes go: its fields numbered below, and above."""
    before, after = type(message)(), type(message)()
    for field, value in message.ListFields():
        if field.number == number:
            continue
        target = before if field.number < number else after
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
    return before.SerializeToString(deterministic=True), after.SerializeToString(deterministic=True)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_key(number: int, length: int) -> bytes:
    """A length-delimited field's tag and length."""
    return _varint(number << 3 | 2) + _varint(length)


def _field_bytes(number: int, length: int) -> int:
    """The bytes a length-delimited field of `length` bytes takes."""
    return len(_field_key(number, length)) + length


def _write_weight(f, data) -> int:
    """Writes a weight's bytes (raw bytes, or an array's: a bfloat16 one through its
    16-bit patterns, which a buffer can hold); returns their length."""
    if not isinstance(data, bytes):
        data = memoryview(data.view("uint16") if data.dtype.name == "bfloat16" else data).cast("B")
    f.write(data)
    return len(data)


def _set_external_data(tensor, offset: int, length: int) -> None:
    """`onnx.external_data_helper.set_external_data(tensor, DATA_FILE, offset,
    length)`, also for a tensor without `raw_data` (a weight written from its
    array): the same entries, so the same bytes."""
    import onnx

    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", DATA_FILE), ("offset", offset), ("length", length)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)


def _rename_values(graph, mapping: dict[str, str]) -> None:
    """Renames values everywhere in `graph` and its subgraphs."""
    import onnx

    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_values(attr.g, mapping)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename_values(g, mapping)
    for collection in (graph.input, graph.output, graph.value_info):
        for vi in collection:
            vi.name = mapping.get(vi.name, vi.name)
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)


def _value_names(graph) -> set[str]:
    names = {vi.name for vi in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= {i.name for i in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output)
    return names


def adopt_foreign(model_proto, endpoint: sig.Signature, model_name: str, producer_version: str,
                  layer_names: Sequence[str] = ()) -> None:
    """Gives an ONNX model from another converter (jax2onnx, torch.onnx)
    servekit's guarantees, in place: graph inputs and outputs named and ordered
    like `endpoint` (matched by position), dynamic dimensions named, local
    functions inlined, only standard ops, canonical bytes.

    Raises:
        ExportError: the graph's inputs or outputs do not match the signature
            in number, or it uses non-standard ops.
    """
    import onnx

    if model_proto.functions:
        from onnx import inliner

        inlined = inliner.inline_local_functions(model_proto)
        model_proto.CopyFrom(inlined)
    graph = model_proto.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in initializers]
    if initializers & {vi.name for vi in graph.input}:
        kept = [vi for vi in graph.input if vi.name not in initializers]
        del graph.input[:]
        graph.input.extend(kept)
    if len(inputs) != len(endpoint.inputs) or len(graph.output) != len(endpoint.outputs):
        raise ExportError(
            f"Model '{model_name}': the converter produced {len(inputs)} input(s) and {len(graph.output)} output(s); "
            f"the signature has {len(endpoint.inputs)} and {len(endpoint.outputs)}.", model=model_name,
            reason="conversion_failed")
    taken = _value_names(graph)
    wanted = {t.name for t in endpoint.inputs} | {t.name for t in endpoint.outputs}
    # Internal values that happen to carry a wanted name move out of the way.
    clashes = {n: f"{n}__internal" for n in taken & wanted
               if n not in {vi.name for vi in inputs} | {vo.name for vo in graph.output}}
    if clashes:
        _rename_values(graph, clashes)
    _rename_values(graph, {vi.name: t.name for vi, t in zip(inputs, endpoint.inputs) if vi.name != t.name})
    for i, (vo, t) in enumerate(zip(list(graph.output), endpoint.outputs)):
        if vo.name == t.name:
            continue
        graph.node.append(onnx.helper.make_node("Identity", [vo.name], [t.name], name=f"servekit_output_{i}"))
        graph.output[i].name = t.name
    if _opset_of(model_proto) < 18:
        _reduce_axes_as_attributes(graph, {})
    _finish(model_proto, endpoint, layer_names, model_name, producer_version, "")


# Reductions whose axes became an input at opset 18 (ReduceSum's did at 13).
_AXES_INPUT_FROM_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                       "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _reduce_axes_as_attributes(graph, outer_constants: dict) -> None:
    """Opset-18 reductions (axes as a constant second input) written as the
    model's opset < 18 spells them (an `axes` attribute), in place, subgraphs
    included. jax2onnx 0.17.1 asked for opset 17 writes them in the opset-18 form
    (`ReduceMean` of every `LayerNormalization`), which ONNX's checker and
    ONNX Runtime refuse. Axes computed at run time are left for them to refuse."""
    import onnx
    from onnx import numpy_helper

    constants = dict(outer_constants)
    constants.update({t.name: t for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
                _reduce_axes_as_attributes(subgraph, constants)
        if node.op_type not in _AXES_INPUT_FROM_18 or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        axes = constants.get(node.input[1]) if node.input[1] else None
        if node.input[1] and axes is None:
            continue
        keep = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
        noop = any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute)
        values = [int(v) for v in numpy_helper.to_array(axes).reshape(-1)] if axes is not None else []
        if noop and not values:  # "reduce nothing" has no opset-17 spelling
            continue
        del node.attribute[:]
        node.attribute.extend(keep)
        if values:
            node.attribute.append(onnx.helper.make_attribute("axes", values))
        del node.input[1:]
