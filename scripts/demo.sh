#!/usr/bin/env bash
# Sets everything up and runs the built-in demo (see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build
exec /usr/bin/python3 scripts/demo.py build/popgate
