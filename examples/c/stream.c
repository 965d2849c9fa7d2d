/* stream.c: slide a model's window over a stream of input rows (frames) with the edgesnn C API's
 * streaming executor (docs/c-api.md, "Streaming"), as a device's audio loop would.
 *
 *   stream MODEL.esnn FRAMES.u8 HOP_FRAMES
 *
 * FRAMES.u8 holds frames one after another, each one row of the model input, uint8 (W, C). They are
 * pushed one at a time; every HOP_FRAMES frames, once the first window (H frames) is complete, the
 * window's output is printed (bit-exact with esnn_run on that window):
 *
 *   window 0 class 3 potentials -120 44 ...
 *
 * A model that does not stream (its last convolution neither pools globally nor feeds a dense layer,
 * say) gets the engine's reason and exit status 1.
 * No heap: the file, the model and the stream live in static arrays (sizes overridable with -D...).
 * Build: examples/c/build.sh.
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
#ifndef ESNN_STREAM_BYTES
#define ESNN_STREAM_BYTES (1 << 20) /* one stream (esnn_stream_bytes) */
#endif
#ifndef ESNN_FRAMES_BYTES_MAX
#define ESNN_FRAMES_BYTES_MAX (1 << 20) /* the frames file */
#endif
#ifndef ESNN_OUTPUT_VALUES_MAX
#define ESNN_OUTPUT_VALUES_MAX 4096 /* OH * OW * C of one window's output */
#endif

static uint8_t file_bytes[ESNN_FILE_BYTES_MAX];      /* the .esnn file as read */
static uint8_t model_memory[ESNN_MODEL_BYTES];       /* the loaded model; outlives the stream */
static uint8_t stream_memory[ESNN_STREAM_BYTES];     /* the stream: each layer's kept rows */
static uint8_t frames[ESNN_FRAMES_BYTES_MAX];        /* uint8 (k, W, C) */
static int32_t output[ESNN_OUTPUT_VALUES_MAX];       /* int32 (OH, OW, C) of one window */

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.esnn FRAMES.u8 HOP_FRAMES\n", argv[0]);
        return 2;
    }
    uint32_t hop_frames = (uint32_t)strtoul(argv[3], NULL, 10);
    char message[256];

    long file_length = read_file(argv[1], file_bytes, sizeof file_bytes);
    if (file_length < 0) return 1;
    size_t model_bytes = 0;
    int status = esnn_model_memory_bytes(file_bytes, (size_t)file_length, &model_bytes, message, sizeof message);
    if (status != ESNN_OK) {
        fprintf(stderr, "error: %s: %s\n", esnn_status_name(status), message);
        return 1;
    }
    if (model_bytes > sizeof model_memory) {
        fprintf(stderr, "error: the model needs %zu bytes of memory, this build has %zu\n", model_bytes,
                sizeof model_memory);
        return 1;
    }
    const esnn_model *model = NULL;
    status = esnn_model_load(file_bytes, (size_t)file_length, model_memory, sizeof model_memory, &model, message,
                             sizeof message);
    if (status != ESNN_OK) {
        fprintf(stderr, "error: %s: %s\n", esnn_status_name(status), message);
        return 1;
    }
    size_t stream_bytes = 0;
    status = esnn_stream_bytes(model, hop_frames, &stream_bytes, message, sizeof message);
    if (status != ESNN_OK) {
        fprintf(stderr, "error: the model does not stream (%s): %s\n", esnn_status_name(status), message);
        return 1;
    }
    esnn_stream *stream = NULL;
    status = esnn_stream_init(model, hop_frames, stream_memory, sizeof stream_memory, &stream, message,
                              sizeof message);
    if (status != ESNN_OK) {
        fprintf(stderr, "error: %s: %s\n", esnn_status_name(status), message);
        return 1;
    }
    uint32_t in_shape[4], out_shape[3];
    esnn_model_input_shape(model, in_shape);
    esnn_model_output_shape(model, out_shape);
    size_t frame_values = (size_t)in_shape[1] * in_shape[2];
    size_t output_values = (size_t)out_shape[0] * out_shape[1] * out_shape[2];
    if (output_values > ESNN_OUTPUT_VALUES_MAX) {
        fprintf(stderr, "error: the output has %zu values, this build holds %d\n", output_values,
                ESNN_OUTPUT_VALUES_MAX);
        return 1;
    }
    long frames_length = read_file(argv[2], frames, sizeof frames);
    if (frames_length < 0) return 1;
    if ((size_t)frames_length % frame_values != 0) {
        fprintf(stderr, "error: %s holds %ld bytes, not a whole number of frames of %zu\n", argv[2], frames_length,
                frame_values);
        return 1;
    }
    printf("stream_bytes %zu\n", stream_bytes);
    uint32_t window = 0;
    for (size_t offset = 0; offset < (size_t)frames_length; offset += frame_values) {
        uint32_t windows = 0; /* one frame completes at most one window */
        status = esnn_stream_push(stream, frames + offset, frame_values, output, output_values, &windows);
        if (status != ESNN_OK) {
            fprintf(stderr, "error: %s: %s\n", esnn_status_name(status), esnn_stream_message(stream));
            return 1;
        }
        if (windows == 0) continue;
        size_t best = 0;
        for (size_t i = 1; i < output_values; i++) {
            if (output[i] > output[best]) best = i;
        }
        printf("window %u class %zu potentials", window++, best);
        for (size_t i = 0; i < output_values; i++) printf(" %d", (int)output[i]);
        printf("\n");
    }
    return 0;
}
