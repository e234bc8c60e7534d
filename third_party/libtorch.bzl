"""libtorch from the pinned torch wheel, as `@libtorch//:libtorch` (for AOTInductor packages).

The torch wheel ships its C++ headers (`torch/include`, and the C++ frontend's under
`torch/include/torch/csrc/api/include`) and `torch/lib/libtorch.so`, `libtorch_cpu.so`
and `libc10.so`, linked by file name with an rpath into the venv. Code built on it
needs `-D_GLIBCXX_USE_CXX11_ABI=1` (the wheel's ABI) and C++20 (the AOTInductor
headers); the library carries the define, the user sets the standard.
"""

load("//third_party:venv.bzl", "VENV_ATTRS", "venv_file", "venv_site_packages")

def _libtorch_impl(rctx):
    site = venv_site_packages(rctx)
    lib = venv_file(rctx, site, "torch/lib")
    for name in ["libtorch.so", "libtorch_cpu.so", "libc10.so"]:
        venv_file(rctx, site, "torch/lib/" + name)
    venv_file(rctx, site, "torch/include/torch/csrc/inductor/aoti_package/model_package_loader.h")
    rctx.symlink(venv_file(rctx, site, "torch/include"), "include")
    rctx.file("BUILD", """\
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "libtorch",
    hdrs = glob(["include/**/*.h", "include/**/*.hpp", "include/**/*.cuh"]),
    defines = ["_GLIBCXX_USE_CXX11_ABI=1"],
    includes = [
        "include",
        "include/torch/csrc/api/include",
    ],
    linkopts = [
        "-L{lib}",
        "-l:libtorch.so",
        "-l:libtorch_cpu.so",
        "-l:libc10.so",
        "-Wl,-rpath,{lib}",
    ],
)
""".format(lib = lib))

libtorch = repository_rule(
    implementation = _libtorch_impl,
    attrs = VENV_ATTRS,
    local = True,
    configure = True,
    doc = "libtorch headers and libraries from the venv's torch wheel.",
)
