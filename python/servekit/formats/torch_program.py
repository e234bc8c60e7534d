"""PyTorch: a `torch.export` ExportedProgram (`.pt2`) and its AOTInductor package.

Both are made from a Keras model on the torch backend: the source model
itself (the in-process strategy, as Keras exports), or the model's `.keras`
archive rebuilt in a fresh torch worker (the cross-backend strategy, for
TensorFlow and JAX models).

The ExportedProgram is Keras's: the module is the model, taking the model's
call structure (a tensor, a list or a dict) and returning its output
structure, so `torch.export.load(p).module()(x)` behaves like `model(x)`.
The AOTInductor package is compiled from a flat endpoint module instead,
whose `forward` takes one tensor per input, named by the signature keys,
and returns a list in signature order: a C++ caller passes and receives
tensors in the manifest's order. In both, every dynamic dimension is a
`torch.export.Dim` named like the signature's dimension (one `Dim` per name:
dimensions with one name must be equal), and the sample traced has batch 2
(torch specializes sizes of 1).

Canonical bytes. servekit removes what depends on the exporting machine or
run: source stack traces (absolute paths) in every node's metadata, the
archive's folder name (always `model`; torch names it after the file), entry
dates, the random `serialization_id`, and the compiler command lines Inductor
appends to its generated sources. An AOTInductor package stays specific to
the exporting host: Inductor compiles it with `-march=native`, and the
shared library's debug information names its build directories, so it is
not in the byte-reproducibility contract (docs/determinism.md).

`torch_aoti` compiles that program with `torch._inductor.
aoti_compile_and_package` into a package `AOTIModelPackageLoader` runs from
C++. Compilation costs 20-40 s per model on two cores (g++ on the generated
kernels): the Bazel rule caches it like any action.
"""

from __future__ import annotations

import contextlib
import keyword
import os
import re
import tempfile
import zipfile
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from servekit import patching
from servekit.errors import ExportError, ExportRuntimeError, root_cause
from servekit.formats import torch_lookups
from servekit.source_model import recurrences

# `torch.export.export` arguments an export call may pass (Keras forwards them).
EXPORT_ARGUMENTS = ("dynamic_shapes", "strict", "preserve_module_call_signature",
                    "prefer_deferred_runtime_asserts_over_guards")
SAMPLE_BATCH = 2
_ARCHIVE_NAME = "model"


def take_export_arguments(kwargs: dict[str, Any], model_name: str) -> dict[str, Any]:
    """Pops the `torch.export.export` arguments out of `kwargs`."""
    return {k: kwargs.pop(k) for k in EXPORT_ARGUMENTS if k in kwargs}


def _argument_names(names: Sequence[str]) -> list[str]:
    """Python parameter names for the flat inputs: the key where it is one."""
    out = []
    for i, name in enumerate(names):
        ok = name.isidentifier() and not keyword.iskeyword(name) and name not in ("self", "model") and name not in out
        out.append(name if ok else f"input_{i}")
    return out


def flat_endpoint_module(model, layout):
    """A `torch.nn.Module` calling `model` in inference mode on flat inputs
    named by the signature keys, returning its flat outputs as a list (in
    signature order): what a C++ caller of an AOTInductor package passes and
    receives."""
    import keras
    import torch

    params = _argument_names([s.name for s in layout.flat])
    source = (f"def forward(self, {', '.join(params)}):\n"
              f"    outputs = self.model(*self.layout.pack([{', '.join(params)}]), training=False)\n"
              "    return list(self.flatten(outputs))\n")
    namespace: dict[str, Any] = {}
    exec(compile(source, "<servekit endpoint>", "exec"), namespace)  # forward's parameters are the signature keys
    module_class = type("ServekitEndpoint", (torch.nn.Module,), {"forward": namespace["forward"],
                                                                 "__module__": __name__})
    module = module_class()
    module.model = model
    module.layout = layout
    module.flatten = keras.tree.flatten
    module.eval()
    return module


def _dims(layout) -> list[dict[int, Any]]:
    """Per flat input, its dynamic axes as `torch.export.Dim`s, one per name."""
    import torch

    by_name: dict[str, Any] = {}
    shapes = []
    for spec in layout.flat:
        entry = {}
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, str):
                if dim not in by_name:
                    by_name[dim] = torch.export.Dim(_dim_identifier(dim), min=1, max=1 << 30)
                entry[axis] = by_name[dim]
        shapes.append(entry)
    return shapes


def _dim_identifier(name: str) -> str:
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return clean if clean.isidentifier() else f"d_{clean}"


def sample_inputs(layout, cases, model) -> list[np.ndarray]:
    """Flat inputs to trace with: a case of batch >= 2, else generated at batch 2."""
    from servekit.source_model.sample_inputs import generate_inputs

    for case in cases:
        if case.batch >= SAMPLE_BATCH and not case.runs:
            return [np.asarray(case.inputs[s.name]) for s in layout.flat]
    return generate_inputs(layout, SAMPLE_BATCH, model=model)


