#!/usr/bin/env bash
# Build the fuzzing library: the engine in ReleaseSafe (safety checks on) with coverage counters
# (zig -ffuzz), plus coverage.c, as one shared library for the atheris targets.
#
#   native/fuzz/build.sh [OUT_DIR] [NATIVE_DIR]     default OUT_DIR /tmp/fuzz-build, NATIVE_DIR native/
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-/tmp/fuzz-build}"
src="${2:-$here/..}"
mkdir -p "$out"
zig=(python -m ziglang)
(cd "$src" && "${zig[@]}" build-obj -OReleaseSafe -ffuzz -fPIC src/exports.zig --name edgesnn_fuzz \
    -femit-bin="$out/edgesnn_fuzz.o")
"${zig[@]}" cc -O1 -fPIC -c "$here/coverage.c" -o "$out/coverage.o"
"${zig[@]}" cc -shared "$out/edgesnn_fuzz.o" "$out/coverage.o" -o "$out/libedgesnn_fuzz.so"
# the device runner's frame handling (native/runner/fuzz.zig) with the engine it drives, for fuzz_frames.py
(cd "$src" && "${zig[@]}" build-obj -OReleaseSafe -ffuzz -fPIC --dep engine -Mroot=runner/fuzz.zig \
    -Mengine=src/exports.zig --name runner_fuzz -femit-bin="$out/runner_fuzz.o")
"${zig[@]}" cc -shared "$out/runner_fuzz.o" "$out/coverage.o" -o "$out/libedgesnn_runner_fuzz.so"
echo "$out/libedgesnn_fuzz.so"
