"""What an export action prints: nothing on success, the full error on failure.

`servekit.build.build_tool` runs here as a `model_export` action runs it: in a
fresh process with only the action's environment (rules/export.bzl's
`_EXPORT_ENV`: no $HOME, no PATH). A fresh machine's sandbox has no writable and
no filled fontconfig cache; the tests make that situation on any machine with a
fontconfig configuration of their own whose only cache directory cannot be
written, and check first that `fc-list` does complain under it.
"""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

RUNFILES = pathlib.Path(os.environ.get("TEST_SRCDIR", ".")) / os.environ.get("TEST_WORKSPACE", "servekit")
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
# rules/export.bzl's EXPORT_ENV, handed over by the test's BUILD target.
ACTION_ENV = json.loads(os.environ["SERVEKIT_EXPORT_ENV"])
FONTCONFIG_ERROR = "Fontconfig error"


@pytest.fixture(scope="module")
def unwritable_fontconfig(tmp_path_factory) -> pathlib.Path:
    """A fontconfig configuration like a fresh sandbox's: fonts, no cache, no writable cache dir."""
    matplotlib = importlib.util.find_spec("matplotlib")
    assert matplotlib is not None and matplotlib.submodule_search_locations, "matplotlib is not installed"
    fonts = pathlib.Path(list(matplotlib.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf"
    config = tmp_path_factory.mktemp("fontconfig") / "fonts.conf"
    config.write_text(textwrap.dedent(f"""\
        <?xml version="1.0"?>
        <!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
        <fontconfig>
          <dir>{fonts}</dir>
          <cachedir>/nonexistent/fontconfig</cachedir>
        </fontconfig>
        """))
    fc_list = shutil.which("fc-list", path=os.defpath)
    if fc_list is None:
        pytest.skip("no fc-list on this machine: matplotlib cannot run it, so fontconfig cannot print anything")
    premise = subprocess.run([fc_list], env={**ACTION_ENV, "FONTCONFIG_FILE": str(config)}, capture_output=True,
                             text=True, timeout=60)
    assert FONTCONFIG_ERROR in premise.stderr, f"fc-list did not complain under {config}: {premise.stderr!r}"
    return config


def run_build_tool(model_file: pathlib.Path, out_dir: pathlib.Path, formats: str,
                   fontconfig: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**ACTION_ENV, "KERAS_BACKEND": BACKEND, "FONTCONFIG_FILE": str(fontconfig),
           # The action's interpreter finds servekit through its runfiles; this process' path is the same.
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
    return subprocess.run(
        [sys.executable, "-m", "servekit.build.build_tool", "--model_file", str(model_file), "--name", "quiet",
         "--backend", BACKEND, "--formats", formats, "--out_dir", str(out_dir)],
        env=env, cwd=out_dir.parent, capture_output=True, text=True, timeout=900)


def test_a_successful_export_prints_nothing(tmp_path, unwritable_fontconfig):
    model_file = tmp_path / "tiny.py"
    model_file.write_text(textwrap.dedent("""\
        import keras


        def build_model():
            keras.utils.set_random_seed(0)
            inputs = keras.Input(shape=(3,), name="features")
            return keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs), name="tiny")
        """))
    result = run_build_tool(model_file, tmp_path / "out", "tf_saved_model,onnx", unwritable_fontconfig)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").is_file()
    # Not one line: no "Fontconfig error", no absl/oneDNN banner, no dependency warning.
    assert result.stderr == "", f"the export action printed on success:\n{result.stderr}"
    assert result.stdout == ""


def test_a_failing_export_shows_its_full_error(tmp_path, unwritable_fontconfig):
    # A stateful model to ONNX: servekit refuses it, naming the layer.
    model_file = RUNFILES / "models" / "call_counter.py"
    result = run_build_tool(model_file, tmp_path / "out", "onnx", unwritable_fontconfig)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "servekit.errors.ExportError: Model 'call_counter': layer 'counted' updates its variables" in result.stderr
    assert FONTCONFIG_ERROR not in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_broken_model_file_shows_its_own_error(tmp_path, unwritable_fontconfig):
    model_file = tmp_path / "broken.py"
    model_file.write_text("def build_model():\n    raise ValueError('deliberately broken: no weights for layer dense_7')\n")
    result = run_build_tool(model_file, tmp_path / "out", "onnx", unwritable_fontconfig)
    assert result.returncode != 0
    assert f'File "{model_file}", line 2, in build_model' in result.stderr
    assert "ValueError: deliberately broken: no weights for layer dense_7" in result.stderr
