#!/usr/bin/env bash
# SSH endpoints against rsync -e ssh and Unison over ssh, in one run, through a private sshd
# on loopback (own keys, free port), on the small tree of run.sh (10,000 files + 3 × 50 MB):
#   1. initial sync (mutagen sync create + flush to HOST:path; rsync -a -e ssh; unison ssh://)
#   2. a no-change flush of a watched session (CLI start included), and the peers' re-runs
#   3. latency, watched, no flush: a local edit until the remote has it, and a remote edit
#      until the local side has it (p50/p95/max over EDITS edits each)
#   4. one byte flipped in a 50 MB file: time, and bytes sent (mutagen: staged payload;
#      rsync: literal data and total bytes sent)
#   5. reconvergence after a cut link: the ssh master is killed, a file written at once on
#      alpha, and the time until it is on beta is measured (reconnect, agent, cycle)
#   6. compression: the initial sync of a real source tree (the sources of this project's
#      dependencies, from ~/.cargo/registry/src) with --compression zstd and none, against
#      rsync with and without -z; time and bytes on the wire (mutagen: the ssh connection's
#      TCP bytes from ss; rsync: its --stats totals, before ssh framing)
# The roots are on BENCH_DIR (tmpfs); the data directory is on the home disk, as users have
# it (BENCH_DATA, default ~/.cache/mutagen-bench-data). Installs rsync, unison, python3 and
# openssh-server if missing; builds mutagen and the static agent in release mode.
#
#   bench/ssh.sh            env: BENCH_DIR, BENCH_DATA, REPS=3, EDITS=50, FILES=10000, BIGMB=50
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
B="${BENCH_DIR:-/dev/shm/mutagen-ssh-bench}"
DATA="${BENCH_DATA:-$HOME/.cache/mutagen-bench-data}"
REPS="${REPS:-3}"; EDITS="${EDITS:-50}"; FILES="${FILES:-10000}"; BIGMB="${BIGMB:-50}"
export LC_ALL=C

need=()
command -v rsync >/dev/null || need+=(rsync)
command -v unison >/dev/null || need+=(unison)
command -v python3 >/dev/null || need+=(python3)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
(cd "$ROOT" && cargo build --release --locked -q --bin mutagen \
  && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
     --target x86_64-unknown-linux-gnu --bin mutagen-agent)
MUTAGEN="$ROOT/target/release/mutagen"
# shellcheck source=bench/common.sh
. "$HERE/common.sh"

rm -rf "$B" "$DATA"; mkdir -p "$B" "$DATA"
export MUTAGEN_DATA_DIRECTORY="$DATA"
export UNISON="$B/unison-home"
export MUTAGEN_DISABLE_AUTOSTART=1

start_sshd "$B/sshd"
trap '"$MUTAGEN" daemon stop >/dev/null 2>&1 || true; kill "$(cat "$S/sshd.pid")" 2>/dev/null || true; rm -rf "$B" "$DATA"' EXIT

SRC="$B/src"; DST="$B/dst"
clean() {
  "$MUTAGEN" sync terminate --all >/dev/null 2>&1 || true
  rm -rf "$DST" "$UNISON"; mkdir -p "$UNISON"; sync
}
session() {
  local name="$1"; shift
  "$MUTAGEN" sync create "$SRC" "benchhost:$DST" --name "$name" "$@" >/dev/null
  "$MUTAGEN" sync flush "$name" >/dev/null
}
unison_run() { unison -batch -times -perms 0 -sshargs "-F $S/ssh_config" -servercmd "env UNISON=$UNISON unison" "$SRC" "ssh://benchhost/$DST"; }

FLIPS=0
flip_big() { FLIPS=$((FLIPS + 1)); flip_file "$SRC/big/big0.bin" "$FLIPS"; }

# reconverge: kills the ssh master, writes a file on alpha at once, waits until beta has it.
reconverge() {
  local k="$1" marker="$SRC/cut-$1.txt" target="$DST/cut-$1.txt"
  pkill -9 -f "$DATA/daemon/ssh/" || true
  echo "cut $k" > "$marker"
  local deadline=$((SECONDS + 60))
  until [ "$(cat "$target" 2>/dev/null)" = "cut $k" ]; do
    [ $SECONDS -lt $deadline ] || { echo "never reconverged"; return 1; }
    sleep 0.005
  done
}

