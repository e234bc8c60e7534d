"""servekit.worker: the TensorFlow-backend export worker of the portable rebuild.

- `job`: `WorkerJob`, what the source process hands over (JSON in the work directory);
- `launch`: starts `python -m servekit.worker JOB.json` with a fixed environment;
- `run`: in the worker, rebuilds the endpoints from the `.keras` file, writes and
  verifies the artifact at the staging path.
"""
