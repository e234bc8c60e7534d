"""servekit.bench: `bazel run` benchmarks of exported artifacts (native runners
side by side with the Python runtimes)."""
