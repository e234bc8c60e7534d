#!/usr/bin/env python3
"""Prints `N passed, N failed` for the test targets of the last `bazel test`.

Bazel's closing line is not one CI understands, so this counts test cases from
each target's test.xml (pytest and GoogleTest write one case per test; a plain
test counts as one case). A target that failed to build or run and has no
test.xml counts as one failure.

A sharded target's cases are its shards' (`shard_K_of_N/test.xml`).

Usage: tools/test_summary.py TESTLOGS_DIR TARGET...
"""

import pathlib
import sys
import xml.etree.ElementTree as ET


def count_cases(xml_path: pathlib.Path) -> tuple[int, int]:
    root = ET.parse(xml_path).getroot()
    passed = failed = 0
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is None:
            passed += 1
    return passed, failed


def main(argv: list[str]) -> int:
    testlogs = pathlib.Path(argv[1])
    passed = failed = 0
    for target in argv[2:]:
        package, _, name = target.lstrip("/").partition(":")
        log_dir = testlogs / package / name
        shards = sorted(log_dir.glob("shard_*_of_*"))
        p = f = 0
        for xml_path in [shard / "test.xml" for shard in shards] or [log_dir / "test.xml"]:
            try:
                shard_passed, shard_failed = count_cases(xml_path)
            except (OSError, ET.ParseError) as error:
                print(f"{target}: no readable {xml_path.relative_to(testlogs)} ({error})", file=sys.stderr)
                shard_passed, shard_failed = 0, 1
            p, f = p + shard_passed, f + shard_failed
        if p + f == 0:
            p, f = 0, 1  # a test target that ran no case did not pass
        passed, failed = passed + p, failed + f
    print(f"{passed} passed, {failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
