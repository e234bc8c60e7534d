"""Finds the venv of tools/setup.sh from a repository rule."""

def venv_site_packages(rctx):
    """Returns the real path of the venv's site-packages, or fails with the fix."""
    workspace = rctx.path(Label("//:WORKSPACE")).dirname
    rctx.read(Label("//tools:requirements.txt"))
    venv = "%s/.setup/venv" % workspace
    if not rctx.path(venv + "/bin/python3").exists:
        fail("No venv at %s. Run tools/setup.sh first." % venv)
    result = rctx.execute([venv + "/bin/python3", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    if result.return_code != 0:
        fail("The venv interpreter failed: %s" % result.stderr)
    site = rctx.execute(["readlink", "-f", result.stdout.strip()]).stdout.strip()
    return site

def venv_file(rctx, site, relative):
    """Returns the path of a file the pinned wheels ship, or fails naming it."""
    path = rctx.path("%s/%s" % (site, relative))
    if not path.exists:
        fail("%s is missing from the venv; re-run tools/setup.sh." % relative)
    return path
