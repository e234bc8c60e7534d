"""Shared by every suite here: one warm export worker per test process.

`servekit.worker.launch.warm_worker()` keeps one TensorFlow worker for every
portable export instead of starting one per export; its artifacts are
byte-identical to a fresh process's (tests/python/test_build_worker.py), and
it is replaced after any failed job, so tests stay independent. The
determinism suite still exports in separate processes of its own.
"""

import pytest

from servekit.worker.launch import warm_worker


@pytest.fixture(scope="session", autouse=True)
def _one_export_worker_per_session():
    with warm_worker():
        yield
