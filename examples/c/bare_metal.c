/* bare_metal.c: edgesnn on a microcontroller (Cortex-M4): no libc, no heap, no file system.
 *
 * The model is linked into flash as a byte array (examples/c/embed.py writes model_data.h);
 * the loaded model, the arena and the output are static arrays sized by compile-time constants
 * and checked against what the engine reports. Board code calls esnn_demo_classify() and does
 * what it likes with the class (qemu_arm_start.c prints it under qemu-arm -cpu cortex-m4).
 * Build: examples/c/build_cortex_m4.sh.
 */
#include <stddef.h>
#include <stdint.h>

#include "edgesnn.h"
#include "model_data.h" /* esnn_model_file[], esnn_input_frame[] */

#ifndef ESNN_MODEL_BYTES
#define ESNN_MODEL_BYTES (48 * 1024) /* loaded model; the file's weights are unpacked here */
#endif
#ifndef ESNN_ARENA_BYTES
#define ESNN_ARENA_BYTES (48 * 1024) /* one inference context */
#endif
#ifndef ESNN_PLAN
#define ESNN_PLAN ESNN_PLAN_LEAN /* the arena plan that needs the least memory (docs/c-api.md) */
#endif
#ifndef ESNN_OUTPUT_VALUES_MAX
#define ESNN_OUTPUT_VALUES_MAX 64
#endif
#ifndef ESNN_TIMESTEPS
#define ESNN_TIMESTEPS 1
#endif

static uint8_t model_memory[ESNN_MODEL_BYTES];
static uint8_t arena[ESNN_ARENA_BYTES];
static int32_t potentials[ESNN_OUTPUT_VALUES_MAX]; /* int32 (OH, OW, C) */

/* The class of esnn_input_frame (argmax, first on ties), or -1 - status when something failed.
 * *potentials_out / *count_out: the output potentials. */
int32_t esnn_demo_classify(const int32_t **potentials_out, size_t *count_out) {
    char message[128];
    size_t model_bytes = 0;
    int status = esnn_model_memory_bytes(esnn_model_file, ESNN_MODEL_FILE_BYTES, &model_bytes, message,
                                         sizeof message);
    if (status != ESNN_OK) return -1 - status;
    if (model_bytes > sizeof model_memory) return -1 - ESNN_ERROR_LIMIT;
    const esnn_model *model = NULL;
    status = esnn_model_load_plan(esnn_model_file, ESNN_MODEL_FILE_BYTES, model_memory, sizeof model_memory,
                                  ESNN_PLAN, &model, message, sizeof message);
    if (status != ESNN_OK) return -1 - status;
    if (esnn_model_arena_bytes(model) > sizeof arena) return -1 - ESNN_ERROR_LIMIT;
    esnn_context *context = NULL;
    status = esnn_context_init(model, arena, sizeof arena, &context, message, sizeof message);
    if (status != ESNN_OK) return -1 - status;

    uint32_t input_shape[4], output_shape[3];
    esnn_model_input_shape(model, input_shape);
    esnn_model_output_shape(model, output_shape);
    size_t input_values = (size_t)input_shape[0] * input_shape[1] * input_shape[2];
    size_t output_values = (size_t)output_shape[0] * output_shape[1] * output_shape[2];
    if (input_values != ESNN_INPUT_FRAME_BYTES || output_values > ESNN_OUTPUT_VALUES_MAX) {
        return -1 - ESNN_ERROR_ARGUMENT;
    }
    status = esnn_run(context, esnn_input_frame, input_values, 1, ESNN_TIMESTEPS, potentials, output_values, NULL, 0);
    if (status != ESNN_OK) return -1 - status;

    size_t best = 0;
    for (size_t i = 1; i < output_values; i++) {
        if (potentials[i] > potentials[best]) best = i;
    }
    *potentials_out = potentials;
    *count_out = output_values;
    return (int32_t)best;
}
