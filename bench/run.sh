#!/usr/bin/env bash
# The daemon against rsync and Unison, local to local, in one run, on deterministic trees:
#   1. initial sync (mutagen sync create + flush; rsync -a; unison -batch)
#   2. a no-change cycle (mutagen sync flush; rsync / unison re-runs with nothing to do)
#   3. change propagation latency in portable watch mode: one file edited on alpha, time until
#      beta has the new content, p50/p95/max over EDITS edits at random places (no flush)
#   4. one byte flipped in the middle of a 50 MB file: time and bytes transferred
#   5. the daemon's resident memory with a watched session of the large tree, and the CPU
#      time it spends idle over IDLE seconds; then the same session's memory in a daemon that
#      ran and terminated three sessions of that tree first
# Case 1 runs twice for mutagen: with the data directory on the roots' file system (BENCH_DIR)
# and, as users have it, on disk (DISK_DATA, default ~/.cache/mutagen-bench-data). Case 2 has
# a floor beside it: a stat walk of both roots at once (find -printf), what any full rescan
# must at least do.
# Cases 1-4 run on the small tree (10,000 files in ~2,500 directories + three 50 MB files),
# cases 1-3 and 5 on the large one (100,000 files). The huge tree (1,000,000 files, only when
# asked for: it takes about twenty minutes, unison most of them) runs once: the initial sync (data directory on disk)
# beside rsync and unison, the watched no-change flush, the latency and the daemon's memory.
#
#   bench/run.sh                                   # the small and large trees
#   TREES=small REPS=5 bench/run.sh                # only the small tree
#   TREES=huge EDITS=50 bench/run.sh               # only the 1,000,000-file tree
#
# env: BENCH_DIR (default /dev/shm/mutagen-bench, wiped), DISK_DATA (wiped), TREES="small large", REPS=3,
#      EDITS=100, IDLE=60, SMALL_FILES=10000, LARGE_FILES=100000, HUGE_FILES=1000000, BIGMB=50
# Installs rsync, unison and python3 from Debian if missing; builds mutagen in release mode.
# Prints one markdown table per tree.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
B="${BENCH_DIR:-/dev/shm/mutagen-bench}"
TREES="${TREES:-small large}"; REPS="${REPS:-3}"; EDITS="${EDITS:-100}"; IDLE="${IDLE:-60}"
SMALL_FILES="${SMALL_FILES:-10000}"; LARGE_FILES="${LARGE_FILES:-100000}"; BIGMB="${BIGMB:-50}"
HUGE_FILES="${HUGE_FILES:-1000000}"
export LC_ALL=C

need=()
command -v rsync >/dev/null || need+=(rsync)
command -v unison >/dev/null || need+=(unison)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
(cd "$ROOT" && cargo build --release --locked -q --bin mutagen)
MUTAGEN="$ROOT/target/release/mutagen"
# shellcheck source=bench/common.sh
. "$HERE/common.sh"

rm -rf "$B"; mkdir -p "$B"
DISK_DATA="${DISK_DATA:-$HOME/.cache/mutagen-bench-data}"
rm -rf "$DISK_DATA"; mkdir -p "$DISK_DATA"
export MUTAGEN_DATA_DIRECTORY="$B/mutagen-data"
export UNISON="$B/unison-home"
export MUTAGEN_DISABLE_AUTOSTART=1
trap '"$MUTAGEN" daemon stop >/dev/null 2>&1 || true; MUTAGEN_DATA_DIRECTORY="$DISK_DATA" "$MUTAGEN" daemon stop >/dev/null 2>&1 || true; rm -rf "$B" "$DISK_DATA"' EXIT

