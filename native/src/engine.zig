//! A run: contexts in caller memory, the timestep loop, layer dispatch and statistics
//! (docs/semantics.md, "A run" and "Events and statistics"). Nothing here allocates: every buffer
//! is a slice of the caller's arena laid out by planner.zig.

const std = @import("std");
const limits = @import("limits.zig");
const model_zig = @import("model.zig");
const planner = @import("planner.zig");
const status_zig = @import("status.zig");
const vector = @import("kernels/vector.zig");
const conv2d = @import("kernels/conv2d.zig");
const depthwise2d = @import("kernels/depthwise2d.zig");
const separable2d = @import("kernels/separable2d.zig");
const dense = @import("kernels/dense.zig");
const add = @import("kernels/add.zig");
const concat = @import("kernels/concat.zig");
const pooling = @import("kernels/pooling.zig");
const neuron = @import("kernels/neuron.zig");
const frame_zig = @import("kernels/frame.zig");
const spike_kernels = @import("kernels/spikes.zig");

const Diagnostic = status_zig.Diagnostic;
const Error = Diagnostic.Error;
const Layer = model_zig.Layer;
const Model = model_zig.Model;
const LayerStats = model_zig.LayerStats;
const Event = model_zig.Event;

pub const context_magic: u32 = 0x5854_4345; // "ECTX"

/// One inference context: lives at the start of its arena; one thread uses it at a time.
pub const Context = struct {
    magic: u32 = context_magic,
    model: *const Model,
    arena: []align(limits.buffer_alignment) u8, // from the aligned start, plan.used_bytes long
    message: [limits.message_bytes_max]u8 = @splat(0),
    /// Non-zero values of the current timestep's model input (counted as it is loaded: the lean plan
    /// may reuse the input buffer before the statistics are taken).
    input_events: u64 = 0,
    /// The batch esnn_context_bind bound (checked there), which esnn_run_bound runs; null: none.
    bound: ?Batch = null,

    fn bytes(ctx: *Context, offset: u64, count: u64) []u8 {
        return ctx.arena[limits.usizeFrom(offset)..][0..limits.usizeFrom(count)];
    }

    fn ints(ctx: *Context, offset: u64, count: u64) []i32 {
        const piece = ctx.arena[limits.usizeFrom(offset)..][0..limits.usizeFrom(count * @sizeOf(i32))];
        return @as([*]i32, @ptrCast(@alignCast(piece.ptr)))[0..limits.usizeFrom(count)];
    }

    /// The layer's event list scratch (planner.eventsMax entries).
    fn events(ctx: *Context, layer: *const Layer) []Event {
        const count = planner.eventsMax(layer);
        const piece = ctx.arena[limits.usizeFrom(layer.events_offset)..][0..limits.usizeFrom(count * @sizeOf(Event))];
        return @as([*]Event, @ptrCast(@alignCast(piece.ptr)))[0..limits.usizeFrom(count)];
    }

    fn quads(ctx: *Context, layer: *const Layer) []model_zig.Quad {
        const count = planner.eventsMax(layer);
        const piece = ctx.arena[limits.usizeFrom(layer.events_offset)..][0..limits.usizeFrom(count * @sizeOf(model_zig.Quad))];
        return @as([*]model_zig.Quad, @ptrCast(@alignCast(piece.ptr)))[0..limits.usizeFrom(count)];
    }

    /// i32 (OH, OW, C_p) of the last layer: its output summed over the sample's timesteps.
    fn outputSums(ctx: *Context) []i32 {
        const model = ctx.model;
        return ctx.ints(model.plan.output_offset, model.outputLayer().output.valuesPadded());
    }

    /// The padded-input scratch of a conv or depthwise stage (empty for other layers and those that
    /// read their input directly), its border holding the pad values: the lean plan shares frames
    /// with other buffers, so it paints the border again at each use (the fast plan once, at init).
    fn frame(ctx: *Context, layer: *const Layer) []u8 {
        if (!layer.usesFrame()) return &.{};
        const scratch = ctx.bytes(layer.frame_offset, layer.frameBytes());
        if (ctx.model.plan.kind == .lean) {
            @memset(scratch, 0);
            frame_zig.paint(layer, scratch);
        }
        return scratch;
    }

    fn staticOps(ctx: *Context) []u64 {
        const plan = &ctx.model.plan;
        const piece = ctx.arena[limits.usizeFrom(plan.static_ops_offset)..][0 .. ctx.model.layers.len * @sizeOf(u64)];
        return @as([*]u64, @ptrCast(@alignCast(piece.ptr)))[0..ctx.model.layers.len];
    }

    fn activations(ctx: *Context, layer_index: i32) []u8 {
        const model = ctx.model;
        if (layer_index == model_zig.input_model) return ctx.bytes(model.plan.input_offset, model.input.valuesPadded());
        const layer = &model.layers[@intCast(layer_index)];
        std.debug.assert(layer.neuron != .none);
        return ctx.bytes(layer.activation_offset, layer.output.valuesPadded());
    }

    fn state(ctx: *Context, layer: *const Layer) []i32 {
        if (!layer.neuron.isSpiking()) return &.{};
        return ctx.ints(layer.state_offset, layer.output.valuesPadded());
    }
};

