#!/usr/bin/env bash
# Builds weekday-rotation.wasm with componentize-py (PyPI), which bundles CPython for WASI.
set -euo pipefail
cd "$(dirname "$0")"
componentize-py -d ../../../wit -w keyplane:plugin/rotation-schedule@0.1.1 componentize app -o ../../target/weekday-rotation.wasm
