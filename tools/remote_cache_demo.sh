#!/usr/bin/env bash
# Shows that a fresh clone's `bazel build //models:export` is served entirely
# from a shared cache, first a --disk_cache, then an HTTP remote cache: nginx
# with WebDAV PUT on 127.0.0.1, from Debian's packages.
#
#   tools/remote_cache_demo.sh [TARGET...]      (default //models:export)
#
# 1. clone A builds the targets, filling the disk cache and the HTTP cache;
# 2. clone B (a different directory) builds with --disk_cache  -> hit count;
# 3. clone C builds with --remote_cache=http://127.0.0.1:PORT  -> hit count.
# Each clone has its own output base, so every hit is a cache hit. Exits 1 unless
# every export action of B and C was a cache hit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(//models:export)
PORT=${SERVEKIT_CACHE_PORT:-18080}
WORK=$(mktemp -d /tmp/servekit-cache.XXXXXX)
NGINX_PID=""

cleanup() {
  for clone in "$WORK"/clone-*; do [ -d "$clone" ] && (cd "$clone" && bazel shutdown >/dev/null 2>&1 || true); done
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/tools/setup.sh" --with-remote-cache >&2

mkdir -p "$WORK/cas" "$WORK/nginx/body"
# nginx's workers drop root for an unprivileged user, which must write the cache.
chmod 0755 "$WORK"
chmod 0777 "$WORK/cas" "$WORK/nginx/body"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  client_max_body_size 1g;
  server {
    listen 127.0.0.1:$PORT;
    location / {
      root $WORK/cas;
      dav_methods PUT;
      create_full_put_path on;
    }
  }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" & NGINX_PID=$!
sleep 1
curl -fsS -X PUT --data probe "http://127.0.0.1:$PORT/probe" >/dev/null || { echo "nginx WebDAV cache did not start" >&2; exit 1; }

build() {  # name, extra bazel flags... -> prints the "processes" line; sets HITS and TOTAL
  local name=$1; shift
  local clone="$WORK/clone-$name"
  git clone -q "$ROOT" "$clone"
  (cd "$clone" && ./tools/setup.sh >/dev/null &&
   bazel build --noshow_progress "$@" "${TARGETS[@]}" 2>&1) | tee "$WORK/$name.log" | grep -E "^ERROR" >&2 || true
  local line; line=$(grep -E "^INFO: [0-9]+ processes" "$WORK/$name.log" | tail -n1)
  # Bazel 4 counts disk cache hits as "remote cache hit" too.
  HITS=$(sed -nE 's/.* ([0-9]+) (disk cache hit|remote cache hit).*/\1/p' <<<"$line")
  # Actions that ran here rather than coming from a cache ("internal" ones are
  # Bazel's own bookkeeping, such as symlink trees).
  EXPORTS_RUN=$({ grep -oE "[0-9]+ (linux-sandbox|processwrapper-sandbox|local|sandboxed|worker)" <<<"$line" || true; } |
                awk '{s += $1} END {print s + 0}')
  echo "$name: $line"
}

build seed --disk_cache="$WORK/disk" --remote_cache="http://127.0.0.1:$PORT"
build disk --disk_cache="$WORK/disk"
disk_hits=${HITS:-0}; disk_misses=$EXPORTS_RUN
build http --remote_cache="http://127.0.0.1:$PORT"
http_hits=${HITS:-0}; http_misses=$EXPORTS_RUN

echo "disk cache:  $disk_hits cache hits, $disk_misses actions executed"
echo "http cache:  $http_hits cache hits, $http_misses actions executed"
[ "$disk_misses" = 0 ] && [ "$http_misses" = 0 ] && [ "${disk_hits}" -gt 0 ] && [ "${http_hits}" -gt 0 ] \
  && echo "100% cache hits: fresh clones rebuilt nothing" || { echo "cache misses: see above"; exit 1; }
