"""The README's "Add your own model" example is the package tests/e2e/readme_example.

`bazel test //...` builds that package's exports and runs their native tests like
any zoo model's; this test makes sure the README shows exactly those files, so the
example a user copies is the one that was built and verified.
"""

import pathlib
import re

README = pathlib.Path("README.md")
EXAMPLE = pathlib.Path("tests/e2e/readme_example")


def _readme_blocks() -> dict[str, str]:
    """Code blocks preceded by a `<!-- file: NAME -->` marker, by NAME."""
    text = README.read_text()
    pattern = re.compile(r"<!-- file: (\S+) -->\s*```\w*\n(.*?)```", re.S)
    return {name: body for name, body in pattern.findall(text)}


def test_readme_shows_every_example_file():
    blocks = _readme_blocks()
    assert sorted(blocks) == ["BUILD", "price_model.py"], f"README example blocks: {sorted(blocks)}"


def test_readme_example_files_match_the_tested_package():
    # The package's BUILD may add servekit's own test wiring after the example.
    for name, body in _readme_blocks().items():
        actual = (EXAMPLE / name).read_text()
        assert actual.startswith(body), f"README block {name} differs from {EXAMPLE / name}"
