"""Compiler options shared by servekit's C++ targets."""

# servekit's C++ is small and sits on the per-call path of every Model::Run
# (tensors, feed checks, the runtime adapters, the Python bindings), so it is
# optimized even in Bazel's default fastbuild mode: latencies measured from a
# plain `bazel run`/`bazel test` build are then meaningful. -c dbg stays -O0.
SERVEKIT_HOT_PATH_COPTS = select({
    "//cc:fastbuild": ["-O2"],
    "//conditions:default": [],
})

def servekit_torch_aoti_plugin(name = "libservekit_torch_aoti.so", **kwargs):
    """libservekit_torch_aoti.so, the AOTInductor plugin, in the calling package.

    The loader opens it from beside the binary that holds the loader (cc/torch_aoti_plugin.h),
    so each package with such a binary makes its own copy (one link against libtorch;
    the objects are shared) and lists it in the binary's `data`.

    Args:
      name: the file; keep the default, which is the name the loader looks for.
      **kwargs: passed to cc_binary (visibility, tags, ...).
    """
    lds = Label("//cc:torch_aoti_plugin.lds")
    native.cc_binary(
        name = name,
        additional_linker_inputs = [lds],
        linkopts = ["-Wl,--version-script=$(location %s)" % lds],
        linkshared = 1,
        linkstatic = 1,
        deps = [Label("//cc:torch_aoti_plugin")],
        **kwargs
    )
