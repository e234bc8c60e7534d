"""LiteRT's runtime library from the pinned ai-edge-litert wheel, as `@litert//:litert`.

The wheel ships `ai_edge_litert/libLiteRt.so` (SONAME libLiteRt.so; it needs only
libc and libstdc++) and no headers: servekit declares the C functions it calls
itself, in cc/litert_c_api.h. The library is linked by file name with an rpath
into the venv.
"""

load("//third_party:venv.bzl", "VENV_ATTRS", "venv_file", "venv_site_packages")

def _litert_impl(rctx):
    site = venv_site_packages(rctx)
    lib_dir = venv_file(rctx, site, "ai_edge_litert")
    venv_file(rctx, site, "ai_edge_litert/libLiteRt.so")
    rctx.file("BUILD", """\
package(default_visibility = ["//visibility:public"])

# The library only: the declarations are servekit's (//cc:litert_c_api.h).
cc_library(
    name = "litert",
    linkopts = [
        "-L{lib_dir}",
        "-l:libLiteRt.so",
        "-Wl,-rpath,{lib_dir}",
    ],
)
""".format(lib_dir = lib_dir))

litert = repository_rule(
    implementation = _litert_impl,
    attrs = VENV_ATTRS,
    local = True,
    configure = True,
    doc = "LiteRT's libLiteRt.so from the venv's ai-edge-litert wheel.",
)
