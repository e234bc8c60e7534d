"""Writes the AOTInductor fixture the native verifier's torch_aoti tests run against.

    make_aoti_fixture.py --out DIR

DIR receives an export of the fixture's serving_default (make_fixtures.py: the same
weights, so the same references) as a PyTorch AOTInductor package, with its own
manifest.json and reference/ (.npy computed with NumPy):

    model_aoti.pt2   torch.export of forward(features) -> {"logits": ...} with a
                     dynamic batch, compiled by torch._inductor.aoti_compile_and_package

Separate from make_fixtures.py because AOTInductor compiles C++ (~20 s): only the
torch_aoti tests wait for it.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402  (the weights, inputs and references)


def write_aoti(path: str, workdir: str) -> None:
    import torch
    from torch._inductor import config

    class Serve(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.from_numpy(make_fixtures.WEIGHTS.copy()), requires_grad=False)
            self.b = torch.nn.Parameter(torch.from_numpy(make_fixtures.BIAS.copy()), requires_grad=False)

        def forward(self, features):
            return {"logits": features @ self.w + self.b}

    sample = (torch.from_numpy(make_fixtures.features(4)),)
    program = torch.export.export(Serve(), sample, dynamic_shapes={"features": {0: torch.export.Dim.DYNAMIC}})
    # A build action runs without PATH: the C++ compiler runs with the system's directories.
    os.environ["PATH"] = os.environ.get("PATH") or "/usr/bin:/bin"
    compiler = shutil.which("g++")
    with config.patch({"cpp.cxx": (None, compiler)}):
        torch._inductor.aoti_compile_and_package(program, package_path=path)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    os.makedirs(os.path.join(out, "reference"), exist_ok=True)
    # Inductor's caches stay inside the output tree's sibling, not in $HOME.
    workdir = os.path.abspath(out + ".work")
    os.makedirs(workdir, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(workdir, "inductor"))
    write_aoti(os.path.join(out, "model_aoti.pt2"), workdir)
    shutil.rmtree(workdir, ignore_errors=True)

    reference = []
    for batch in (1, 4):
        x = make_fixtures.features(batch)
        entry = {"endpoint": "serving_default", "batch": batch, "inputs": {}, "outputs": {}}
        for kind, name, value in (("in", "features", x), ("out", "logits", make_fixtures.logits(x))):
            rel = f"reference/serving_default.b{batch}.{kind}.{name}.npy"
            np.save(os.path.join(out, rel), value, allow_pickle=False)
            entry["inputs" if kind == "in" else "outputs"][name] = rel
        reference.append(entry)
    manifest = {
        "servekit_manifest": 1,
        "model": "tiny_fixture_aoti",
        "source_backend": "torch",
        "tools": {"numpy": np.__version__},
        "artifacts": [
            {"format": "torch_aoti", "path": "model_aoti.pt2", "converter": "torch._inductor.aoti_compile_and_package",
             "files": {"model_aoti.pt2": sha256(os.path.join(out, "model_aoti.pt2"))}},
        ],
        "endpoints": [
            {"name": "serving_default", "method_name": "tensorflow/serving/predict", "formats": ["torch_aoti"],
             "inputs": [{"name": "features", "dtype": "float32", "shape": ["batch", 3]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]},
        ],
        "tolerances": {"float32": {"atol": 1e-5, "rtol": 0.0}},
        "reference": reference,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
