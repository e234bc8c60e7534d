"""ONNX Runtime as `@onnxruntime//:onnxruntime`: Debian's headers, the wheel's library.

tools/setup.sh extracts the C/C++ headers of Debian's libonnxruntime-dev (ORT API
21) into .setup/onnxruntime; headers of API N work with any runtime >= N, and
the pinned onnxruntime wheel ships runtime 1.31 as `libonnxruntime.so.1.<x>` with
SONAME `libonnxruntime.so.1`; tools/setup.sh adds the SONAME link beside it.
"""

load("//third_party:venv.bzl", "VENV_ATTRS", "servekit_root", "venv_file", "venv_site_packages")

def _onnxruntime_impl(rctx):
    headers = rctx.path(rctx.attr.headers or "%s/.setup/onnxruntime/include" % servekit_root(rctx))
    if not rctx.path("%s/onnxruntime_cxx_api.h" % headers).exists:
        fail("ONNX Runtime headers are missing at %s. Run tools/setup.sh first." % headers)
    site = venv_site_packages(rctx)
    capi = venv_file(rctx, site, "onnxruntime/capi")
    venv_file(rctx, site, "onnxruntime/capi/libonnxruntime.so.1")
    rctx.symlink(headers, "include")
    rctx.file("BUILD", """\
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "onnxruntime",
    hdrs = glob(["include/**/*.h"]),
    includes = ["include"],
    linkopts = [
        "-L{capi}",
        "-l:libonnxruntime.so.1",
        "-Wl,-rpath,{capi}",
    ],
)
""".format(capi = capi))

onnxruntime = repository_rule(
    implementation = _onnxruntime_impl,
    attrs = dict(VENV_ATTRS, headers = attr.string(
        doc = "Absolute path of a directory holding onnxruntime_cxx_api.h (ORT API >= 21); " +
              "empty: <servekit checkout>/.setup/onnxruntime/include (tools/setup.sh).",
    )),
    local = True,
    configure = True,
    doc = "ONNX Runtime C/C++ headers (Debian) and shared library (pip wheel).",
)