comptime {
    std.debug.assert(@sizeOf(Context) <= planner.context_bytes);
}

/// Lay a context out at the start of `arena` (any alignment, at least model.arenaBytes() long).
pub fn initContext(model: *const Model, arena: []u8, diag: *Diagnostic) Error!*Context {
    if (arena.len < model.arenaBytes()) {
        return diag.fail(.argument, "arena: {d} bytes given, this model needs {d} (esnn_model_arena_bytes)", .{ arena.len, model.arenaBytes() });
    }
    const start: usize = limits.usizeFrom(limits.alignUp(@intFromPtr(arena.ptr), limits.buffer_alignment) - @intFromPtr(arena.ptr));
    const aligned: []align(limits.buffer_alignment) u8 = @alignCast(arena[start..][0..limits.usizeFrom(model.plan.used_bytes)]);
    @memset(aligned, 0); // the padding lanes of the input, the frames and the sums start zero
    // Safety-checked builds fill the buffers shared by lifetime with garbage: none may rely on a zero
    // it did not write (tests/test_native_bitexact.py runs these builds on both plans).
    if (std.debug.runtime_safety) @memset(aligned[limits.usizeFrom(model.plan.shared_offset)..], 0xa5);
    const ctx: *Context = @ptrCast(aligned.ptr);
    ctx.* = .{ .model = model, .arena = aligned };
    if (model.plan.kind == .fast) { // the borders' pad values, once (the lean plan paints at each use)
        for (model.layers) |*layer| frame_zig.paint(layer, ctx.frame(layer));
    }
    return ctx;
}

/// The arguments of one batch run, as the C ABI passes them.
pub const Batch = struct {
    input: []const u8, // u8 (batch, input_timesteps, H, W, C)
    batch: u32,
    input_timesteps: u32, // 1 (the same input at every timestep) or `timesteps`
    timesteps: u32,
    output: []i32, // i32 (batch, OH, OW, C) of the last layer
    stats: ?[]LayerStats, // one per layer, overwritten with the totals of this run; null: not counted
    // Over time (docs/semantics.md, "Over time and early exit"; esnn_run_batch_trace):
    /// i32 (batch, timesteps, OH, OW, C): the output after every timestep; null: not kept.
    trace: ?[]i32 = null,
    /// > 0: a sample stops once its largest output value leads the second largest by this much.
    early_exit_margin: i32 = 0,
    /// (batch): the timesteps each sample ran; null: not reported.
    timesteps_used: ?[]u32 = null,
};

