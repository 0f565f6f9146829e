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
