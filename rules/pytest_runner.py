"""Runs pytest on the files a `pytest_test` target names, for Bazel.

Bazel runs this as the test's main. It passes the target's source files (as
runfiles paths) and makes pytest write the JUnit XML Bazel collects, so the
per-case results appear in bazel-testlogs/.../test.xml.
"""

import os
import sys

import pytest


def main() -> int:
    args = sys.argv[1:]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args += ["--junitxml", xml, "-o", "junit_family=xunit2"]
    # Keep pytest's cache out of the read-only runfiles tree.
    args += ["-p", "no:cacheprovider", "-q"]
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main())