pub fn checkBatch(model: *const Model, batch: *const Batch, diag: *Diagnostic) Error!void {
    if (batch.batch < 1 or batch.batch > limits.batch_max) {
        return diag.fail(.argument, "batch {d}, expected 1..{d}", .{ batch.batch, limits.batch_max });
    }
    if (batch.timesteps < 1 or batch.timesteps > limits.timesteps_max) {
        return diag.fail(.argument, "timesteps {d}, expected 1..{d}", .{ batch.timesteps, limits.timesteps_max });
    }
    if (batch.input_timesteps != 1 and batch.input_timesteps != batch.timesteps) {
        return diag.fail(.argument, "input_timesteps {d}, expected 1 (the same input every timestep) or timesteps = {d}", .{
            batch.input_timesteps, batch.timesteps,
        });
    }
    const input_values = @as(u64, batch.batch) * batch.input_timesteps * model.input.values();
    if (batch.input.len != input_values) {
        return diag.fail(.argument, "input: {d} values given, (batch {d}, input_timesteps {d}, {d}, {d}, {d}) needs {d}", .{
            batch.input.len, batch.batch, batch.input_timesteps, model.input.h, model.input.w, model.input.c, input_values,
        });
    }
    const output_values = @as(u64, batch.batch) * model.outputLayer().output.values();
    if (batch.output.len != output_values) {
        return diag.fail(.argument, "output: {d} values given, the batch needs {d}", .{ batch.output.len, output_values });
    }
    if (batch.stats) |stats| {
        if (stats.len != model.layers.len) {
            return diag.fail(.argument, "stats: {d} entries given, the model has {d} layers", .{ stats.len, model.layers.len });
        }
    }
    if (batch.trace) |trace| {
        if (trace.len != output_values * batch.timesteps) {
            return diag.fail(.argument, "trace: {d} values given, (batch {d}, timesteps {d}, {d}, {d}, {d}) needs {d}", .{
                trace.len, batch.batch, batch.timesteps, model.outputLayer().output.h, model.outputLayer().output.w, model.outputLayer().output.c, output_values * batch.timesteps,
            });
        }
    }
    if (batch.early_exit_margin < 0) {
        return diag.fail(.argument, "early_exit_margin {d}, expected 0 (no early exit) or a margin >= 1", .{batch.early_exit_margin});
    }
    if (batch.timesteps_used) |used| {
        if (used.len != batch.batch) {
            return diag.fail(.argument, "timesteps_used: {d} entries given, the batch has {d} samples", .{ used.len, batch.batch });
        }
    }
}

/// Run every sample of the batch (samples are independent; state is reset for each).
pub fn runBatch(ctx: *Context, batch: *const Batch, diag: *Diagnostic) Error!void {
    const model = ctx.model;
    try checkBatch(model, batch, diag);
    if (batch.stats) |stats| @memset(stats, .{});
    const sample_input_values = @as(usize, batch.input_timesteps) * model.input.values();
    const sample_output_values: usize = @intCast(model.outputLayer().output.values());
    const sample_trace_values = sample_output_values * batch.timesteps;
    var sample: u32 = 0;
    while (sample < batch.batch) : (sample += 1) {
        const used = try runSample(ctx, .{
            .index = sample,
            .input = batch.input[sample * limits.usizeFrom(sample_input_values) ..][0..limits.usizeFrom(sample_input_values)],
            .input_timesteps = batch.input_timesteps,
            .timesteps = batch.timesteps,
            .output = batch.output[sample * sample_output_values ..][0..sample_output_values],
            .trace = if (batch.trace) |trace| trace[sample * sample_trace_values ..][0..sample_trace_values] else &.{},
            .early_exit_margin = batch.early_exit_margin,
        }, batch.stats, diag);
        if (batch.timesteps_used) |timesteps_used| timesteps_used[sample] = used;
    }
}

const Sample = struct {
    index: u32,
    input: []const u8, // (input_timesteps, H, W, C)
    input_timesteps: u32,
    timesteps: u32,
    output: []i32, // (OH, OW, C)
    trace: []i32 = &.{}, // (timesteps, OH, OW, C), or empty: not kept
    early_exit_margin: i32 = 0,
};

