#!/usr/bin/env bash
# The long fuzz runs: the targets side by side for SECONDS each, restarting after a finding so the
# run goes on; outputs under $EDGESNN_FUZZ_WORK/fuzz-<target>/ (corpus/, crashes/, log.txt), the
# work folder /tmp unless set (two runs side by side each need their own).
#
#   native/fuzz/run.sh [SECONDS=2700] [NATIVE_DIR] [TARGETS="load run model"]   (also: frames, the runner's)
#       NATIVE_DIR default (or "-"): a snapshot of git HEAD's native/, not a half-edited tree
#   nohup native/fuzz/run.sh 2700 > /tmp/fuzz-run.sh.log 2>&1 &
#
# A corpus left by an earlier run is reused. `python native/fuzz/report.py` sums executions,
# coverage and findings from the logs (docs/fuzzing.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${EDGESNN_FUZZ_WORK:-/tmp}"
seconds="${1:-2700}"
src="${2:--}"
targets="${3:-load run model}"
label="$src"
if [[ "$src" == "-" ]]; then
    src="$work/fuzz-src"
    rm -rf "$src" && mkdir -p "$src"
    git -C "$root" archive HEAD native | tar -x -C "$src"
    git -C "$root" rev-parse HEAD > "$src/COMMIT"
    label="HEAD@$(git -C "$root" rev-parse --short HEAD)"
    src="$src/native"
fi
"$here/build.sh" "$work/fuzz-build" "$src"
python "$here/seeds.py" "$work/fuzz-seeds"
# The instrumented Zig code reaches its thread-locals through initial-exec TLS; a library loaded by
# dlopen needs room for them in glibc's static TLS surplus.
export GLIBC_TUNABLES=glibc.rtld.optional_static_tls=2000000
export EDGESNN_FUZZ_LIB="$work/fuzz-build/libedgesnn_fuzz.so"
export EDGESNN_RUNNER_FUZZ_LIB="$work/fuzz-build/libedgesnn_runner_fuzz.so"

fuzz() {  # target, then extra libFuzzer flags
    local target="$1" out="$work/fuzz-$1"
    shift
    mkdir -p "$out/corpus" "$out/crashes" "$work/fuzz-seeds/$target"
    local end=$(( $(date +%s) + seconds ))
    echo "== fuzz_$target on $label from $(date -u +%FT%TZ) for ${seconds}s" >> "$out/log.txt"
    while (( $(date +%s) < end )); do
        local left=$(( end - $(date +%s) ))
        nice -n 10 python "$here/fuzz_$target.py" "$out/corpus" "$work/fuzz-seeds/$target" "$@" -timeout=10 \
            -rss_limit_mb=3000 -max_total_time="$left" -print_final_stats=1 -artifact_prefix="$out/crashes/" \
            >> "$out/log.txt" 2>&1 || \
            echo "== fuzz_$target stopped with status $? at $(date -u +%FT%TZ); restarting" >> "$out/log.txt"
    done
    echo "== fuzz_$target done at $(date -u +%FT%TZ)" >> "$out/log.txt"
}

date -u +"fuzzing started %FT%TZ for ${seconds}s per target: $targets"
for target in $targets; do
    case "$target" in
        load) fuzz load -max_len=16384 & ;;
        run) fuzz run -max_len=4096 -len_control=0 & ;;
        model) fuzz model -max_len=4096 -len_control=0 & ;;
        frames) fuzz frames -max_len=65536 & ;;
        *) echo "unknown target $target (load, run, model, frames)" >&2; exit 2 ;;
    esac
done
wait
date -u +"fuzzing finished %FT%TZ"
