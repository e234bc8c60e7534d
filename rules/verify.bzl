"""`artifact_test`: native validation of a model export, with the C++ verifier CLI.

The test runs `servekit_verify validate` against the export's manifest: it loads
the artifact with the TensorFlow C API or the ONNX Runtime C++ API, checks its
signatures and file digests against the manifest, and reproduces the reference
outputs within the manifest's tolerances. With `check = "cross_format"` it does
that for both artifacts and then runs the SavedModel and the ONNX model on the
same reference inputs and compares them with each other.
"""

load("//rules:export.bzl", "ServekitExportInfo", "export_launcher")

load("//rules:export.bzl", "FORMATS")

# The formats the native verifier loads (TF C API, ORT C++, OpenVINO C++, LiteRT C,
# libtorch's AOTInductor loader). A torch ExportedProgram has no native runtime: it is
# checked in Python (//python/servekit/build:check_artifact, torch.export.load).
NATIVE_FORMATS = ["tf_saved_model", "onnx", "openvino", "litert", "torch_aoti"]
CHECKS = FORMATS + ["cross_format"]

def _artifact_test_impl(ctx):
    export = ctx.attr.export[ServekitExportInfo]
    if ctx.attr.check != "cross_format" and ctx.attr.check not in export.formats:
        fail("check '%s': %s exported only %s" % (ctx.attr.check, ctx.attr.export.label, export.formats))
    if ctx.attr.check not in NATIVE_FORMATS + ["cross_format"]:
        checker = ctx.executable._python_checker
        # HOME is the test's own directory: OpenVINO's telemetry looks for its consent
        # file there, and a remote worker need not know the user (no passwd entry).
        command = "HOME=\"$TEST_TMPDIR\" exec '%s' --manifest '%s' --format %s" % (checker.short_path, export.manifest.short_path, ctx.attr.check)
        return [export_launcher(ctx, ctx.attr._python_checker, export, command)]
    verifier = ctx.executable._verifier
    if ctx.attr.check == "cross_format":
        # Every artifact, then SavedModel vs ONNX on the same reference inputs.
        command = "validate --manifest '%s'" % export.manifest.short_path
    else:
        command = "validate --manifest '%s' --format %s" % (export.manifest.short_path, ctx.attr.check)
    return [export_launcher(ctx, ctx.attr._verifier, export, "exec '%s' %s" % (verifier.short_path, command))]

artifact_test = rule(
    implementation = _artifact_test_impl,
    test = True,
    doc = "Validates one format of a model_export (or both against each other) natively.",
    attrs = {
        "export": attr.label(
            mandatory = True,
            providers = [ServekitExportInfo],
            doc = "A model_export target.",
        ),
        "check": attr.string(
            mandatory = True,
            values = CHECKS,
            doc = "A format: that artifact against the manifest and reference " +
                  "data; cross_format: SavedModel vs ONNX on the reference inputs.",
        ),
        "_verifier": attr.label(
            default = Label("//cc/cli:servekit_verify"),
            executable = True,
            cfg = "target",
        ),
        "_python_checker": attr.label(
            default = Label("//python/servekit/build:check_artifact"),
            executable = True,
            cfg = "target",
        ),
    },
)