/// Returns the timesteps the sample ran (`timesteps`, or fewer with an early exit).
fn runSample(ctx: *Context, sample: Sample, stats: ?[]LayerStats, diag: *Diagnostic) Error!u32 {
    const model = ctx.model;
    for (model.layers) |*layer| @memset(ctx.state(layer), 0);
    // Without channel padding the last layer's sums build up in the caller's output itself (no copy).
    // The first timestep sets them, so they need no clearing.
    const output_layer = model.outputLayer();
    const in_place = output_layer.output.c == output_layer.output.channelsPadded();
    const sums = if (in_place) sample.output else ctx.outputSums();
    const frame_values: usize = @intCast(model.input.values());
    var events: EventCounts = undefined; // each entry set by its layer before a consumer reads it
    var t: u32 = 0;
    while (t < sample.timesteps) : (t += 1) {
        // the lean plan frees the input buffer after its last reader: a repeated frame is copied again
        if (t < sample.input_timesteps or model.plan.kind == .lean) {
            const frame_index = @min(t, sample.input_timesteps - 1);
            try loadFrame(ctx, sample.input[frame_index * frame_values ..][0..frame_values], sample.index, t, diag);
        }
        // a single timestep has nothing to reuse: no cached potentials (so relu may run fused)
        const frame: Frame = if (sample.input_timesteps > 1 or sample.timesteps == 1)
            .changes
        else if (t == 0) .first_of_repeated else .repeated;
        for (0..model.layers.len) |index| {
            const layer_stats: ?*LayerStats = if (stats) |s| &s[index] else null;
            runLayer(ctx, @intCast(index), frame, sample.timesteps, .{ .values = sums, .first = t == 0 }, &events, layer_stats);
        }
        if (sample.trace.len != 0 or sample.early_exit_margin != 0) {
            if (overTime(output_layer, sums, sample, t)) {
                t += 1;
                break;
            }
        }
    }
    if (!in_place) copyOutput(output_layer, sums, sample.output);
    return t;
}

/// After timestep t: the output so far into the trace (rows t.. when the sample stops, so a stopped
/// sample's later rows repeat its output); whether the early exit stops the sample here.
fn overTime(layer: *const Layer, sums: []const i32, sample: Sample, t: u32) bool {
    const stop = sample.early_exit_margin != 0 and t + 1 < sample.timesteps and leadsBy(layer, sums, sample.early_exit_margin);
    if (sample.trace.len != 0) {
        const values: usize = @intCast(layer.output.values());
        const last = if (stop) sample.timesteps else t + 1;
        for (t..last) |row| copyOutput(layer, sums, sample.trace[row * values ..][0..values]);
    }
    return stop;
}

/// Whether the largest output value leads the second largest by at least `margin` (ties lead by 0;
/// a single output value leads nothing).
fn leadsBy(layer: *const Layer, sums: []const i32, margin: i32) bool {
    const channels = layer.output.c;
    const channels_padded = layer.output.channelsPadded();
    var first: i64 = std.math.minInt(i64);
    var second: i64 = std.math.minInt(i64);
    var pixel: usize = 0;
    while (pixel < layer.output.pixels()) : (pixel += 1) {
        for (sums[pixel * channels_padded ..][0..channels]) |value| {
            if (value > first) {
                second = first;
                first = value;
            } else if (value > second) {
                second = value;
            }
        }
    }
    if (second == std.math.minInt(i64)) return false;
    return first - second >= margin;
}

