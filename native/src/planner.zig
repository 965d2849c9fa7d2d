//! The arena planner: after load it lays out, once, every buffer a run needs inside one caller-given
//! arena, so that `esnn_model_arena_bytes` is exact and a run allocates nothing. Two plans, both
//! bit-exact (docs/c-api.md "Memory plans"); the loader computes both totals and keeps the offsets of
//! the one asked for:
//!
//!   fast  every padded-input frame keeps its painted border (written once at context init), the model
//!         input stays for the whole sample, and a layer that reads only the model input keeps its
//!         timestep-0 potentials for a repeated frame (spiking models only).
//!   lean  the same buffers minus those three: frames are scratch, repainted each time a layer uses
//!         one; the model input is copied in again at each timestep and freed after its last reader;
//!         no potentials cache (a layer that reads only the input recomputes them). For MCU targets.
//!
//! Arena layout (byte offsets from the 64-byte aligned start; each buffer 64-byte aligned):
//!
//! Kept for the whole context (one after another):
//!   Context                        the run's handle (engine.zig)
//!   static ops u64 (layers)        the synaptic ops of the cached potentials
//!   output     i32 (OH, OW, Cout_p) the last layer's output summed over the timesteps of a sample
//!   per layer  i32 (OH, OW, Cout_p) membrane state, kept across timesteps (if / lif only)
//!   fast: input u8 (H, W, C_p)     the model input of the current timestep
//!   fast: per layer i32 (synaptic) potentials of timestep 0 for layers that read only the model input,
//!                                  reused while the same frame repeats (spiking models)
//!   fast: per layer u8 (frame)     the padded input of a conv / depthwise stage (kernels/frame.zig)
//!
//! Then, sharing one region by their lifetimes within a timestep (TFLite Micro's greedy planner:
//! largest first, each at the lowest offset free over its whole lifetime), per layer i:
//!   activations u8 (OH, OW, Cout_p)  from its neuron stage (its synaptic stage when the kernel runs
//!                                    relu fused) to the synaptic stage of its last reader
//!   potentials  i32 (synaptic)       its synaptic and neuron stages; none when its kernel always
//!                                    runs relu fused (potentialsUnused: separable2d, narrow convs)
//!   pooled      i32 (OH, OW, Cout_p) its neuron stage (a pooling layer); also its synaptic stage
//!                                    when the pool sums rows as they are made (poolsByRows), whose
//!                                    potentials then hold one row
//!   events      Event / Quad         its synaptic stage: the event list one kernel call gathers, or
//!                                    separable2d's row buffers (kernels/separable2d.zig scratchBytes)
//!   lean: frame u8 (frame)           its synaptic stage
//!   lean: input u8 (H, W, C_p)       from the start of a timestep to its last reader
//! Every buffer in the shared region is written in full before it is read in a timestep (kernels
//! set every padded lane), so none relies on the zeroing at context init.

const std = @import("std");
const limits = @import("limits.zig");
const model_zig = @import("model.zig");
const conv2d_sparse = @import("kernels/conv2d_sparse.zig");
const neuron = @import("kernels/neuron.zig");
const separable2d = @import("kernels/separable2d.zig");

const Layer = model_zig.Layer;
const Model = model_zig.Model;
const Event = model_zig.Event;

/// Bytes of the context struct at the start of the arena (engine.zig asserts it fits).
pub const context_bytes = 512;

/// Which plan a loaded model keeps (esnn.h ESNN_PLAN_FAST / ESNN_PLAN_LEAN).
pub const Kind = model_zig.PlanKind;

const Cursor = struct {
    used: u64,

    fn take(cursor: *Cursor, bytes: u64) u64 {
        const offset = cursor.used;
        cursor.used = limits.alignUp(cursor.used + bytes, limits.buffer_alignment);
        return offset;
    }
};

/// Fill `model.plan` and each layer's buffer offsets for plan `kind`; record both plans' totals.
pub fn plan(model: *Model, layers: []Layer, kind: Kind) void {
    std.debug.assert(layers.len >= 1 and layers.len <= limits.layers_max);
    const other: Kind = if (kind == .fast) .lean else .fast;
    const other_bytes = layout(model, layers, other);
    const bytes = layout(model, layers, kind);
    model.plan.kind = kind;
    model.plan.used_bytes = bytes;
    model.plan.fast_bytes = if (kind == .fast) bytes else other_bytes;
    model.plan.lean_bytes = if (kind == .lean) bytes else other_bytes;
}

