"""`pytest_test`: pytest files as Bazel tests.

Each target is one test process (so one Keras backend: Keras reads KERAS_BACKEND
once, at import). Cases show up one by one in the target's test.xml.
"""

def pytest_test(name, srcs, deps = [], data = [], env = {}, args = [], **kwargs):
    """Runs the pytest files `srcs` as one py_test.

    Args:
      name: the test target.
      srcs: the test files, run in this order; helper modules may be listed too
        (only files named test_*.py are collected).
      deps: py_library targets the tests import (e.g. //python/servekit).
      data: files the tests read at run time.
      env: environment for the test process, e.g. {"KERAS_BACKEND": "jax"}.
      args: extra pytest arguments (e.g. ["-k", "not slow"]).
      **kwargs: passed to py_test (size, timeout, tags, shard_count, ...).
    """
    runner = str(Label("//rules:pytest_runner.py"))  # servekit's, from any repository
    native.py_test(
        name = name,
        srcs = srcs + [runner],
        main = runner,
        args = ["$(rootpath %s)" % src for src in srcs if src.split("/")[-1].split(":")[-1].startswith("test_")] + args,
        deps = deps,
        data = data,
        env = env,
        # No __init__.py files in the runfiles: pytest then puts each test file's
        # own directory on sys.path, so tests import their sibling helper modules.
        legacy_create_init = False,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
