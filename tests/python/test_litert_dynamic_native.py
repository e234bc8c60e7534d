"""LiteRT models whose outputs have dynamic dims other than the batch, natively.

A sequence model's outputs carry the sequence (`[batch, tokens, units]`), a U-Net's
its image sides. The native LiteRT runner cannot size such an output before the
run (LiteRT knows it only once the kernels ran), so the run writes it into reserved
address space and its shape is read back (`cc/litert_model.cc`). Each export here
is validated by the native verifier against its reference data (several sequence
lengths or image sizes), then run natively at a size no reference has, against
the Keras model itself.
"""

import pathlib

import keras
import numpy as np
import pytest

from servekit import native
from servekit.build import build_tool


def _tokens_model() -> keras.Model:
    # Attention reshapes to computed shapes: LiteRT sizes its outputs only while running.
    keras.utils.set_random_seed(4)
    tokens = keras.Input((None, 8), name="tokens")
    hidden = keras.layers.Dense(16, activation="relu")(tokens)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(hidden, hidden)
    per_token = keras.layers.Dense(5, name="per_token")(attended)
    pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(per_token)
    return keras.Model(tokens, {"per_token": per_token, "pooled": pooled}, name="tokens_model")


def _unet() -> keras.Model:
    # Images of any size: LiteRT's shape propagation sizes these outputs before the run.
    layers = keras.layers
    keras.utils.set_random_seed(2)
    image = keras.Input((None, None, 3), name="image")
    skip = layers.Conv2D(4, 3, padding="same")(image)
    deep = layers.Conv2D(4, 3, padding="same", activation="relu")(layers.MaxPooling2D()(skip))
    merged = layers.Concatenate()([skip, layers.UpSampling2D()(deep)])
    return keras.Model(image, layers.Conv2D(2, 1, name="mask")(merged), name="unet")


def _reshaped() -> keras.Model:
    # Only the batch is dynamic, but Keras's Reshape reshapes to (batch, 2, 4) with the
    # batch read from the input: LiteRT's kernel kept such an output in its own memory
    # until the LiteRT trace made the shape constant (`builtin_trace`).
    keras.utils.set_random_seed(3)
    features = keras.Input((6,), name="features")
    return keras.Model(features, keras.layers.Reshape((2, 4), name="pairs")(keras.layers.Dense(8)(features)),
                       name="reshaped")


def _encoder_decoder() -> keras.Model:
    # A transposed convolution back to the sides of an image of any size: Keras computes
    # its output shape from the input's, and LiteRT's kernel kept such an output in its
    # own memory until the LiteRT trace followed it with an op LiteRT sizes before the run.
    keras.utils.set_random_seed(5)
    image = keras.Input((None, None, 3), name="image")
    encoded = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(image)
    mask = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="mask")(encoded)
    return keras.Model(image, mask, name="encoder_decoder")


def _sequence_tagger() -> keras.Model:
    # Recurrent layers over sequences of any length: a `while` loop in LiteRT, its steps
    # read and written without TensorLists (`servekit.source_model.recurrences`).
    keras.utils.set_random_seed(6)
    frames = keras.Input((None, 4), name="frames")
    masked = keras.layers.Masking(0.0)(frames)
    encoded = keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True))(masked)
    per_step = keras.layers.Dense(3, name="per_step")(encoded)
    last = keras.layers.GRU(5, go_backwards=True, name="last")(encoded)
    return keras.Model(frames, {"per_step": per_step, "last": last}, name="sequence_tagger")


MODELS = {"tokens_model": (_tokens_model, {"tokens": (3, 23, 8)}),
          "unet": (_unet, {"image": (2, 20, 14, 3)}),
          "reshaped": (_reshaped, {"features": (5, 6)}),
          "encoder_decoder": (_encoder_decoder, {"image": (2, 20, 14, 3)}),
          "sequence_tagger": (_sequence_tagger, {"frames": (3, 19, 4)})}


@pytest.fixture(scope="module", params=sorted(MODELS))
def export(request, tmp_path_factory) -> tuple[keras.Model, pathlib.Path, dict]:
    make, new_shapes = MODELS[request.param]
    model = make()
    manifest = build_tool.build_export(model, tmp_path_factory.mktemp(request.param) / "export",
                                       f"{request.param}_tensorflow", "tensorflow", formats=("litert",))
    return model, manifest, new_shapes


def test_the_native_verifier_validates_the_litert_model(export):
    _, manifest, _ = export
    report = native.validate(str(manifest), "litert")
    assert report.passed, report.to_text()


def test_the_native_runner_follows_sizes_no_reference_has(export):
    model, manifest, new_shapes = export
    loaded = native.load(str(manifest.parent / "model.tflite"))
    rng = np.random.default_rng(0)
    name, shape = next(iter(new_shapes.items()))
    # A new size, a smaller one, then the first again: each run's outputs are its own.
    smaller = (1, *(max(2, d // 4) * 2 for d in shape[1:-1]), shape[-1]) if len(shape) > 2 else (1, shape[-1])
    for size in (shape, smaller, shape):
        x = rng.standard_normal(size).astype("float32")
        got = loaded.run("serving_default", {name: x})
        want = model(x, training=False)
        want = want if isinstance(want, dict) else {model.output_names[0]: want}
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            np.testing.assert_allclose(got[key], keras.ops.convert_to_numpy(value), atol=2e-5, rtol=0,
                                       err_msg=f"{key} at {size}")