/// Lay every buffer of plan `kind` out; returns the bytes used from the aligned arena start.
fn layout(model: *Model, layers: []Layer, kind: Kind) u64 {
    var cursor: Cursor = .{ .used = context_bytes };
    model.plan.static_ops_offset = cursor.take(layers.len * @sizeOf(u64));
    model.plan.output_offset = cursor.take(layers[layers.len - 1].output.valuesPadded() * @sizeOf(i32));
    const caches = kind == .fast and hasSpikingLayer(layers);
    for (layers) |*layer| {
        layer.* = withoutOffsets(layer.*);
        if (layer.neuron.isSpiking()) layer.state_offset = cursor.take(layer.output.valuesPadded() * @sizeOf(i32));
        if (kind == .fast and layer.usesFrame()) layer.frame_offset = cursor.take(layer.frameBytes());
        if (caches and layer.readsOnlyModelInput()) {
            layer.static_offset = cursor.take(layer.synaptic.valuesPadded() * @sizeOf(i32));
        }
    }
    model.plan.input_offset = if (kind == .fast) cursor.take(model.input.valuesPadded()) else 0;
    model.plan.shared_offset = cursor.used;
    var shared: Shared = .{ .model = model, .layers = layers, .kind = kind, .base = cursor.used };
    shared.findLastReaders();
    return cursor.used + shared.place();
}

fn withoutOffsets(layer: Layer) Layer {
    var copy = layer;
    copy.activation_offset = 0;
    copy.state_offset = 0;
    copy.static_offset = 0;
    copy.frame_offset = 0;
    copy.potentials_offset = 0;
    copy.pooled_offset = 0;
    copy.events_offset = 0;
    return copy;
}

fn hasSpikingLayer(layers: []const Layer) bool {
    for (layers) |*layer| if (layer.neuron.isSpiking()) return true;
    return false;
}

/// Whether the engine hands this layer's kernel the relu stage (kernels/neuron.zig Fused), so that
/// its activations are written during its synaptic stage (engine.zig runLayer asks this too).
pub fn fusesRelu(layer: *const Layer) bool {
    const kernel_fuses = switch (layer.kind) {
        .input_conv2d, .conv2d, .depthwise2d, .separable2d, .add, .concat => true,
        .dense => false,
    };
    return kernel_fuses and neuron.Fused.eligible(layer);
}

/// Whether the layer's synaptic stage never writes its potentials buffer, so that the plan gives it
/// none: the engine hands it the relu (runLayer: fusesRelu, not the last layer) and its kernel always
/// completes it (separable2d; a narrow conv, which always runs conv2d_dense). engine.zig asks this too.
pub fn potentialsUnused(layer: *const Layer, is_last: bool) bool {
    const completes = layer.kind == .separable2d or layer.isNarrowConv();
    return completes and !is_last and fusesRelu(layer);
}

/// Whether the engine runs the layer's synaptic stage and its pool together, one row of potentials
/// at a time summed into the pooled values (engine.zig poolByRows), so that its potentials buffer
/// holds one row: an add or concat (per-pixel kinds) with a global average pool and no potentials
/// cache (static_offset, set before the shared region is laid out).
pub fn poolsByRows(layer: *const Layer) bool {
    return (layer.kind == .add or layer.kind == .concat) and layer.pool == .global_avg and layer.static_offset == 0;
}

/// The buffers of one layer that share the region.
const Role = enum { activations, potentials, pooled, events, frame };
const role_count = std.enums.values(Role).len;
/// Buffer ids: layer * role_count + role, then the model input (lean).
const buffers_max = limits.layers_max * role_count + 1;
const BufferId = u16;

comptime {
    std.debug.assert(buffers_max <= std.math.maxInt(BufferId));
}

/// Steps of a timestep: layer i's synaptic stage is step 2i, its neuron stage (pooling, neuron,
/// output sums) step 2i + 1.
const Step = u32;