def export_program(model, layout, flat_sample: Sequence[np.ndarray], model_name: str, flat: bool,
                   export_args: Optional[Mapping[str, Any]] = None):
    """`torch.export.export` of the model, every named dim dynamic.

    Args:
        flat: False for Keras's program (the module is the model: it takes the
            model's call structure and returns its output structure, as
            `model.export(format="torch")` writes it); True for the flat
            endpoint module (`flat_endpoint_module`) an AOTInductor package
            is compiled from.
        export_args: `torch.export.export` arguments; a `dynamic_shapes` of
            Keras's form (for the model's `*args`) replaces servekit's.

    Raises:
        ExportError: torch.export refused the model (its cause kept).
    """
    import torch

    if any(s.dtype == "string" for s in layout.flat):
        raise string_inputs_error(model_name)
    args = dict(export_args or {})
    args.setdefault("strict", False)
    tensors = [to_torch(x) for x in flat_sample]
    if flat:
        module, sample = flat_endpoint_module(model, layout), tuple(tensors)
        args["dynamic_shapes"] = tuple(_dims(layout))
    else:
        module, sample = _for_inference(model), tuple(layout.pack(tensors))
        if "dynamic_shapes" in args:
            from keras.src.export.torch import _normalize_dynamic_shapes

            args["dynamic_shapes"] = _normalize_dynamic_shapes(args["dynamic_shapes"], sample)
        else:
            args["dynamic_shapes"] = [tuple(layout.pack(_dims(layout)))]
    try:
        # Unrolled, a recurrent layer keeps the batch dynamic (`servekit.source_model.recurrences`).
        with torch.no_grad(), recurrences.for_converters(model, "torch"), _keras_torch_ops_traceable(compiled=flat), \
                _without_activity_losses(model), torch_lookups.integer_lookups_as_comparisons(model, model_name):
            program = _export_within_bounds(module, sample, args, model_name)
    except ExportError:
        raise
    except Exception as e:  # torch.export's own diagnostics (guards, unsupported ops): kept for the message
        raise ExportRuntimeError(
            f"Model '{model_name}': torch.export could not capture the model: {root_cause(e)}. Common causes: "
            "Python control flow on tensor values (use keras.ops.cond), or a dimension the model fixes (declare it "
            "static in input_signature).", model=model_name, reason="conversion_failed") from None
    for node in program.graph_module.graph.nodes:
        node.meta.pop("stack_trace", None)
    return _weights_once(program)


def _weights_once(program):
    """The program with each weight held once, as a parameter.

    Keras's torch layers register their variables' tensors as module parameters,
    but compute with the tensor a variable holds, which torch.export does not see
    swapped for a parameter and lifts as a constant: every weight came out twice,
    as an unused parameter and as the constant the graph reads (the program's
    file and a server's memory twice the weights). Each constant that is a
    parameter's very tensor (same storage, shape, strides and dtype) is read as
    that parameter instead, and dropped.
    """
    import torch
    from torch.export.graph_signature import ExportGraphSignature, InputKind

    def key(tensor):
        return tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype

    signature = program.graph_signature
    parameters = {key(program.state_dict[spec.target]): spec for spec in signature.input_specs
                  if spec.kind == InputKind.PARAMETER}
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    graph, constants, input_specs = program.graph, dict(program.constants), []
    for spec in signature.input_specs:
        tensor = constants.get(spec.target) if spec.kind == InputKind.CONSTANT_TENSOR else None
        parameter = parameters.get(key(tensor)) if isinstance(tensor, torch.Tensor) else None
        if parameter is None:
            input_specs.append(spec)
            continue
        placeholders[spec.arg.name].replace_all_uses_with(placeholders[parameter.arg.name])
        graph.erase_node(placeholders[spec.arg.name])
        del constants[spec.target]
    if len(input_specs) == len(signature.input_specs):
        return program
    program.graph_module.recompile()
    return torch.export.ExportedProgram(
        root=program.graph_module, graph=graph,
        graph_signature=ExportGraphSignature(input_specs=input_specs, output_specs=signature.output_specs),
        state_dict=program.state_dict, range_constraints=program.range_constraints,
        module_call_graph=program.module_call_graph, example_inputs=program.example_inputs, constants=constants,
        verifiers=program.verifiers)


def _for_inference(model):
    """The model as Keras's program is exported (the module is the model, taking
    its call structure), called with `training=False`.

    torch.export calls `module(*args)`, and without `training` a layer takes its
    `call`'s default: Keras's random image augmentations (`RandomFlip`,
    `RandomRotation`, ...) default to True, and their training branch draws
    random numbers seeded from a variable, which torch.export cannot trace
    ("GuardOnDataDependentSymNode").
    """
    import torch

    class Inference(torch.nn.Module):
        def __init__(self, keras_model):
            super().__init__()
            self.keras_model = keras_model

        def forward(self, *args, **kwargs):
            return self.keras_model(*args, training=False, **kwargs)

    return Inference(model).eval()


@contextlib.contextmanager
def _without_activity_losses(model) -> Iterator[None]:
    """Each layer's activity regularizer off while torch.export traces.

    Keras adds a layer's activity regularization loss on every call, inference
    included, divided by the batch size: under torch the size is read as a Python
    number, and torch.export fixes the batch at the sample's ("fixes the dynamic
    dimension(s) ['batch']": an `ActivityRegularization` layer, a `Dense` with an
    `activity_regularizer`). The losses are no output of the program.
    """
    from servekit.source_model.kinds import all_layers

    regularized = [(layer, layer.activity_regularizer) for layer in all_layers(model)
                   if getattr(layer, "activity_regularizer", None) is not None]
    for layer, _ in regularized:
        layer.activity_regularizer = None
    try:
        yield
    finally:
        for layer, regularizer in regularized:
            layer.activity_regularizer = regularizer


@contextlib.contextmanager
def _keras_torch_ops_traceable(compiled: bool) -> Iterator[None]:
    """Keras 3.15's torch ops that torch.export cannot trace as Keras writes
    them, rewritten while it traces (each rewrite's docstring says why).

    Args:
        compiled: the program is compiled (AOTInductor), which takes the traced
            strides as they are: convolutions keep torch's layouts.
    """
    with contextlib.ExitStack() as rewrites:
        for rewrite in (_symbolic_sizes_as_python_numbers, _segment_ids_broadcast, _take_along_axis_as_gather,
                        _layout_copies_without_size_guards, _same_padding_of_any_size, _center_crops_of_any_size):
            rewrites.enter_context(rewrite())
        if not compiled:
            rewrites.enter_context(_convolution_layouts_without_size_guards())
        yield