/// Copy one timestep of the model input into the padded input buffer, checking its range.
fn loadFrame(ctx: *Context, frame: []const u8, sample: u32, t: u32, diag: *Diagnostic) Error!void {
    const model = ctx.model;
    const channels = model.input.c;
    const channels_padded = model.input.channelsPadded();
    const buffer = ctx.activations(model_zig.input_model);
    const input_max = model.inputMax();
    if (input_max < std.math.maxInt(u8) and vector.maxU8(frame) > input_max) {
        const index = for (frame, 0..) |value, i| {
            if (value > input_max) break i;
        } else unreachable;
        const pixel = index / channels;
        return diag.fail(.input, "input sample {d} timestep {d} pixel ({d}, {d}) channel {d} is {d}, above 2^input_bits - 1 = {d}", .{
            sample, t, pixel / model.input.w, pixel % model.input.w, index % channels, frame[index], input_max,
        });
    }
    if (channels == channels_padded) {
        @memcpy(buffer, frame); // one copy, not one per pixel
    } else {
        if (model.plan.kind == .lean) @memset(buffer, 0); // shared: its padding lanes were other buffers'
        frame_zig.copyPixels(buffer, channels_padded, frame, channels, channels, limits.usizeFrom(model.input.pixels()));
    }
    ctx.input_events = vector.countNonZeroU8(buffer);
}

/// Whether this timestep's model input is new, or the single frame of the sample repeated.
const Frame = enum { changes, first_of_repeated, repeated };

/// The last layer's output summed over the timesteps of a sample; `first`: the first timestep sets it.
const Sums = struct { values: []i32, first: bool };

/// Output events of every layer at the current timestep: a consumer's input events are its
/// producer's output events (its activations), so the statistics count each tensor once.
const EventCounts = [limits.layers_max]u64;

fn runLayer(ctx: *Context, layer_index: u32, frame: Frame, timesteps: u32, sums: Sums, events: *EventCounts, stats: ?*LayerStats) void {
    const model = ctx.model;
    const layer = &model.layers[layer_index];
    const is_last = layer_index + 1 == model.layers.len;
    var inputs_buffer: [limits.inputs_max][]const u8 = undefined;
    const inputs = inputs_buffer[0..layer.input_count];
    for (inputs, layer.inputs[0..layer.input_count]) |*input, producer| input.* = ctx.activations(producer);

    // A layer that reads only a repeated input frame computes its potentials once per sample.
    const static = layer.static_offset != 0 and frame != .changes;
    const potentials: []i32 = if (static)
        ctx.ints(layer.static_offset, layer.synaptic.valuesPadded())
    else if (planner.potentialsUnused(layer, is_last))
        @as([]i32, &.{}) // the kernel runs relu fused and writes none (the plan gives the layer none)
    else if (planner.poolsByRows(layer))
        ctx.ints(layer.potentials_offset, @as(u64, layer.synaptic.w) * layer.synaptic.channelsPadded()) // one row
    else
        ctx.ints(layer.potentials_offset, layer.synaptic.valuesPadded());
    const static_ops = &ctx.staticOps()[layer_index];
    // relu straight from the kernel's registers when no pooling, output sums or cache read the potentials
    var fused: neuron.Fused = .{ .layer = layer, .activations = &.{} };
    const fuse = !static and !is_last and planner.fusesRelu(layer);
    if (fuse) fused.activations = ctx.activations(@intCast(layer_index));
    const by_rows = planner.poolsByRows(layer); // the synaptic stage and the pool at once
    // a spike conv gathering into a plain 2x2 max pool writes the pooled potentials only, at the start
    // of its potentials buffer (live until the neuron stage; the pooled one may share the kernel's scratch)
    const gather_pools = !static and !by_rows and spike_kernels.mayGatherMax2x2(layer) and
        spike_kernels.gathersMax2x2(layer, inputEvents(layer, inputs, events)); // (events counted only then)
    const synaptic_ops = if (static and frame == .repeated)
        static_ops.*
    else if (by_rows)
        poolByRows(layer, inputs, potentials, ctx.ints(layer.pooled_offset, layer.output.valuesPadded()))
    else if (gather_pools)
        spike_kernels.conv2dMax2x2(layer, inputs[0], inputEvents(layer, inputs, events), potentials[0..limits.usizeFrom(layer.output.valuesPadded())], std.mem.sliceAsBytes(ctx.quads(layer)))
    else
        synapticStage(ctx, layer, inputs, events, potentials, if (fuse) &fused else null);
    if (static) static_ops.* = synaptic_ops;

    var pooled: []const i32 = potentials;
    if (layer.pool != .none) {
        // static potentials pool to the same values every timestep: pooled once, kept in their place
        const cached = static and layer.output.valuesPadded() <= layer.synaptic.valuesPadded();
        if (cached and frame == .repeated) {
            pooled = potentials[0..limits.usizeFrom(layer.output.valuesPadded())];
        } else if (gather_pools) {
            pooled = potentials[0..limits.usizeFrom(layer.output.valuesPadded())];
        } else if (by_rows) {
            pooled = ctx.ints(layer.pooled_offset, layer.output.valuesPadded());
        } else {
            const pooled_buffer = ctx.ints(layer.pooled_offset, layer.output.valuesPadded());
            pooling.run(layer, potentials, pooled_buffer);
            if (cached) @memcpy(potentials[0..pooled_buffer.len], pooled_buffer);
            pooled = pooled_buffer;
        }
    }
    const output_events = if (fused.done)
        vector.countNonZeroU8(fused.activations)
    else if (layer.neuron == .none)
        accumulatePotentials(pooled, sums)
    else
        fireNeurons(ctx, layer_index, timesteps, pooled, if (is_last) sums else null);

    events[layer_index] = output_events;
    if (stats) |s| {
        for (layer.inputs[0..layer.input_count], layer.input_shapes[0..layer.input_count]) |producer, shape| {
            s.input_events += if (producer == model_zig.input_model) ctx.input_events else events[@intCast(producer)];
            s.input_size += shape.values();
        }
        s.output_events += output_events;
        s.output_size += layer.output.values();
        s.synaptic_ops += synaptic_ops;
    }
}

