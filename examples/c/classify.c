/* classify.c: run one input through an .esnn model with the edgesnn C API and print its class.
 *
 *   classify MODEL.esnn INPUT.u8 [TIMESTEPS]
 *
 * INPUT.u8 holds one input frame, uint8 in H, W, C order (the model's input shape), presented at
 * every one of TIMESTEPS timesteps (default 1). Prints the class (the argmax over the flattened
 * output potentials, first index on ties, as Model.predict) and the potentials:
 *
 *   class 3
 *   potentials -120 44 ... (OH*OW*C values)
 *
 * No heap: the file, the loaded model, the arena and the output live in static arrays whose sizes
 * are compile-time constants (override with -DESNN_ARENA_BYTES=... etc.). Build: examples/c/build.sh.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "edgesnn.h"
#include "read_file.h"

#ifndef ESNN_FILE_BYTES_MAX
#define ESNN_FILE_BYTES_MAX (1 << 20) /* the largest .esnn file this program reads */
#endif
#ifndef ESNN_MODEL_BYTES
#define ESNN_MODEL_BYTES (1 << 20) /* memory of the loaded model (esnn_model_memory_bytes) */
#endif
#ifndef ESNN_ARENA_BYTES
#define ESNN_ARENA_BYTES (1 << 20) /* one inference context (esnn_model_arena_bytes) */
#endif
#ifndef ESNN_INPUT_VALUES_MAX
#define ESNN_INPUT_VALUES_MAX (64 * 1024) /* H * W * C of one input frame */
#endif
#ifndef ESNN_OUTPUT_VALUES_MAX
#define ESNN_OUTPUT_VALUES_MAX 4096 /* OH * OW * C of the output potentials */
#endif

static uint8_t file_bytes[ESNN_FILE_BYTES_MAX];      /* the .esnn file as read */
static uint8_t model_memory[ESNN_MODEL_BYTES];       /* the loaded model; outlives every context */
static uint8_t arena[ESNN_ARENA_BYTES];              /* one context: buffers and spiking state */
static uint8_t input[ESNN_INPUT_VALUES_MAX];         /* uint8 (H, W, C) */
static int32_t potentials[ESNN_OUTPUT_VALUES_MAX];   /* int32 (OH, OW, C) */

/* Index of the largest value, the first one on ties. */
static size_t argmax(const int32_t *values, size_t count) {
    size_t best = 0;
    for (size_t i = 1; i < count; i++) {
        if (values[i] > values[best]) best = i;
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL.esnn INPUT.u8 [TIMESTEPS]\n", argv[0]);
        return 2;
    }
    uint32_t timesteps = argc == 4 ? (uint32_t)strtoul(argv[3], NULL, 10) : 1;
    char message[256];

    long file_length = read_file(argv[1], file_bytes, sizeof file_bytes);
    if (file_length < 0) return 1;
    size_t model_bytes = 0;
    int status = esnn_model_memory_bytes(file_bytes, (size_t)file_length, &model_bytes, message, sizeof message);
    if (status != ESNN_OK) {
        fprintf(stderr, "error: %s: %s: %s\n", argv[1], esnn_status_name(status), message);
        return 1;
    }
    if (model_bytes > sizeof model_memory) {
        fprintf(stderr, "error: the model needs %zu bytes of model memory; rebuild with -DESNN_MODEL_BYTES=%zu\n",
                model_bytes, model_bytes);
        return 1;
    }
    const esnn_model *model = NULL;
    status = esnn_model_load(file_bytes, (size_t)file_length, model_memory, sizeof model_memory, &model, message,
                             sizeof message);
    if (status != ESNN_OK) {
        fprintf(stderr, "error: %s: %s: %s\n", argv[1], esnn_status_name(status), message);
        return 1;
    }

    size_t arena_bytes = esnn_model_arena_bytes(model); /* exact: what this model's context needs */
    if (arena_bytes > sizeof arena) {
        fprintf(stderr, "error: the model needs %zu arena bytes; rebuild with -DESNN_ARENA_BYTES=%zu\n", arena_bytes,
                arena_bytes);
        return 1;
    }
    esnn_context *context = NULL;
    status = esnn_context_init(model, arena, sizeof arena, &context, message, sizeof message);
    if (status != ESNN_OK) {
        fprintf(stderr, "error: context: %s: %s\n", esnn_status_name(status), message);
        return 1;
    }

    uint32_t input_shape[4], output_shape[3]; /* {H, W, C, input_bits}, {OH, OW, C} */
    esnn_model_input_shape(model, input_shape);
    esnn_model_output_shape(model, output_shape);
    size_t input_values = (size_t)input_shape[0] * input_shape[1] * input_shape[2];
    size_t output_values = (size_t)output_shape[0] * output_shape[1] * output_shape[2];
    if (input_values > sizeof input || output_values > sizeof potentials / sizeof potentials[0]) {
        fprintf(stderr, "error: input %zu / output %zu values exceed ESNN_INPUT_VALUES_MAX / ESNN_OUTPUT_VALUES_MAX\n",
                input_values, output_values);
        return 1;
    }
    long input_length = read_file(argv[2], input, sizeof input);
    if (input_length < 0) return 1;
    if ((size_t)input_length != input_values) {
        fprintf(stderr, "error: %s has %ld bytes, the model input (%u, %u, %u) needs %zu\n", argv[2], input_length,
                input_shape[0], input_shape[1], input_shape[2], input_values);
        return 1;
    }

    status = esnn_run(context, input, input_values, 1, timesteps, potentials, output_values, NULL, 0);
    if (status != ESNN_OK) {
        fprintf(stderr, "error: run: %s: %s\n", esnn_status_name(status), esnn_context_message(context));
        return 1;
    }
    printf("class %zu\npotentials", argmax(potentials, output_values));
    for (size_t i = 0; i < output_values; i++) printf(" %d", (int)potentials[i]);
    printf("\narena_bytes %zu of %zu\nmemory_bytes %zu of %zu\n", arena_bytes, sizeof arena, model_bytes,
           sizeof model_memory);
    return 0;
}
