"""Finds the project's venv (or a consumer's) from a repository rule.

Shared by the repository rules of python_configure.bzl, tensorflow_c.bzl and
onnxruntime.bzl, which WORKSPACE calls directly and extensions.bzl calls for
bzlmod. Each takes a `venv` attribute: empty means servekit's own venv, the
`.setup/venv` link tools/setup.sh makes in the servekit checkout.
"""

VENV_ATTRS = {
    "venv": attr.string(
        doc = "Absolute path of the virtualenv to use; empty: servekit's own " +
              "(<servekit checkout>/.setup/venv, made by tools/setup.sh).",
    ),
}

def servekit_root(rctx):
    """Returns the directory of the servekit checkout (main or external repository)."""
    return rctx.path(Label("//:MODULE.bazel")).dirname

def venv_python(rctx):
    """Returns the venv interpreter's real path, or fails with the fix.

    Resolving .setup/venv pins the repository to one venv (keyed by the digest of
    the pins); reading the pin files makes Bazel re-run the rule when they change.
    """
    rctx.read(Label("//tools:requirements.txt"))
    rctx.read(Label("//tools:constraints.txt"))
    venv = rctx.attr.venv or "%s/.setup/venv" % servekit_root(rctx)
    if not rctx.path(venv + "/bin/python3").exists:
        if rctx.attr.venv:
            fail("No venv at %s (the `venv` attribute of @%s)." % (venv, rctx.name))
        fail("No venv at %s. Run tools/setup.sh first: it creates the venv Bazel uses." % venv)
    return "%s/bin/python3" % rctx.execute(["readlink", "-f", venv]).stdout.strip()

def venv_site_packages(rctx):
    """Returns the real path of the venv's site-packages."""
    result = rctx.execute([venv_python(rctx), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    if result.return_code != 0:
        fail("The venv interpreter failed: %s" % result.stderr)
    return result.stdout.strip()

def venv_file(rctx, site, relative):
    """Returns the path of a file the pinned wheels ship, or fails naming it."""
    path = rctx.path("%s/%s" % (site, relative))
    if not path.exists:
        fail("%s is missing from the venv; re-run tools/setup.sh." % relative)
    return path