/// An add or concat layer with a global average pool (planner.poolsByRows): its synaptic stage one
/// row at a time into `row` (the layer's potentials buffer holds one row), each row's spatial sum
/// added into `pooled` (wrapping, as pooling.zig sums: the same sum in any order). Returns the
/// synaptic operations.
fn poolByRows(layer: *const Layer, inputs: []const []const u8, row: []i32, pooled: []i32) u64 {
    var row_layer = layer.*; // the same layer on one row of its inputs
    row_layer.synaptic.h = 1;
    row_layer.input.h = 1;
    for (row_layer.input_shapes[0..layer.input_count]) |*shape| shape.h = 1;
    var row_inputs_buffer: [limits.inputs_max][]const u8 = undefined;
    const row_inputs = row_inputs_buffer[0..inputs.len];
    const channels_padded = layer.synaptic.channelsPadded();
    std.debug.assert(row.len == @as(usize, layer.synaptic.w) * channels_padded and pooled.len == channels_padded);
    if (layer.kind == .concat) if (concat.runPooled(layer, inputs, pooled)) |synaptic_ops| return synaptic_ops; // no rows
    @memset(pooled, 0);
    var synaptic_ops: u64 = 0;
    for (0..layer.synaptic.h) |y| {
        for (row_inputs, inputs, layer.input_shapes[0..inputs.len]) |*row_input, input, shape| {
            const row_bytes = @as(usize, shape.w) * shape.channelsPadded();
            row_input.* = input[y * row_bytes ..][0..row_bytes];
        }
        synaptic_ops += if (layer.kind == .add) add.run(&row_layer, row_inputs, row, null) else concat.run(&row_layer, row_inputs, row, null);
        var offset: usize = 0;
        while (offset < row.len) : (offset += vector.lanes) {
            const channel = offset % channels_padded;
            const sum: vector.VecI32 = pooled[channel..][0..vector.lanes].*;
            vector.storeVector(pooled, channel, sum +% @as(vector.VecI32, row[offset..][0..vector.lanes].*));
        }
    }
    return synaptic_ops;
}

