#!/usr/bin/env python3
"""Builds an offline Bazel module registry from Debian's rule packages.

    python3 tools/bazel7_registry.py REGISTRY_DIR [MODULE.bazel ...]

Run inside the Bazel 7 chroot (tools/setup.sh --with-bazel7 does). The registry
stands in for the Bazel Central Registry (https://bcr.bazel.build), which this
machine cannot reach. It holds:

  * every module Debian ships under /usr/share/bazel/{rules,tools}/*/ (rules_cc,
    rules_java, rules_python, bazel_skylib, platforms, ...), as `local_path`
    sources pointing at the package, at the Debian package's upstream version.
    Each MODULE.bazel is copied with that version and with every bazel_dep on
    another registry module pinned to the one version present;
  * stub modules (a module() line and an empty BUILD) for what Bazel's built-in
    bazel_tools module names but Debian does not ship and no build here uses:
    protobuf, zlib, buildozer (plus the extension bazel_tools loads from it),
    apple_support;
  * for each version of a module that Bazel's built-in modules or the MODULE.bazel files given
    on the command line (servekit's, the test consumer's) ask for and Debian does
    not have, an entry with that version number and Debian's sources: minimal
    version selection then still picks Debian's (higher) version, and the same
    MODULE.bazel resolves unchanged against the Bazel Central Registry.

The output is rebuilt from scratch on each run (it is small and fast to make).
"""

import json
import os
import re
import shutil
import subprocess
import sys

SHARE = "/usr/share/bazel"
BAZEL_TOOLS_MODULE = SHARE + "/embedded_tools/MODULE.bazel"

# Modules bazel_tools depends on that no build here uses and Debian does not ship.
STUB_FILES = {
    "buildozer": {
        # bazel_tools: use_extension("@buildozer//:buildozer_binary.bzl", "buildozer_binary")
        "buildozer_binary.bzl": '''\
"""Stub: buildozer is not available offline (only `bazel mod tidy` uses it)."""

def _repo_impl(rctx):
    rctx.file("BUILD.bazel", "")

_repo = repository_rule(implementation = _repo_impl)

def _buildozer_binary_impl(module_ctx):
    _repo(name = "buildozer_binary")

buildozer_binary = module_extension(implementation = _buildozer_binary_impl)
''',
    },
}

# Bazel's other built-in module, local_config_platform, asks for this (its
# MODULE.bazel is generated inside Bazel, not a file to read).
BUILTIN_REQUESTS = 'bazel_dep(name = "platforms", version = "0.0.7")\n'

BAZEL_DEP = re.compile(r"bazel_dep\((.*?)\)", re.S)
ARG = r'\b{}\s*=\s*"([^"]*)"'


def arg(call: str, name: str):
    match = re.search(ARG.format(name), call)
    return match.group(1) if match else None


def deps(module_text: str):
    """(name, version, dev) of every bazel_dep in a MODULE.bazel text."""
    for match in BAZEL_DEP.finditer(module_text):
        call = match.group(1)
        dev = re.search(r"dev_dependency\s*=\s*True", call) is not None
        yield arg(call, "name"), arg(call, "version") or "", dev


def debian_version(path: str) -> str:
    """The upstream version of the Debian package that ships `path`."""
    package = subprocess.run(["dpkg", "-S", path], check=True, capture_output=True, text=True)
    package = package.stdout.split(":")[0].strip()
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             check=True, capture_output=True, text=True).stdout
    version = version.split(":", 1)[-1].rsplit("-", 1)[0]  # epoch, Debian revision
    return re.split(r"[+~]", version)[0]  # +ds, ~rc


def debian_modules():
    """{name: (path, version, MODULE.bazel text)} of Debian's rule packages."""
    found = {}
    for group in ("rules", "tools"):
        base = os.path.join(SHARE, group)
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry)
            module_file = os.path.join(path, "MODULE.bazel")
            if not os.path.isfile(module_file):
                continue
            text = open(module_file).read()
            name = re.search(r'module\(\s*name\s*=\s*"([^"]+)"', text).group(1)
            found[name] = (path, debian_version(path), text)
    return found


