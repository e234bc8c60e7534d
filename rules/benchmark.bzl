"""`artifact_benchmark`: `bazel run` target that benchmarks a model export.

Runs `servekit.bench.benchmark` on the export: the native runners (C++ loops on the TF C
API and ORT C++ API, and the same runners called from Python through the pybind11
module) side by side with the Python runtimes (`tf.saved_model.load` signatures,
`onnxruntime.InferenceSession`) on the same inputs, over a batch sweep. Writes
`benchmark.json`, `benchmark.md` (a table) and `benchmark.png` (latency vs batch)
to `--out_dir` (default: benchmarks/<name>/ in the workspace).
"""

load("//rules:export.bzl", "ServekitExportInfo", "export_launcher")

def _artifact_benchmark_impl(ctx):
    export = ctx.attr.export[ServekitExportInfo]
    runner = ctx.executable._benchmark
    default_args = ["--manifest", export.manifest.short_path]
    if ctx.attr.batches:
        default_args += ["--batches", ",".join([str(b) for b in ctx.attr.batches])]
    command = "\n".join([
        "# Reports land in the workspace when run with `bazel run`.",
        'out="${BUILD_WORKSPACE_DIRECTORY:-.}/benchmarks/%s"' % export.name,
        "exec '%s' %s --out_dir \"$out\" \"$@\"" % (runner.short_path, " ".join(["'%s'" % a for a in default_args])),
    ])
    return [export_launcher(ctx, ctx.attr._benchmark, export, command)]

artifact_benchmark = rule(
    implementation = _artifact_benchmark_impl,
    executable = True,
    doc = "Benchmarks a model_export natively and in Python; `bazel run` it.",
    attrs = {
        "export": attr.label(mandatory = True, providers = [ServekitExportInfo]),
        "batches": attr.int_list(
            default = [1, 8, 32, 128],
            doc = "Batch sizes of the sweep (override at run time with --batches).",
        ),
        "_benchmark": attr.label(
            default = Label("//python/servekit/bench:benchmark"),
            executable = True,
            cfg = "target",
        ),
    },
)
