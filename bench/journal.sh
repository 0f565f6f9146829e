#!/usr/bin/env bash
# What journal integrity costs (issue 12): the daemon's start, which examines the whole
# journal in a scratch copy before opening it, against `daemon verify` (the examination
# alone), a plain `cp -r` of the journal (the copy's floor), and a no-change flush (each
# flush also replaces journal.head, atomically and fsynced).
# SESSIONS sessions of FILES files each, then ROUNDS rounds of one edit per session and a
# flush of all, so that each session has history. Roots on BENCH_DIR (tmpfs), the data
# directory on the home disk as users have it (BENCH_DATA).
#
#   bench/journal.sh        env: BENCH_DIR, BENCH_DATA, SESSIONS=30, FILES=300, ROUNDS=20, REPS=5
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
B="${BENCH_DIR:-/dev/shm/mutagen-journal-bench}"
DATA="${BENCH_DATA:-$HOME/.cache/mutagen-bench-journal}"
SESSIONS="${SESSIONS:-30}"; FILES="${FILES:-300}"; ROUNDS="${ROUNDS:-20}"; REPS="${REPS:-5}"
(cd "$ROOT" && cargo build -q --release -p mutagen-cli)
M="$ROOT/target/release/mutagen"
export MUTAGEN_DATA_DIRECTORY="$DATA"
"$M" daemon stop >/dev/null 2>&1 || true
rm -rf "$DATA" "$B"; mkdir -p "$B"
trap '"$M" daemon stop >/dev/null 2>&1 || true; rm -rf "$B"' EXIT
ms() { local start end; start=$(date +%s%N); "$@" >/dev/null; end=$(date +%s%N); echo $(( (end - start) / 1000000 )); }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

for s in $(seq 1 "$SESSIONS"); do
  mkdir -p "$B/a$s"
  for f in $(seq 1 "$FILES"); do echo "$s $f" > "$B/a$s/f$f"; done
  "$M" sync create --name "s$s" --watch-mode no-watch "$B/a$s" "$B/b$s" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  for s in $(seq 1 "$SESSIONS"); do echo "$round" > "$B/a$s/f$round"; done
  "$M" sync flush --all >/dev/null
done
"$M" daemon stop >/dev/null
echo "journal: $(du -sh "$DATA/journal" | cut -f1), $SESSIONS sessions of $FILES files, $ROUNDS flushed edits each"
start=(); verify=(); copy=(); flush=()
for _ in $(seq 1 "$REPS"); do
  start+=("$(ms "$M" daemon start)")
  "$M" sync flush s1 >/dev/null   # the first cycle after a start connects and scans
  flush+=("$(ms "$M" sync flush s1)")
  "$M" daemon stop >/dev/null
  verify+=("$(ms "$M" daemon verify)")
  copy+=("$(ms cp -r "$DATA/journal" "$DATA/journal.copy")"); rm -rf "$DATA/journal.copy"
done
printf '| daemon start (examine + open + replay) | %s ms |\n' "$(printf '%s\n' "${start[@]}" | median)"
printf '| daemon verify (examine alone) | %s ms |\n' "$(printf '%s\n' "${verify[@]}" | median)"
printf '| cp -r of the journal | %s ms |\n' "$(printf '%s\n' "${copy[@]}" | median)"
printf '| no-change flush (second after start), CLI start included | %s ms |\n' "$(printf '%s\n' "${flush[@]}" | median)"
