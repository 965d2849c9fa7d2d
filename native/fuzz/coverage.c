/* Hands the edgesnn engine's coverage counters to libFuzzer (the one inside atheris).
 *
 * `zig build-obj -ffuzz` instruments Zig code with LLVM's inline 8-bit counters (section
 * __sancov_cntrs) and a PC table (__sancov_pcs1, one address per counter), but, unlike clang,
 * emits no constructor that registers them: Zig's own fuzzer finds them by their section symbols.
 * This file, linked into the fuzzing build of libedgesnn, does the registration on request, so a
 * libFuzzer loaded by Python (atheris) sees the engine's edges and steers towards new ones.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

extern uint8_t __start___sancov_cntrs[], __stop___sancov_cntrs[];
extern uintptr_t __start___sancov_pcs1[], __stop___sancov_pcs1[];

/* Zig's instrumentation records the lowest stack address here (Zig's fuzzer defines it). */
__thread uintptr_t __sancov_lowest_stack;

typedef void (*esnn_fuzz_counters_init)(uint8_t *start, uint8_t *stop);
typedef void (*esnn_fuzz_pcs_init)(const uintptr_t *start, const uintptr_t *stop);

/* Register the counters (and, if pcs_init is not NULL, a libFuzzer PC table of {pc, flags} pairs
 * built from Zig's one-address-per-counter table). Returns the number of counters, or -1 when the
 * two tables disagree. Call once, before fuzzing starts. */
long esnn_fuzz_register_coverage(esnn_fuzz_counters_init counters_init, esnn_fuzz_pcs_init pcs_init) {
    size_t counter_count = (size_t)(__stop___sancov_cntrs - __start___sancov_cntrs);
    size_t pc_count = (size_t)(__stop___sancov_pcs1 - __start___sancov_pcs1);
    if (counter_count != pc_count) return -1;
    counters_init(__start___sancov_cntrs, __stop___sancov_cntrs);
    if (pcs_init != NULL) {
        uintptr_t *pairs = calloc(2 * pc_count, sizeof *pairs); /* {pc, flags}[pc_count], lives forever */
        if (pairs == NULL) return -1;
        for (size_t i = 0; i < pc_count; i++) pairs[2 * i] = __start___sancov_pcs1[i];
        pcs_init(pairs, pairs + 2 * pc_count);
    }
    return (long)counter_count;
}
