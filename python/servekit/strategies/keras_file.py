"""A Keras model as a `.keras` file another process can load.

The portable rebuild carries a model from any backend to the TensorFlow
export worker through its `.keras` archive. Before anything is written,
`preflight` checks that a fresh process can rebuild it: no layer bound to one
backend's code, Lambda globals that can be carried over, custom classes the
worker can import (by module name, or by file for a model file loaded by
path). `save_keras` then writes the archive with an error that says what to
change when Keras cannot serialize the model.
"""

from __future__ import annotations

import contextlib
import dis
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
import types
from typing import Any, Iterator, Optional, Sequence

from servekit import patching
from servekit.errors import ExportError
from servekit.source_model.kinds import all_layers
from servekit.worker.job import CustomClass

# Layers that hold code of one backend and cannot be rebuilt under TensorFlow.
_BACKEND_BOUND_LAYERS = {
    "TorchModuleWrapper": "it wraps a torch.nn.Module, which has no TensorFlow or ONNX-via-TF equivalent; rewrite it "
                          "with Keras layers, or export it with torch.onnx.export directly",
    "JaxLayer": "it wraps a JAX function, which servekit cannot rebuild under TensorFlow; rewrite it with Keras "
                "layers",
    "FlaxLayer": "it wraps a Flax module, which servekit cannot rebuild under TensorFlow; rewrite it with Keras "
                 "layers",
}



