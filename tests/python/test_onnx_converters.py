"""servekit.bench.onnx_converters: ONNX from JAX by the rebuild, in process and by default.

One real run on the smallest cell (mlp, JAX, one repeat): every road verifies, the
default picks Keras's converter, both artifacts get a latency, and the table goes into a
README between its markers. Speed is measured by `bazel run
//python/servekit/bench:onnx_converters`, never asserted here.
"""

import json
import os
import pathlib

from servekit.bench import onnx_converters

RUNFILES = pathlib.Path(os.environ.get("TEST_SRCDIR", ".")) / os.environ.get("TEST_WORKSPACE", "servekit")


def test_one_cell_by_every_road_into_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{onnx_converters.README_BEGIN}\nold\n{onnx_converters.README_END}\nafter\n")
    assert onnx_converters.main(["--models", "mlp", "--backends", "jax", "--repeats", "1",
                                 "--models_dir", str(RUNFILES / "models"), "--out_dir", str(tmp_path / "out"),
                                 "--readme", str(readme)]) == 0
    report = json.loads((tmp_path / "out" / "onnx_converters.json").read_text())
    [cell] = report["cells"]
    assert (cell["model"], cell["backend"]) == ("mlp", "jax")
    for road in onnx_converters.ROADS:
        assert cell[road]["status"] == "ok" and len(cell[road]["seconds"]) == 1, cell[road]
        assert cell[road]["median_s"] == cell[road]["seconds"][0] > 0
    assert (cell["auto"]["strategy"], cell["auto"]["converter"]) == ("in_process", "jax2onnx")
    assert cell["portable_rebuild"]["converter"] == "tf2onnx"
    for road in ("portable_rebuild", "in_process"):
        assert cell[road]["latency_ms"] > 0
    assert cell["latency_ratio"] == cell["in_process"]["latency_ms"] / cell["portable_rebuild"]["latency_ms"]
    assert report["summary"]["verified"] == {road: 1 for road in onnx_converters.ROADS}
    assert (tmp_path / "out" / "onnx_converters.png").stat().st_size > 0
    text = readme.read_text()
    assert text.startswith(f"before\n{onnx_converters.README_BEGIN}\n") and text.endswith(
        f"{onnx_converters.README_END}\nafter\n")
    assert "| mlp | jax |" in text and "in_process, jax2onnx" in text and "old" not in text
