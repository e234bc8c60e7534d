#!/usr/bin/env bash
# Coverage-guided fuzzing of servekit's parsers with libFuzzer and AddressSanitizer.
#
#   cc/fuzz/run_fuzzers.sh [--runs N | --seconds S] [--workdir DIR] [TARGET...]
#
# Builds each target (saved_model_proto, onnx_model, npy, manifest; default: all) with
# Debian's clang++ -fsanitize=fuzzer,address (plus UBSan), seeds it with the test
# fixture export (bazel build //tests/cc:fixture) and the checked-in regression
# inputs, then fuzzes it for N executions (--runs, default 100000) or S seconds
# (--seconds: the fixed budget CI gives every target). Prints one line per target:
# executions, corpus size, and whether it crashed. Crash inputs are left in
# DIR/<target>/ (default DIR: /tmp/servekit-fuzz). Exit status 1 when any target
# crashed, 2 when a target could not be built.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
budget=(-runs=100000)
work=/tmp/servekit-fuzz
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) budget=(-runs="$2"); shift 2 ;;
    --seconds) budget=(-max_total_time="$2"); shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "run_fuzzers.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(saved_model_proto onnx_model npy manifest)

clang="${CXX_FUZZ:-clang++}"
command -v "$clang" >/dev/null || { echo "run_fuzzers.sh: $clang not found (apt-get install clang)" >&2; exit 2; }
python="$root/.setup/venv/bin/python3"
site="$("$python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
ort_include="$root/.setup/onnxruntime/include"
ort_lib="$site/onnxruntime/capi"

(cd "$root" && bazel build //tests/cc:fixture //tests/cc:aoti_fixture >/dev/null 2>&1) ||
  { echo "run_fuzzers.sh: bazel build //tests/cc:fixture //tests/cc:aoti_fixture failed" >&2; exit 2; }
fixture="$root/bazel-bin/tests/cc/fixture"
aoti_fixture="$root/bazel-bin/tests/cc/aoti_fixture"

flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -I"$root")
common=(cc/status.cc cc/dtype.cc cc/tensor.cc cc/signature.cc cc/file_util.cc cc/protowire.cc)

sources_of() {
  case "$1" in
    saved_model_proto) echo "${common[*]} cc/saved_model_proto.cc" ;;
    onnx_model) echo "${common[*]} cc/model.cc cc/onnx_model.cc" ;;
    npy) echo "${common[*]} cc/npy.cc" ;;
    manifest) echo "${common[*]} cc/model.cc cc/manifest.cc" ;;
    *) echo "run_fuzzers.sh: unknown target $1" >&2; return 1 ;;
  esac
}

seeds_of() {
  case "$1" in
    saved_model_proto) echo "$fixture/saved_model/saved_model.pb" ;;
    onnx_model) echo "$fixture/model.onnx $fixture/extra.onnx $root/cc/fuzz/regressions/onnx_model/"* ;;
    npy) ls "$fixture"/reference/*.npy ;;
    manifest) echo "$fixture/manifest.json $fixture/formats/manifest.json $fixture/random/manifest.json" \
                   "$aoti_fixture/manifest.json" ;;
  esac
}

# One target: its fuzzer built (when a source is newer than it) and run for the budget.
# Prints its summary line; returns 1 on a crash, 2 if it does not build.
run_target() {
  local target=$1 dir="$work/$1" srcs seed file code executions seconds corpus leaks log
  mkdir -p "$dir/corpus"
  srcs="$(sources_of "$target")" || return 2
  seed=0  # numbered: seeds may share a name (every export's manifest.json)
  for file in $(seeds_of "$target"); do
    if [[ -f "$file" ]]; then cp "$file" "$dir/corpus/seed$((seed++))-$(basename "$file")"; fi
  done
  local extra=()
  [[ "$target" == onnx_model ]] && extra=(-I"$ort_include" -L"$ort_lib" -l:libonnxruntime.so.1 -Wl,-rpath,"$ort_lib")
  if [[ ! -x "$dir/fuzzer" ]] || [[ -n "$(cd "$root" && find cc -newer "$dir/fuzzer" -name '*.cc' -o -newer "$dir/fuzzer" -name '*.h' | head -1)" ]]; then
    (cd "$root" && "$clang" "${flags[@]}" cc/fuzz/"$target"_fuzzer.cc $srcs "${extra[@]}" -o "$dir/fuzzer") ||
      { echo "$target: BUILD FAILED"; return 2; }
  fi
  # ONNX Runtime is not instrumented and keeps process-wide state: no leak checks there.
  leaks=1
  [[ "$target" == onnx_model ]] && leaks=0
  log="$dir/fuzz.log"
  set +e
  (cd "$dir" && ASAN_OPTIONS="detect_leaks=$leaks" ./fuzzer "${budget[@]}" -max_len=65536 -timeout=10 \
      -rss_limit_mb=4096 -print_final_stats=1 corpus >"$log" 2>&1)
  code=$?
  set -e
  executions="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  seconds="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo '?')"
  corpus="$(ls "$dir/corpus" | wc -l)"
  if [[ $code -eq 0 ]]; then
    echo "$target: $executions executions in ${seconds}s, corpus $corpus inputs, no crash"
  else
    echo "$target: CRASH after $executions executions (exit $code); see $log and $dir/crash-*"
    return 1
  fi
}

# A fuzzer (and its clang build) uses one core: the targets run one per core at a time,
# each for the whole budget, and report in the order given.
slots="${FUZZ_JOBS:-$(nproc)}"
for target in "${targets[@]}"; do
  while (( $(jobs -rp | wc -l) >= slots )); do wait -n || true; done
  mkdir -p "$work/$target"
  { code=0; run_target "$target" || code=$?; echo "$code" > "$work/$target/exit_code"; } > "$work/$target/summary" 2>&1 &
done
wait
status=0
for target in "${targets[@]}"; do
  cat "$work/$target/summary"
  code="$(cat "$work/$target/exit_code" 2>/dev/null || echo 2)"
  if (( code == 2 )); then exit 2; fi
  (( code == 0 )) || status=1
done
exit $status
