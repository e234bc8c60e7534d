"""Shared by every suite here: one warm export worker per test process.

`servekit.worker.launch.warm_worker()` keeps one TensorFlow worker for every
portable export instead of starting one per export; its artifacts are
byte-identical to a fresh process's (tests/python/test_build_worker.py), and
it is replaced after any failed job, so tests stay independent. The
determinism suite still exports in separate processes of its own.
"""

import os

# TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 (VNNI, BF16) or AMX; without
# it, a channels-first convolution does not run on its CPU ("only supports the NHWC tensor
# format"), and a test's source model on the TensorFlow backend would fail on an AVX2 machine
# where it runs on others. Test processes take oneDNN on every CPU (before TensorFlow loads);
# the export worker sets it off for itself, as the export action does.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# ONNX Runtime keeps a telemetry ID under $XDG_CACHE_HOME (else ~/.cache) and, where it cannot
# write one (Bazel's test sandbox has no writable home), warns on stderr when the process's first
# session is created: in the test process too now that small JAX and torch models are converted
# and checked there. A user's machine has a cache directory; the sandbox gets the test's own.
if "TEST_TMPDIR" in os.environ:
    os.environ.setdefault("XDG_CACHE_HOME", os.path.join(os.environ["TEST_TMPDIR"], "cache"))

import pytest  # noqa: E402

from servekit.worker.launch import warm_worker  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_export_worker_per_session():
    with warm_worker():
        yield
