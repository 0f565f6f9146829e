#!/usr/bin/env bash
# Forwarding through a local→SSH forward session against `ssh -N -L` on the same private sshd
# and against a direct connection, in one run:
#   1. bulk throughput of one connection (BULK MiB, one direction, counted by the server)
#   2. ping-pong round trip of 64-byte messages, p50 and p95 over 1,000 (after 50 warm-ups)
#   3. 100 concurrent connections echoing 1 MiB each: wall time
#   2b. the same through a local tcp→tcp forward: the cost of the daemon's hop alone
#   4. CPU while forwarding at full speed (the bulk case): mutagen's daemon and its ssh master
#      against the ssh -L client, in CPU seconds per second of transfer
# The data directory is on the home disk (BENCH_DATA), as users have it. Builds mutagen, the
# static agent and the load generator (forward/examples/netbench.rs) in release mode.
#
#   bench/forward.sh            env: BENCH_DIR, BENCH_DATA, REPS=3, BULK=2048
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
B="${BENCH_DIR:-/dev/shm/mutagen-forward-bench}"
DATA="${BENCH_DATA:-$HOME/.cache/mutagen-bench-data}"
REPS="${REPS:-3}"; BULK="${BULK:-2048}"
export LC_ALL=C

need=()
command -v python3 >/dev/null || need+=(python3)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
(cd "$ROOT" && cargo build --release --locked -q --bin mutagen \
  && cargo build --release --locked -q -p mutagen-forward --example netbench \
  && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
     --target x86_64-unknown-linux-gnu --bin mutagen-agent)
MUTAGEN="$ROOT/target/release/mutagen"
NET="$ROOT/target/release/examples/netbench"
# shellcheck source=bench/common.sh
. "$HERE/common.sh"

rm -rf "$B" "$DATA"; mkdir -p "$B" "$DATA"
export MUTAGEN_DATA_DIRECTORY="$DATA"
export MUTAGEN_DISABLE_AUTOSTART=1
start_sshd "$B/sshd"
PIDS=()
trap '"$MUTAGEN" daemon stop >/dev/null 2>&1 || true; kill "${PIDS[@]}" "$(cat "$S/sshd.pid")" 2>/dev/null || true; rm -rf "$B" "$DATA"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  local deadline=$((SECONDS + 30))
  until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "nothing listens on $1"; exit 1; }
    sleep 0.05
  done
}
# cpu PID...: user+system CPU seconds of the processes.
cpu() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk -v hz="$(getconf CLK_TCK)" '{s+=$1} END {printf "%.3f", s/hz}'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

SINK=$(free_port); ECHO=$(free_port)
"$NET" sink "$SINK" & PIDS+=($!)
"$NET" echo "$ECHO" & PIDS+=($!)
wait_port "$SINK"; wait_port "$ECHO"

# ssh -L for both services, through one connection.
L_SINK=$(free_port); L_ECHO=$(free_port)
$SSH -N -o ExitOnForwardFailure=yes -L "$L_SINK:127.0.0.1:$SINK" -L "$L_ECHO:127.0.0.1:$ECHO" benchhost & SSHL=$!; PIDS+=($SSHL)
# mutagen forward sessions for both.
"$MUTAGEN" daemon start >/dev/null
M_SINK=$(free_port); M_ECHO=$(free_port)
"$MUTAGEN" forward create "tcp:127.0.0.1:$M_SINK" "benchhost:tcp:127.0.0.1:$SINK" --name sink >/dev/null
"$MUTAGEN" forward create "tcp:127.0.0.1:$M_ECHO" "benchhost:tcp:127.0.0.1:$ECHO" --name echo >/dev/null
# A local forward (no ssh, no agent): what the daemon's hop alone costs.
H_ECHO=$(free_port)
"$MUTAGEN" forward create "tcp:127.0.0.1:$H_ECHO" "tcp:127.0.0.1:$ECHO" --name local >/dev/null
wait_port "$L_SINK"; wait_port "$L_ECHO"; wait_port "$M_SINK"; wait_port "$M_ECHO"; wait_port "$H_ECHO"
DAEMON=$(cat "$DATA/daemon/daemon.lock")
# The daemon's ssh masters carry its agents' links.
MASTERS=$(pgrep -f "$DATA/daemon/ssh/" | tr '\n' ' ')
"$NET" bulk "$M_SINK" 64 >/dev/null; "$NET" bulk "$L_SINK" 64 >/dev/null  # warm-up

echo
echo "### forwarding over ssh to loopback: one connection of $BULK MiB, REPS=$REPS; data directory on $(df --output=fstype "$DATA" | tail -1)"
echo
echo "| case | direct | ssh -N -L | mutagen forward | mutagen / ssh -L |"
echo "|---|---:|---:|---:|---:|"
bulk_of() { for _ in $(seq 1 "$REPS"); do "$NET" bulk "$1" "$BULK"; done | median; }
D=$(bulk_of "$SINK"); L=$(bulk_of "$L_SINK"); M=$(bulk_of "$M_SINK")
echo "| bulk throughput, MB/s (higher is better) | $D | $L | $M | $(awk -v m="$M" -v l="$L" 'BEGIN{printf "%.2f×", m/l}') |"
pp() { "$NET" pingpong "$1" 1000 64; }
read -r DP50 DP95 < <(pp "$ECHO"); read -r LP50 LP95 < <(pp "$L_ECHO"); read -r MP50 MP95 < <(pp "$M_ECHO")
echo "| ping-pong p50, µs (lower is better) | $DP50 | $LP50 | $MP50 | $(awk -v m="$MP50" -v l="$LP50" 'BEGIN{printf "%.2f×", m/l}') |"
echo "| ping-pong p95, µs | $DP95 | $LP95 | $MP95 | $(awk -v m="$MP95" -v l="$LP95" 'BEGIN{printf "%.2f×", m/l}') |"
read -r HP50 HP95 < <(pp "$H_ECHO")
echo "| ping-pong p50 / p95 through a local forward (the daemon's hop only), µs | $DP50 / $DP95 | | $HP50 / $HP95 | |"
conc() { for _ in $(seq 1 "$REPS"); do "$NET" concurrent "$1" 100 1; done | median; }
DC=$(conc "$ECHO"); LC=$(conc "$L_ECHO"); MC=$(conc "$M_ECHO")
echo "| 100 concurrent 1 MiB echoes, wall ms (lower is better) | $DC | $LC | $MC | $(awk -v m="$MC" -v l="$LC" 'BEGIN{printf "%.2f×", m/l}') |"

# CPU per second of a bulk transfer.
cpu_of() {
  local port="$1"; shift
  local before after t0 t1
  before=$(cpu "$@"); t0=$(now)
  "$NET" bulk "$port" "$BULK" >/dev/null
  t1=$(now); after=$(cpu "$@")
  awk -v a="$before" -v b="$after" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.2f", (b-a)/(e-s)}'
}
# shellcheck disable=SC2086
MCPU=$(cpu_of "$M_SINK" "$DAEMON"); MSSH=$(cpu_of "$M_SINK" $MASTERS); LCPU=$(cpu_of "$L_SINK" "$SSHL")
echo "| CPU during bulk, cores: mutagen daemon / its ssh master / the ssh -L client | | $LCPU | $MCPU / $MSSH | |"
"$MUTAGEN" forward list | grep -E "Connections|Last error" || true
