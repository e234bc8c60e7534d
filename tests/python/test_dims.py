"""Dynamic dimensions: shared names, sizes past sliding windows, fallbacks.

keras_hub backbones take `token_ids` and `padding_mask` of shape (None, None):
their sequence dims must be equal, and Mistral's and Gemma 3's attention
changes once the sequence is longer than the sliding window. servekit must
name the shared dim once (`sequence`) in every format's signature and the
manifest, verify every dynamic dim at 1, an odd size and past the window, and
fall back to sizes a model accepts when its config fixes a length behind a
`None` dim (SigLIP's text position embedding).
"""

import json
import pathlib

import keras
import keras_hub
import numpy as np
import pytest

import servekit
from servekit.build import build_tool
from servekit.errors import ExportError
from servekit.source_model import dims
from servekit.source_model.input_layout import resolve_input_layout
from servekit.source_model.sample_inputs import generate_inputs, padded_mask

WINDOW = 4


def mistral() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras_hub.models.MistralBackbone(
        vocabulary_size=50, num_layers=1, num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32, sliding_window=WINDOW, name="mistral")


def gemma3() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras_hub.models.Gemma3Backbone(
        vocabulary_size=50, image_size=16, num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32, head_dim=8, use_sliding_window_attention=True, sliding_window_size=WINDOW,
        vision_encoder=None, name="gemma3")


# ---- Units: limits, sizes, masks --------------------------------------------------


def test_windows_and_bounds_come_from_the_layers():
    limits = dims.declared_limits(mistral())
    assert limits.window == (WINDOW, "transformer_layer_0.sliding_window") or limits.window[0] == WINDOW
    assert limits.bound is None
    assert dims.declared_limits(gemma3()).window[0] == WINDOW
    # Gemma 3 without sliding-window attention: its window size means nothing.
    keras.utils.set_random_seed(0)
    plain = keras_hub.models.Gemma3Backbone(
        vocabulary_size=50, image_size=16, num_layers=1, num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32, head_dim=8, sliding_window_size=1024, vision_encoder=None)
    assert dims.declared_limits(plain).window is None


def test_wanted_sizes_one_odd_and_past_the_window():
    limits = dims.Limits(windows=((8, "l.sliding_window"),), bounds=((32, "b.max_sequence_length"),))
    one, odd, long = dims.wanted_sizes(["sequence", "other"], limits)
    assert one == {"sequence": 1, "other": 1}
    assert odd["sequence"] % 2 == 1 and odd["sequence"] != odd["other"] and 7 not in odd.values()
    assert long["sequence"] > 8 and long["other"] > 8 and long["sequence"] != long["other"]
    # Within the declared bound, even when the window is not below it.
    capped = dims.Limits(windows=((64, "l.sliding_window"),), bounds=((16, "b.max_sequence_length"),))
    assert max(dims.wanted_sizes(["s"], capped)[2].values()) == 16
    assert dims.wanted_sizes(["s"], dims.Limits())[2] == {"s": dims.LONG_SIZE}


