#!/usr/bin/env bash
# Two builds of mutagen against each other (and rsync -a beside them), interleaved in one
# run, so that a change is measured by a ratio on a noisy shared machine rather than by two
# runs at different times: the initial sync of the seeded tree (sync create + flush, the data
# directory on disk as users have it), then the watched no-change flush and the latency of
# an edit on alpha until beta has it (EDITS edits, p50 and p95).
#
#   bench/paired.sh OLD_BINARY NEW_BINARY
#
# env: BENCH_DIR (default /dev/shm/mutagen-paired, wiped), DISK_DATA (default
#      ~/.cache/mutagen-paired-data, wiped), FILES=100000, ROUNDS=5, FLUSHES=20, EDITS=50
# Prints each round's times, then the medians and the ratios.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
OLD="$(realpath "$1")"; NEW="$(realpath "$2")"
B="${BENCH_DIR:-/dev/shm/mutagen-paired}"
DISK_DATA="${DISK_DATA:-$HOME/.cache/mutagen-paired-data}"
FILES="${FILES:-100000}"; ROUNDS="${ROUNDS:-5}"; FLUSHES="${FLUSHES:-20}"; EDITS="${EDITS:-50}"
export LC_ALL=C MUTAGEN_DISABLE_AUTOSTART=1 MUTAGEN_DATA_DIRECTORY="$DISK_DATA"
command -v rsync >/dev/null || { apt-get update -qq && apt-get install -y -qq rsync >/dev/null; }
# shellcheck source=bench/common.sh
. "$HERE/common.sh"

stop_all() {
  "$OLD" daemon stop >/dev/null 2>&1 || true
  "$NEW" daemon stop >/dev/null 2>&1 || true
}
trap 'stop_all; rm -rf "$B" "$DISK_DATA"' EXIT
rm -rf "$B" "$DISK_DATA"; mkdir -p "$B" "$DISK_DATA"
SRC="$B/src"; DST="$B/dst"
generate "$SRC" "$FILES" 0
seconds() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }

# initial BINARY: prints the seconds of an initial sync, then leaves the session watched.
initial() {
  local binary="$1" t0 t1
  stop_all; rm -rf "$DST" "$DISK_DATA"; mkdir -p "$DISK_DATA"; sync
  "$binary" daemon start >/dev/null
  t0=$(now)
  "$binary" sync create "$SRC" "$DST" --name paired >/dev/null
  "$binary" sync flush paired >/dev/null
  t1=$(now)
  seconds "$t0" "$t1"
}

# flushes BINARY: prints the median milliseconds of FLUSHES watched no-change flushes.
flushes() {
  local binary="$1" times=() t0 t1
  for _ in $(seq 1 "$FLUSHES"); do
    t0=$(now); "$binary" sync flush paired >/dev/null; t1=$(now)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)*1000}')")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

rsync_initial() {
  local t0 t1
  rm -rf "$DST"; sync
  t0=$(now); rsync -a "$SRC/" "$DST/"; t1=$(now)
  seconds "$t0" "$t1"
}

declare -a old_initial new_initial rsync_times old_flush new_flush old_p50 new_p50 old_p95 new_p95
for round in $(seq 1 "$ROUNDS"); do
  o=$(initial "$OLD"); of=$(flushes "$OLD")
  read -r op50 op95 _ < <(latency "$SRC" "$DST" "$((4242 + 2 * round))")
  n=$(initial "$NEW"); nf=$(flushes "$NEW")
  read -r np50 np95 _ < <(latency "$SRC" "$DST" "$((4243 + 2 * round))")
  stop_all
  r=$(rsync_initial)
  old_initial+=("$o"); new_initial+=("$n"); rsync_times+=("$r"); old_flush+=("$of"); new_flush+=("$nf")
  old_p50+=("$op50"); new_p50+=("$np50"); old_p95+=("$op95"); new_p95+=("$np95")
  echo "round $round: initial old ${o}s new ${n}s rsync ${r}s; watched flush old ${of}ms new ${nf}ms;" \
    "latency p50/p95 old ${op50}/${op95}ms new ${np50}/${np95}ms"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${old_initial[@]}"); mn=$(median "${new_initial[@]}"); mr=$(median "${rsync_times[@]}")
fo=$(median "${old_flush[@]}"); fn=$(median "${new_flush[@]}")
echo "median initial sync of $FILES files: old ${mo}s, new ${mn}s, rsync ${mr}s" \
  "(new/old $(awk -v a="$mn" -v b="$mo" 'BEGIN{printf "%.2f", a/b}'), new/rsync" \
  "$(awk -v a="$mn" -v b="$mr" 'BEGIN{printf "%.2f", a/b}'), old/rsync" \
  "$(awk -v a="$mo" -v b="$mr" 'BEGIN{printf "%.2f", a/b}'))"
echo "median watched no-change flush: old ${fo}ms, new ${fn}ms"
echo "median edit latency p50/p95: old $(median "${old_p50[@]}")/$(median "${old_p95[@]}")ms," \
  "new $(median "${new_p50[@]}")/$(median "${new_p95[@]}")ms"
