"""Finds the venv of tools/setup.sh from a repository rule."""

def venv_python(rctx):
    """Returns the venv interpreter's real path, or fails with the fix.

    Resolving .setup/venv pins the repository to one venv (keyed by the digest of
    the pins); reading the pin files makes Bazel re-run the rule when they change.
    """
    rctx.read(Label("//tools:requirements.txt"))
    rctx.read(Label("//tools:constraints.txt"))
    workspace = rctx.path(Label("//:WORKSPACE")).dirname
    venv = "%s/.setup/venv" % workspace
    if not rctx.path(venv + "/bin/python3").exists:
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
