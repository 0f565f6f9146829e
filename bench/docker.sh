#!/usr/bin/env bash
# Docker endpoints against `docker cp`, in one run, through a private dockerd (own data root,
# socket and busybox image imported offline; no network), on the small tree of run.sh
# (10,000 files + 3 × 50 MB):
#   1. initial sync into a running container (mutagen sync create + flush to
#      docker://bench/~/dst; docker cp of the same tree)
#   2. latency, watched, no flush: a local edit until the container's copy has it (read through
#      the container's merged overlay directory on the host), p50/p95/max over EDITS edits
#   3. one byte flipped in a 50 MB file: time and bytes staged (docker cp copies it whole)
# The roots are on BENCH_DIR (tmpfs); the data directory and the engine's data root are on the
# home disk, as users have them. Needs root. Installs docker.io, busybox-static and python3 if
# missing; builds mutagen and the static agent in release mode.
#
#   bench/docker.sh        env: BENCH_DIR, BENCH_DATA, REPS=3, EDITS=50, FILES=10000, BIGMB=50
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
B="${BENCH_DIR:-/dev/shm/mutagen-docker-bench}"
DATA="${BENCH_DATA:-$HOME/.cache/mutagen-bench-data}"
ENGINE="$HOME/.cache/mutagen-bench-dockerd"
REPS="${REPS:-3}"; EDITS="${EDITS:-50}"; FILES="${FILES:-10000}"; BIGMB="${BIGMB:-50}"
export LC_ALL=C

need=()
command -v dockerd >/dev/null || need+=(docker.io)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
(cd "$ROOT" && cargo build --release --locked -q --bin mutagen \
  && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
     --target x86_64-unknown-linux-gnu --bin mutagen-agent)
MUTAGEN="$ROOT/target/release/mutagen"
# shellcheck source=bench/common.sh
. "$HERE/common.sh"

rm -rf "$B" "$DATA"; mkdir -p "$B" "$DATA" "$ENGINE"
export MUTAGEN_DATA_DIRECTORY="$DATA"
export MUTAGEN_DISABLE_AUTOSTART=1
SOCK="/tmp/mutagen-bench-docker.sock"
export DOCKER_HOST="unix://$SOCK"
export DOCKER_CONFIG="$B/docker-cli"

# A private engine, as the test fixture makes it.
dockerd --data-root "$ENGINE/data" --exec-root /tmp/mtg-bench-x --pidfile "$B/dockerd.pid" \
  -H "$DOCKER_HOST" --storage-driver overlay2 --bridge none --iptables=false --ip6tables=false \
  > "$B/dockerd.log" 2>&1 < /dev/null &
for _ in $(seq 1 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker version >/dev/null || { tail -20 "$B/dockerd.log"; exit 1; }
trap '"$MUTAGEN" daemon stop >/dev/null 2>&1 || true; docker rm -f bench >/dev/null 2>&1 || true; kill "$(cat "$B/dockerd.pid")" 2>/dev/null || true; sleep 2; rm -rf "$B" "$DATA"' EXIT
R="$B/rootfs"; mkdir -p "$R"/{bin,tmp,etc,root}
cp /bin/busybox "$R/bin/busybox"
for c in $(/bin/busybox --list); do [ "$c" = busybox ] || ln -sf busybox "$R/bin/$c"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
tar -C "$R" -cf "$B/rootfs.tar" .
docker import -c 'ENV PATH=/bin' "$B/rootfs.tar" mutagen-bench/busybox >/dev/null
docker rm -f bench >/dev/null 2>&1 || true
docker run -d --name bench mutagen-bench/busybox sleep 1000000 >/dev/null
MERGED="$(docker inspect -f '{{.GraphDriver.Data.MergedDir}}' bench)"

SRC="$B/src"
clean() {
  "$MUTAGEN" sync terminate --all >/dev/null 2>&1 || true
  docker exec bench rm -rf /root/dst; sync
}
session() {
  local name="$1"; shift
  "$MUTAGEN" sync create "$SRC" "docker://bench/~/dst" --name "$name" "$@" >/dev/null
  "$MUTAGEN" sync flush "$name" >/dev/null
}
FLIPS=0
flip_big() { FLIPS=$((FLIPS + 1)); flip_file "$SRC/big/big0.bin" "$FLIPS"; }

generate "$SRC" "$FILES" 3 "$BIGMB"; sync
echo
echo "### docker: $(find "$SRC" -type f | wc -l) files, $(du -sm "$SRC" | cut -f1) MB; roots on $(df --output=fstype "$B" | tail -1), data directory and engine on $(df --output=fstype "$DATA" | tail -1), REPS=$REPS"
echo
echo "| case                                             |       median |       min |       max |"
echo "|--------------------------------------------------|-------------:|----------:|----------:|"
"$MUTAGEN" daemon start >/dev/null
measure "initial sync: mutagen (create + flush)" clean "session bench --watch-mode no-watch"
measure "initial sync: docker cp" clean "docker cp '$SRC/.' bench:/root/dst"

clean; session watched
read -r p50 p95 max < <(latency "$SRC" "$MERGED/root/dst")
row "latency local edit -> container: p50 / p95 / max" "$p50 ms" "$p95" "$max"

clean; session flips --watch-mode no-watch
measure "1-byte edit in 50 MB: mutagen sync flush" flip_big "'$MUTAGEN' sync flush flips"
bytes=$("$MUTAGEN" sync history flips --json | python3 -c '
import json, sys
staged = [r for r in json.load(sys.stdin) if r["kind"] == "staged"]
print(staged[-1]["bytes"])')
row "  bytes sent, mutagen (staged payload)" "$bytes B"
measure "1-byte edit in 50 MB: docker cp of the file" flip_big "docker cp '$SRC/big/big0.bin' bench:/root/dst/big/big0.bin"
row "  bytes sent, docker cp (the whole file)" "$(stat -c %s "$SRC/big/big0.bin") B"
clean
"$MUTAGEN" daemon stop >/dev/null