@contextlib.contextmanager
def _convolution_layouts_without_size_guards() -> Iterator[None]:
    """torch.export picks no backend and no memory layout for a convolution over
    a dynamic spatial size (the ExportedProgram only).

    To give a traced convolution's output the strides eager mode would, torch
    asks which backend would run it and which layout that backend picks; both
    answers compare sizes (is a side 1, is the padded side at least the
    kernel). Over a dynamic image each convolution left such a guard: "this
    feature map is more than 1 high", true at the traced sample (a backbone
    traced where its last feature map was 2x2 refused the 1x1 one:
    MobileNetV2), or "the padded side is at least 3", true at
    every size but more than torch can prove. Over a dynamic spatial size the
    output keeps the layout the convolution's shape function gives (what torch
    does for sizes it has no value for): the program computes the same values,
    its traced strides differ from eager mode's. Not for AOTInductor, which
    compiles those strides into its kernels: its packages of such models came
    out wrong wherever a feature map was larger than 1x1 (and with torch's own
    layouts they are refused by verification; see the README). A dynamic batch
    alone keeps torch's choice.
    """
    import torch

    unselected = object()

    def spatially_dynamic(input_) -> bool:
        return any(not isinstance(size, int) for size in input_.shape[2:])

    def select_backend(input_, weight, *args, **kwargs):
        if spatially_dynamic(input_):
            return unselected
        return original_backend(input_, weight, *args, **kwargs)

    def determine_layout(input_, weight, backend):
        if backend is unselected:
            return None
        return original_layout(input_, weight, backend)

    original_backend = torch._C._select_conv_backend
    original_layout = torch._C._conv_determine_backend_memory_format
    with patching.replaced(torch._C, _select_conv_backend=select_backend,
                           _conv_determine_backend_memory_format=determine_layout):
        yield