def strided_cnn(downsampling_layers: int = 3) -> keras.Model:
    """Convolutions and a pool that halve an image of any size, then a transposed
    convolution (which upsamples)."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 3), name="image")
    x = image
    for k in range(downsampling_layers):
        x = (layers.MaxPooling2D() if k == 1 else layers.Conv2D(4, 3, strides=2, padding="same"))(x)
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    return keras.Model(image, layers.GlobalAveragePooling2D(name="mean")(x))


def test_a_downsampling_model_is_verified_past_twice_its_total_stride():
    """At sides 1, 5 and 12 a model that downsamples 8 times ends in feature maps of
    1x1 or 2x2: an artifact wrong only on larger ones passed. The longest case goes
    past twice the total stride (transposed convolutions, which upsample, do not
    count), at most `MAX_STRIDE`."""
    limits = dims.declared_limits(strided_cnn())
    assert limits.total_stride == 8
    assert dims.wanted_sizes(["h", "w"], limits)[2] == {"h": 17, "w": 18}
    assert dims.declared_limits(strided_cnn(7)).total_stride == dims.MAX_STRIDE
    # Within the declared bound, and never below the sizes a model without strides gets.
    bounded = dims.Limits(bounds=((10, "b.max_length"),), strides=((4, "c.strides"),))
    assert dims.wanted_sizes(["s"], bounded)[2] == {"s": 10}
    barely = dims.Limits(strides=((2, "c.strides"),))
    assert dims.wanted_sizes(["s"], barely)[2] == {"s": dims.LONG_SIZE}


def test_the_manifest_records_the_sizes_past_the_stride(tmp_path):
    artifact = servekit.export(strided_cnn(), str(tmp_path / "cnn.onnx"), format="onnx", verbose=False)
    verified = {name: entry["verified"] for name, entry in artifact.endpoint("serving_default").dims.items()}
    assert sorted(max(sizes) for name, sizes in verified.items() if name != "batch") == [17, 18], verified


def test_padded_masks_never_mask_a_whole_row_nor_a_whole_window():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = padded_mask((7, 11), "int32", rng, window=WINDOW)
        valid = mask.sum(axis=1)
        assert valid[0] == 11 and valid.min() >= 11 - WINDOW + 1
        assert all((row[:n] == 1).all() and (row[n:] == 0).all() for row, n in zip(mask, valid))
    assert padded_mask((3, 5), "bool", rng).sum(axis=1).min() >= 1


def test_shared_sequence_dim_is_found_by_probing():
    model = mistral()
    layout, plan = dims.discover(model, resolve_input_layout(model))
    assert {s.name: s.dims for s in layout.flat} == {"token_ids": ("batch", "sequence"),
                                                      "padding_mask": ("batch", "sequence")}
    assert layout.output_dims == [("batch", "sequence", None)]
    verified = plan.verified()
    assert verified["batch"] == [1, 2, 7]
    assert len(verified["sequence"]) >= 3 and 1 in verified["sequence"]
    assert any(s % 2 for s in verified["sequence"] if s > 1) and max(verified["sequence"]) > WINDOW
    # Inputs the plan generates: one size per name in each case, masks padded in the longer cases.
    for case in plan.cases:
        flat = generate_inputs(layout, case.batch, sizes=case.dims, padded=["padding_mask"] if case.padded else ())
        ids, mask = flat
        assert ids.shape == mask.shape == (case.batch, case.dims["sequence"])


def test_declared_names_are_kept_and_contradictions_refused():
    model = mistral()
    layout = dims.apply_dim_names(resolve_input_layout(model), {"token_ids": "(batch, tokens)",
                                                                "padding_mask": ("batch", "tokens")})
    layout, _ = dims.discover(model, layout)
    assert [s.dims for s in layout.flat] == [("batch", "tokens")] * 2
    assert layout.output_dims == [("batch", "tokens", None)]
    contradicting = dims.apply_dim_names(resolve_input_layout(model), {"token_ids": "(batch, tokens)",
                                                                       "padding_mask": "(batch, mask_length)"})
    with pytest.raises(ExportError, match=r"must be equal.*one name"):
        dims.discover(model, contradicting)
    with pytest.raises(ExportError, match="not inputs"):
        dims.apply_dim_names(resolve_input_layout(model), {"tokens": "(batch, s)"})


# ---- Exports ----------------------------------------------------------------------


MODEL_FILE = f"""
import keras
import keras_hub


def build_model():
    keras.utils.set_random_seed(0)
    return keras_hub.models.MistralBackbone(
        vocabulary_size=50, num_layers=1, num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32, sliding_window={WINDOW}, name="mistral")
