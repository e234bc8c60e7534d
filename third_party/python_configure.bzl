"""Exposes the venv made by tools/setup.sh (or the one `venv` names) to Bazel.

The repository `@servekit_python` provides:
  :toolchain       the venv interpreter as the Python toolchain (register it);
  :python_headers  Python.h and friends, for extension modules;
  :pybind11        pybind11's headers (from the pinned pip package);
  :stack_lock      `pip freeze` of the venv, a declared input of every export
                   action, so a change of the Python stack re-runs them;
  :remote_exec_platform  the host platform plus the exec property that asks a remote
                   worker for this venv and its base Python at their paths here (the
                   worker image contract of docs/remote_execution.md).
"""

load("//third_party:venv.bzl", "VENV_ATTRS", "venv_python")

_PROBE = """
import json, platform, sys, sysconfig
import pybind11
print(json.dumps({
    "include": sysconfig.get_path("include"),
    "pybind11": pybind11.get_include(),
    "base_prefix": sys.base_prefix,
    "version": platform.python_version(),
}))
"""

def _python_configure_impl(rctx):
    python = venv_python(rctx)
    result = rctx.execute([python, "-c", _PROBE])
    if result.return_code != 0:
        fail("The venv interpreter failed: %s" % result.stderr)
    info = json.decode(result.stdout)

    freeze = rctx.execute([python, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"])
    if freeze.return_code != 0:
        fail("pip freeze failed: %s" % freeze.stderr)
    rctx.file("stack_lock.txt", freeze.stdout)

    rctx.symlink(info["include"], "python_include")
    rctx.symlink(info["pybind11"], "pybind11_include")
    rctx.file("BUILD", """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

exports_files(["stack_lock.txt"])

filegroup(
    name = "stack_lock",
    srcs = ["stack_lock.txt"],
)

py_runtime(
    name = "venv_runtime",
    interpreter_path = "{python}",
    # The launcher stub runs on the same interpreter ("python" need not be on PATH).
    stub_shebang = "#!{python}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "venv_runtime_pair",
    py3_runtime = ":venv_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":venv_runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)

# Remote execution (--config=remote, docs/remote_execution.md): every action asks for
# a worker that provides {venv} and {base_prefix} (the venv's base Python) read-only at
# these paths, on top of the Debian 12 /usr of tools/setup.sh. The property names the
# venv (its digest: the pinned stack) and the base Python's version, and is part of
# every action's key. buildbox-run binds both for actions with this `inject` property;
# other engines route on it (or on a container-image a child platform adds).
platform(
    name = "remote_exec_platform",
    parents = ["@local_config_platform//:host"],
    exec_properties = {{"inject": "servekit-{contract}"}},
)

cc_library(
    name = "python_headers",
    hdrs = glob(["python_include/**/*.h"]),
    includes = ["python_include"],
)

cc_library(
    name = "pybind11",
    hdrs = glob(["pybind11_include/pybind11/**/*.h"]),
    includes = ["pybind11_include"],
    deps = [":python_headers"],
)
""".format(
        python = python,
        venv = python[:-len("/bin/python3")],
        base_prefix = info["base_prefix"],
        contract = "%s-cpython%s" % (python[:-len("/bin/python3")].split("/")[-1], info["version"]),
    ))

python_configure = repository_rule(
    implementation = _python_configure_impl,
    attrs = VENV_ATTRS,
    local = True,
    configure = True,
    doc = "The venv of tools/setup.sh as a Python toolchain and C headers.",
)
