#!/usr/bin/env bash
# Sets everything up and runs every test: unit, fuzz-corpus replay, integration against
# a real Dovecot and real clients, the same again under ASan+UBSan, and a short
# libFuzzer run. This is the command README.md names and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== build (RelWithDebInfo)"
scripts/build.sh build

echo "== tests"
ctest --test-dir build --output-on-failure --timeout 900

echo "== ASan+UBSan build and tests"
scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DPOPGATE_SANITIZE=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 900

# Where threads meet: the hook threads that run plugins with a timeout, the chain that
# hands them work, the spamd client's sockets used from many sessions at once, and the
# Python runtime (calls queued from many threads, answered from Python's, reloads).
echo "== TSan build of the threaded unit tests"
cmake -S . -B build-tsan -G Ninja -DPython3_EXECUTABLE=/usr/bin/python3 \
  -DCMAKE_BUILD_TYPE=Debug -DPOPGATE_TSAN=ON >/dev/null
cmake --build build-tsan -j2 --target filter_test python_runtime_test popgate_python_package
# Without address-space randomisation: TSan's shadow memory refuses some layouts that
# newer kernels' randomisation produces ("unexpected memory mapping").
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
setarch "$(uname -m)" -R build-tsan/filter_test
POPGATE_PYTHONPATH="$PWD/build-tsan/python" setarch "$(uname -m)" -R build-tsan/python_runtime_test

if [ -x scripts/fuzz.sh ]; then
  echo "== libFuzzer, briefly"
  scripts/fuzz.sh "${POPGATE_FUZZ_SECONDS:-30}"
fi
echo "== all tests passed"
