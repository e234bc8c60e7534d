"""Real architectures exported to the formats beyond SavedModel and ONNX.

`bazel run //tools:real_architectures -- --backends tensorflow,torch --formats openvino,litert,torch`
builds keras_hub backbones, keras.applications models and the zoo's real networks at
small, random-weight configurations (nothing downloaded), exports each with
`servekit.export` (which verifies the artifact against the model before writing it) and
prints one line per export and a table of what passed and what was refused. One process
per backend (Keras picks its backend at import). Results are appended as JSON lines to
`--out` (default: `real_architectures.jsonl` in the working directory). `--dtype-policy
mixed_float16` (or any Keras dtype policy) builds every model under that global policy.

The sweep takes 10-30 s per export on the 2-core machine kind: it is a manual check
(README, "Real architectures"), not part of `bazel test //...`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ZOO = ("mobilenet_v3", "convnext", "vit", "llama", "mistral")
SUFFIXES = {"openvino": ".xml", "litert": ".tflite", "torch": ".pt2", "torch_aoti": ".pt2", "onnx": ".onnx",
            "tf_saved_model": ""}


def builders() -> dict:
    """Model name -> a function building it (seeded by the caller)."""
    import keras
    import keras_hub

    hub, apps = keras_hub.models, keras.applications
    text = dict(vocabulary_size=100, num_layers=2, hidden_dim=32, intermediate_dim=64)
    heads = dict(text, num_heads=2)
    grouped = dict(text, num_query_heads=2, num_key_value_heads=1)
    image = dict(image_shape=(32, 32, 3))
    models = {
        "gpt2": lambda: hub.GPT2Backbone(**heads, max_sequence_length=32),
        "gemma": lambda: hub.GemmaBackbone(**grouped, head_dim=16),
        "gemma3": lambda: hub.Gemma3Backbone(**grouped, head_dim=16, image_size=16, vision_encoder=None),
        "distilbert": lambda: hub.DistilBertBackbone(**heads, max_sequence_length=32),
        "deberta_v3": lambda: hub.DebertaV3Backbone(**heads, max_sequence_length=32, bucket_size=8),
        "fnet": lambda: hub.FNetBackbone(**text, max_sequence_length=32),
        "t5": lambda: hub.T5Backbone(**heads),
        "bart": lambda: hub.BartBackbone(**heads, max_sequence_length=32),
        "whisper": lambda: hub.WhisperBackbone(**heads, num_mels=16, max_encoder_sequence_length=32,
                                               max_decoder_sequence_length=16),
        "qwen3": lambda: hub.Qwen3Backbone(**grouped, head_dim=16),
        "phi3": lambda: hub.Phi3Backbone(**grouped),
        "falcon": lambda: hub.FalconBackbone(**text, num_attention_heads=2),
        "bloom": lambda: hub.BloomBackbone(**heads),
        "opt": lambda: hub.OPTBackbone(**heads, max_sequence_length=32),
        "gpt_neox": lambda: hub.GPTNeoXBackbone(**heads, max_sequence_length=32),
        "albert": lambda: hub.AlbertBackbone(**heads, embedding_dim=16, max_sequence_length=32),
        "electra": lambda: hub.ElectraBackbone(vocab_size=100, num_layers=2, num_heads=2, hidden_dim=32,
                                               embedding_dim=16, intermediate_dim=64, max_sequence_length=32),
        "mistral": lambda: hub.MistralBackbone(**grouped, sliding_window=8),
        "xlm_roberta": lambda: hub.XLMRobertaBackbone(**heads, max_sequence_length=32),
        "esm": lambda: hub.ESMBackbone(**heads),
        "roformer_v2": lambda: hub.RoformerV2Backbone(**heads, head_size=16),
        "resnet": lambda: hub.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 128],
            stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="bottleneck_block", **image),
        "densenet": lambda: hub.DenseNetBackbone(stackwise_num_repeats=[1, 1], growth_rate=8, **image),
        "clip_vision": lambda: hub.CLIPVisionEncoder(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
                                                     intermediate_dim=64, **image),
        "mit": lambda: hub.MiTBackbone(
            layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2], layerwise_sr_ratios=[2, 1],
            max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], hidden_dims=[16, 32],
            **image),
        "swin": lambda: hub.SwinTransformerBackbone(embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4,
                                                    patch_size=2, drop_path=0.0, **image),
        "deit": lambda: hub.DeiTBackbone(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
                                         **image),
        "vgg": lambda: hub.VGGBackbone(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16], **image),
        "xception": lambda: hub.XceptionBackbone(stackwise_conv_filters=[[8, 16], [32, 32], [64, 64]],
                                                 stackwise_pooling=[False, True, False], **image),
        "dinov2": lambda: hub.DINOV2Backbone(patch_size=8, num_layers=2, hidden_dim=32, num_heads=2,
                                             intermediate_dim=64, position_embedding_shape=(32, 32, 3), **image),
        "siglip": lambda: hub.SigLIPVisionEncoder(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
                                                  intermediate_dim=64, **image),
    }
    small = dict(weights=None, input_shape=(32, 32, 3), classes=10)
    models.update({
        "EfficientNetB0": lambda: apps.EfficientNetB0(**small),
        "EfficientNetV2B0": lambda: apps.EfficientNetV2B0(**small),
        "DenseNet121": lambda: apps.DenseNet121(**small),
        "ResNet50": lambda: apps.ResNet50(**small),
        "ResNet50V2": lambda: apps.ResNet50V2(**small),
        "Xception": lambda: apps.Xception(**dict(small, input_shape=(71, 71, 3))),
        "InceptionV3": lambda: apps.InceptionV3(**dict(small, input_shape=(75, 75, 3))),
        "NASNetMobile": lambda: apps.NASNetMobile(**small),
        "MobileNet": lambda: apps.MobileNet(**small, alpha=0.5),
        "MobileNetV2": lambda: apps.MobileNetV2(**small),
        "MobileNetV3Small": lambda: apps.MobileNetV3Small(**small, include_preprocessing=True),
        "MobileNetV3Large": lambda: apps.MobileNetV3Large(**small, alpha=0.75),
        "ConvNeXtTiny": lambda: apps.ConvNeXtTiny(**small),
    })
    workspace = os.environ.get("BUILD_WORKSPACE_DIRECTORY")  # set by `bazel run`
    if workspace:
        import importlib

        sys.path.insert(0, os.path.join(workspace, "models"))
        for name in ZOO:
            models[f"zoo_{name}"] = (lambda module: lambda: importlib.import_module(module).build_model())(name)
    return models


def sweep(names: list[str], formats: list[str], out_path: str, dtype_policy: str = "float32") -> None:
    """Exports each model, built under `dtype_policy`, to each format on this process' backend."""
    import keras

    import servekit

    keras.config.set_dtype_policy(dtype_policy)
    models = builders()
    with open(out_path, "a") as out:
        for name in names or list(models):
            keras.utils.set_random_seed(0)
            try:
                model = models[name]()
            except ValueError as e:  # Keras itself refuses the architecture on this backend (NASNet on torch)
                row = {"ok": False, "model": name, "backend": keras.backend.backend(), "not_built": str(e)}
                out.write(json.dumps(row) + "\n")
                print(f"{row['backend']:10} {name:18} not built by Keras on this backend: {e}", flush=True)
                continue
            for fmt in formats:
                workdir = tempfile.mkdtemp(prefix="servekit_sweep_")
                started = time.time()
                try:
                    artifact = servekit.export(model, os.path.join(workdir, "model" + SUFFIXES[fmt]), format=fmt,
                                               verbose=False)
                    row = {"ok": True, "strategy": artifact.strategy, "converter": artifact.converter}
                except servekit.ExportError as e:  # a refusal: kept, with its reason, for the table
                    row = {"ok": False, "error": str(e)}
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
                row.update(model=name, format=fmt, backend=keras.backend.backend(), dtype_policy=dtype_policy,
                           seconds=round(time.time() - started, 1))
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(f"{row['backend']:10} {name:18} {fmt:10} {'verified' if row['ok'] else 'REFUSED'} "
                      f"{row['seconds']} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--formats", default="openvino,litert,torch")
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--out", default="real_architectures.jsonl")
    parser.add_argument("--dtype-policy", default="float32", help="the global Keras dtype policy the models are "
                        "built under (mixed_float16, mixed_bfloat16, ...)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = os.path.abspath(os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY", "."), args.out))
    names = [n for n in args.models.split(",") if n]
    formats = args.formats.split(",")
    if args.child:
        sweep(names, formats, out, args.dtype_policy)
        return 0
    for backend in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--formats", args.formats,
                        "--models", args.models, "--out", out, "--dtype-policy", args.dtype_policy], env=env,
                       check=True)
    rows = [json.loads(line) for line in open(out)]
    not_built = [r for r in rows if "not_built" in r]
    exports = [r for r in rows if "not_built" not in r]
    refused = [r for r in exports if not r["ok"]]
    print(f"\n{len(exports) - len(refused)} verified, {len(refused)} refused, {len(not_built)} not built by Keras "
          f"(all runs in {out})")
    for r in not_built:
        print(f"  {r['backend']} {r['model']}: not built by Keras: {r['not_built'][:200]}")
    for r in refused:
        reasons = [line.strip() for line in r["error"].splitlines() if "(failed)" in line] or [r["error"]]
        print(f"  {r['backend']} {r['model']} -> {r['format']}: {reasons[0][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