/// The events of a layer's first input: its producer's output events, or counted on the model input.
fn inputEvents(layer: *const Layer, inputs: []const []const u8, events: *const EventCounts) u64 {
    const producer = layer.inputs[0];
    return if (producer == model_zig.input_model) vector.countNonZeroU8(inputs[0]) else events[@intCast(producer)];
}

/// The layer's synaptic stage into `potentials`; returns its synaptic operations.
/// `fused`: the relu stage, for a kernel that can run it on its registers (kernels/neuron.zig Fused).
/// `events`: the output events of the layers before (conv2d chooses its kernel by its input's).
fn synapticStage(ctx: *Context, layer: *const Layer, inputs: []const []const u8, events: *const EventCounts, potentials: []i32, fused: ?*neuron.Fused) u64 {
    return switch (layer.kind) {
        .input_conv2d, .conv2d => conv2d.run(
            layer,
            inputs[0],
            if (layer.isNarrowConv()) 0 else inputEvents(layer, inputs, events), // a narrow conv always runs dense
            potentials,
            ctx.quads(layer),
            ctx.frame(layer),
            fused,
        ),
        .depthwise2d => depthwise2d.run(layer, inputs[0], ctx.frame(layer), potentials, fused),
        .separable2d => separable2d.run(layer, inputs[0], potentials, std.mem.sliceAsBytes(ctx.events(layer)), fused),
        .dense => dense.run(layer, inputs[0], inputEvents(layer, inputs, events), potentials, ctx.quads(layer)),
        .add => add.run(layer, inputs, potentials, fused),
        .concat => concat.run(layer, inputs, potentials, fused),
    };
}

/// Neuron none (the last layer): sums = sat32(sums + P) (= P at the first timestep). Returns the
/// non-zero potentials.
fn accumulatePotentials(pooled: []const i32, sums_of: Sums) u64 {
    const sums = sums_of.values;
    std.debug.assert(pooled.len == sums.len);

    var nonzero: u64 = 0;
    var offset: usize = 0;
    while (offset < sums.len) : (offset += vector.lanes) {
        const potential: vector.VecI32 = pooled[offset..][0..vector.lanes].*;
        const sum: vector.VecI32 = if (sums_of.first) @splat(0) else sums[offset..][0..vector.lanes].*;
        vector.storeVector(sums, offset, sum +| potential); // saturating: sat32
        nonzero += std.simd.countTrues(potential != @as(vector.VecI32, @splat(0)));
    }
    return nonzero;
}

/// relu / if / lif into the layer's activations (at one of the sample's `timesteps`); the last
/// layer also adds them to the sums (sets them at the first timestep).
/// Returns the output events.
fn fireNeurons(ctx: *Context, layer_index: u32, timesteps: u32, pooled: []const i32, sums_of: ?Sums) u64 {
    const layer = &ctx.model.layers[layer_index];
    const activations = ctx.activations(@intCast(layer_index));
    const events = neuron.runTimesteps(layer, timesteps, pooled, ctx.state(layer), activations);
    if (sums_of) |sums| {
        const s = sums.values;
        var offset: usize = 0;
        while (offset < s.len) : (offset += vector.lanes) {
            const spikes: vector.VecU8 = activations[offset..][0..vector.lanes].*;
            const sum: vector.VecI32 = if (sums.first) @splat(0) else s[offset..][0..vector.lanes].*;
            vector.storeVector(s, offset, sum +% @as(vector.VecI32, spikes)); // <= timesteps * 255
        }
    }
    return events;
}

/// Copy the padded sums of the last layer into the caller's (OH, OW, C) output.
fn copyOutput(layer: *const Layer, sums: []const i32, output: []i32) void {
    const channels = layer.output.c;
    const channels_padded = layer.output.channelsPadded();
    if (channels == channels_padded) return @memcpy(output, sums); // one copy, not one per pixel
    var pixel: usize = 0;
    while (pixel < layer.output.pixels()) : (pixel += 1) {
        @memcpy(output[pixel * channels ..][0..channels], sums[pixel * channels_padded ..][0..channels]);
    }
}
