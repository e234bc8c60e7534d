"""The TensorFlow C API from the pinned tensorflow-cpu wheel, as `@tensorflow_c//:c_api`.

The wheel ships the C headers and the two shared libraries but no unversioned
`.so` names, so the libraries are linked by SONAME with an rpath into the venv.
Only the C API is exposed: linking TF's generated C++ protobuf classes would tie
servekit to one TensorFlow release.
"""

load("//third_party:venv.bzl", "VENV_ATTRS", "venv_file", "venv_site_packages")

def _tensorflow_c_impl(rctx):
    site = venv_site_packages(rctx)
    tf_dir = venv_file(rctx, site, "tensorflow")
    venv_file(rctx, site, "tensorflow/libtensorflow_cc.so.2")
    venv_file(rctx, site, "tensorflow/libtensorflow_framework.so.2")
    venv_file(rctx, site, "tensorflow/include/tensorflow/c/c_api.h")
    # c_api.h and the headers it includes: TF's C API and the TSL/XLA C bits under it.
    for headers in [
        "tensorflow/c",
        "tensorflow/core/platform/ctstring.h",
        "tensorflow/core/platform/ctstring_internal.h",
        "tsl/platform",
        "xla/tsl/c",
    ]:
        rctx.symlink("%s/include/%s" % (tf_dir, headers), "include/" + headers)
    rctx.file("BUILD", """\
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "c_api",
    hdrs = glob(["include/**/*.h"]),
    includes = ["include"],
    linkopts = [
        "-L{lib}",
        "-l:libtensorflow_cc.so.2",
        "-l:libtensorflow_framework.so.2",
        "-Wl,-rpath,{lib}",
    ],
)
""".format(lib = tf_dir))

tensorflow_c = repository_rule(
    implementation = _tensorflow_c_impl,
    attrs = VENV_ATTRS,
    local = True,
    configure = True,
    doc = "TensorFlow C API headers and libraries from the venv's tensorflow wheel.",
)