def pin(module_text: str, version: str, versions: dict) -> str:
    """MODULE.bazel text with module version `version` and deps pinned to `versions`."""
    def module_line(match):
        call = match.group(0)
        if re.search(ARG.format("version"), call):
            return re.sub(ARG.format("version"), f'version = "{version}"', call, count=1)
        return call.replace("name", f'version = "{version}", name', 1)

    text = re.sub(r"module\((.*?)\)", module_line, module_text, count=1, flags=re.S)

    def dep_line(match):
        call = match.group(0)
        name = arg(call, "name")
        if name in versions and re.search(ARG.format("version"), call):
            return re.sub(ARG.format("version"), f'version = "{versions[name]}"', call, count=1)
        return call

    return BAZEL_DEP.sub(dep_line, text)


def write(path: str, content: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)


def add_version(registry: str, name: str, version: str, module_text: str, source: dict):
    base = os.path.join(registry, "modules", name)
    write(os.path.join(base, version, "MODULE.bazel"), module_text)
    write(os.path.join(base, version, "source.json"), json.dumps(source, indent=2) + "\n")
    metadata_file = os.path.join(base, "metadata.json")
    metadata = {"homepage": "", "maintainers": [], "versions": [], "yanked_versions": {}}
    if os.path.exists(metadata_file):
        metadata = json.load(open(metadata_file))
    if version not in metadata["versions"]:
        metadata["versions"].append(version)
    write(metadata_file, json.dumps(metadata, indent=2) + "\n")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    registry = os.path.abspath(argv[1])
    consumers = argv[2:]

    debian = debian_modules()
    bazel_tools = open(BAZEL_TOOLS_MODULE).read()

    # Non-dev deps of bazel_tools and of Debian's modules that Debian lacks: stubs,
    # at the version bazel_tools asks for (else the highest asked for).
    stubs = {}
    for text in [bazel_tools] + [t for _, _, t in debian.values()]:
        for name, version, dev in deps(text):
            if dev or name in debian:
                continue
            stubs.setdefault(name, set()).add(version)
    tools_versions = {n: v for n, v, _ in deps(bazel_tools)}
    stub_version = {n: tools_versions.get(n) or max(vs) for n, vs in stubs.items()}

    present = {name: version for name, (_, version, _) in debian.items()}
    present.update(stub_version)

    if os.path.exists(registry):
        shutil.rmtree(registry)
    write(os.path.join(registry, "bazel_registry.json"),
          json.dumps({"mirrors": [], "module_base_path": "/"}, indent=2) + "\n")

    for name, (path, version, text) in sorted(debian.items()):
        add_version(registry, name, version, pin(text, version, present),
                    {"type": "local_path", "path": path})
    for name, version in sorted(stub_version.items()):
        stub_dir = os.path.join(registry, "stubs", name)
        write(os.path.join(stub_dir, "BUILD.bazel"), "")
        for file_name, content in STUB_FILES.get(name, {}).items():
            write(os.path.join(stub_dir, file_name), content)
        module_text = f'module(name = "{name}", version = "{version}")\n'
        write(os.path.join(stub_dir, "MODULE.bazel"), module_text)
        add_version(registry, name, version, module_text, {"type": "local_path", "path": stub_dir})

    # Other versions asked for: same sources, so the selection still ends on ours.
    extra = []
    for text in [bazel_tools, BUILTIN_REQUESTS] + [open(f).read() for f in consumers]:
        for name, version, _ in deps(text):
            if name in present and version and version != present[name]:
                path = debian[name][0] if name in debian else os.path.join(registry, "stubs", name)
                module_text = debian[name][2] if name in debian else f'module(name = "{name}")\n'
                add_version(registry, name, version, pin(module_text, version, present),
                            {"type": "local_path", "path": path})
                extra.append(f"{name}@{version}")

    print("registry %s: %s; stubs: %s; extra version entries: %s" % (
        registry,
        ", ".join(f"{n}@{v}" for n, (_, v, _) in sorted(debian.items())),
        ", ".join(f"{n}@{v}" for n, v in sorted(stub_version.items())),
        ", ".join(sorted(set(extra))) or "none"))


if __name__ == "__main__":
    main(sys.argv)
