/* edgesnn.h: the C API of the edgesnn native engine (native/src/exports.zig).
 *
 * Load an .esnn model (docs/format.md; versions 2.0 and 1.0) into memory you own, ask how many arena bytes one
 * inference context needs, give it that memory (a static array works), and run. The engine never
 * allocates. A loaded model is immutable and may be shared by threads; each thread runs its own
 * context. Every call returns an esnn_status; failures write a NUL-terminated message naming the
 * problem into the buffer you pass (or, for runs, keep it in the context).
 *
 *   size_t need;
 *   esnn_model_memory_bytes(bytes, len, &need, msg, sizeof msg);
 *   esnn_model_load(bytes, len, model_memory, need, &model, msg, sizeof msg);
 *   esnn_context_init(model, arena, esnn_model_arena_bytes(model), &ctx, msg, sizeof msg);
 *   esnn_run(ctx, input, input_values, 1, timesteps, out, out_values, NULL, 0);
 */
#ifndef EDGESNN_H
#define EDGESNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ESNN_ABI_VERSION 1

typedef enum esnn_status {
    ESNN_OK = 0,
    ESNN_ERROR_ARGUMENT = 1,  /* NULL pointer, bad count, too small buffer */
    ESNN_ERROR_TRUNCATED = 2, /* the bytes end before the file says they do */
    ESNN_ERROR_MAGIC = 3,     /* not an .esnn file */
    ESNN_ERROR_VERSION = 4,   /* a major version other than 2 and 1 */
    ESNN_ERROR_CHECKSUM = 5,  /* a CRC-32 does not match */
    ESNN_ERROR_SECTION = 6,   /* section table */
    ESNN_ERROR_LAYER = 7,     /* model or layer record: kinds, inputs, shapes, bits, geometry */
    ESNN_ERROR_TENSOR = 8,    /* tensor slot offset, length or alignment */
    ESNN_ERROR_RANGE = 9,     /* a parameter outside its range */
    ESNN_ERROR_OVERFLOW = 10, /* the int32 overflow bound is exceeded */
    ESNN_ERROR_LIMIT = 11,    /* a named engine limit is exceeded */
    ESNN_ERROR_INPUT = 12     /* an input value above 2^input_bits - 1 */
} esnn_status;

typedef struct esnn_model esnn_model;     /* opaque, lives in the model memory you gave */
typedef struct esnn_context esnn_context; /* opaque, lives at the start of its arena */

/* Per-layer statistics of one run call: totals over its samples and timesteps (docs/semantics.md). */
typedef struct esnn_layer_stats {
    uint64_t input_events;
    uint64_t input_size;
    uint64_t output_events;
    uint64_t output_size;
    uint64_t synaptic_ops;
} esnn_layer_stats;

uint32_t esnn_abi_version(void);
const char *esnn_status_name(int status);

/* Validate the file and report the bytes esnn_model_load needs (any alignment). */
int esnn_model_memory_bytes(const uint8_t *bytes, size_t bytes_len, size_t *memory_bytes,
                            char *message, size_t message_bytes);

/* This build's {Model, Layer} record sizes, and esnn_model_memory_bytes as a build with other sizes
 * (a 32-bit target's esnn_record_bytes) would report it: exact program figures before flashing. */
extern const uint32_t esnn_record_bytes[2];
int esnn_model_memory_bytes_for(const uint8_t *bytes, size_t bytes_len, const uint32_t record_bytes[2],
                                uint64_t *memory_bytes, char *message, size_t message_bytes);

/* Validate and load. `memory` must outlive the model; `bytes` need not. */
int esnn_model_load(const uint8_t *bytes, size_t bytes_len, void *memory, size_t memory_bytes,
                    const esnn_model **model_out, char *message, size_t message_bytes);

/* The same, keeping arena plan `plan` (esnn_model_load keeps ESNN_PLAN_FAST; docs/c-api.md). */
#define ESNN_PLAN_FAST 0 /* the default: frames painted once, the model input and a potentials cache kept */
#define ESNN_PLAN_LEAN 1 /* the least memory: frames repainted, the input copied in each timestep, no cache */
int esnn_model_load_plan(const uint8_t *bytes, size_t bytes_len, void *memory, size_t memory_bytes, int plan,
                         const esnn_model **model_out, char *message, size_t message_bytes);

