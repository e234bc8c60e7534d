"""Compiler options shared by servekit's C++ targets."""

# servekit's C++ is small and sits on the per-call path of every Model::Run
# (tensors, feed checks, the runtime adapters, the Python bindings), so it is
# optimized even in Bazel's default fastbuild mode: latencies measured from a
# plain `bazel run`/`bazel test` build are then meaningful. -c dbg stays -O0.
SERVEKIT_HOT_PATH_COPTS = select({
    "//cc:fastbuild": ["-O2"],
    "//conditions:default": [],
})
