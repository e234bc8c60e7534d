"""The module extension of servekit (bzlmod): what WORKSPACE sets up, for Bazel 7+.

servekit's MODULE.bazel uses it; a consumer module gets the same repositories
through its `bazel_dep(name = "servekit")` and may point them at its own venv:

    servekit = use_extension("@servekit//third_party:extensions.bzl", "servekit")
    servekit.venv(path = "/opt/my-venv")                 # absolute, or relative to
    servekit.onnxruntime_headers(path = "/usr/include/onnxruntime")  # the root module

The repositories are made by the same repository rules WORKSPACE calls:

  @servekit_python   python_configure: the venv as Python toolchain, Python and
                     pybind11 headers, the stack lock (python_configure.bzl);
  @tensorflow_c      tensorflow_c: the TF C API of the venv's tensorflow wheel;
  @onnxruntime       onnxruntime: ORT headers and the venv's onnxruntime library;
  @openvino          openvino: OpenVINO's C++ headers and runtime from the venv's wheel;
  @litert            litert: libLiteRt.so from the venv's ai-edge-litert wheel;
  @libtorch          libtorch: the venv's torch C++ headers and libraries (AOTInductor);
  @googletest, @cli11, @nlohmann_json   Debian's libgtest-dev, libcli11-dev and
                     nlohmann-json3-dev in /usr (needed only to build servekit's own C++
                     tests and verifier).

Tags of the root module win; servekit's own defaults apply otherwise.
"""

load("@bazel_tools//tools/build_defs/repo:local.bzl", "new_local_repository")
load("//third_party:onnxruntime.bzl", "onnxruntime")
load("//third_party:libtorch.bzl", "libtorch")
load("//third_party:litert.bzl", "litert")
load("//third_party:openvino.bzl", "openvino")
load("//third_party:python_configure.bzl", "python_configure")
load("//third_party:tensorflow_c.bzl", "tensorflow_c")

_venv = tag_class(
    doc = "The virtualenv with servekit's pinned stack (tools/requirements.txt).",
    attrs = {"path": attr.string(mandatory = True, doc = "Absolute, or relative to the root module.")},
)

_onnxruntime_headers = tag_class(
    doc = "A directory holding onnxruntime_cxx_api.h (ORT C/C++ API >= 21).",
    attrs = {"path": attr.string(mandatory = True, doc = "Absolute, or relative to the root module.")},
)

_system = tag_class(
    doc = "The prefix GoogleTest, CLI11 and nlohmann-json are installed under (Debian: /usr).",
    attrs = {"prefix": attr.string(mandatory = True)},
)

def _absolute(module_ctx, path):
    if not path or path.startswith("/"):
        return path
    return "%s/%s" % (module_ctx.path(Label("@@//:MODULE.bazel")).dirname, path)

def _servekit_impl(module_ctx):
    chosen = {}
    # Root module first: its tags win over any other module's.
    for module in sorted(module_ctx.modules, key = lambda m: 0 if m.is_root else 1):
        for kind, tags in [
            ("venv", module.tags.venv),
            ("onnxruntime_headers", module.tags.onnxruntime_headers),
        ]:
            for tag in tags:
                chosen.setdefault(kind, _absolute(module_ctx, tag.path))
        for tag in module.tags.system:
            chosen.setdefault("system", tag.prefix)

    venv = chosen.get("venv", "")
    python_configure(name = "servekit_python", venv = venv)
    tensorflow_c(name = "tensorflow_c", venv = venv)
    onnxruntime(name = "onnxruntime", venv = venv, headers = chosen.get("onnxruntime_headers", ""))
    openvino(name = "openvino", venv = venv)
    litert(name = "litert", venv = venv)
    libtorch(name = "libtorch", venv = venv)

    prefix = chosen.get("system", "/usr")
    new_local_repository(
        name = "googletest",
        path = prefix,
        build_file = Label("//third_party:googletest.BUILD"),
    )
    new_local_repository(
        name = "cli11",
        path = prefix,
        build_file = Label("//third_party:cli11.BUILD"),
    )
    new_local_repository(
        name = "nlohmann_json",
        path = prefix + "/include",
        build_file = Label("//third_party:nlohmann_json.BUILD"),
    )

servekit = module_extension(
    implementation = _servekit_impl,
    tag_classes = {
        "venv": _venv,
        "onnxruntime_headers": _onnxruntime_headers,
        "system": _system,
    },
    doc = "servekit's external repositories: the venv, TF C API, ONNX Runtime, OpenVINO, LiteRT, libtorch, system libraries.",
)