rm -rf "$SRC"; generate "$SRC" "$FILES" 3 "$BIGMB"; sync
echo
echo "### ssh to loopback: $(find "$SRC" -type f | wc -l) files, $(du -sm "$SRC" | cut -f1) MB; roots on $(df --output=fstype "$B" | tail -1), data directory on $(df --output=fstype "$DATA" | tail -1), REPS=$REPS"
echo
echo "| case                                             |       median |       min |       max |"
echo "|--------------------------------------------------|-------------:|----------:|----------:|"
"$MUTAGEN" daemon start >/dev/null

measure "initial sync: mutagen (create + flush)" clean "session bench --watch-mode no-watch"
measure "initial sync: rsync -a -e ssh" clean "rsync -a -e '$SSH' '$SRC/' 'benchhost:$DST/'"
measure "initial sync: unison over ssh" "clean; mkdir -p '$DST'" "unison_run"

clean; session bench
measure "no-change flush, watched: mutagen sync flush" : "'$MUTAGEN' sync flush bench"
clean; rsync -a "$SRC/" "$DST/"
measure "no-change re-run: rsync -a -e ssh" : "rsync -a -e '$SSH' '$SRC/' 'benchhost:$DST/'"
clean; mkdir -p "$DST"; unison_run >/dev/null 2>&1
measure "no-change re-run: unison over ssh" : "unison_run"

clean; session watched
read -r p50 p95 max < <(latency "$SRC" "$DST")
row "latency local edit -> remote: p50 / p95 / max" "$p50 ms" "$p95" "$max"
read -r p50 p95 max < <(latency "$DST" "$SRC" 4343)
row "latency remote edit -> local: p50 / p95 / max" "$p50 ms" "$p95" "$max"

times=()
for k in $(seq 1 "$REPS"); do
  t0=$(now); reconverge "$k"; t1=$(now)
  times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", (b-a)*1000}')")
done
row "reconverge after the ssh master is killed" "$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (REPS + 1) / 2 ))p") ms" "$(printf '%s ' "${times[@]}")"

clean; session flips --watch-mode no-watch
measure "1-byte edit in 50 MB: mutagen sync flush" flip_big "'$MUTAGEN' sync flush flips"
bytes=$("$MUTAGEN" sync history flips --json | python3 -c '
import json, sys
staged = [r for r in json.load(sys.stdin) if r["kind"] == "staged"]
print(staged[-1]["bytes"])')
row "  bytes sent, mutagen (staged payload)" "$bytes B"
clean; rsync -a "$SRC/" "$DST/"
measure "1-byte edit in 50 MB: rsync -e ssh --no-whole-file" flip_big "rsync -a -e '$SSH' --no-whole-file --stats '$SRC/' 'benchhost:$DST/'"
row "  bytes sent, rsync (literal / total sent)" "$(grep -oP 'Literal data: \K[0-9,]+' "$B/last.out" | tr -d ,) B" "$(grep -oP 'Total bytes sent: \K[0-9,]+' "$B/last.out" | tr -d ,) B"
clean; mkdir -p "$DST"; unison_run >/dev/null 2>&1
measure "1-byte edit in 50 MB: unison over ssh" flip_big "unison_run"
clean

# 6. Compression, on a tree that compresses like source code does.
rm -rf "$SRC"; mkdir -p "$SRC"; cp -r "${CARGO_HOME:-$HOME/.cargo}/registry/src/." "$SRC/"; sync
echo
echo "### compression on a source tree: $(find "$SRC" -type f | wc -l) files, $(du -sm "$SRC" | cut -f1) MB (the dependencies' sources)"
echo
echo "| case                                             |       median |       min |       max |"
echo "|--------------------------------------------------|-------------:|----------:|----------:|"
# The TCP bytes both ways of the established ssh connections to the bench sshd.
wire() { ss -tinH state established "( dport = :$PORT )" | grep -oP 'bytes_(sent|received):\K[0-9]+' | awk '{s+=$1} END {print s+0}'; }
for compression in zstd none; do
  measure "source tree: mutagen --compression $compression" clean "session src --watch-mode no-watch --compression $compression"
  row "  bytes on the wire (TCP, both ways)" "$(wire) B"
done
for z in "" "-z"; do
  measure "source tree: rsync -a $z -e ssh" clean "rsync -a $z --stats -e '$SSH' '$SRC/' 'benchhost:$DST/'"
  row "  bytes (rsync sent + received)" "$(( $(grep -oP 'Total bytes sent: \K[0-9,]+' "$B/last.out" | tr -d ,) + $(grep -oP 'Total bytes received: \K[0-9,]+' "$B/last.out" | tr -d ,) )) B"
done
clean
"$MUTAGEN" daemon stop >/dev/null
