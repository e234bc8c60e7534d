"""Atomic artifact writes.

An artifact is written to a hidden sibling of its final path
(`.<name>.servekit-<random>`), verified there, and only then moved into
place: a directory with an atomic exchange (`renameat2(RENAME_EXCHANGE)` on
Linux; elsewhere a rename to a backup, a rename into place and removal of the
backup), a file with `os.replace`. If anything fails, the sibling is removed
and whatever was at the final path before is left untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import tempfile
from typing import Iterator

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            os.remove(path)
        except OSError:
            pass


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two paths (Linux renameat2). False if unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def staging_path(filepath: str) -> str:
    """A fresh, unused hidden sibling path of `filepath` (not created)."""
    filepath = os.path.abspath(os.fspath(filepath))
    parent = os.path.dirname(filepath)
    os.makedirs(parent, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f".{os.path.basename(filepath)}.servekit-", dir=parent)
    os.close(fd)
    os.remove(path)
    return path


def commit(staged: str, filepath: str) -> None:
    """Moves a staged artifact to `filepath`, replacing what was there."""
    filepath = os.path.abspath(os.fspath(filepath))
    if not os.path.lexists(filepath):
        os.rename(staged, filepath)
        return
    if os.path.isdir(staged) or os.path.isdir(filepath):
        if _exchange(staged, filepath):
            _remove(staged)  # now holds the previous artifact
            return
        backup = staging_path(filepath)
        os.rename(filepath, backup)
        try:
            os.rename(staged, filepath)
        except BaseException:
            os.rename(backup, filepath)
            raise
        _remove(backup)
    else:
        os.replace(staged, filepath)


@contextlib.contextmanager
def staged_write(filepath: str) -> Iterator[str]:
    """Yields a staging path; on error removes it, leaving `filepath` intact.

    The caller writes the artifact at the yielded path and calls `commit`
    (or lets `staged_write` do nothing more on error).
    """
    staged = staging_path(filepath)
    try:
        yield staged
    finally:
        discard(staged)


def discard(staged: str) -> None:
    """Removes a staged artifact that will not be committed (if it exists)."""
    if os.path.lexists(staged):
        _remove(staged)


def artifact_files(path: str) -> dict[str, int]:
    """Relative file name -> size in bytes, sorted (a file: its own name)."""
    if os.path.isfile(path):
        return {os.path.basename(path): os.path.getsize(path)}
    out = {}
    for dirpath, _, names in os.walk(path):
        for n in names:
            full = os.path.join(dirpath, n)
            out[os.path.relpath(full, path)] = os.path.getsize(full)
    return dict(sorted(out.items()))
