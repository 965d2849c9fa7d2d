//! The arena planner: after load it lays out, once, every buffer a run needs inside one caller-given
//! arena, so that `esnn_model_arena_bytes` is exact and a run allocates nothing.
//!
//! Arena layout (byte offsets from the 64-byte aligned start; each buffer 64-byte aligned):
//!   Context                        the run's handle (engine.zig)
//!   input      u8  (H, W, C_p)     the model input of the current timestep
//!   per layer  u8  (OH, OW, Cout_p) activations of the current timestep (not for neuron none)
//!   per layer  i32 (OH, OW, Cout_p) membrane state, kept across timesteps (if / lif only)
//!   per layer  i32 (synaptic)       potentials of timestep 0 for layers that read only the model
//!                                   input: reused while the same frame repeats (input_timesteps 1)
//!   per layer  u8  (frame)          the padded input of a conv (kernels/conv2d_dense.zig, frame.zig);
//!                                   its border is set to the pad values once at context init
//!   static ops u64 (layers)         the synaptic ops of those potentials
//!   output     i32 (OH, OW, Cout_p) the last layer's output summed over the timesteps of a sample
//!   potentials i32                  the largest synaptic (pre-pool) tensor; shared by all layers
//!   pooled     i32                  the largest pooled tensor; shared
//!   mid        i32                  the largest separable intermediate (pre-pool pixels, Cmid_p); shared
//!   events     Event / Quad         the largest event list one kernel gathers (conv2d: every input
//!                                   pixel's non-zero quads and their order, kernels/conv2d_sparse.zig); shared
//! Every layer's activations stay live for the whole timestep (a later `add` may read any earlier
//! layer), so they are not overlapped; the shared buffers are used by one layer at a time.

const std = @import("std");
const limits = @import("limits.zig");
const model_zig = @import("model.zig");
const conv2d_sparse = @import("kernels/conv2d_sparse.zig");

const Layer = model_zig.Layer;
const Model = model_zig.Model;
const Event = model_zig.Event;

/// Bytes of the context struct at the start of the arena (engine.zig asserts it fits).
pub const context_bytes = 512;

const Cursor = struct {
    used: u64,

    fn take(cursor: *Cursor, bytes: u64) u64 {
        const offset = cursor.used;
        cursor.used = limits.alignUp(cursor.used + bytes, limits.buffer_alignment);
        return offset;
    }
};

/// Fill `model.plan` and each layer's activation / state offsets.
pub fn plan(model: *Model, layers: []Layer) void {
    var cursor: Cursor = .{ .used = context_bytes };
    model.plan.input_offset = cursor.take(model.input.valuesPadded());
    var potentials_values_max: u64 = 0;
    var pooled_values_max: u64 = 0;
    var mid_values_max: u64 = 0;
    var events_max: u64 = 0;
    for (layers) |*layer| {
        const output_values = layer.output.valuesPadded();
        if (layer.neuron != .none) layer.activation_offset = cursor.take(output_values);
        if (layer.neuron.isSpiking()) layer.state_offset = cursor.take(output_values * @sizeOf(i32));
        if (layer.usesFrame()) layer.frame_offset = cursor.take(layer.frameBytes());
        if (layer.readsOnlyModelInput()) layer.static_offset = cursor.take(layer.synaptic.valuesPadded() * @sizeOf(i32));
        potentials_values_max = @max(potentials_values_max, layer.synaptic.valuesPadded());
        if (layer.pool != .none) pooled_values_max = @max(pooled_values_max, output_values);
        if (layer.kind == .separable2d) {
            mid_values_max = @max(mid_values_max, layer.synaptic.pixels() * layer.depthwiseChannelsPadded());
        }
        events_max = @max(events_max, eventsMax(layer));
    }
    model.plan.potentials_offset = cursor.take(potentials_values_max * @sizeOf(i32));
    model.plan.pooled_offset = cursor.take(pooled_values_max * @sizeOf(i32));
    model.plan.mid_offset = cursor.take(mid_values_max * @sizeOf(i32));
    model.plan.events_offset = cursor.take(events_max * @sizeOf(Event));
    model.plan.events_max = events_max;
    model.plan.static_ops_offset = cursor.take(layers.len * @sizeOf(u64));
    model.plan.output_offset = cursor.take(layers[layers.len - 1].output.valuesPadded() * @sizeOf(i32));
    model.plan.used_bytes = cursor.used;
}

/// The most events one kernel call of this layer gathers at once.
fn eventsMax(layer: *const Layer) u64 {
    return switch (layer.kind) {
        // every quad of the sample, plus the slack of the branch-free compaction (kernels/vector.zig)
        .dense => layer.input.pixels() * layer.input.channelQuads() + limits.channel_lanes / limits.quad_channels,
        // every pixel's list of non-zero quads (kernels/conv2d_sparse.zig); a narrow conv needs none
        .input_conv2d, .conv2d => if (layer.isNarrowConv()) 0 else conv2d_sparse.entriesMax(layer),
        .separable2d => layer.depthwiseChannelsPadded(), // one pixel's intermediate channels
        .depthwise2d, .add, .concat => 0,
    };
}
