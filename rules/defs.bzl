"""The public entry point: `servekit_model`, plus the rules it wires.

    load("//rules:defs.bzl", "servekit_model")

    servekit_model(
        name = "mlp",
        src = "mlp.py",
        backends = ["tensorflow", "jax", "torch"],
    )

creates, per backend B, the export `mlp_B`, its native tests `mlp_B_test_*`, and
the benchmark `mlp_B_benchmark` (`bazel run`). See docs/rules.md.
"""

load("//rules:export.bzl", _DEFAULT_FORMATS = "DEFAULT_FORMATS", _model_export = "model_export")
load("//rules:verify.bzl", _artifact_test = "artifact_test")
load("//rules:benchmark.bzl", _artifact_benchmark = "artifact_benchmark")

model_export = _model_export
artifact_test = _artifact_test
artifact_benchmark = _artifact_benchmark

def servekit_model(name, src, backends = ["tensorflow"], formats = _DEFAULT_FORMATS, test_size = "small", tags = [], **kwargs):
    """Exports, tests and benchmarks one model for each of `backends`.

    Args:
      name: prefix of every target; the exports are named `<name>_<backend>`.
      src: the model file (see model_export).
      backends: Keras backends to export from.
      formats: artifact formats (default: the five Keras exports; add "torch_aoti"
        for an AOTInductor package).
      test_size: size of the generated tests.
      tags: tags for every generated target.
      **kwargs: passed to model_export (weights, tolerances, opset, data, ...).

    Returns:
      The labels of the exports, for a filegroup such as //models:export.
    """
    exports = []
    for backend in backends:
        export = "%s_%s" % (name, backend)
        _model_export(name = export, src = src, backend = backend, formats = formats, tags = tags, **kwargs)
        both = "tf_saved_model" in formats and "onnx" in formats
        checks = list(formats) + (["cross_format"] if both else [])
        for check in checks:
            _artifact_test(
                name = "%s_test_%s" % (export, check),
                export = ":" + export,
                check = check,
                # The ExportedProgram is checked in Python (torch.export.load): importing
                # torch alone takes 10-25 s on a 2-core machine, past "small"'s 60 s under load.
                size = "medium" if (check == "torch" and test_size == "small") else test_size,
                tags = tags,
            )
        _artifact_benchmark(name = export + "_benchmark", export = ":" + export, tags = tags)
        exports.append(":" + export)
    return exports
