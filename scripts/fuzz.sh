#!/usr/bin/env bash
# Runs the libFuzzer targets (tests/fuzz) for SECONDS seconds each.
#
#   scripts/fuzz.sh [SECONDS]      (default 60)
#
# Configures a separate clang build in build-fuzz (POPGATE_FUZZ=ON), builds only the
# fuzz targets (clang may not compile the rest of the tree) and runs each one on a copy
# of its seed corpus, so new corpus entries never land in the repository. Fails on any
# crash, leak or invariant violation; the crashing input is kept in
# build-fuzz/fuzz-out/<target>/ and its path printed. A fixed crash's input belongs in
# tests/fuzz/corpus/<name>/ (STYLE.md).
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS]" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${POPGATE_FUZZ_BUILD:-$root/build-fuzz}"
cc="${CC_FUZZ:-clang-14}"
cxx="${CXX_FUZZ:-clang++-14}"
# Each target <name>_fuzz runs on a copy of tests/fuzz/corpus/<name>.
targets=(command_fuzz multiline_fuzz headers_fuzz capa_fuzz sasl_fuzz status_fuzz spamd_fuzz
  config_fuzz)
declare -A corpus=([command_fuzz]=command [multiline_fuzz]=multiline [headers_fuzz]=headers
  [capa_fuzz]=capa [sasl_fuzz]=sasl [status_fuzz]=status [spamd_fuzz]=spamd
  [config_fuzz]=config)

generator=()
if command -v ninja >/dev/null 2>&1 && [ ! -f "$build/Makefile" ]; then
  generator=(-G Ninja)
fi

mkdir -p "$build"
CC="$cc" CXX="$cxx" cmake -S "$root" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DPOPGATE_FUZZ=ON -DPOPGATE_TESTS=ON >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  echo "fuzz.sh: configure failed" >&2
  exit 1
}
cmake --build "$build" --target "${targets[@]}" -j2

status=0
for target in "${targets[@]}"; do
  out="$build/fuzz-out/$target"
  rm -rf "$out"
  mkdir -p "$out/corpus" "$out/artifacts"
  cp -R "$root/tests/fuzz/corpus/${corpus[$target]}/." "$out/corpus/"
  echo "== $target: ${seconds}s on a copy of tests/fuzz/corpus/${corpus[$target]}"
  # -max_len: enough for overlong lines (255-octet cap, multi-KB content lines).
  if "$build/$target" "$out/corpus" \
      -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
      >"$out/log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$out/log" || true
    echo "== $target: ok"
  else
    status=1
    tail -n 60 "$out/log" >&2
    echo "== $target: FAILED; inputs in $out/artifacts:" >&2
    ls -l "$out/artifacts" >&2
  fi
done
exit "$status"
