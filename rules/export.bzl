"""`model_export`: a Keras model definition in, verified serving artifacts out.

The export action runs `servekit.build.build_tool` (the export library) in the exec
configuration on the venv interpreter, in a fixed environment: no $HOME, fixed
seeds and thread counts, the source backend chosen here. It writes, under
`bazel-bin/<package>/<name>/`:

  manifest.json   the signature contract (docs/manifest.md)
  saved_model/    when "tf_saved_model" is in formats
  model.onnx      when "onnx" is in formats
  model.xml, model.bin   when "openvino" is in formats (OpenVINO IR)
  model.tflite    when "litert" is in formats
  model.pt2       when "torch" is in formats (torch.export ExportedProgram)
  model_aoti.pt2  when "torch_aoti" is in formats (AOTInductor package)
  reference/      reference inputs and outputs computed on the source backend

The action fails the build when the export library refuses the model or its
self-check (reload and compare) fails.
"""

# Every format the export library writes, and the files each adds to an export.
FORMATS = ["tf_saved_model", "onnx", "openvino", "litert", "torch", "torch_aoti"]
_FORMAT_FILES = {
    "onnx": ["model.onnx"],
    "openvino": ["model.xml", "model.bin"],
    "litert": ["model.tflite"],
    "torch": ["model.pt2"],
    "torch_aoti": ["model_aoti.pt2"],
}

# What servekit_model exports by default: the five formats Keras exports. The
# AOTInductor package is opt-in: it compiles C++ for 20-40 s per model and is
# specific to the exporting CPU (-march=native).
DEFAULT_FORMATS = ["tf_saved_model", "onnx", "openvino", "litert", "torch"]
BACKENDS = ["tensorflow", "jax", "torch"]

ServekitExportInfo = provider(
    doc = "One model export: its manifest and the files the manifest points to.",
    fields = {
        "name": "The export's name (the manifest's `model`).",
        "manifest": "File: manifest.json.",
        "saved_model": "Tree artifact: the SavedModel directory, or None.",
        "onnx": "File: model.onnx, or None.",
        "artifacts": "dict: format -> the artifact's entry File (model.xml for OpenVINO).",
        "reference": "Tree artifact: the reference .npy files.",
        "files": "depset of every output above.",
        "formats": "The formats exported, in order.",
    },
)

def export_launcher(ctx, tool_target, export, command):
    """DefaultInfo of a shell launcher running `command` with a tool on an export.

    Args:
      ctx: the rule context; the launcher is `<name>.sh`.
      tool_target: the executable target the command runs (its runfiles come along).
      export: the ServekitExportInfo whose files the command reads.
      command: the shell command lines, run from the runfiles root.
    """
    script = ctx.actions.declare_file(ctx.label.name + ".sh")
    ctx.actions.write(output = script, content = "#!/bin/sh\n" + command + "\n", is_executable = True)
    tool = tool_target[DefaultInfo].files_to_run.executable
    runfiles = ctx.runfiles(files = [tool], transitive_files = export.files)
    runfiles = runfiles.merge(tool_target[DefaultInfo].default_runfiles)
    return DefaultInfo(executable = script, runfiles = runfiles)

# The environment of every export action. Nothing comes from the caller's shell.
# Public so that a test can run the build tool in exactly this environment.
EXPORT_ENV = {
    "HOME": "/nonexistent",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_DETERMINISTIC_OPS": "1",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "OMP_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    "LC_ALL": "C.UTF-8",
    # Inductor's cache path reaches an AOTInductor package (its kernels' file names
    # and debug information): one path for every machine and user. Its default,
    # /tmp/torchinductor_<user>, is torchinductor_uid_0 in a remote worker's sandbox,
    # which has no /etc/passwd, and the package then differed from a local build's.
    "TORCHINDUCTOR_CACHE_DIR": "/tmp/servekit-torchinductor",
}

