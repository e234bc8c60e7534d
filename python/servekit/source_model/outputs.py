"""The names and signatures of a model's outputs."""

from __future__ import annotations

from typing import Sequence

from servekit import signature as sig
from servekit.source_model.input_layout import InputLayout, manifest_dtype
from servekit.source_model.kinds import is_functional
from servekit.source_model.names import output_leaf_names


def model_output_structure(model, layout: InputLayout):
    """The symbolic output structure of `model` called on `layout`'s inputs."""
    import keras

    if is_functional(model):
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

    from servekit.source_model.dims import name_output_dims

    structure = model_output_structure(model, layout)
    flat = keras.tree.flatten(structure)
    result = []
    batch_dynamic = any(s.dims and s.dims[0] == sig.BATCH_DIM for s in layout.flat)
    for name, leaf in zip(names, flat):
        dims = tuple(None if d is None else int(d) for d in tuple(leaf.shape))
        result.append(sig.TensorSignature(name, manifest_dtype(keras.backend.standardize_dtype(leaf.dtype)), dims))
    return list(name_output_dims(result, layout.output_dims, batch_dynamic))

