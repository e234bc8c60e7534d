"""Batch-normalization statistics for models with random weights (a helper
module of the zoo's model files, listed in their targets' `data`)."""

import keras
import numpy as np


def calibrate_batch_norm(model: keras.Model, image_shape=(32, 32, 3)) -> None:
    """Gives every BatchNormalization the statistics of the activations it sees.

    With random weights, the moving statistics stay at mean 0 and variance 1,
    activations shrink layer after layer, and the network answers the same
    for every input (a verification of a constant proves nothing). One
    training-mode pass on seeded random images with momentum 0 sets each
    layer's statistics to those of its actual inputs, as training would.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momentums = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    images = np.random.default_rng(0).standard_normal((16,) + tuple(image_shape)).astype("float32")
    if keras.backend.backend() == "jax":
        # One compiled pass: JAX's eager mode compiles each of the model's ~400 ops on its own
        # (23 s of MobileNetV3's 29 s build measured on 2 cores, against about 3 s jitted).
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        _, updated = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=True))(
            trainable, non_trainable, images)
        for variable, value in zip(model.non_trainable_variables, updated):
            variable.assign(value)
    else:
        model(images, training=True)
    for layer, momentum in zip(layers, momentums):
        layer.momentum = momentum
