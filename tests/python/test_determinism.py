"""Determinism: the same models exported in two processes, from two working
directories, give byte-identical artifacts (SavedModel: saved_model.pb,
variables/*, fingerprint.pb; ONNX), and none of them carries a path, user or
host name of this machine (verbose=True in both exports).

Run once per backend (KERAS_BACKEND=tensorflow|jax|torch).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import artifact_checks as checks
import determinism_child

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    cwd_a, cwd_b = root / "cwd_a" / "deeper", root / "elsewhere_b"
    out_a, out_b = root / "out_a", root / "out_b"
    for d in (cwd_a, cwd_b, out_a, out_b):
        d.mkdir(parents=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in sys.path if p and os.path.isdir(p)])
    env.pop("PYTHONHASHSEED", None)  # the child gets a different hash seed
    child = subprocess.Popen([sys.executable, os.path.join(HERE, "determinism_child.py"), str(out_b)],
                             cwd=str(cwd_b), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    old = os.getcwd()
    os.chdir(cwd_a)
    try:
        paths_a = determinism_child.export_all(str(out_a))
    finally:
        os.chdir(old)
    stdout, stderr = child.communicate(timeout=1200)
    assert child.returncode == 0, f"child export failed:\n{stderr[-3000:]}"
    return [(p, os.path.join(str(out_b), os.path.relpath(p, str(out_a)))) for p in paths_a], stdout


def test_byte_identical_across_processes_and_directories(two_exports):
    pairs, _ = two_exports
    assert len(pairs) == 5
    for a, b in pairs:
        tree_a, tree_b = checks.read_tree(a), checks.read_tree(b)
        assert sorted(tree_a) == sorted(tree_b), a
        if os.path.isdir(a):
            assert {"saved_model.pb", "fingerprint.pb", "variables/variables.index"} <= set(tree_a)
        differing = [name for name in tree_a if tree_a[name] != tree_b[name]]
        assert differing == [], f"{os.path.basename(a)}: {differing} differ"


def test_fingerprint_is_valid_and_content_derived(two_exports):
    import tensorflow as tf

    pairs, _ = two_exports
    for a, _ in pairs:
        if os.path.isdir(a):
            fp = tf.saved_model.experimental.read_fingerprint(a)
            assert fp.saved_model_checksum and fp.checkpoint_hash
            assert fp.singleprint()


def test_no_leaks_with_verbose(two_exports):
    pairs, stdout = two_exports
    assert "servekit: exported" in stdout  # the child did print its summaries
    for a, b in pairs:
        assert checks.find_leaks(a) == [], a
        assert checks.find_leaks(b) == [], b


@pytest.mark.parametrize("name", ["text_classifier", "gru"])
def test_onnx_alone_is_the_onnx_of_both_formats(tmp_path, name):
    """An ONNX-only export converts the traced module in memory; exported with
    the SavedModel, the ONNX model is converted after that SavedModel is
    written and verified. A model with a lookup table and one with a loop
    (the two that freeze differently) must give the same ONNX bytes either way."""
    import matrix_models as mm
    import servekit
    from servekit.exporter import export_formats

    model = mm.build(name)
    alone = str(tmp_path / "alone.onnx")
    # The rebuild's property: by default a small JAX or torch model's ONNX is converted in process.
    servekit.export(model, alone, format="onnx", verbose=False, strategy="rebuild_first")
    both = {"tf_saved_model": str(tmp_path / "saved_model"), "onnx": str(tmp_path / "both.onnx")}
    exported = export_formats(model, both, verbose=False, strategy="rebuild_first")
    assert exported["onnx"].strategy == "portable_rebuild"
    with open(alone, "rb") as a, open(both["onnx"], "rb") as b:
        assert a.read() == b.read()
