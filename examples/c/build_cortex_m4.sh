#!/usr/bin/env bash
# Build libedgesnn.a for a Cortex-M4 (thumb-freestanding-eabihf, no libc) and bare_metal.c with a
# model linked in, as an ELF for the board (or for qemu-arm, through qemu_arm_start.c).
#
#   examples/c/build_cortex_m4.sh MODEL.esnn INPUT.u8 [OUT_DIR] [-DESNN_TIMESTEPS=4 other -D flags]
#       OUT_DIR default examples/c/out/cortex-m4; gets lib/libedgesnn.a, include/edgesnn.h,
#       model_data.h and bare_metal
#   OPTIMIZE=ReleaseSafe ...     (default ReleaseSmall)
#   CPU=cortex_m7 ...            (default cortex_m4: another Thumb-2 core, e.g. the Cortex-M7 profile's)
#   qemu-arm -cpu cortex-a7 OUT_DIR/bare_metal      prints "class N" and the potentials
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
model="$1"
input="$2"
out="${3:-$here/out/cortex-m4}"
shift $(( $# < 3 ? $# : 3 ))
optimize="${OPTIMIZE:-ReleaseSmall}"
cpu="${CPU:-cortex_m4}"
target=(-target thumb-freestanding-eabihf -mcpu "$cpu")
mkdir -p "$out"
out="$(cd "$out" && pwd)"
zig=(python -m ziglang)
native="${EDGESNN_NATIVE_DIR:-$here/../../native}"  # another engine tree, e.g. a patched copy

(cd "$native" && "${zig[@]}" build static -Doptimize="$optimize" -Dtarget=thumb-freestanding-eabihf \
    -Dcpu="$cpu" --prefix "$out")
python "$here/embed.py" "$model" "$input" > "$out/model_data.h"
# No -lc: a freestanding target has no libc; Zig links only its compiler-rt (__aeabi_* helpers).
# --gc-sections: only the functions bare_metal.c's calls reach (the library has a section per function).
"${zig[@]}" build-exe "${target[@]}" -O"$optimize" --gc-sections "$@" -I "$out/include" -I "$out" \
    "$here/bare_metal.c" "$here/qemu_arm_start.c" "$out/lib/libedgesnn.a" -femit-bin="$out/bare_metal"
echo "$out/bare_metal"