SRC="$B/src"; DST="$B/dst"
clean() {
  "$MUTAGEN" sync terminate --all >/dev/null 2>&1 || true
  rm -rf "$DST" "$UNISON"; mkdir -p "$UNISON"; sync
}
session() {  # session NAME [flags...]: create SRC -> DST and wait for the first cycle
  local name="$1"; shift
  "$MUTAGEN" sync create "$SRC" "$DST" --name "$name" "$@" >/dev/null
  "$MUTAGEN" sync flush "$name" >/dev/null
}
unison_run() { unison -batch -times -perms 0 "$SRC" "$DST"; }
# The floor of a full rescan: every entry of both roots stat'ed, both at once.
stat_walk() {
  find "$SRC" -printf '%s %T@ %i %m\n' >/dev/null & find "$DST" -printf '%s %T@ %i %m\n' >/dev/null
  wait
}
# Runs the rest of the arguments with the daemon's data directory on disk.
on_disk() {
  "$MUTAGEN" daemon stop >/dev/null
  MUTAGEN_DATA_DIRECTORY="$DISK_DATA"; "$MUTAGEN" daemon start >/dev/null
  "$@"
  clean; "$MUTAGEN" daemon stop >/dev/null
  MUTAGEN_DATA_DIRECTORY="$B/mutagen-data"; "$MUTAGEN" daemon start >/dev/null
}

FLIPS=0
flip_big() { FLIPS=$((FLIPS + 1)); flip_file "$SRC/big/big0.bin" "$FLIPS"; }

