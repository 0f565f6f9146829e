# Shared by the bench scripts: the seeded tree of ../shared/recipes/peer-bench.sh and the
# one-byte flip. Source it; needs python3.

# generate DIR FILES BIG [BIGMB]: the tree of ../shared/recipes/peer-bench.sh (seeded).
generate() {
  python3 - "$1" "$2" "$3" "${4:-50}" <<'PY'
import os, random, sys
root, n, nbig, bigmb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(12345)
for i in range(n):
    d = os.path.join(root, f"d{i % 20:02d}", f"e{(i // 20) % 25:02d}", f"g{(i // 500) % 4}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randint(64, 4096)))
os.makedirs(os.path.join(root, "big"), exist_ok=True)
for k in range(nbig):
    r = random.Random(1000 + k)
    with open(os.path.join(root, "big", f"big{k}.bin"), "wb") as f:
        for _ in range(bigmb):
            f.write(r.randbytes(1 << 20))
PY
}

# flip_file FILE K: flips one byte in the middle of FILE (distinct offset per K) and gives it a
# distinct whole-second mtime (rsync's quick check misses same-second, same-size edits).
flip_file() {
  python3 - "$1" "$2" <<'PY'
import os, sys, time
path, k = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(0, 2); offset = f.tell() // 2 + k * 4099
    f.seek(offset); byte = f.read(1); f.seek(offset); f.write(bytes([byte[0] ^ 0xFF]))
t = int(time.time()) + 10 + k
os.utime(path, (t, t))
PY
}

# now: the time in seconds, with nanoseconds.
# measure LABEL SETUP CMD: SETUP untimed, CMD timed, REPS times (needs REPS and B); prints a
# table row with the median, min and max.
# row LABEL VALUE [MIN] [MAX]: prints a table row as it is.
now() { date +%s.%N; }
measure() {
  local label="$1" setup="$2" cmd="$3" times=() t0 t1
  for _ in $(seq 1 "$REPS"); do
    eval "$setup"
    t0=$(now); eval "$cmd" > "$B/last.out" 2>&1 || { echo "FAILED: $label"; cat "$B/last.out"; exit 1; }; t1=$(now)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b-a}')")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v l="$label" '{a[NR]=$1} END {
    m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
    printf "| %-48s | %9.1f ms | %9.1f | %9.1f |\n", l, m*1000, a[1]*1000, a[NR]*1000 }'
}
row() { printf "| %-48s | %12s | %9s | %9s |\n" "$1" "$2" "${3:-}" "${4:-}"; }

# latency FROM TO [SEED]: edits EDITS random files under FROM, polls TO for each new content.
# Each direction of a run needs its own SEED (default 4242): the same seed would write what
# the other direction already propagated, and every sample would be instant.
latency() {
  python3 - "$1" "$2" "$EDITS" "${3:-4242}" <<'PY'
import os, random, sys, time
src, dst, edits, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
files = sorted(os.path.relpath(os.path.join(d, f), src)
               for d, _, fs in os.walk(src) for f in fs if f.endswith(".txt"))
rng = random.Random(seed)
samples = []
for i in range(edits):
    rel = rng.choice(files)
    content = f"edit {i} {rng.random()}\n".encode() * rng.randint(1, 40)
    target = os.path.join(dst, rel)
    start = time.perf_counter()
    with open(os.path.join(src, rel), "wb") as f:
        f.write(content)
    deadline = start + 30
    while True:
        try:
            with open(target, "rb") as f:
                if f.read() == content:
                    break
        except OSError:
            pass
        if time.perf_counter() > deadline:
            sys.exit(f"edit {i} of {rel} never arrived")
        time.sleep(0.0002)
    samples.append(time.perf_counter() - start)
    time.sleep(0.05)
samples.sort()
pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1000
print(f"{pick(0.5):.1f} {pick(0.95):.1f} {samples[-1] * 1000:.1f}")
PY
}

# start_sshd DIR: a private sshd on a free loopback port, as the test fixture makes it (own
# keys, publickey only); sets S (DIR), PORT, SSH (an ssh command line for the alias benchhost)
# and exports MUTAGEN_SSH_PATH (a directory whose ssh uses that configuration). Stop it with
# kill "$(cat "$S/sshd.pid")".
start_sshd() {
  S="$1"; mkdir -p "$S/bin"; chmod 711 "$S"
  ssh-keygen -q -t ed25519 -N '' -f "$S/host"; ssh-keygen -q -t ed25519 -N '' -f "$S/client"
  cp "$S/client.pub" "$S/authorized_keys"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$S/host.pub")" > "$S/known_hosts"
  cat > "$S/sshd_config" <<CFG
Port $PORT
ListenAddress 127.0.0.1
HostKey $S/host
AuthorizedKeysFile $S/authorized_keys
AuthenticationMethods publickey
PermitRootLogin prohibit-password
AllowUsers $(id -un)
UsePAM no
StrictModes no
UseDNS no
PidFile $S/sshd.pid
MaxSessions 200
CFG
  cat > "$S/ssh_config" <<CFG
Host benchhost
  HostName 127.0.0.1
  Port $PORT
  User $(id -un)
  IdentityFile $S/client
  IdentitiesOnly yes
  UserKnownHostsFile $S/known_hosts
  StrictHostKeyChecking yes
  KexAlgorithms curve25519-sha256
  LogLevel ERROR
CFG
  printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$S/ssh_config" > "$S/bin/ssh"; chmod 755 "$S/bin/ssh"
  mkdir -p /run/sshd
  /usr/sbin/sshd -f "$S/sshd_config" -E "$S/sshd.log"
  export MUTAGEN_SSH_PATH="$S/bin"
  SSH="ssh -F $S/ssh_config"
}