const Shared = struct {
    model: *Model,
    layers: []Layer,
    kind: Kind,
    base: u64, // where the region starts
    /// The last step at which each layer's activations (and, at layers.len, the model input) are read.
    last_read: [limits.layers_max + 1]Step = undefined,

    fn findLastReaders(shared: *Shared) void {
        const layers = shared.layers;
        for (0..layers.len) |i| shared.last_read[i] = 2 * @as(Step, @intCast(i)) + 1; // its own neuron stage
        shared.last_read[layers.len] = 0;
        for (layers, 0..) |*layer, i| {
            for (layer.inputs[0..layer.input_count]) |producer| {
                const index: usize = if (producer == model_zig.input_model) layers.len else @intCast(producer);
                std.debug.assert(index == layers.len or index < i); // producers come first (loader.zig)
                shared.last_read[index] = @max(shared.last_read[index], 2 * @as(Step, @intCast(i)));
            }
        }
    }

    fn count(shared: *const Shared) usize {
        return shared.layers.len * role_count + 1;
    }

    fn isInput(shared: *const Shared, id: usize) bool {
        return id == shared.layers.len * role_count;
    }

    fn role(id: usize) Role {
        return @enumFromInt(id % role_count);
    }

    /// Bytes of buffer `id` in this plan, 0 when the layer has none (or it is kept for the context).
    fn bytes(shared: *const Shared, id: usize) u64 {
        if (shared.isInput(id)) return if (shared.kind == .lean) shared.model.input.valuesPadded() else 0;
        const layer = &shared.layers[id / role_count];
        return switch (role(id)) {
            .activations => if (layer.neuron != .none) layer.output.valuesPadded() else 0,
            .potentials => if (potentialsUnused(layer, id / role_count + 1 == shared.layers.len))
                0
            else if (poolsByRows(layer))
                @as(u64, layer.synaptic.w) * layer.synaptic.channelsPadded() * @sizeOf(i32) // one row
            else
                layer.synaptic.valuesPadded() * @sizeOf(i32),
            .pooled => if (layer.pool != .none) layer.output.valuesPadded() * @sizeOf(i32) else 0,
            .events => eventsMax(layer) * @sizeOf(Event),
            .frame => if (shared.kind == .lean and layer.usesFrame()) layer.frameBytes() else 0,
        };
    }

    fn firstStep(shared: *const Shared, id: usize) Step {
        if (shared.isInput(id)) return 0;
        const index = id / role_count;
        const synaptic = 2 * @as(Step, @intCast(index));
        return switch (role(id)) {
            .activations => if (fusesRelu(&shared.layers[index])) synaptic else synaptic + 1,
            .potentials, .events, .frame => synaptic,
            .pooled => if (poolsByRows(&shared.layers[index])) synaptic else synaptic + 1,
        };
    }

    fn lastStep(shared: *const Shared, id: usize) Step {
        if (shared.isInput(id)) return shared.last_read[shared.layers.len];
        const index = id / role_count;
        const synaptic = 2 * @as(Step, @intCast(index));
        return switch (role(id)) {
            .activations => shared.last_read[index],
            .events, .frame => synaptic,
            .potentials, .pooled => synaptic + 1,
        };
    }

    fn offset(shared: *Shared, id: usize) *u64 {
        if (shared.isInput(id)) return &shared.model.plan.input_offset;
        const layer = &shared.layers[id / role_count];
        return switch (role(id)) {
            .activations => &layer.activation_offset,
            .potentials => &layer.potentials_offset,
            .pooled => &layer.pooled_offset,
            .events => &layer.events_offset,
            .frame => &layer.frame_offset,
        };
    }

    fn overlaps(shared: *const Shared, a: usize, b: usize) bool {
        return shared.firstStep(a) <= shared.lastStep(b) and shared.firstStep(b) <= shared.lastStep(a);
    }

    /// Place every buffer, largest first, at the lowest region offset where it overlaps no buffer
    /// placed before it that is live at the same time. Returns the region's bytes.
    fn place(shared: *Shared) u64 {
        var done: std.StaticBitSet(buffers_max) = .empty;
        var placed: [buffers_max]BufferId = undefined; // ids in placement order
        var placed_count: usize = 0;
        var region_bytes: u64 = 0;
        while (shared.largestUnplaced(&done)) |id| {
            done.set(id);
            const size = limits.alignUp(shared.bytes(id), limits.buffer_alignment);
            const start = shared.lowestFree(id, size, placed[0..placed_count]);
            shared.offset(id).* = shared.base + start;
            region_bytes = @max(region_bytes, start + size);
            placed[placed_count] = @intCast(id);
            placed_count += 1;
        }
        return region_bytes;
    }

    /// The unplaced buffer with the most bytes (the lowest id among equals), null when none is left.
    fn largestUnplaced(shared: *const Shared, done: *const std.StaticBitSet(buffers_max)) ?usize {
        var best: ?usize = null;
        var best_bytes: u64 = 0;
        for (0..shared.count()) |id| {
            if (done.isSet(id)) continue;
            const size = shared.bytes(id);
            if (size > best_bytes) {
                best = id;
                best_bytes = size;
            }
        }
        return best;
    }

    /// The lowest region offset at which `size` bytes of `id` clear every placed buffer live with it.
    fn lowestFree(shared: *Shared, id: usize, size: u64, placed: []const BufferId) u64 {
        var live_buffer: [buffers_max]BufferId = undefined;
        var live_count: usize = 0;
        for (placed) |other| {
            if (!shared.overlaps(id, other)) continue;
            live_buffer[live_count] = other;
            live_count += 1;
        }
        const live = live_buffer[0..live_count];
        std.sort.pdq(BufferId, live, shared, lessByOffset);
        var start: u64 = 0;
        for (live) |other| {
            const other_start = shared.offset(other).* - shared.base;
            if (start + size <= other_start) break;
            start = @max(start, limits.alignUp(other_start + shared.bytes(other), limits.buffer_alignment));
        }
        return start;
    }

    fn lessByOffset(shared: *Shared, a: BufferId, b: BufferId) bool {
        return shared.offset(a).* < shared.offset(b).*;
    }
};

/// The most events one kernel call of this layer gathers at once.
pub fn eventsMax(layer: *const Layer) u64 {
    return switch (layer.kind) {
        // every quad of the sample, plus the slack of the branch-free compaction (kernels/vector.zig)
        .dense => layer.input.pixels() * layer.input.channelQuads() + limits.channel_lanes / limits.quad_channels,
        // every pixel's list of non-zero quads (kernels/conv2d_sparse.zig); a narrow conv needs none
        .input_conv2d, .conv2d => if (layer.isNarrowConv()) 0 else conv2d_sparse.entriesMax(layer),
        .separable2d => (separable2d.scratchBytes(layer) + @sizeOf(Event) - 1) / @sizeOf(Event), // its row buffers
        .depthwise2d, .add, .concat => 0,
    };
}
