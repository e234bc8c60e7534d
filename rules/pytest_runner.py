"""Runs pytest on the files a `pytest_test` target names, for Bazel.

Bazel runs this as the test's main. It passes the target's source files (as
runfiles paths) and makes pytest write the JUnit XML Bazel collects, so the
per-case results appear in bazel-testlogs/.../test.xml.
"""

import os
import sys

import pytest


class _Shard:
    """Bazel's test sharding (`shard_count`): this shard runs every
    `total`-th collected test, from its `index`."""

    def __init__(self, index: int, total: int):
        self.index, self.total = index, total

    def pytest_collection_modifyitems(self, config, items):
        deselected = [item for n, item in enumerate(items) if n % self.total != self.index]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = items[self.index::self.total]


def main() -> int:
    args = sys.argv[1:]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args += ["--junitxml", xml, "-o", "junit_family=xunit2"]
    # Keep pytest's cache out of the read-only runfiles tree.
    args += ["-p", "no:cacheprovider", "-q"]
    plugins = []
    if "TEST_TOTAL_SHARDS" in os.environ:
        plugins.append(_Shard(int(os.environ["TEST_SHARD_INDEX"]), int(os.environ["TEST_TOTAL_SHARDS"])))
        if "TEST_SHARD_STATUS_FILE" in os.environ:  # tells Bazel this runner shards
            open(os.environ["TEST_SHARD_STATUS_FILE"], "w").close()
    return pytest.main(args, plugins=plugins)


if __name__ == "__main__":
    sys.exit(main())
