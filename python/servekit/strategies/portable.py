"""The portable rebuild: `.keras` archive -> fresh TensorFlow worker -> artifact.

The source process saves the model (or an archive's endpoints as one
Functional bundle) to a private temporary directory and runs
`servekit._export_worker` there under the TensorFlow backend with a fixed
environment (`servekit.portable.worker_env`). The worker writes and verifies
the artifact at the staging path against the cases the source backend
computed; the pipeline commits it.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from servekit import portable
from servekit.errors import ExportError
from servekit.pipeline.request import ExportRequest


class PortableRebuild:
    """Rebuilds the model under TensorFlow in a fresh worker process."""

    name = "portable_rebuild"

    def unavailable(self, request: ExportRequest) -> Optional[str | ExportError]:
        if request.kind == "archive":
            return request.source._portable_unavailable(request)
        try:
            portable.preflight(request.source, request.name)
        except ExportError as e:
            return e
        return None

    def write(self, request: ExportRequest, staged: str, workdir: str) -> dict[str, Any]:
        if request.kind == "archive":
            return request.source._write_portable(staged, workdir, request)
        model = request.source
        classes = portable.preflight(model, request.name)
        keras_file = os.path.join(workdir, "model.keras")
        portable.save_keras(model, keras_file, request.name)
        endpoint = request.endpoints[0]
        cases_file, cases_index = request.cases.write(os.path.join(workdir, "cases.npz"))
        job = {
            "kind": "model", "keras_file": keras_file, "format": request.format, "output": staged,
            "opset": request.opset, "model_name": request.name, "version": request.version,
            "endpoints": [{"name": endpoint.name, "layout": endpoint.layout.to_json(),
                           "output_names": endpoint.output_names}],
            "lambda_globals": portable.lambda_globals(model)[0],
            "custom_classes": [dict(module=c.module, qualname=c.qualname, names=c.names) for c in classes],
            "sys_path": portable.importable_sys_path() if classes else [],
            "layer_names": request.layer_names, "verify": request.verify,
            "cases_file": cases_file, "cases": cases_index,
        }
        return portable.run_worker(job, workdir)
