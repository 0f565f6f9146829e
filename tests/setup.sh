#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust: OpenSSH's server and client, for the
# loopback sshd the SSH tests start themselves. Idempotent; needs root (or sudo) only when
# something is missing.
set -euo pipefail
if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq openssh-server openssh-client >/dev/null
echo "installed openssh-server for the ssh tests" >&2
