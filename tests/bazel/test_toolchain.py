"""The Bazel Python toolchain is the venv of tools/setup.sh, with the pinned stack."""

import pathlib
import sys


def _pins() -> dict[str, str]:
    requirements = pathlib.Path("tools/requirements.txt").read_text()
    pins = {}
    for line in requirements.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_interpreter_is_python_311():
    assert sys.version_info[:2] == (3, 11)


def test_installed_versions_match_pins():
    from importlib import metadata

    for name, version in _pins().items():
        installed = metadata.version(name)
        assert installed.split("+")[0] == version, f"{name}: pinned {version}, installed {installed}"