daemon_pid() { cat "$MUTAGEN_DATA_DIRECTORY/daemon/daemon.lock"; }
# rss [VmRSS|VmHWM]: the daemon's resident memory (or its peak) in MB.
rss() { awk -v key="${1:-VmRSS}:" '$1 == key {printf "%.1f", $2 / 1024}' "/proc/$(daemon_pid)/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_tree() {
  local label="$1" files="$2" big="$3"
  rm -rf "$SRC"; generate "$SRC" "$files" "$big" "$BIGMB"; sync
  echo
  echo "### $label tree: $(find "$SRC" -type f | wc -l) files, $(find "$SRC" -type d | wc -l) directories, $(du -sm "$SRC" | cut -f1) MB, on $(df --output=fstype "$B" | tail -1), REPS=$REPS"
  echo
  echo "| case                                             |       median |       min |       max |"
  echo "|--------------------------------------------------|-------------:|----------:|----------:|"
  "$MUTAGEN" daemon start >/dev/null

  measure "initial sync: mutagen (create + flush)" clean "session bench --watch-mode no-watch"
  on_disk measure "initial sync: mutagen, data directory on $(df --output=fstype "$DISK_DATA" | tail -1)" clean "session bench --watch-mode no-watch"
  measure "initial sync: rsync -a" clean "rsync -a '$SRC/' '$DST/'"
  measure "initial sync: unison -batch" "clean; mkdir -p '$DST'" "unison_run"

  clean; session bench --watch-mode no-watch
  measure "no-change cycle: mutagen sync flush (no-watch)" : "'$MUTAGEN' sync flush bench"
  measure "  floor: stat walk of both roots at once" : "stat_walk"
  clean; session bench
  measure "no-change cycle: mutagen sync flush (watched)" : "'$MUTAGEN' sync flush bench"
  clean; rsync -a "$SRC/" "$DST/"
  measure "no-change re-run: rsync -a" : "rsync -a '$SRC/' '$DST/'"
  clean; mkdir -p "$DST"; unison_run >/dev/null 2>&1
  measure "no-change re-run: unison -batch" : "unison_run"

  clean; session watched
  read -r p50 p95 max < <(latency "$SRC" "$DST")
  row "latency, $EDITS edits, portable watching: p50" "$p50 ms"
  row "latency: p95" "$p95 ms"
  row "latency: max" "$max ms"
  row "latency: rsync / unison" "n/a (no watch mode)"

  if [ "$big" -gt 0 ]; then
    clean; session flips --watch-mode no-watch
    measure "1-byte edit in 50 MB: mutagen sync flush" flip_big "'$MUTAGEN' sync flush flips"
    local bytes
    bytes=$("$MUTAGEN" sync history flips --json | python3 -c '
import json, sys
staged = [r for r in json.load(sys.stdin) if r["kind"] == "staged"]
print(staged[-1]["bytes"])')
    row "  bytes sent, mutagen (last run)" "$bytes B"
    clean; rsync -a "$SRC/" "$DST/"
    measure "1-byte edit in 50 MB: rsync --no-whole-file" flip_big "rsync -a --no-whole-file --stats '$SRC/' '$DST/'"
    row "  bytes sent, rsync (last run)" "$(grep -oP 'Literal data: \K[0-9,]+' "$B/last.out" | tr -d ,) B"
    clean; mkdir -p "$DST"; unison_run >/dev/null 2>&1
    measure "1-byte edit in 50 MB: unison -batch" flip_big "unison_run"
  fi

  if [ "$label" = large ]; then
    # A fresh daemon: memory freed by the earlier cases' sessions is not counted.
    clean; "$MUTAGEN" daemon stop >/dev/null; "$MUTAGEN" daemon start >/dev/null
    session resident
    sleep 2
    local pid before after
    pid=$(daemon_pid)
    before=$(cpu_ticks "$pid")
    sleep "$IDLE"
    after=$(cpu_ticks "$pid")
    row "daemon RSS, watched session (peak)" "$(rss) MB" "($(rss VmHWM))"
    row "daemon CPU idle over ${IDLE} s" "$(( (after - before) * 1000 / $(getconf CLK_TCK) )) ms"
    # As a long-running daemon has it: three sessions of the tree ran and were terminated.
    clean; "$MUTAGEN" daemon stop >/dev/null; "$MUTAGEN" daemon start >/dev/null
    local i
    for i in 1 2 3; do
      "$MUTAGEN" sync create "$SRC" "$B/old-$i" --name "old-$i" >/dev/null
      "$MUTAGEN" sync flush "old-$i" >/dev/null
    done
    row "  daemon RSS with the three" "$(rss) MB"
    for i in 1 2 3; do "$MUTAGEN" sync terminate "old-$i" >/dev/null; rm -rf "$B/old-$i"; done
    sleep 2
    row "  daemon RSS once they were terminated" "$(rss) MB"
    session resident
    sleep 2
    row "daemon RSS, watched session, after three terminated" "$(rss) MB"
  fi
  clean
  "$MUTAGEN" daemon stop >/dev/null
}

# The 1,000,000-file tree: every case once, the data directory on disk as users have it.
run_huge() {
  rm -rf "$SRC"; generate "$SRC" "$HUGE_FILES" 0; sync
  echo
  echo "### huge tree: $(find "$SRC" -type f | wc -l) files, $(find "$SRC" -type d | wc -l) directories, $(du -sm "$SRC" | cut -f1) MB, on $(df --output=fstype "$B" | tail -1), once"
  echo
  echo "| case                                             |       median |       min |       max |"
  echo "|--------------------------------------------------|-------------:|----------:|----------:|"
  local REPS=1
  "$MUTAGEN" daemon stop >/dev/null 2>&1 || true
  MUTAGEN_DATA_DIRECTORY="$DISK_DATA"; "$MUTAGEN" daemon start >/dev/null
  measure "initial sync: mutagen, data directory on $(df --output=fstype "$DISK_DATA" | tail -1)" clean "session huge"
  row "daemon RSS, watched session (peak)" "$(rss) MB" "($(rss VmHWM))"
  REPS=3 measure "no-change cycle: mutagen sync flush (watched)" : "'$MUTAGEN' sync flush huge"
  read -r p50 p95 max < <(latency "$SRC" "$DST")
  row "latency, $EDITS edits, portable watching: p50" "$p50 ms"
  row "latency: p95" "$p95 ms"
  row "latency: max" "$max ms"
  clean; "$MUTAGEN" daemon stop >/dev/null
  MUTAGEN_DATA_DIRECTORY="$B/mutagen-data"
  measure "initial sync: rsync -a" clean "rsync -a '$SRC/' '$DST/'"
  measure "initial sync: unison -batch" "clean; mkdir -p '$DST'" "unison_run"
  clean
}

for tree in $TREES; do
  case "$tree" in
    small) run_tree small "$SMALL_FILES" 3 ;;
    large) run_tree large "$LARGE_FILES" 0 ;;
    huge) run_huge ;;
    *) echo "unknown tree $tree (small, large, huge)" >&2; exit 1 ;;
  esac
done
