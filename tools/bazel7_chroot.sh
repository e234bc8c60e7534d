#!/usr/bin/env bash
# Runs a command inside the Debian sid chroot of the Bazel 7 lane (made by
# `tools/setup.sh --with-bazel7`), with /proc, /dev, /sys and the host paths the
# lane needs bind-mounted at the same paths:
#
#   tools/bazel7_chroot.sh [--bind HOST_PATH]... -- COMMAND [ARG...]
#
# Always bound: this checkout, and the venv and ONNX Runtime headers it links
# under .setup/ (their real paths in the setup cache), plus the Python prefix the
# venv was built on (`home` in its pyvenv.cfg). Run as root.
#
# The mounts live in a private mount namespace (unshare --mount, private
# propagation): they are invisible to the host, unmounted by the EXIT trap, and
# vanish with the namespace even if the process is killed. Nothing is left behind.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SERVEKIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/servekit}
CHROOT=${SERVEKIT_BAZEL7_CHROOT:-$CACHE/bazel7/sid}

if [ "${1:-}" != --in-namespace ]; then
  [ "$(id -u)" = 0 ] || { echo "bazel7_chroot: run as root (chroot, mount)" >&2; exit 1; }
  [ -x "$CHROOT/usr/bin/env" ] || { echo "bazel7_chroot: no chroot at $CHROOT; run tools/setup.sh --with-bazel7" >&2; exit 1; }
  exec unshare --mount --propagation private -- "$0" --in-namespace "$@"
fi
shift

binds=("$ROOT")
while [ $# -gt 0 ]; do
  case "$1" in
    --bind) binds+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "usage: tools/bazel7_chroot.sh [--bind PATH]... -- COMMAND [ARG...]" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "bazel7_chroot: no command" >&2; exit 2; }

# The venv and the headers .setup/ points at, and the Python the venv runs on.
for link in venv onnxruntime; do
  [ -e "$ROOT/.setup/$link" ] && binds+=("$(readlink -f "$ROOT/.setup/$link")")
done
if [ -f "$ROOT/.setup/venv/pyvenv.cfg" ]; then
  home=$(sed -n 's/^home = //p' "$ROOT/.setup/venv/pyvenv.cfg")
  # `home` is the bin/ directory of the base Python; bind its prefix.
  [ -n "$home" ] && binds+=("$(dirname "$(readlink -f "$home")")")
fi

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -R "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT

mount_at() {  # mount_at TARGET MOUNT-ARGS...
  local target=$1; shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}

mount_at "$CHROOT/proc" -t proc proc
mount_at "$CHROOT/sys" --rbind /sys
mount_at "$CHROOT/dev" --rbind /dev
for path in "${binds[@]}"; do
  case "$path" in "$CHROOT"|"$CHROOT"/*) continue ;; esac  # never the chroot itself
  [ -e "$path" ] || continue
  if [ -d "$path" ]; then
    mount_at "$CHROOT$path" --bind "$path"
  else
    mkdir -p "$(dirname "$CHROOT$path")"; touch "$CHROOT$path"
    mount --bind "$path" "$CHROOT$path"; mounted+=("$CHROOT$path")
  fi
done
cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true

# A clean environment: nothing of the host's shell leaks into the lane. The
# command starts in the caller's directory when the chroot has it (bound paths).
chroot "$CHROOT" /usr/bin/env -i \
  HOME=/root \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 \
  TERM="${TERM:-dumb}" \
  DEBIAN_FRONTEND=noninteractive \
  /bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$PWD" "$@"
