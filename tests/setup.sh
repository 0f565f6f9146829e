#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, and builds the static agent:
# - OpenSSH's server and client, for the loopback sshd the SSH tests start themselves;
# - systemd's systemd-analyze, which checks the unit of `mutagen daemon register`;
# - git, whose `git check-ignore` the --ignore-vcs-ignored tests compare against;
# - Docker's engine and busybox-static, for the private dockerd (and its offline busybox
#   image) the Docker tests start themselves; Podman, whose Docker-compatible API service
#   one test starts the same way;
# - the statically linked agent (debug profile), which the daemon under test finds beside
#   itself and installs into containers that have no glibc.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null \
  || missing+=(openssh-server openssh-client)
command -v dockerd >/dev/null && command -v docker >/dev/null || missing+=(docker.io)
command -v podman >/dev/null || missing+=(podman)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' \
  || missing+=(busybox-static)
command -v file >/dev/null || missing+=(file)
command -v openssl >/dev/null || missing+=(openssl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v git >/dev/null || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  echo "installed ${missing[*]} for the ssh and docker tests" >&2
fi
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --target x86_64-unknown-linux-gnu --bin mutagen-agent