"""


@pytest.fixture(scope="module")
def mistral_export(tmp_path_factory) -> pathlib.Path:
    """The build tool's export of the Mistral backbone, SavedModel and ONNX, as a
    `model_export` action runs it: `token_ids`' sequence dim is declared (the
    rule's `dim_names`), `padding_mask`'s is found to be the same dim."""
    work = tmp_path_factory.mktemp("mistral")
    model_file = work / "mistral_model.py"
    model_file.write_text(MODEL_FILE)
    return build_tool.run(["--model_file", str(model_file), "--name", "mistral", "--backend", keras.backend.backend(),
                           "--formats", "tf_saved_model,onnx", "--out_dir", str(work / "mistral"),
                           "--dim_names", "token_ids=(batch, sequence)"])


def test_manifest_names_shared_dims_and_records_their_sizes(mistral_export):
    manifest = json.loads(mistral_export.read_text())
    (endpoint,) = [e for e in manifest["endpoints"] if e["name"] == "serving_default"]
    assert [t["shape"] for t in endpoint["inputs"]] == [["batch", "sequence"], ["batch", "sequence"]]
    assert endpoint["outputs"][0]["shape"] == ["batch", "sequence", 16]
    sequence = endpoint["dims"]["sequence"]
    assert sequence["window"] == WINDOW
    assert len(sequence["verified"]) >= 3 and 1 in sequence["verified"] and max(sequence["verified"]) > WINDOW
    assert endpoint["dims"]["batch"]["verified"] == [1, 2, 7]
    saved_model = next(a for a in manifest["artifacts"] if a["format"] == "tf_saved_model")
    assert saved_model["dim_names"] is True
    # The reference data are the verification cases: every size, masks padded and unpadded.
    cases = [c for c in manifest["reference"] if c["endpoint"] == "serving_default"]
    assert [c["batch"] for c in cases] == [1, 7, 2]
    base = mistral_export.parent
    lengths, padded = set(), False
    for case in cases:
        ids = np.load(base / case["inputs"]["token_ids"])
        mask = np.load(base / case["inputs"]["padding_mask"])
        out = np.load(base / case["outputs"]["sequence_output_layernorm"])
        assert ids.shape == mask.shape == out.shape[:2]
        lengths.add(ids.shape[1])
        assert mask.sum(axis=1).min() >= max(1, ids.shape[1] - WINDOW + 1)
        padded = padded or bool((mask == 0).any())
    assert sorted(lengths) == sequence["verified"] and padded


def test_onnx_and_saved_model_signatures_share_the_names(mistral_export):
    import onnx

    model = onnx.load(str(mistral_export.parent / "model.onnx"))
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.input) + list(model.graph.output)}
    assert shapes == {"token_ids": ["batch", "sequence"], "padding_mask": ["batch", "sequence"],
                      "sequence_output_layernorm": ["batch", "sequence", 16]}
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((mistral_export.parent / "saved_model" / "saved_model.pb").read_bytes())
    signature = saved.meta_graphs[0].signature_def["serving_default"]
    named = {k: [d.name or d.size for d in v.tensor_shape.dim]
             for m in (signature.inputs, signature.outputs) for k, v in m.items()}
    assert named == shapes


def test_gemma3_is_verified_past_its_sliding_window(tmp_path):
    artifact = servekit.export(gemma3(), str(tmp_path / "gemma3"), verbose=False)
    serving = artifact.endpoint("serving_default")
    assert [t.shape for t in serving.inputs] == [("batch", "sequence")] * 2
    assert serving.outputs[0].shape == ("batch", "sequence", 16)
    sequence = serving.dims["sequence"]
    assert sequence["window"] == WINDOW and max(sequence["verified"]) > WINDOW and len(sequence["verified"]) >= 3


def test_a_length_the_model_fixes_falls_back_to_sizes_it_accepts(tmp_path):
    """SigLIP's text encoder declares token_ids (None, None) but adds a position
    embedding of exactly max_sequence_length: servekit exports it, verified at the
    lengths the model accepts, and says so (before: nothing was exported)."""
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.SigLIPTextEncoder(vocabulary_size=50, embedding_dim=16, hidden_dim=16, num_layers=1,
                                                 num_heads=2, intermediate_dim=32, max_sequence_length=16)
    artifact = servekit.export(encoder, str(tmp_path / "siglip"), verbose=False)
    entry = artifact.endpoint("serving_default").dims["token_ids_1"]
    assert 16 in entry["verified"] and entry["max"] == 16
    assert "the model fails at size" in entry["note"]


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_a_size_at_which_a_layer_outputs_nothing_is_not_verified(tmp_path, fmt):
    """A 3-D pool of a volume of side 1: JAX returns an empty tensor (TensorFlow fails),
    whose global mean is NaN where the converters' artifacts give numbers or fail. servekit
    verified a JAX model at side 1 and refused it; side 1 is now refused like a size the
    model fails at."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    volume = keras.Input((None, None, None, 1), name="volume")
    pooled = layers.MaxPooling3D(2)(layers.Conv3D(2, 3, padding="same")(volume))
    model = keras.Model(volume, layers.GlobalAveragePooling3D(name="mean")(pooled))
    artifact = servekit.export(model, str(tmp_path / ("volume." + fmt.replace("litert", "tflite"))), format=fmt,
                               verbose=False)
    for name, entry in artifact.endpoint("serving_default").dims.items():
        if name != "batch":
            assert 1 not in entry["verified"] and "the model fails at size 1" in entry["note"], entry
