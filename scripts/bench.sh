#!/usr/bin/env bash
# Benchmark: direct Dovecot vs popgate (no plugins) vs nginx's mail proxy, then with TLS
# (plain client -> implicit TLS upstream, and implicit TLS on both sides) direct POP3S vs
# popgate vs stunnel4, in one run.
#
#   scripts/bench.sh              full run (about 7 minutes), writes bench/results.md
#   scripts/bench.sh --quick      smoke run (about 80 seconds)
#   scripts/bench.sh --no-tls     plain part only; --tls-only: TLS part only
#   scripts/bench.sh --help       all options (bench/run_bench.py)
#
# Builds popgate and the load generator in Release mode in build-bench/ first
# (BENCH_BUILD_DIR to change it; POPGATE_BIN / LOADGEN_BIN to use other binaries and
# skip the build). Needs root (Dovecot's mail user, nginx's `user root`) and the
# Debian packages of scripts/setup.sh (stunnel4 for the TLS part). See bench/README.md.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BENCH_BUILD_DIR:-$repo/build-bench}"

if [[ -z "${POPGATE_BIN:-}" || -z "${LOADGEN_BIN:-}" ]]; then
  if [[ ! -f "$build/build.ninja" ]]; then
    cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
  fi
  # popgate_add_header: the .so plugin of the popgate-so target (tests/so_plugin).
  ninja -C "$build" popgate popgate_loadgen popgate_add_header popgate_python_package _popgate >/dev/null
  export POPGATE_BIN="${POPGATE_BIN:-$build/popgate}"
  export LOADGEN_BIN="${LOADGEN_BIN:-$build/popgate_loadgen}"
fi

# 1,000 idle sessions through a proxy need about 2,000 descriptors in the proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec /usr/bin/python3 "$repo/bench/run_bench.py" "$@"
