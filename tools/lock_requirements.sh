#!/usr/bin/env bash
# Re-resolves tools/requirements.txt in a scratch venv and writes every
# transitive pin to tools/constraints.txt. Run after changing requirements.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scratch=$(mktemp -d /tmp/servekit-lock.XXXXXX); trap 'rm -rf "$scratch"' EXIT
python3.11 -m venv "$scratch/venv" 2>/dev/null || python3 -m venv "$scratch/venv"
find_links=(); [ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
"$scratch/venv/bin/pip" install -q "${find_links[@]}" -r "$ROOT/tools/requirements.txt"
{
  echo "# Every transitive package of the venv, pinned (pip freeze of a venv built from"
  echo "# requirements.txt). tools/setup.sh installs requirements.txt under these constraints,"
  echo "# so two machines get the same stack. Regenerate with tools/lock_requirements.sh."
  "$scratch/venv/bin/pip" freeze --all | grep -vE '^(pip|setuptools|wheel)==' | sed 's/+cpu$//'
} > "$ROOT/tools/constraints.txt"
echo "wrote tools/constraints.txt ($(grep -vc '^#' "$ROOT/tools/constraints.txt") pins)"
