#!/usr/bin/env bash
# The daemon's resident memory the way issue 13 defines it, in a fresh data directory:
# idle, with one watched session of the large tree, with three, once the three were
# terminated, and with a new watched session after them. (bench/run.sh measures the same
# steps in a data directory that already holds the journals of its earlier cases.)
#
#   bench/memory.sh                      # builds mutagen in release mode, 100,000 files
#   FILES=10000 bench/memory.sh
#
# env: BENCH_DIR (default /dev/shm/mutagen-memory, wiped), FILES=100000
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
B="${BENCH_DIR:-/dev/shm/mutagen-memory}"; FILES="${FILES:-100000}"
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
(cd "$ROOT" && cargo build --release --locked -q --bin mutagen)
M="$ROOT/target/release/mutagen"
# shellcheck source=bench/common.sh
. "$HERE/common.sh"
rm -rf "$B"; mkdir -p "$B"
export MUTAGEN_DATA_DIRECTORY="$B/data" MUTAGEN_DISABLE_AUTOSTART=1
trap '"$M" daemon stop >/dev/null 2>&1 || true; rm -rf "$B"' EXIT
generate "$B/src" "$FILES" 0; sync
rss() { awk '/VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$(cat "$B/data/daemon/daemon.lock")/status"; }
created() { "$M" sync create "$B/src" "$B/$1" --name "$1" >/dev/null; "$M" sync flush "$1" >/dev/null; }
"$M" daemon start >/dev/null; sleep 1
echo "| daemon RSS ($FILES files per session, fresh data directory) | |"
echo "|---|---:|"
echo "| idle, no session | $(rss) |"
created one; sleep 3
echo "| one watched session | $(rss) |"
"$M" sync terminate one >/dev/null; rm -rf "$B/one"
for i in 1 2 3; do created "s$i"; done
echo "| three such sessions | $(rss) |"
"$M" sync terminate --all >/dev/null; rm -rf "$B"/s?; sleep 2
echo "| the three terminated | $(rss) |"
created last; sleep 3
echo "| a new watched session after the three | $(rss) |"