def _model_export_impl(ctx):
    for fmt in ctx.attr.formats:
        if fmt not in FORMATS:
            fail("formats: unknown format '%s'; expected some of %s" % (fmt, FORMATS))
    if not ctx.attr.formats:
        fail("formats: name at least one of %s" % FORMATS)

    prefix = ctx.label.name + "/"
    manifest = ctx.actions.declare_file(prefix + "manifest.json")
    reference = ctx.actions.declare_directory(prefix + "reference")
    outputs = [manifest, reference]
    artifacts = {}
    for fmt in ctx.attr.formats:
        if fmt == "tf_saved_model":
            files = [ctx.actions.declare_directory(prefix + "saved_model")]
        else:
            files = [ctx.actions.declare_file(prefix + f) for f in _FORMAT_FILES[fmt]]
        artifacts[fmt] = files[0]
        outputs += files

    args = ctx.actions.args()

    # In a params file, so that the action can run in a persistent worker.
    args.use_param_file("@%s", use_always = True)
    args.set_param_file_format("multiline")
    args.add("--model_file", ctx.file.src)
    args.add("--name", ctx.label.name)
    args.add("--backend", ctx.attr.backend)
    args.add_joined("--formats", ctx.attr.formats, join_with = ",")
    args.add("--out_dir", manifest.dirname)
    if ctx.attr.reference_batches:
        args.add_joined("--reference_batches", ctx.attr.reference_batches, join_with = ",")
    for input_name, shape in sorted(ctx.attr.dim_names.items()):
        args.add("--dim_names", "%s=%s" % (input_name, shape))
    if ctx.attr.opset:
        args.add("--opset", ctx.attr.opset)
    if ctx.file.weights:
        args.add("--weights", ctx.file.weights)
    for dtype, tolerance in sorted(ctx.attr.tolerances.items()):
        args.add("--tolerance", "%s=%s" % (dtype, tolerance))

    inputs = [ctx.file.src] + ctx.files.data + ctx.files._stack_lock
    if ctx.file.weights:
        inputs.append(ctx.file.weights)

    env = dict(EXPORT_ENV)
    env["KERAS_BACKEND"] = ctx.attr.backend
    ctx.actions.run(
        executable = ctx.executable._build_tool,
        arguments = [args],
        inputs = inputs,
        outputs = outputs,
        env = env,
        # One persistent build tool per source backend (KERAS_BACKEND is part of
        # the worker key); --strategy=ServekitExport=sandboxed runs each action
        # in a fresh process instead.
        execution_requirements = {"supports-workers": "1"},
        mnemonic = "ServekitExport",
        progress_message = "Exporting %s (%s backend) to %s" % (
            ctx.label,
            ctx.attr.backend,
            ", ".join(ctx.attr.formats),
        ),
    )
    files = depset(outputs)
    return [
        # Runfiles too, so that an export can be a test's or binary's `data`.
        DefaultInfo(files = files, runfiles = ctx.runfiles(transitive_files = files)),
        ServekitExportInfo(
            name = ctx.label.name,
            manifest = manifest,
            saved_model = artifacts.get("tf_saved_model"),
            onnx = artifacts.get("onnx"),
            artifacts = artifacts,
            reference = reference,
            files = files,
            formats = ctx.attr.formats,
        ),
    ]

model_export = rule(
    implementation = _model_export_impl,
    doc = "Exports the Keras model that `src` builds, with its manifest and reference data.",
    attrs = {
        "src": attr.label(
            allow_single_file = [".py"],
            mandatory = True,
            doc = "Python file defining `build_model() -> keras.Model` (seeded), and " +
                  "optionally `sample_inputs(batch, rng)`, `input_signature()`, " +
                  "`input_ranges()` and `dim_names()`. See docs/rules.md.",
        ),
        "backend": attr.string(
            default = "tensorflow",
            values = BACKENDS,
            doc = "Keras backend the model is built and its reference outputs computed on.",
        ),
        "formats": attr.string_list(
            default = DEFAULT_FORMATS,
            doc = "Artifact formats: some of " + ", ".join(FORMATS) + ".",
        ),
        "reference_batches": attr.int_list(
            default = [],
            doc = "Batch sizes of the reference cases; empty (default): the export's own " +
                  "verification cases (batch 1, 7 and 2; every dynamic dimension at 1, an odd " +
                  "size and past any window the model declares).",
        ),
        "dim_names": attr.string_dict(
            doc = "Names of dynamic dimensions, by input: a polymorphic shape such as " +
                  "{'token_ids': '(batch, sequence)', 'padding_mask': '(batch, sequence)'}. " +
                  "Dims with one name share one size in every format's signature and the " +
                  "manifest. Without it servekit finds the dims the model requires to be equal.",
        ),
        "opset": attr.int(
            default = 0,
            doc = "ONNX opset; 0 lets the export library choose.",
        ),
        "weights": attr.label(
            allow_single_file = True,
            doc = "Optional weights file (`.weights.h5`) loaded after build_model().",
        ),
        "tolerances": attr.string_dict(
            doc = "Per-dtype tolerances for the manifest, as 'atol,rtol', e.g. {'float32': '1e-4,0'}.",
        ),
        "data": attr.label_list(
            allow_files = True,
            doc = "Other files `src` reads or imports (helper modules, vocabularies).",
        ),
        "_build_tool": attr.label(
            default = Label("//python/servekit/build:build_tool"),
            executable = True,
            cfg = "exec",
        ),
        "_stack_lock": attr.label(
            default = Label("@servekit_python//:stack_lock"),
            doc = "pip freeze of the venv: a new Python stack re-runs every export.",
        ),
    },
)
