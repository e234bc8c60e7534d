"""Exposes the venv made by tools/setup.sh to Bazel.

The repository `@servekit_python` provides:
  :toolchain       the venv interpreter as the Python toolchain (register it);
  :python_headers  Python.h and friends, for extension modules;
  :pybind11        pybind11's headers (from the pinned pip package);
  :stack_lock      `pip freeze` of the venv, a declared input of every export
                   action, so a change of the Python stack re-runs them.
"""

_SETUP_HINT = "Run tools/setup.sh first: it creates the venv Bazel uses."

_PROBE = """
import json, sys, sysconfig
import pybind11
print(json.dumps({
    "include": sysconfig.get_path("include"),
    "pybind11": pybind11.get_include(),
    "site_packages": sysconfig.get_path("purelib"),
    "version": "%d.%d" % sys.version_info[:2],
}))
"""

def _python_configure_impl(rctx):
    workspace = rctx.path(Label("//:WORKSPACE")).dirname

    # Resolving the symlink pins the repository to one venv (keyed by the
    # requirements digest); reading requirements.txt makes Bazel re-run this
    # rule when the pins change.
    rctx.read(Label("//tools:requirements.txt"))
    venv = rctx.path("%s/.setup/venv" % workspace)
    python = rctx.path("%s/bin/python3" % venv)
    if not python.exists:
        fail("No venv at %s. %s" % (venv, _SETUP_HINT))
    result = rctx.execute(["readlink", "-f", str(venv)])
    venv_real = result.stdout.strip()
    python = "%s/bin/python3" % venv_real

    result = rctx.execute([python, "-c", _PROBE])
    if result.return_code != 0:
        fail("The venv interpreter failed: %s\n%s" % (result.stderr, _SETUP_HINT))
    info = json.decode(result.stdout)

    freeze = rctx.execute([python, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"])
    if freeze.return_code != 0:
        fail("pip freeze failed: %s" % freeze.stderr)
    rctx.file("stack_lock.txt", freeze.stdout)

    rctx.symlink(info["include"], "python_include")
    rctx.symlink(info["pybind11"], "pybind11_include")
    rctx.file("defs.bzl", "\n".join([
        '"""Facts about the venv, for other repository rules and macros."""',
        "PYTHON_INTERPRETER = %r" % python,
        "SITE_PACKAGES = %r" % info["site_packages"],
        "PYTHON_VERSION = %r" % info["version"],
        "",
    ]))
    rctx.file("BUILD", """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

exports_files(["stack_lock.txt", "defs.bzl"])

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
""".format(python = python))

python_configure = repository_rule(
    implementation = _python_configure_impl,
    local = True,
    configure = True,
    doc = "The venv of tools/setup.sh as a Python toolchain and C headers.",
)
