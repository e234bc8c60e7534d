#!/usr/bin/env bash
# The Bazel 7 lane: servekit as a bzlmod module, under Debian's Bazel 7.7.1 in the
# sid chroot of `tools/setup.sh --with-bazel7`, offline (no download is allowed).
#
#   tools/bzlmod_lane.sh
#
# 1. The consumer workspace tests/bzlmod_consumer (its own MODULE.bazel,
#    bazel_dep on servekit overridden to this checkout) builds its export of the
#    MLP with servekit_model and passes its native artifact_tests.
# 2. servekit itself, as the root module: `bazel test //tests/cc/...` (the native
#    verifier's tests) in bzlmod mode.
# 3. The consumer's export is byte-identical, file by file, to
#    //models:mlp_tensorflow built by Bazel 4.2.3 in WORKSPACE mode (the lane
#    builds that with the host's Bazel; a no-op when it is up to date).
# Before that it checks that the consumer's mlp.py is models/mlp.py and that the
# README shows the consumer's files as they are (a failure there fails the lane).
#
# Prints `bzlmod lane: N passed, N failed` (test cases from test.xml, plus one
# case for the byte-identity check) and exits non-zero on any failure. Run as root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SERVEKIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/servekit}
CHROOT=${SERVEKIT_BAZEL7_CHROOT:-$CACHE/bazel7/sid}
CONSUMER=tests/bzlmod_consumer
EXPORT=mlp_tensorflow
# Everything the lane prints about itself goes through log (stderr stays Bazel's).
log() { printf '[bzlmod lane] %s\n' "$*"; }

# ---- Inside the chroot (tools/bazel7_chroot.sh runs this part) --------------------
if [ "${1:-}" = --in-chroot ]; then
  state=$2
  bazel7() { bazel --nosystem_rc --bazelrc="$ROOT/tools/bazel7.bazelrc" "$@"; }
  status=0

  cd "$ROOT/$CONSUMER"
  trap 'cd "$ROOT/$CONSUMER" && bazel7 shutdown 2>/dev/null; cd "$ROOT" && bazel7 shutdown 2>/dev/null' EXIT
  log "consumer: bazel $(bazel7 --version 2>/dev/null | cut -d' ' -f2) build //models:$EXPORT, test //models/..."
  start=$SECONDS
  consumer_tests=$(bazel7 query 'tests(//models/...)' 2>/dev/null) || status=1
  bazel7 build --noshow_progress "//models:$EXPORT" || status=1
  bazel7 test --noshow_progress --build_tests_only //models/... || status=1
  bazel7 info bazel-bin 2>/dev/null > "$state/consumer_bin" || status=1
  python3 "$ROOT/tools/test_summary.py" "$(bazel7 info bazel-testlogs 2>/dev/null)" $consumer_tests > "$state/consumer_summary"
  log "consumer: $(cat "$state/consumer_summary") in $((SECONDS - start)) s"
  bazel7 shutdown || true

  cd "$ROOT"
  start=$SECONDS
  log "servekit: bazel test //tests/cc/... as the root module"
  own_tests=$(bazel7 query 'tests(//tests/cc/...)' 2>/dev/null) || status=1
  bazel7 test --noshow_progress //tests/cc/... || status=1
  python3 "$ROOT/tools/test_summary.py" "$(bazel7 info bazel-testlogs 2>/dev/null)" $own_tests > "$state/own_summary"
  log "servekit: $(cat "$state/own_summary") in $((SECONDS - start)) s"
  exit $status
fi

# ---- On the host --------------------------------------------------------------------
[ "$(id -u)" = 0 ] || { log "run as root (the lane enters a chroot)"; exit 1; }
[ -f "$CHROOT/.servekit-complete" ] || { log "no Bazel 7 chroot at $CHROOT: run tools/setup.sh --with-bazel7"; exit 1; }
start=$SECONDS
state=$(mktemp -d "$CACHE/bzlmod-lane.XXXXXX")
trap 'rm -rf "$state"' EXIT
status=0

# The consumer's model is servekit's MLP, byte for byte (same content, same name).
cmp "$ROOT/models/mlp.py" "$ROOT/$CONSUMER/models/mlp.py" ||
  { log "$CONSUMER/models/mlp.py differs from models/mlp.py"; status=1; }

# The README shows the consumer's files as they are (its `bzlmod file:` blocks).
python3 - "$ROOT" "$CONSUMER" <<'PY' || status=1
import pathlib, re, sys
root, consumer = pathlib.Path(sys.argv[1]), sys.argv[2]
blocks = re.findall(r"<!-- bzlmod file: (\S+) -->\s*```\w*\n(.*?)```", (root / "README.md").read_text(), re.S)
stale = [name for name, body in blocks if (root / consumer / name).read_text() != body]
if not blocks or stale:
    sys.exit(f"[bzlmod lane] README.md shows {stale or 'none'} of {consumer} differently from the files")
print(f"[bzlmod lane] README.md shows {', '.join(n for n, _ in blocks)} of {consumer} as they are")
PY

# The reference: the same export from Bazel 4.2.3 in WORKSPACE mode.
log "reference: bazel $(dpkg-query -W -f='${Version}' bazel-bootstrap) build //models:$EXPORT (WORKSPACE mode)"
(cd "$ROOT" && bazel build --noshow_progress "//models:$EXPORT") || status=1
reference=$(cd "$ROOT" && bazel info bazel-bin 2>/dev/null || true)/models/$EXPORT

# The registry, so that it matches the MODULE.bazel files of this checkout.
"$ROOT/tools/bazel7_chroot.sh" -- python3 "$ROOT/tools/bazel7_registry.py" /opt/servekit-registry \
  "$ROOT/MODULE.bazel" "$ROOT/$CONSUMER/MODULE.bazel" >/dev/null || status=1
"$ROOT/tools/bazel7_chroot.sh" --bind "$state" -- "$ROOT/tools/bzlmod_lane.sh" --in-chroot "$state" || status=1

# Every file of the two exports, byte for byte.
identical=0
if [ -s "$state/consumer_bin" ]; then
  consumer_export="$CHROOT$(cat "$state/consumer_bin")/models/$EXPORT"
  if [ -f "$reference/manifest.json" ] && [ -f "$consumer_export/manifest.json" ] &&
     diff <(cd "$reference" && find . -type f | sort | xargs sha256sum) \
          <(cd "$consumer_export" && find . -type f | sort | xargs sha256sum) > "$state/diff"; then
    identical=1
    log "byte-identical: $(cd "$reference" && find . -type f | wc -l) files of $EXPORT (Bazel 4.2.3 WORKSPACE vs Bazel 7.7.1 bzlmod consumer)"
  else
    cat "$state/diff" 2>/dev/null || true
    log "NOT byte-identical: $reference vs $consumer_export"
  fi
fi

passed=0; failed=0
for summary in "$state/consumer_summary" "$state/own_summary"; do
  if [ -s "$summary" ]; then
    read -r p _ f _ < "$summary"; passed=$((passed + p)); failed=$((failed + f))
  else
    failed=$((failed + 1))
  fi
done
if [ "$identical" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
[ "$failed" = 0 ] || status=1
[ "$status" = 0 ] || [ "$failed" != 0 ] || failed=1  # a failed check above, or a build failure
log "done in $((SECONDS - start)) s"
echo "bzlmod lane: $passed passed, $failed failed"
exit $status
