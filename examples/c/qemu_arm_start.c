/* qemu_arm_start.c: the "board" for bare_metal.c under qemu-arm -cpu cortex-m4 (user mode).
 *
 * Entry point, printing and exit through the two Linux system calls qemu-arm emulates (svc 0:
 * r7 = 4 write, r7 = 1 exit). On a real board this file is the vector table and a UART.
 * Prints what examples/c/classify.c prints: "class N" and "potentials v0 v1 ...".
 */
#include <stddef.h>
#include <stdint.h>

int32_t esnn_demo_classify(const int32_t **potentials_out, size_t *count_out);

static long linux_syscall3(long number, long a, long b, long c) {
    register long r0 __asm__("r0") = a;
    register long r1 __asm__("r1") = b;
    register long r2 __asm__("r2") = c;
    /* r7 holds the syscall number but is also Thumb's frame pointer: save it around the call. */
    __asm__ volatile("push {r7}\n\tmov r7, %[number]\n\tsvc 0\n\tpop {r7}"
                     : "+r"(r0)
                     : "r"(r1), "r"(r2), [number] "r"(number)
                     : "memory");
    return r0;
}

static void write_text(const char *text, size_t length) { linux_syscall3(4, 1, (long)text, (long)length); }

static void write_int(int64_t value) {
    char digits[24];
    size_t at = sizeof digits;
    uint64_t magnitude = value < 0 ? (uint64_t)(-(value + 1)) + 1 : (uint64_t)value;
    do {
        digits[--at] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0);
    if (value < 0) digits[--at] = '-';
    write_text(digits + at, sizeof digits - at);
}

__attribute__((noreturn)) void _start(void) {
    const int32_t *potentials = NULL;
    size_t count = 0;
    int32_t result = esnn_demo_classify(&potentials, &count);
    if (result < 0) {
        write_text("error: status ", 14);
        write_int(-1 - result);
        write_text("\n", 1);
    } else {
        write_text("class ", 6);
        write_int(result);
        write_text("\npotentials", 11);
        for (size_t i = 0; i < count; i++) {
            write_text(" ", 1);
            write_int(potentials[i]);
        }
        write_text("\n", 1);
    }
    linux_syscall3(1, result < 0 ? 1 : 0, 0, 0);
    for (;;) {
    }
}
