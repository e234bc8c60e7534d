#!/usr/bin/env bash
# Proves exports are byte-reproducible: two clean clones of this repository, in
# two different directories, each build the given targets (default
# //models:export) with no cache shared between them; every output file must
# have the same sha256 in both.
#
#   tools/check_reproducible.sh [--against-workspace] [TARGET...]
#
# --against-workspace: one clean clone instead of two, compared with this
# checkout's own build of the targets (run after it, e.g. after `bazel test
# //...` in CI: the workspace is a fresh clone there, built with the tests'
# warm workers interleaved). Half the cost, the same two-directory proof.
#
# Prints one line per differing file and a verdict; exits 1 on any difference.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGAINST_WORKSPACE=0
if [ "${1:-}" = "--against-workspace" ]; then AGAINST_WORKSPACE=1; shift; fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(//models:export)
# Only the targets' packages are compared: a workspace may have built other exports.
mapfile -t PACKAGES < <(printf '%s\n' "${TARGETS[@]}" | sed -E 's#^//([^:]*).*#./\1#' | sort -u)
WORK=$(mktemp -d /tmp/servekit-repro.XXXXXX)
trap 'for d in "$WORK"/a/clone "$WORK"/b/deeper/clone; do [ -d "$d" ] && (cd "$d" && bazel shutdown >/dev/null 2>&1 || true); done; rm -rf "$WORK"' EXIT

digests() {  # clone_dir -> "sha256  path" of every file of every export built
  local clone=$1
  (cd "$clone" &&
   { [ "$clone" = "$ROOT" ] || ./tools/setup.sh >&2; } &&
   bazel build --noshow_progress "${TARGETS[@]}" >&2 &&
   cd "$(bazel info bazel-bin 2>/dev/null)" &&
   find "${PACKAGES[@]}" -name manifest.json -not -path '*.runfiles/*' -printf '%h\n' | sort |
     while read -r export_dir; do find "$export_dir" -type f; done |
     sort | xargs -r sha256sum)
  # Its persistent workers hold GBs: the second clone must not build beside them.
  (cd "$clone" && bazel shutdown >/dev/null 2>&1 || true)
}

if [ "$AGAINST_WORKSPACE" = 1 ]; then
  first="$ROOT"
  clones=("$WORK/b/deeper/clone")
else
  first="$WORK/a/clone"
  clones=("$WORK/a/clone" "$WORK/b/deeper/clone")
fi
for dir in "${clones[@]}"; do
  mkdir -p "$(dirname "$dir")"
  git clone -q "$ROOT" "$dir"
done
echo "building ${TARGETS[*]} in $first and $WORK/b/deeper/clone" >&2
digests "$first" > "$WORK/a.txt"
digests "$WORK/b/deeper/clone" > "$WORK/b.txt"

if diff <(cat "$WORK/a.txt") <(cat "$WORK/b.txt") > "$WORK/diff.txt"; then
  echo "reproducible: $(wc -l < "$WORK/a.txt") files byte-identical across two clean clones"
else
  cat "$WORK/diff.txt"
  echo "NOT reproducible: the files above differ"
  exit 1
fi