def _loaded_by_path(module_name: str) -> Optional[str]:
    """The source file of a module imported from a path (not findable by name)."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module_name == "__main__" or not path or not os.path.isfile(path):
        return None
    if "." not in module_name:
        # Findable on sys.path by name (sys.modules aside): the worker imports it so.
        if importlib.machinery.PathFinder.find_spec(module_name) is not None:
            return None
    elif getattr(module, "__spec__", None) is not None and module.__spec__.origin == path:
        return None  # a package's submodule: importable by name
    return os.path.abspath(path)


def custom_classes(model) -> list[CustomClass]:
    """Non-Keras classes in the model, and functions its Lambda layers call
    that Keras saves by name alone (the worker must import them)."""
    import keras

    found: dict[type, CustomClass] = {}
    for layer in all_layers(model):
        cls = type(layer)
        if cls.__module__.startswith("keras.") or cls in found:
            continue
        names = {cls.__name__}
        try:
            registered = keras.saving.get_registered_name(cls)
            if registered:
                names.add(registered)
        except (TypeError, AttributeError):  # not registered
            pass
        found[cls] = CustomClass(cls.__module__, cls.__qualname__, tuple(sorted(names)), layer.name,
                                 _loaded_by_path(cls.__module__))
    for fn, layer_name in _lambda_functions_keras_cannot_find(model):
        found.setdefault(fn, CustomClass(fn.__module__, fn.__qualname__, (fn.__name__,), layer_name,
                                         _loaded_by_path(fn.__module__)))
    return list(found.values())


def _lambda_functions_keras_cannot_find(model) -> list[tuple[Any, str]]:
    """Named functions `Lambda` layers call that Keras saves by name alone.

    `Lambda(keras.ops.exp)` is saved as the function `exp` of module
    `builtins`, which `load_model` looks up among the activations only:
    Keras's own round trip failed for most `keras.ops` functions. The worker
    imports each such function and gives it to `load_model` by its name.
    """
    import keras

    functions = []
    for layer in all_layers(model):
        if type(layer).__name__ != "Lambda" or not type(layer).__module__.startswith("keras."):
            continue
        fn = getattr(layer, "function", None)
        if not inspect.isfunction(fn) or fn.__name__ == "<lambda>" or not _importable(fn):
            continue  # saved as its code (`_script_functions_saved_as_code`)
        if keras.saving.serialize_keras_object(fn).get("module") == "builtins":
            functions.append((fn, layer.name))
    return functions


def _global_names(code) -> set[str]:
    """The globals `code` (and the functions nested in it) reads: not
    `co_names`, which also holds attribute names, so `keras.ops.switch`
    would name a global `switch` the caller's module happens to define."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def lambda_globals(model) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """Globals the functions of `keras.layers.Lambda` layers refer to.

    Keras serializes a Lambda's bytecode but not its globals: a fresh process
    loading it knows neither `keras` nor `np`. Returns `(entries, problems)`:
    entries say how the worker rebuilds each global (a module, an importable
    function/class, a plain constant or a NumPy array); problems are
    `(layer, name)` pairs that cannot be carried over.
    """
    entries: dict[str, dict] = {}
    problems: list[tuple[str, str]] = []
    for layer in all_layers(model):
        if type(layer).__name__ != "Lambda" or not type(layer).__module__.startswith("keras."):
            continue
        fn = getattr(layer, "function", None)
        if not inspect.isfunction(fn):
            continue
        g = fn.__globals__
        for name in sorted(_global_names(fn.__code__)):
            if name not in g or name in entries:
                continue
            value = g[name]
            if isinstance(value, types.ModuleType):
                entries[name] = {"kind": "module", "module": value.__name__}
            elif isinstance(value, (bool, int, float, str, type(None))):
                entries[name] = {"kind": "value", "value": value}
            elif _is_numeric_array(value):
                entries[name] = {"kind": "array", "array": value.tolist(), "dtype": str(value.dtype)}
            elif callable(value) and _importable(value):
                entries[name] = {"kind": "object", "module": value.__module__, "qualname": value.__qualname__}
            else:
                problems.append((layer.name, name))
    return entries, problems


def preflight(model, model_name: str) -> list[CustomClass]:
    """Checks, before anything is written, that a fresh process can rebuild
    the model from its `.keras` archive.

    Returns:
        The model's custom (non-Keras) classes, which the worker imports.

    Raises:
        ExportError: naming the layer and what would make it portable.
    """
    for layer in all_layers(model):
        reason = _BACKEND_BOUND_LAYERS.get(type(layer).__name__)
        if reason:
            raise ExportError(
                f"Model '{model_name}': layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt under "
                f"TensorFlow: {reason}.", model=model_name, layer=layer.name, reason="unsupported_layer")
    _, lambda_problems = lambda_globals(model)
    if lambda_problems:
        layer, name = lambda_problems[0]
        raise ExportError(
            f"Model '{model_name}': Lambda layer '{layer}' refers to the global '{name}', which servekit cannot "
            "carry to a separate export process (only modules, importable functions/classes, plain constants and "
            "NumPy arrays can be). Pass it through Lambda(arguments={...}), or replace the Lambda with a custom layer "
            "registered with @keras.saving.register_keras_serializable() in an importable module.",
            model=model_name, layer=layer, reason="unsupported_layer")
    classes = custom_classes(model)
    bad = [c for c in classes if not c.importable]
    if bad:
        c = bad[0]
        raise ExportError(
            f"Model '{model_name}': layer '{c.layer}' is an instance of {c.qualname}, defined in '{c.module}', "
            "which a separate export process cannot import, so the model cannot be rebuilt under TensorFlow. "
            "To make it portable, move the class to an importable module and decorate it with "
            "@keras.saving.register_keras_serializable() (with get_config()).",
            model=model_name, layer=c.layer, reason="unsupported_layer")
    return classes


@contextlib.contextmanager
def lambda_globals_installed(entries: dict[str, dict]) -> Iterator[None]:
    """Gives Lambda functions deserialized in this block the globals `entries`
    (from `lambda_globals`, in the source process) describe, and the closure
    values `save_keras` wrote by name."""
    extra = {}
    for name, entry in entries.items():
        if entry["kind"] == "module":
            extra[name] = importlib.import_module(entry["module"])
        elif entry["kind"] == "value":
            extra[name] = entry["value"]
        elif entry["kind"] == "array":
            extra[name] = _array(entry["array"], entry["dtype"])
        else:
            obj = importlib.import_module(entry["module"])
            for part in entry["qualname"].split("."):
                obj = getattr(obj, part)
            extra[name] = obj
    from keras.src.utils import python_utils

    original = python_utils.func_load

    def func_load(code, defaults=None, closure=None, globs=None):
        if globs is None and extra:
            globs = dict(vars(python_utils))
            globs.update(extra)
        if closure is not None:
            closure = tuple(_closure_value_loaded(value) for value in closure)
        return original(code, defaults=defaults, closure=closure, globs=globs)

    with patching.replaced(python_utils, func_load=func_load):
        yield


def save_keras(model, path: str, model_name: str) -> None:
    """Saves `model` in the Keras format for the worker to rebuild.

    Unzipped (a directory with `config.json` and `model.weights.h5`): a
    `.keras` zip is assembled in memory on both sides, which for a model of a
    few gigabytes costs several copies of its weights; the directory's weights
    file is written and read in place.

    Raises:
        ExportError: the model cannot be serialized (e.g. a custom layer
            without `get_config()`).
    """
    try:
        with _weights_saved_in_place(), _script_functions_saved_as_code():
            model.save(path, zipped=False)
    except Exception as e:  # Keras raises anything from a get_config(); the message is kept
        detail = str(e).strip() or f"{type(e).__name__} from its get_config()"
        raise ExportError(
            f"Model '{model_name}' cannot be saved in the Keras format (.keras), which the portable rebuild needs: {detail}. "
            "Give custom layers and models a get_config() and register them with "
            "@keras.saving.register_keras_serializable().", model=model_name, reason="not_serializable") from None


def _importable(obj) -> bool:
    """Whether another process can import `obj` by its module and qualified name."""
    return getattr(obj, "__module__", None) not in (None, "__main__") and "<locals>" not in getattr(
        obj, "__qualname__", "<locals>")


@contextlib.contextmanager
def _script_functions_saved_as_code() -> Iterator[None]:
    """A `Lambda`'s named function that no other process can import (defined
    in the script, or inside a function) is saved as its code, as Keras saves
    a `lambda`.

    Keras saves a named function by its name alone, which `load_model`
    cannot find in another process (`Lambda(double)`, `double` defined in
    the notebook): the rebuild failed. Its globals are carried as a
    lambda's are (`lambda_globals`). A module, an importable function or
    class, or a NumPy array or scalar a function's closure holds (`ops =
    keras.ops` or a table of bin edges in the function that builds the model)
    is saved by its name or its values (Keras wrote its `repr`, and the
    loaded function failed) and read back by `lambda_globals_installed`.
    """
    from keras.src.layers.core.lambda_layer import Lambda
    from keras.src.utils import python_utils

    keras_serialize = Lambda._serialize_function_to_config

    def serialize(layer, fn):
        if inspect.isfunction(fn) and (fn.__name__ == "<lambda>" or not _importable(fn)):
            code, defaults, closure = python_utils.func_dump(fn)
            if closure is not None:
                closure = tuple(_closure_value_saved(value) for value in closure)
            return {"class_name": "__lambda__", "config": {"code": code, "defaults": defaults, "closure": closure}}
        return keras_serialize(layer, fn)

    with patching.replaced(Lambda, _serialize_function_to_config=serialize):
        yield


# How a closure value Keras cannot write to JSON is marked in a Lambda's config.
_CLOSURE_VALUE = "__servekit_closure_value__"


def _closure_value_saved(value) -> Any:
    if isinstance(value, types.ModuleType):
        return {_CLOSURE_VALUE: {"module": value.__name__}}
    if (inspect.isfunction(value) or inspect.isclass(value)) and _importable(value):
        return {_CLOSURE_VALUE: {"module": value.__module__, "qualname": value.__qualname__}}
    if _is_numeric_array(value):
        return {_CLOSURE_VALUE: {"array": value.tolist(), "dtype": str(value.dtype)}}
    return value


def _is_numeric_array(value) -> bool:
    """A NumPy array or scalar of booleans or numbers (what JSON can carry as a list)."""
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "biuf"


def _array(values, dtype: str):
    import numpy as np

    return np.asarray(values, dtype=dtype)[()]  # [()]: a scalar comes back a NumPy scalar


def _closure_value_loaded(value) -> Any:
    if not (isinstance(value, dict) and set(value) == {_CLOSURE_VALUE}):
        return value
    saved = value[_CLOSURE_VALUE]
    if "array" in saved:
        return _array(saved["array"], saved["dtype"])
    obj = importlib.import_module(saved["module"])
    for part in saved["qualname"].split(".") if "qualname" in saved else ():
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def _weights_saved_in_place() -> Iterator[None]:
    """Keras's weights file gets each TensorFlow variable's bytes as the
    variable holds them.

    Keras converts each variable to NumPy before h5py writes it
    (`backend.convert_to_numpy`, two copies of the value on TensorFlow): a
    view of the variable (`tf_view`) writes the same bytes without them.
    """
    from keras.src.saving import saving_lib

    from servekit.source_model.variables import tf_view

    backend = saving_lib.backend
    original = backend.convert_to_numpy

    def convert_to_numpy(x):
        view = tf_view(x)
        return original(x) if view is None else view

    with patching.replaced(backend, convert_to_numpy=convert_to_numpy):
        yield


# Weights from this size on are loaded block by block of rows of about this size.
_BLOCK_BYTES = 64 * 2**20


@contextlib.contextmanager
def _weights_loaded_in_place() -> Iterator[None]:
    """A large weight of a TensorFlow variable is loaded from Keras's weights
    file block by block of rows, into the variable.

    Keras reads each weight whole into NumPy (`np.array(dataset)`, which
    copies what h5py read) and assigns it, which converts it to a tensor:
    with the variable's initial value, up to four copies of a large weight at
    once. A block assigned to a slice of a resource variable is written into
    the variable's buffer: the weight is in memory once, as the variable.
    (Through the variable's handle: `variable[a:b].assign` reads the variable
    first, and the read makes TensorFlow copy it whole on the write.) Slice
    assignments put the variable in TensorFlow's copy-on-read mode, in which
    every later read (the freezing's) would copy it: the mode is turned off
    once the weight is in.

    Only `Variable.assign` reads such a weight from its h5py dataset; a layer
    that loads its weights otherwise gets the dataset, which h5py lets be read
    like an array.
    """
    import keras

    if keras.backend.backend() != "tensorflow":  # the cross-backend rebuild's worker: Keras's own loading
        yield
        return
    import h5py
    import tensorflow as tf
    from keras.src.backend.tensorflow.core import Variable
    from keras.src.saving import saving_lib

    original_getitem = saving_lib.H5IOStore.__getitem__
    original_assign = Variable.assign

    def getitem(self, key):
        value = saving_lib.safe_get_h5_dataset(self._h5_entry_group, key)
        # bfloat16 weights (marked by a `dtype` attribute) take Keras's own conversion.
        if isinstance(value, h5py.Dataset) and value.ndim and value.nbytes >= _BLOCK_BYTES and "dtype" not in value.attrs:
            return value  # read by `assign`
        return original_getitem(self, key)

    def assign(self, value):
        if not isinstance(value, h5py.Dataset):
            return original_assign(self, value)
        if tuple(value.shape) != tuple(self.shape):
            return original_assign(self, value[()])  # Keras's error names the variable
        rows = max(1, _BLOCK_BYTES // (value.nbytes // value.shape[0] or 1))
        for start in range(0, value.shape[0], rows):
            block = value[start:start + rows].astype(self.dtype, copy=False)
            tf.raw_ops.ResourceStridedSliceAssign(ref=self.value.handle, begin=[start], end=[start + len(block)],
                                                  strides=[1], value=block)
        tf.raw_ops.DisableCopyOnRead(resource=self.value.handle)
        return self

    with patching.replaced(saving_lib.H5IOStore, __getitem__=getitem), patching.replaced(Variable, assign=assign):
        yield


def import_custom_classes(classes: Sequence[CustomClass]) -> dict[str, Any]:
    """In a worker: imports the model's custom classes (`custom_classes`) and returns
    them as `custom_objects` for `load_model`, by every name Keras may look them up
    by. A module the source process loaded from a file (a model file) is loaded from
    that file."""
    custom: dict[str, Any] = {}
    for entry in classes:
        if entry.file and entry.module not in sys.modules:
            spec = importlib.util.spec_from_file_location(entry.module, entry.file)
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[entry.module] = loaded
            spec.loader.exec_module(loaded)
        obj = importlib.import_module(entry.module)
        for part in entry.qualname.split("."):
            obj = getattr(obj, part)
        for name in entry.names:
            custom[name] = obj
    return custom


@contextlib.contextmanager
def _configs_keras_writes_but_refuses() -> Iterator[None]:
    """Layer configs Keras writes but its own constructor refuses are read as
    the layer meant them.

    `RandomShear.get_config()` writes each factor `f` as the range it draws
    from, `(-f, f)`, which `RandomShear.__init__` refuses (a factor's bounds
    must lie in [0, 1]): every model with a `RandomShear` failed Keras's own
    save and load round trip. Such a range is read back as its factor.
    """
    from keras.src.layers.preprocessing.image_preprocessing.random_shear import RandomShear

    keras_from_config = RandomShear.from_config.__func__

    def from_config(cls, config):
        config = dict(config)
        for key in ("x_factor", "y_factor"):
            factor = config.get(key)
            if isinstance(factor, (list, tuple)) and len(factor) == 2 and factor[0] < 0 and factor[0] == -factor[1]:
                config[key] = factor[1]
        return keras_from_config(cls, config)

    with patching.replaced(RandomShear, from_config=classmethod(from_config)):
        yield


def load_keras(path: str, model_name: str, custom_objects: Optional[dict] = None):
    """Loads what `save_keras` wrote, in a worker.

    Raises:
        ExportError: Keras cannot rebuild the model from its own archive. The
            message keeps Keras's (without the weight values it prints) and
            names the usual cause: a `get_config()` that leaves out a
            constructor argument, so the layer is rebuilt with its default
            and the saved weights no longer fit.
    """
    import keras

    try:
        with _weights_loaded_in_place(), _configs_keras_writes_but_refuses():
            return keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=False)
    except (TypeError, ValueError) as e:
        detail = re.sub(r", value=\[.*?\]>", ">", str(e).strip(), flags=re.S)
        raise ExportError(
            f"Model '{model_name}' does not survive Keras's own save and load round trip, which a rebuild in another "
            f"process needs (keras.saving.load_model fails on what model.save wrote): {detail}\n"
            "The usual cause is a get_config() that leaves out a constructor argument (the layer is rebuilt with its "
            "default and the saved weights no longer fit), or a custom class that is not registered with "
            "@keras.saving.register_keras_serializable(). Keras's model.save / keras.saving.load_model shows the "
            "same error without servekit.", model=model_name, reason="not_serializable") from None
