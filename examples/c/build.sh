#!/usr/bin/env bash
# Build libedgesnn.a for TARGET and the classify and stream examples against it, with the Zig from PyPI.
#
#   examples/c/build.sh [TARGET] [OUT_DIR] [-DESNN_ARENA_BYTES=... other cc flags]
#       TARGET: native (default) | aarch64-linux-musl | any zig target with a libc
#       OUT_DIR: default examples/c/out/TARGET; gets lib/libedgesnn.a, include/edgesnn.h, classify, stream
#   OPTIMIZE=ReleaseSafe examples/c/build.sh     (default ReleaseFast; ReleaseSmall, Debug)
#
# A musl target links statically: the binary runs on any Linux of that architecture
# (qemu-aarch64 ./out/aarch64-linux-musl/classify model.esnn input.u8).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:-native}"
out="${2:-$here/out/$target}"
shift $(( $# < 2 ? $# : 2 ))
optimize="${OPTIMIZE:-ReleaseFast}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
zig=(python -m ziglang)
native="${EDGESNN_NATIVE_DIR:-$here/../../native}"  # another engine tree, e.g. a patched copy

(cd "$native" && "${zig[@]}" build static -Doptimize="$optimize" -Dtarget="$target" --prefix "$out")
static=()
[[ "$target" == *musl* ]] && static=(-static)
"${zig[@]}" cc -target "$target" "${static[@]}" -O2 -std=c11 -Wall -Wextra -Werror "$@" \
    -I "$out/include" "$here/classify.c" "$out/lib/libedgesnn.a" -o "$out/classify"
"${zig[@]}" cc -target "$target" "${static[@]}" -O2 -std=c11 -Wall -Wextra -Werror "$@" \
    -I "$out/include" "$here/stream.c" "$out/lib/libedgesnn.a" -o "$out/stream"
echo "$out/classify"