size_t esnn_model_arena_bytes(const esnn_model *model); /* exact, alignment slack included */
size_t esnn_model_plan_arena_bytes(const esnn_model *model, int plan); /* either plan's; 0: bad plan */
uint32_t esnn_model_layer_count(const esnn_model *model);
int esnn_model_input_shape(const esnn_model *model, uint32_t shape_out[4]);  /* H, W, C, input_bits */
int esnn_model_output_shape(const esnn_model *model, uint32_t shape_out[3]); /* H, W, C */

/* Lay a context out in `arena` (any alignment, at least esnn_model_arena_bytes). */
int esnn_context_init(const esnn_model *model, void *arena, size_t arena_bytes,
                      esnn_context **context_out, char *message, size_t message_bytes);
const char *esnn_context_message(esnn_context *context); /* the last run's error, "" if none */

/* Run a batch. input: uint8 (batch, input_timesteps, H, W, C), input_timesteps 1 (the same input at
 * every timestep) or `timesteps`; values <= 2^input_bits - 1. output: int32 (batch, OH, OW, C) of
 * the last layer (docs/semantics.md, "A run"). stats: NULL, or layer_count entries, overwritten. */
int esnn_run_batch(esnn_context *context, const uint8_t *input, size_t input_values, uint32_t batch,
                   uint32_t input_timesteps, uint32_t timesteps, int32_t *output, size_t output_values,
                   esnn_layer_stats *stats, size_t stats_count);

/* esnn_run_batch over time (docs/semantics.md, "Over time and early exit"). trace: NULL, or int32
 * (batch, timesteps, OH, OW, C): row t is the output after timesteps 0..t. early_exit_margin: 0, or
 * a margin >= 1: a sample stops after the first timestep at which its largest output value leads the
 * second largest by at least the margin (its output and later trace rows are those of that timestep;
 * stats count only the timesteps run). timesteps_used: NULL, or `batch` entries, the timesteps each
 * sample ran. */
int esnn_run_batch_trace(esnn_context *context, const uint8_t *input, size_t input_values, uint32_t batch,
                         uint32_t input_timesteps, uint32_t timesteps, int32_t early_exit_margin,
                         int32_t *output, size_t output_values, int32_t *trace, size_t trace_values,
                         uint32_t *timesteps_used, size_t timesteps_used_count, esnn_layer_stats *stats,
                         size_t stats_count);

/* One sample: esnn_run_batch with batch = 1. */
int esnn_run(esnn_context *context, const uint8_t *input, size_t input_values, uint32_t input_timesteps,
             uint32_t timesteps, int32_t *output, size_t output_values, esnn_layer_stats *stats,
             size_t stats_count);

/* Bind a batch's buffers (the arguments of esnn_run_batch, checked as it checks them) to the context
 * once; esnn_run_bound then runs that batch on whatever its input holds now: the per-call path of a
 * caller that reuses its buffers (an interpreter's invoke). The buffers must stay valid while bound;
 * a new bind replaces the old one, a failed one leaves none. */
int esnn_context_bind(esnn_context *context, const uint8_t *input, size_t input_values, uint32_t batch,
                      uint32_t input_timesteps, uint32_t timesteps, int32_t *output, size_t output_values,
                      esnn_layer_stats *stats, size_t stats_count);
int esnn_run_bound(esnn_context *context); /* ESNN_ERROR_ARGUMENT when no batch is bound */

/* Streaming (docs/c-api.md, "Streaming"): a window every `hop_frames` input rows (frames), each output
 * bit-exact with esnn_run on that window, computing only the rows of each layer that new frames
 * complete. For models valid along time (no padding on the rows), chains of convolutions ending in a
 * global average pool or a dense layer, then dense layers; others get ESNN_ERROR_LAYER and the reason. */
typedef struct esnn_stream esnn_stream;
int esnn_stream_bytes(const esnn_model *model, uint32_t hop_frames, size_t *bytes_out, char *message,
                      size_t message_bytes);
int esnn_stream_init(const esnn_model *model, uint32_t hop_frames, void *memory, size_t memory_bytes,
                     esnn_stream **stream_out, char *message, size_t message_bytes);
/* frames: uint8 (k, W, C), k = frame_values / (W * C) rows of the model input; outputs: int32
 * (windows, OH, OW, C), room for every window the k frames complete; windows_out: their count. */
int esnn_stream_push(esnn_stream *stream, const uint8_t *frames, size_t frame_values, int32_t *outputs,
                     size_t output_values, uint32_t *windows_out);
int esnn_stream_reset(esnn_stream *stream); /* forget the frames pushed: a new stream */
const char *esnn_stream_message(esnn_stream *stream); /* the last push's error, "" if none */

#ifdef __cplusplus
}
#endif

#endif /* EDGESNN_H */
