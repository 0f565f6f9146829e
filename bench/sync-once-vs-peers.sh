#!/usr/bin/env bash
# Initial sync and no-change re-run of a deterministic tree, local to local:
# `mutagen sync once` vs `rsync -a` vs `unison -batch`, measured in the same run.
#
#   bench/sync-once-vs-peers.sh            # 10,000 files in ~2,000 dirs + three 50 MB files
#   NFILES=100000 NBIG=0 bench/sync-once-vs-peers.sh
#
# env: BENCH_DIR (default /dev/shm/mutagen-bench, wiped), NFILES=10000, NBIG=3, BIGMB=50, REPS=3
# Installs rsync and unison from Debian if missing; builds mutagen in release mode.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
B="${BENCH_DIR:-/dev/shm/mutagen-bench}"
NFILES="${NFILES:-10000}"; NBIG="${NBIG:-3}"; BIGMB="${BIGMB:-50}"; REPS="${REPS:-3}"
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
generate "$B/src" "$NFILES" "$NBIG" "$BIGMB"
echo "tree: $(find "$B/src" -type f | wc -l) files, $(find "$B/src" -type d | wc -l) directories, $(du -sm "$B/src" | cut -f1) MB, on $(df --output=fstype "$B" | tail -1)"

export MUTAGEN_DATA_DIRECTORY="$B/mutagen-data"
export UNISON="$B/unison-home"

fresh() { rm -rf "$B/dst" "$MUTAGEN_DATA_DIRECTORY" "$UNISON"; mkdir -p "$UNISON"; sync; }

echo
echo "| case (REPS=$REPS)                                 |       median |       min |       max |"
echo "|--------------------------------------------------|-------------:|----------:|----------:|"
measure "initial sync: mutagen sync once"  fresh "'$MUTAGEN' sync once '$B/src' '$B/dst'"
measure "initial sync: rsync -a"           fresh "rsync -a '$B/src/' '$B/dst/'"
measure "initial sync: unison -batch"      "fresh; mkdir -p '$B/dst'" "unison -batch -times -perms 0 '$B/src' '$B/dst'"
fresh; "$MUTAGEN" sync once "$B/src" "$B/dst" >/dev/null
measure "no-change re-run: mutagen sync once" : "'$MUTAGEN' sync once '$B/src' '$B/dst'"
measure "no-change re-run: rsync -a"        : "rsync -a '$B/src/' '$B/dst/'"
fresh; mkdir -p "$B/dst"; unison -batch -times -perms 0 "$B/src" "$B/dst" >/dev/null 2>&1
measure "no-change re-run: unison -batch"   : "unison -batch -times -perms 0 '$B/src' '$B/dst'"

if [ "$NBIG" -gt 0 ]; then
  # One byte flipped in the middle of a 50 MB file, at a distinct offset and whole-second mtime
  # each time (rsync's quick check misses same-second, same-size edits). rsync runs with
  # --no-whole-file: for local copies it skips its delta algorithm by default.
  FLIPS=0
  flip() { FLIPS=$((FLIPS + 1)); flip_file "$B/src/big/big0.bin" "$FLIPS"; }
  fresh; "$MUTAGEN" sync once "$B/src" "$B/dst" >/dev/null
  measure "1-byte edit in 50 MB: mutagen sync once" flip "'$MUTAGEN' sync once '$B/src' '$B/dst'"
  echo "  mutagen, last run: $(grep -o 'Beta:.*' "$B/last.out")"
  fresh; rsync -a "$B/src/" "$B/dst/"
  measure "1-byte edit in 50 MB: rsync --no-whole-file" flip "rsync -a --no-whole-file --stats '$B/src/' '$B/dst/'"
  echo "  rsync, last run: $(grep -E 'Literal data' "$B/last.out")"
  fresh; mkdir -p "$B/dst"; unison -batch -times -perms 0 "$B/src" "$B/dst" >/dev/null 2>&1
  measure "1-byte edit in 50 MB: unison -batch" flip "unison -batch -times -perms 0 '$B/src' '$B/dst'"
fi
rm -rf "$B"
