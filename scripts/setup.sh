#!/usr/bin/env bash
# Installs every Debian package popgate needs to build, test, demo and benchmark.
# Idempotent; needs root (or sudo). Debian 12 (bookworm).
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git
  libboost-dev libboost-system-dev libssl-dev
  libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev
  python3 python3-dev python3-pytest pybind11-dev python3-mypy
  clang-14 libfuzzer-14-dev libclang-rt-14-dev clang-format
  # real peers for tests, demo and benchmark
  dovecot-core dovecot-pop3d
  curl fetchmail getmail6 mpop openssl
  spamassassin spamc spamd
  rspamd clamav-daemon clamav
  stunnel4 nginx-light libnginx-mod-mail
  procps psmisc
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  # --no-install-recommends keeps Dovecot's and nginx's packages from pulling in extras;
  # policy-rc.d stops Debian from starting system-wide dovecot/nginx/spamd on install:
  # the tests start their own, on loopback, on ports they pick.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "setup: all packages present"
