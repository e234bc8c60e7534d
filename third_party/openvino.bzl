"""OpenVINO's C++ runtime from the pinned openvino wheel, as `@openvino//:openvino`.

The wheel ships the headers (`openvino/include`) and `libopenvino.so.<release>`
(SONAME the same file name, no unversioned `.so`), with the CPU plugin and TBB
beside it. The library is linked by that file name with an rpath into the
venv; OpenVINO finds its plugins next to itself at run time.
"""

load("//third_party:venv.bzl", "VENV_ATTRS", "venv_file", "venv_site_packages")

def _openvino_impl(rctx):
    site = venv_site_packages(rctx)
    libs = venv_file(rctx, site, "openvino/libs")
    venv_file(rctx, site, "openvino/include/openvino/openvino.hpp")
    # The one libopenvino.so.<release> the wheel ships (e.g. libopenvino.so.2641).
    found = [f.basename for f in libs.readdir() if f.basename.startswith("libopenvino.so.")]
    if len(found) != 1:
        fail("Expected one libopenvino.so.<release> in %s, found %s; re-run tools/setup.sh." % (libs, found))
    rctx.symlink(venv_file(rctx, site, "openvino/include"), "include")
    rctx.file("BUILD", """\
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "openvino",
    hdrs = glob(["include/openvino/**/*.hpp", "include/openvino/**/*.h"]),
    includes = ["include"],
    linkopts = [
        "-L{libs}",
        "-l:{lib}",
        "-Wl,-rpath,{libs}",
    ],
)
""".format(libs = libs, lib = found[0]))

openvino = repository_rule(
    implementation = _openvino_impl,
    attrs = VENV_ATTRS,
    local = True,
    configure = True,
    doc = "OpenVINO C++ headers and runtime library from the venv's openvino wheel.",
)
