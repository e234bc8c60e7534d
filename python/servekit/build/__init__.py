"""servekit.build: the action behind the `model_export` Bazel rule.

- `build_tool`: model file -> SavedModel, ONNX, manifest and reference data;
- `manifest`: the manifest, the signature contract the native verifier checks.
"""
