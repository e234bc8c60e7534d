"""Which Keras backend runs, and what kind of Keras object a model is."""

from __future__ import annotations

from typing import Any


def backend_name() -> str:
    """Returns the name of the Keras backend of this process."""
    import keras

    return keras.backend.backend()


def all_layers(model) -> list[Any]:
    """`model` and every layer nested in it (just `[model]` for a non-Keras object)."""
    try:
        return list(model._flatten_layers(include_self=True, recursive=True))
    except AttributeError:  # not a Keras layer
        return [model]


def is_functional(model) -> bool:
    """True for a Functional model that is not a Sequential one."""
    import keras

    from keras.src.models.functional import Functional

    return isinstance(model, Functional) and not isinstance(model, keras.Sequential)