@contextlib.contextmanager
def _center_crops_of_any_size() -> Iterator[None]:
    """`CenterCrop` over images of a dynamic size, traced as a `torch.cond`.

    Keras crops an image at least as large as the crop and resizes a smaller
    one (`smart_resize`), but it tells them apart with `isinstance(size, int)`:
    with torch's symbolic sizes it always crops, with a slice whose start is
    negative for a smaller image, and the trace kept the sample's case (an
    image of side 5 cropped to 2 rows, and the convolution after it failed).
    Here the program chooses by the image's size, as the model does eagerly
    (servekit's TensorFlow trace does the same: `source_model.graph_mode`):
    both branches make an image of the crop's size from rows and columns taken
    by index, computed from the image's size without a guard on it.
    """
    import torch
    from keras.src.layers.preprocessing.image_preprocessing.center_crop import CenterCrop

    original = CenterCrop.transform_images

    def window(x, axis: int, start, length: int):
        return x.index_select(axis, torch.arange(length, device=x.device) + start)

    def bilinear(x, axis: int, start, length, target: int):
        """torch's bilinear resize (`align_corners=False`, no antialiasing: Keras's
        torch `resize`) of `length` elements from `start` along `axis` to
        `target`, one axis at a time. Written out so that only its indices
        depend on the image's size: an `interpolate` of a box of symbolic size
        made torch guard that the box is more than one pixel wide."""
        source = ((torch.arange(target, device=x.device, dtype=torch.float32) + 0.5) * (length / target) - 0.5)
        source = source.clamp(min=0)
        low = source.floor().to(torch.int64)
        high = torch.where(low < length - 1, low + 1, low)
        weight_shape = [1] * x.ndim
        weight_shape[axis] = target
        weight = (source - low).reshape(weight_shape).to(x.dtype)
        return (x.index_select(axis, low + start) * (1 - weight) + x.index_select(axis, high + start) * weight)

    def transform_images(layer, images, transformation=None, training=True):
        axes = (images.ndim - 2, images.ndim - 1) if layer.data_format == "channels_first" else (
            images.ndim - 3, images.ndim - 2)
        height, width = images.shape[axes[0]], images.shape[axes[1]]
        if not isinstance(images, torch.Tensor) or (isinstance(height, int) and isinstance(width, int)):
            return original(layer, images, transformation=transformation, training=training)
        target_h, target_w = layer.height, layer.width
        inputs = images.to(getattr(torch, layer.compute_dtype))

        def crop(x):
            h, w = x.shape[axes[0]], x.shape[axes[1]]
            x = window(x, axes[0], torch.sym_max((h - target_h) // 2, 0), target_h)
            return window(x, axes[1], torch.sym_max((w - target_w) // 2, 0), target_w)

        def resize(x):
            # Keras's `smart_resize`: the largest centered box of the target's aspect
            # ratio (its `int(float(a) / b)` of positive sizes is `a // b`), resized.
            h, w = x.shape[axes[0]], x.shape[axes[1]]
            box_h = torch.sym_max(torch.sym_min(h, (w * target_h) // target_w), 1)
            box_w = torch.sym_max(torch.sym_min(w, (h * target_w) // target_h), 1)
            x = bilinear(x, axes[0], (h - box_h) // 2, box_h, target_h)
            return bilinear(x, axes[1], (w - box_w) // 2, box_w, target_w)

        # One comparison, not two joined: Inductor cannot compile a sympy `And`.
        large_enough = torch.sym_min(height - target_h, width - target_w) >= 0
        return torch.cond(large_enough, crop, resize, (inputs,))

    with patching.replaced(CenterCrop, transform_images=transform_images):
        yield


@contextlib.contextmanager
def _same_padding_of_any_size() -> Iterator[None]:
    """A strided convolution's "same" padding over a dynamic size is padded
    explicitly, whatever the size.

    Keras 3.15 passes "same" padding to torch's convolution when it splits
    evenly and pads the input itself otherwise (the extra pixel at the end).
    A stride-2 convolution's padding splits evenly for odd sides and not for
    even ones, so the branch fixed the parity of the traced image's side: a
    backbone traced on even sides refused odd ones. Over a dynamic size the
    input is always padded with zeros (the same values as the convolution's
    own zero padding). Pools keep Keras's code: their explicit padding
    replicates the edge, which is not what torch's pooling padding does.
    """
    import torch
    from keras.src.backend.torch import nn as torch_nn
    from keras.src.utils.argument_validation import standardize_tuple

    def apply_same_padding(inputs, kernel_size, strides, data_format, operation_type, dilation_rate=1):
        spatial = inputs.shape[2:]
        if operation_type == "pooling" or all(isinstance(size, int) for size in spatial):
            return original(inputs, kernel_size, strides, data_format, operation_type, dilation_rate)
        rates = standardize_tuple(dilation_rate, len(spatial), "dilation_rate")
        padding = [_same_padding(size, kernel, stride, rate)
                   for size, kernel, stride, rate in zip(spatial, kernel_size, strides, rates)]
        if all(isinstance(amount, int) for pair in padding for amount in pair):
            return original(inputs, kernel_size, strides, data_format, operation_type, dilation_rate)
        last_dim_first = [amount for pair in reversed(padding) for amount in pair]
        return torch.nn.functional.pad(inputs, pad=tuple(last_dim_first), mode="constant"), 0

    original = torch_nn._apply_same_padding
    with patching.replaced(torch_nn, _apply_same_padding=apply_same_padding):
        yield


def _same_padding(size, kernel: int, stride: int, rate: int):
    """Keras's "same" padding of a side, as (before, after).

    Keras computes `max(0, total)`, which is `total` whenever the dilated
    kernel is at least the stride (every strided convolution in practice).
    Without the `max` torch simplifies the padded side (the `size` terms
    cancel); with it, each strided convolution nested the previous one's
    expression twice, and loading a backbone's program (`torch.export.load`
    parses every size expression) took minutes.
    """
    effective = (kernel - 1) * rate + 1
    if stride == 1:
        total = effective - 1
    else:
        total = ((size + stride - 1) // stride - 1) * stride + effective - size
        if effective < stride:
            total = max(0, total)
    return total // 2, total - total // 2


@contextlib.contextmanager
def _layout_copies_without_size_guards() -> Iterator[None]:
    """Keras's torch convolutions and pools change their input's memory layout
    with copies that need no guard on a dynamic size.

    Keras 3.15 permutes a channels-last input to channels-first and calls
    `.contiguous()`, then (convolutions) `.contiguous(channels_last)` unless
    `is_contiguous(channels_last)`: each first asks whether the tensor is laid
    out so already, which depends on whether a side is 1, a guard
    torch.export cannot keep for a dynamic side (an image cropped by
    `Cropping2D(1)`: `h - 2 != 1`), and the side was fixed. A tensor with a
    dynamic size is cloned into the layout instead: the same values, the
    copy made unconditionally. Static tensors (kernels) keep Keras's code,
    which copies nothing when nothing needs copying.
    """
    import torch
    from keras.src.backend.torch import nn as torch_nn

    def dynamic(tensor) -> bool:
        return not all(isinstance(size, int) for size in tensor.shape)

    def transpose_spatial_inputs(inputs):
        if inputs.ndim not in (3, 4, 5) or not dynamic(inputs):
            return original_transpose(inputs)
        channels_first = (0, inputs.ndim - 1, *range(1, inputs.ndim - 1))
        return torch.permute(inputs, channels_first).clone(memory_format=torch.contiguous_format)

    def maybe_convert_to_channels_last(tensor):
        layout = torch_nn._get_channels_last_memory_format(tensor.ndim)
        if layout is None or not dynamic(tensor):
            return original_channels_last(tensor)
        return tensor.clone(memory_format=layout)

    original_transpose = torch_nn._transpose_spatial_inputs
    original_channels_last = torch_nn._maybe_convert_to_channels_last
    with patching.replaced(torch_nn, _transpose_spatial_inputs=transpose_spatial_inputs,
                           _maybe_convert_to_channels_last=maybe_convert_to_channels_last):
        yield


@contextlib.contextmanager
def _symbolic_sizes_as_python_numbers() -> Iterator[None]:
    """Keras's torch ops take a traced size (`torch.SymInt`) as the Python number
    it stands for, while torch.export traces.

    Eagerly a size is an `int`; under torch.export a dynamic one is a
    `torch.SymInt`, which Keras 3.15 mistakes in two places:
    - `ops.arange(n)` and the like infer their dtype from `type(n)`: "Invalid
      dtype: SymInt" (keras_hub's T5 attention: `ops.arange(query_length)`).
    - `ops.repeat(x, n, axis)` takes its broadcasting path only for an `int`
      `n`; otherwise `repeat_interleave` with a tensor of repeats, whose
      output size torch cannot know ("GuardOnDataDependentSymNode": keras_hub's
      ESM repeats its mask by the sequence length).
    """
    import torch
    from keras.src.backend.common import dtypes
    from keras.src.backend.torch import numpy as torch_numpy

    python_type = {torch.SymInt: int, torch.SymFloat: float, torch.SymBool: bool}
    original_result_type, original_repeat = dtypes.result_type, torch_numpy.repeat

    def result_type(*types):
        return original_result_type(*(python_type.get(t, t) if isinstance(t, type) else t for t in types))

    def repeat(x, repeats, axis=None):
        if not isinstance(repeats, torch.SymInt) or axis is None:
            return original_repeat(x, repeats, axis=axis)
        x = torch_numpy.convert_to_tensor(x)
        axis = axis % x.ndim
        shape = list(x.shape)
        shape[axis] = shape[axis] * repeats
        expanded = [-1] * (x.ndim + 1)
        expanded[axis + 1] = repeats
        return x.unsqueeze(axis + 1).expand(expanded).reshape(shape)

    with patching.replaced(dtypes, result_type=result_type), patching.replaced(torch_numpy, repeat=repeat):
        yield


@contextlib.contextmanager
def _segment_ids_broadcast() -> Iterator[None]:
    """Keras's torch segment reductions (`segment_sum`, `_max`, `_min`, `_prod`)
    with a known `num_segments` spread their ids over the data's trailing dims
    by broadcasting, while torch.export traces.

    Keras repeats each id `prod(data.shape[1:])` times with
    `repeat_interleave` of a tensor count, whose output size torch.export
    cannot know: the program asserted its traced size at run time and failed
    at every other size ("Runtime assertion failed for expression u0 >= 12").
    Without `num_segments` the result's size depends on the ids' values,
    which a program cannot hold: Keras's own code then runs, and fails as it did.
    """
    import torch
    from keras.src.backend.torch import math as torch_math

    original = torch_math._segment_reduction_fn
    initial = {"amax": -float("inf"), "amin": float("inf"), "prod": 1.0, "sum": 0.0}

    def segment_reduction(data, segment_ids, reduction_method, num_segments):
        if num_segments is None or segment_ids.ndim != 1 or reduction_method not in initial:
            return original(data, segment_ids, reduction_method, num_segments)
        ids = segment_ids.to(torch.int64).reshape((-1,) + (1,) * (data.ndim - 1)).expand(data.shape)
        # As Keras: ids out of [0, num_segments) go to an extra row, dropped after.
        ids = torch.where((ids >= 0) & (ids < num_segments), ids, num_segments)
        result = torch.full((num_segments + 1,) + tuple(data.shape[1:]), initial[reduction_method],
                            device=data.device)
        return result.scatter_reduce(0, ids, data.float(), reduction_method)[:-1].type(data.dtype)

    with patching.replaced(torch_math, _segment_reduction_fn=segment_reduction):
        yield


@contextlib.contextmanager
def _take_along_axis_as_gather() -> Iterator[None]:
    """Keras's torch `take_along_axis` as `torch.gather` while torch.export
    traces.

    Keras calls `torch.take_along_dim`, which broadcasts the data and the
    indices; traced, its broadcasting fixed dynamic dims at the sample's sizes
    (keras_hub's DeBERTaV3 attention: "fixes the dynamic dimension(s)
    ['batch', 'sequence']"; indices of one row for a batch of data). Here
    each dim but the axis is equal in both, or 1 in one of them and expanded
    to the other's size, as broadcasting does, and `gather` then takes the
    same elements. Dims that are equal only for the sample (no proof without
    a guard) keep Keras's call.
    """
    import torch
    from keras.src.backend.torch import numpy as torch_numpy
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    original = torch_numpy.take_along_axis

    def expanded_sizes(x, indices, axis: int):
        """What to expand `x` and `indices` to (-1: keep), or None."""
        x_sizes, index_sizes = [-1] * x.ndim, [-1] * x.ndim
        for d in range(x.ndim):
            if d == axis or statically_known_true(x.shape[d] == indices.shape[d]):
                continue
            if statically_known_true(indices.shape[d] == 1):
                index_sizes[d] = x.shape[d]
            elif statically_known_true(x.shape[d] == 1):
                x_sizes[d] = indices.shape[d]
            else:
                return None
        return x_sizes, index_sizes

    def take_along_axis(x, indices, axis=None):
        x, indices = torch_numpy.convert_to_tensor(x), torch_numpy.convert_to_tensor(indices)
        if axis is None or x.ndim != indices.ndim:
            return original(x, indices, axis=axis)
        axis = axis % x.ndim
        sizes = expanded_sizes(x, indices, axis)
        if sizes is None:
            return original(x, indices, axis=axis)
        x, indices = x.expand(sizes[0]), indices.long().expand(sizes[1])
        # As Keras: a negative index counts from the end ("fill" mode, as JAX).
        return torch.gather(x, axis, torch.where(indices < 0, indices + x.shape[axis], indices))

    with patching.replaced(torch_numpy, take_along_axis=take_along_axis):
        yield


def _export_within_bounds(module, sample, args: dict[str, Any], model_name: str):
    """`torch.export.export`, each dynamic dim narrowed to the range the model allows.

    servekit declares every named dim over [1, 2^30]; a model that bounds one (a
    position embedding of `max_sequence_length` rows sliced to the sequence) makes
    torch refuse that range, suggesting the narrower one. The suggestion is taken,
    a few rounds at most, while every dim stays dynamic.

    A dim torch would fix at one size, or a guard it can neither prove nor turn
    into a range, is often torch's 0/1 specialization: a size derived from the
    dim (`h - 2` after `Cropping2D(1)`) must not be 1, which no range says. The
    export is then made again with sizes taken as "size-oblivious" (torch's
    `backed_size_oblivious`: a size is not assumed to differ from 0 or 1); the
    verification runs every dynamic dim at 1, which shows whether the program
    holds there. Only then is a guard checked by the program when it runs
    instead, and a dim that is still fixed refused, since the signature says
    it varies.

    Guards checked at run time are taken size-obliviously first: torch then
    asks nothing of the sample's sizes it need not. A convolution's output
    layout, which torch derives from its strides, otherwise kept "the last
    feature map is not 1 high" (a backbone over images of any size traced
    where it was 2x2: MobileNetV2), and guards torch
    cannot prove but which hold for every size ("same" padding's output
    length is at least 1) are only checked.
    """
    import torch.fx.experimental._config as fx_config

    try:
        return _export_refining(module, sample, args, model_name, deferred_guards=False)
    except ExportError as fixed:
        first = fixed
    except _GuardsNotRanges:
        first = None
    with fx_config.patch(backed_size_oblivious=True):
        try:
            return _export_refining(module, sample, args, model_name, deferred_guards=False)
        except (ExportError, _GuardsNotRanges):
            pass
    if first is not None:
        raise first
    with fx_config.patch(backed_size_oblivious=True):
        try:
            return _export_refining(module, sample, args, model_name, deferred_guards=True)
        except Exception:  # torch.export's own refusal: the plain attempt below reports it
            pass
    return _export_refining(module, sample, args, model_name, deferred_guards=True)


class _GuardsNotRanges(Exception):
    """torch.export found a guard on a dynamic dim that is not a range."""


def _export_refining(module, sample, args: dict[str, Any], model_name: str, deferred_guards: bool):
    """`torch.export.export`, taking torch's suggested ranges (see `_export_within_bounds`).

    Raises:
        ExportError: a dim torch would fix at one size.
        _GuardsNotRanges: a guard torch cannot express as ranges (unless
            `deferred_guards`: the program then checks it when it runs; Whisper's
            convolution: `1 % (1 + (n - 1) // 2) != 0`).
    """
    import torch
    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes

    if deferred_guards:
        args = {**args, "prefer_deferred_runtime_asserts_over_guards": True}
    for _ in range(_BOUND_ROUNDS):
        try:
            return torch.export.export(module, sample, **args)
        except torch._dynamo.exc.UserError as e:
            if "Suggested fixes:" not in str(e.msg):
                if "Constraints violated" not in str(e.msg) or deferred_guards:
                    raise
                raise _GuardsNotRanges() from None
            refined = refine_dynamic_shapes_from_suggested_fixes(e.msg, args["dynamic_shapes"])
            fixed = _fixed_dims(args["dynamic_shapes"], refined)
            if fixed:
                raise ExportError(
                    f"Model '{model_name}': torch.export fixes the dynamic dimension(s) {sorted(fixed)} at one size "
                    f"({_suggested_fixes(e.msg)}), but the signature lets them vary: declare them "
                    "static in input_signature, or keep the model from depending on their size.",
                    model=model_name, reason="conversion_failed") from None
            args = {**args, "dynamic_shapes": refined}
    return torch.export.export(module, sample, **args)


def _suggested_fixes(message: str) -> str:
    """torch's suggested fixes in a ConstraintViolation message, on one line."""
    lines = message.split("Suggested fixes:", 1)[1].strip().splitlines()
    return "; ".join(line.strip() for line in lines if line.strip())


# Rounds of narrowing dims to torch's suggested ranges (one usually suffices: torch reports
# every violated dim at once).
_BOUND_ROUNDS = 3


def _fixed_dims(declared, refined) -> set[str]:
    """The names of the `torch.export.Dim`s of a `dynamic_shapes` structure that
    torch's refinement made static. A dim it derived from another (`2 * _h`: a
    U-Net pools and upsamples its images, so their sizes must be even) still
    varies."""
    import torch

    if isinstance(declared, dict):
        return set().union(*(_fixed_dims(v, refined.get(k) if isinstance(refined, dict) else None)
                             for k, v in declared.items()))
    if isinstance(declared, (list, tuple)):
        return set().union(*(_fixed_dims(v, r) for v, r in zip(declared, refined)))
    if isinstance(declared, torch.export.Dim) and not isinstance(refined, torch.export.Dim):
        return {declared.__name__}
    return set()


def string_inputs_error(model_name: str) -> ExportError:
    """The refusal of a torch format for a model that takes strings."""
    return ExportError(f"Model '{model_name}' takes string inputs, and PyTorch programs hold no strings: export "
                       "the preprocessing (lookup) outside the model, or use format='tf_saved_model'.",
                       model=model_name, reason="unsupported_input")


def write_program(program, path: str) -> None:
    """Saves the ExportedProgram at `path`, its archive folder named `model`.

    torch saves it beside `path` first, and the archive is rewritten from that
    file block by block: the weights are never held in memory again.
    """
    import torch

    saved = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.torch_export.pt2")
    try:
        torch.export.save(program, saved)
        _write_renamed_archive(saved, path)
    finally:
        if os.path.exists(saved):
            os.remove(saved)


# The CPU an AOTInductor package is compiled for on x86-64: x86-64-v3 (AVX2, FMA,
# F16C; every x86 server CPU since about 2015), with Inductor's 256-bit kernels.
# Inductor's default is the exporting host's (`-march=native`, and the widest vector
# ISA a probe compiles and loads there): a package built on an AVX-512 machine then
# stops serving on an AVX2 one, and one built while the probe failed (it compiles and
# loads a library in a subprocess, given up after 60 s on a loaded machine) holds
# scalar kernels, other bytes from the same model.
_X86_TARGET = "x86-64-v3"
_X86_TARGET_ISA = "avx2"
_X86_TARGET_SIMD_BITS = 256

# Inductor writes a kernel's loops for `torch.get_num_threads()` of the exporting
# process: a build action (OMP_NUM_THREADS=1) wrote kernels without parallel loops, so
# its packages served on one core, and hosts with other core counts wrote other bytes.
# The kernels are written for this many threads instead (how deep to parallelize each
# loop nest) and take the thread count the serving process has when they run.
_CODEGEN_THREADS = 8
_THREADS_CONFIG = {"cpp.threads": _CODEGEN_THREADS, "cpp.dynamic_threads": True}


def aoti_cpu_target() -> tuple[str, dict[str, Any]]:
    """The CPU target of this host's AOTInductor packages, as its name and the
    Inductor settings that fix it (no probe, no `-march=native`).

    On x86-64, x86-64-v3 with AVX2 kernels; on an x86-64 host without AVX2 (the
    package is run here to verify it), baseline x86-64 with scalar kernels. Other
    architectures keep Inductor's own choice for the exporting host.
    """
    import platform

    from torch._inductor import cpu_vec_isa

    if platform.machine() not in ("x86_64", "AMD64"):
        return f"{platform.machine()} (the exporting host's)", {}
    if _X86_TARGET_ISA in cpu_vec_isa.x86_isa_checker():
        return _X86_TARGET, {"cpp.march": _X86_TARGET, "cpp.simdlen": _X86_TARGET_SIMD_BITS, "cpp.vec_isa_ok": True}
    return "x86-64", {"cpp.march": "x86-64", "cpp.simdlen": 0, "cpp.vec_isa_ok": True}


@contextlib.contextmanager
def _pinned_cpu_target(settings: Optional[Mapping[str, Any]] = None) -> Iterator[str]:
    """Inductor under `aoti_cpu_target`'s settings (and `settings`); yields the
    target's name. Inductor keeps the vector ISAs it found valid for the
    process: they are found again under the pinned target, and forgotten
    after it. Loading a package needs it as well as compiling one: the loader
    compares the package's ISA with the one Inductor picks for the process,
    and warns of a mismatch where its probe cannot compile (a build action
    has no PATH)."""
    from torch._inductor import config, cpu_vec_isa

    target, target_config = aoti_cpu_target()
    with config.patch({**target_config, **(settings or {})}):
        cpu_vec_isa.valid_vec_isa_list.cache_clear()
        try:
            yield target
        finally:
            cpu_vec_isa.valid_vec_isa_list.cache_clear()


def compile_aoti(program, path: str, workdir: str) -> str:
    """Compiles the program with AOTInductor into the package `path`.

    Returns:
        The CPU target the package was compiled for (`aoti_cpu_target`).
    """
    import torch

    import shutil

    scratch = os.path.join(workdir, f"{_ARCHIVE_NAME}.pt2")
    # A build action runs without PATH, and g++ then finds neither its cc1plus
    # nor ld: the compiler runs with the system's directories.
    search_path = os.environ.get("PATH") or "/usr/bin:/bin"
    compiler = shutil.which("g++", path=search_path)
    if compiler is None:
        raise ExportError("AOTInductor compiles C++, and no g++ was found on PATH or in /usr/bin "
                          "(apt-get install g++).", reason="conversion_failed")
    saved_path = os.environ.get("PATH")
    os.environ["PATH"] = search_path
    try:
        # torch.export's program may mutate tensors in place (Keras's torch batch
        # normalization: `rsqrt_`, `mul_`, `add_`), which AOTInductor's lowering refuses
        # ("expected to have an entirely functional graph"): functionalized first, with
        # no op decomposed.
        program = program.run_decompositions({})
        with _pinned_cpu_target({"cpp.cxx": (None, compiler), **_THREADS_CONFIG}) as target:
            torch._inductor.aoti_compile_and_package(program, package_path=scratch)
    except Exception as e:  # Inductor's lowering or the C++ compiler: kept for the message
        raise ExportError(f"AOTInductor could not compile the program: {root_cause(e)}",
                          reason="conversion_failed") from None
    finally:
        if saved_path is None:
            del os.environ["PATH"]
        else:
            os.environ["PATH"] = saved_path
    _write_renamed_archive(scratch, path)
    return target


# Archive entries (weights, most of all) are read and copied in blocks of this size.
_COPY_BLOCK_BYTES = 64 * 2**20


def _write_renamed_archive(source_path: str, path: str) -> None:
    """Rewrites the torch archive at `source_path` canonically into `path`: its
    top folder named `model` (torch names it after the file it writes), fixed
    entry dates, the compiler command lines Inductor appends to generated
    sources (they name the machine's paths) removed, and the random
    `serialization_id` replaced by a digest of the other entries. Read twice
    (digest, then copy), block by block."""
    import hashlib
    import shutil

    with zipfile.ZipFile(source_path) as source:
        entries = []  # (entry, name in the folder, the rewritten content or None for the entry's own)
        digests = []
        for info in source.infolist():
            _, _, rest = info.filename.partition("/")
            content = None
            if rest.endswith(".cpp"):
                content = source.read(info).split(b"\n\n// Compile cmd\n", 1)[0] + b"\n"
            if not rest.endswith("serialization_id"):
                digests.append(hashlib.sha256(content).digest() if content is not None else _entry_digest(source, info))
            entries.append((info, rest, content))
        digest = hashlib.sha256(b"".join(digests)).hexdigest()
        with open(path, "wb") as out, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
            for info, rest, content in entries:
                if rest.endswith("serialization_id"):
                    content = str(int(digest[:32], 16)).encode()
                entry = zipfile.ZipInfo(f"{_ARCHIVE_NAME}/{rest}", date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_STORED
                entry.external_attr = 0o644 << 16
                if content is not None:
                    target.writestr(entry, content)
                    continue
                entry.file_size = info.file_size  # as writestr sets it: the same header, zip64 or not
                with source.open(info) as data, target.open(entry, "w") as dest:
                    shutil.copyfileobj(data, dest, _COPY_BLOCK_BYTES)


def _entry_digest(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    import hashlib

    digest = hashlib.sha256()
    with archive.open(info) as data:
        for block in iter(lambda: data.read(_COPY_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.digest()


def to_torch(array: np.ndarray):
    """A NumPy array as a CPU tensor, `ml_dtypes.bfloat16` as `torch.bfloat16`
    (`torch.from_numpy` knows no ml_dtypes type: the 16-bit patterns are reinterpreted)."""
    import torch

    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def to_numpy(tensor) -> np.ndarray:
    """A tensor as a NumPy array, `torch.bfloat16` as `ml_dtypes.bfloat16`
    (`Tensor.numpy` has no bfloat16)."""
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _torch_inputs(input_names: Sequence[str], inputs: Mapping[str, Any]):
    return [to_torch(inputs[name]) for name in input_names]


def check_program(path: str, input_names: Sequence[str], output_names: Sequence[str], cases) -> list[Any]:
    """Loads the `.pt2` with `torch.export.load` and runs each case: the flat
    inputs (signature order) are packed into the program's call structure,
    and its outputs flattened back into signature order."""
    import torch
    from torch.utils import _pytree

    from servekit import verification

    with tempfile.TemporaryDirectory() as named_dir:
        # torch.export.load refuses paths without the .pt2 suffix (staged ones); read from a
        # file, the weights are in memory once (a buffer of the file would hold them twice).
        named = os.path.join(named_dir, "program.pt2")
        os.symlink(os.path.abspath(path), named)
        program = torch.export.load(named)
    module = program.module()
    in_spec = program.call_spec.in_spec

    def run(endpoint, inputs):
        args, kwargs = _pytree.tree_unflatten(_torch_inputs(input_names, inputs), in_spec)
        with torch.no_grad(), _size_assertions_explained(inputs):
            out = module(*args, **kwargs)
        leaves = _pytree.tree_leaves(out)
        return {n: to_numpy(v) for n, v in zip(output_names, leaves)}

    return verification._check(list(cases), run)


# How a program's (or package's) check of its input sizes fails: a condition on the
# dims that torch.export kept from the sample it traced.
_SIZE_ASSERTION = re.compile(r"Runtime assertion failed for expression|Expected .* but received|Guard failed")


@contextlib.contextmanager
def _size_assertions_explained(inputs: Mapping[str, Any]) -> Iterator[None]:
    """A program's refusal of its inputs' sizes, said with the sizes and why."""
    try:
        yield
    except (RuntimeError, AssertionError) as e:  # the program's guards raise the latter
        if not _SIZE_ASSERTION.search(str(e)):
            raise
        shapes = ", ".join(f"{name} {list(np.shape(value))}" for name, value in inputs.items())
        raise RuntimeError(
            f"the program refuses inputs of sizes the signature allows ({shapes}): {root_cause(e)}. torch.export "
            "kept a condition on the sizes that held for the sample it traced (an op that branches on a size, or "
            "whose output size it could not follow): declare those dims static in input_signature, or keep the "
            "model from depending on their size") from None


def check_aoti(path: str, input_names: Sequence[str], output_names: Sequence[str], cases,
               workdir: str) -> list[Any]:
    """Loads the AOTInductor package and runs each case (flat inputs and
    outputs in signature order)."""
    import torch

    from servekit import verification

    named = os.path.join(workdir, "check_aoti.pt2")  # the loader wants the .pt2 suffix a staged path lacks
    if os.path.lexists(named):
        os.remove(named)
    os.symlink(os.path.abspath(path), named)
    with _pinned_cpu_target():
        runner = torch._inductor.aoti_load_package(named)

    def run(endpoint, inputs):
        with torch.no_grad(), _size_assertions_explained(inputs):
            out = runner(*_torch_inputs(input_names, inputs))
        return {n: to_numpy(v) for n, v in zip(output_names, out)}

    return verification._check(list(cases), run)


def _fake_tensors() -> dict[int, Any]:
    """The fake tensors alive now, by id, each with a weak reference: an id alone
    is reused by an object made after its owner died."""
    import gc
    import weakref

    from torch._subclasses.fake_tensor import FakeTensor

    # type(), not isinstance(): a dead weak proxy among the objects raises on the latter.
    return {id(o): weakref.ref(o) for o in gc.get_objects() if issubclass(type(o), FakeTensor)}


def _release_fake_constants(before: dict[int, Any]) -> None:
    """Lets go of the real tensors that the fake tensors of an export made since
    `before` (from `_fake_tensors`) still hold, once its program is written and
    dropped.

    torch.export (torch 2.13) leaves fake tensors referenced from C++ after the
    program is gone, and a fake tensor of a lifted constant keeps the real one
    (`.constant`): the model's weights, which then stayed resident after the
    model was deleted (a 256 MB model: 0.57 GiB resident after both were
    collected, 0.32 with these released; the torch worker's check held a
    second copy beside them).
    """
    import gc

    from torch._subclasses.fake_tensor import FakeTensor

    for o in gc.get_objects():
        if issubclass(type(o), FakeTensor) and o.constant is not None:
            known = before.get(id(o))
            if known is None or known() is not o:
                o.constant = None


def write(request, staged: str, workdir: str) -> Callable[[], dict[str, Any]]:
    """Exports `request.source` (a torch-backend model) as `request.format`
    ("torch" or "torch_aoti") at `staged`, and returns its check against the
    cases for later: the check loads the written program back and holds no
    reference to the model, so a caller that frees the model first has the
    weights in memory once.

    Returns:
        The check: a function returning the strategy report (`ok`,
        `endpoints`, `comparisons`, `converter`).
    """
    from servekit import peak_memory
    from servekit import signature as sig
    from servekit.source_model.outputs import output_specs

    plan = request.endpoints[0]
    layout = plan.layout
    outputs = tuple(output_specs(request.source, layout, plan.output_names))
    serving = sig.Signature("serving_default", layout.tensor_signatures(), outputs)
    sample = sample_inputs(layout, request.cases, request.source)
    fakes_before = _fake_tensors()
    program = export_program(request.source, layout, sample, request.name, flat=request.format == "torch_aoti",
                             export_args=request.local_options.get(request.format))
    peak_memory.mark("torch.export")
    report: dict[str, Any] = {"ok": True, "endpoints": [serving.to_json()], "comparisons": []}
    fmt = request.format
    cases = list(request.cases.for_endpoint(serving.name)) if request.verify else []
    names, output_names = [s.name for s in layout.flat], list(plan.output_names)
    if fmt == "torch":
        write_program(program, staged)
        report["converter"] = "torch.export"
    else:
        target = compile_aoti(program, staged, workdir)
        report["converter"] = f"torch.export+aoti_compile_and_package for {target}"
    del program
    _release_fake_constants(fakes_before)

    def check() -> dict[str, Any]:
        from servekit import formats, verification

        if not cases:
            comparisons = []
        elif fmt == "torch":
            comparisons = check_program(staged, names, output_names, cases)
        else:
            comparisons = check_aoti(staged, names, output_names, cases, workdir)
        return verification.record(report, comparisons, fmt, formats.FORMATS[fmt].description)

    return check
