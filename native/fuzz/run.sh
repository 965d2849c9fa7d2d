#!/usr/bin/env bash
# The long fuzz runs: both targets side by side for SECONDS each, restarting after a finding so the
# run goes on; outputs under /tmp/fuzz-load/ and /tmp/fuzz-run/ (corpus/, crashes/, log.txt).
#
#   native/fuzz/run.sh [SECONDS=2700] [NATIVE_DIR]      NATIVE_DIR default: a snapshot of git HEAD's native/
#   nohup native/fuzz/run.sh 2700 > /tmp/fuzz-run.sh.log 2>&1 &
#
# Results: `native/fuzz/report.py` sums executions, coverage and findings from the logs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds="${1:-2700}"
src="${2:-}"
if [[ -z "$src" ]]; then  # fuzz what is committed, not a file another edit left half-written
    src=/tmp/fuzz-src
    rm -rf "$src" && mkdir -p "$src"
    git -C "$root" archive HEAD native | tar -x -C "$src"
    git -C "$root" rev-parse HEAD > /tmp/fuzz-src/COMMIT
    src="$src/native"
fi
"$here/build.sh" /tmp/fuzz-build "$src"
python "$here/seeds.py" /tmp/fuzz-seeds
# The instrumented Zig code reaches its thread-locals through initial-exec TLS; a library loaded by
# dlopen needs room for them in glibc's static TLS surplus.
export GLIBC_TUNABLES=glibc.rtld.optional_static_tls=2000000
export EDGESNN_FUZZ_LIB=/tmp/fuzz-build/libedgesnn_fuzz.so

fuzz() {  # target max_len
    local target="$1" max_len="$2" out="/tmp/fuzz-$1"
    mkdir -p "$out/corpus" "$out/crashes"
    local end=$(( $(date +%s) + seconds ))
    while (( $(date +%s) < end )); do
        local left=$(( end - $(date +%s) ))
        nice -n 10 python "$here/fuzz_$target.py" "$out/corpus" "/tmp/fuzz-seeds/$target" \
            -max_len="$max_len" -timeout=10 -rss_limit_mb=3000 -max_total_time="$left" \
            -print_final_stats=1 -artifact_prefix="$out/crashes/" >> "$out/log.txt" 2>&1 || \
            echo "== fuzz_$target stopped with status $? at $(date -u +%FT%TZ); restarting" >> "$out/log.txt"
    done
    echo "== fuzz_$target done at $(date -u +%FT%TZ)" >> "$out/log.txt"
}

date -u +"fuzzing started %FT%TZ for ${seconds}s per target" | tee /tmp/fuzz-started.txt
fuzz load 16384 &
fuzz run 4096 &
wait
date -u +"fuzzing finished %FT%TZ"
