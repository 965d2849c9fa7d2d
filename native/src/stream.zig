//! Streaming execution (docs/c-api.md, "Streaming"): a chain of convolutions then dense layers is run
//! on a sliding window of input rows (frames) without recomputing the window. For layers valid along
//! time (no padding on the rows; padding along the width is fine): Every row of every layer of a window equals a
//! row of the same layer in the window one cumulative stride later, so each layer keeps a ring of
//! its recent output rows and, when a frame arrives, computes only the rows that frame completes:
//! one row per layer and frame (fewer with a hop that shares a factor with the strides). Every
//! `hop_frames` frames the window's last spatial layer is reduced as the offline run reduces it
//! (its global average pool over the kept rows, or the dense layer reading them all) and the dense
//! head runs once. The rows are computed by the layers' own kernels, each given a copy of its layer
//! one output row high, so a window's output is bit-exact with esnn_run of the same window.
//!
//! Positions: the row of layer l that starts at input frame u reads the rows of its producer at
//! u + D_l * k (k < kernel_h), where D_l is the product of the strides along time before l; within a
//! window rows of l lie S_l = D_l * stride_h apart. Windows start at multiples of the hop h, so layer
//! l needs the positions that are multiples of g_l = gcd(h, S_l) and computes exactly those. They
//! fall into S_l / g_l phases (position / g_l mod phases); the rows one later row (of the next layer
//! or the window) reads are consecutive rows of one phase, kept twice in the phase's ring (at slot j
//! and j + kept) so that the last `kept` of them are one contiguous slice, the kernel's input.
//!
//! Padding along time: a layer that pads rows makes the rows near either end of a window depend on
//! where the window starts (they read the padding, or rows that did). The rows whose cone reaches no
//! padding are rows of the same layers run valid, computed by the rings as above (a row whose cone
//! starts `offset` frames after the window's first: padding shifts the cones, so a ring computes the
//! positions `base + m * g`); each window then computes, layer by layer, its top and bottom runs of
//! the other rows (`Edge`: the layer with its input the rows they read, padded along time as they
//! need; those rows lie side by side in the producer's window buffer, its edge rows of this window
//! with the clean rows they need copied in from its ring, or in the input ring, and are read in
//! place) and gathers the last layer's rows whole. Bit-exact again, at the cost of the edge rows
//! per window.
//!
//! Nothing allocates: the stream lives at the start of caller memory sized by `memoryBytes`.

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
const pooling = @import("kernels/pooling.zig");
const neuron = @import("kernels/neuron.zig");
const frame_zig = @import("kernels/frame.zig");

const Diagnostic = status_zig.Diagnostic;
const Error = Diagnostic.Error;
const Layer = model_zig.Layer;
const Model = model_zig.Model;

pub const stream_magic: u32 = 0x4d52_5453; // "STRM"

/// Frames between two windows, 1..hop_frames_max.
pub const hop_frames_max = 1 << 20;

/// What the last spatial layer's kept rows are: the potentials its global average pool sums, or
/// the activations the first dense layer reads as one (H, W, C) input.
const Tail = enum { pooled, flattened };

/// The rows one layer (or the model input) keeps: `phases` rings of 2 * `kept` rows each.
const Ring = struct {
    /// (phases, 2 * kept, row_bytes); rows of i32 potentials take whole 64-byte vectors, so theirs
    /// stay aligned for i32 access.
    data: []u8,
    row_bytes: usize,
    step: u32, // g: frames between the positions computed
    base: u32, // < g: row m starts at frame base + m * step
    spacing: u32, // S: frames between the rows of one window
    phases: u32, // S / g
    kept: u32, // rows kept per phase
    rows_done: u64 = 0, // rows computed

    fn slot(ring: *const Ring, m: u64, copy: u32) []u8 {
        const phase = m % ring.phases;
        const j = m / ring.phases;
        const index = phase * 2 * ring.kept + j % ring.kept + copy * ring.kept;
        const start = limits.usizeFrom(index) * ring.row_bytes;
        return ring.data[start..][0..ring.row_bytes];
    }

    /// After row m was written at its slot: the same bytes at the slot `kept` rows later.
    fn mirror(ring: *const Ring, m: u64) void {
        @memcpy(ring.slot(m, 1), ring.slot(m, 0));
    }

    /// The `n` (<= kept) rows of row m's phase that end with row m (m >= (n - 1) * phases), contiguous.
    fn lastRows(ring: *const Ring, m: u64, n: u32) []u8 {
        std.debug.assert(n <= ring.kept and m / ring.phases + 1 >= n and m < ring.rows_done);
        const phase = m % ring.phases;
        const j = m / ring.phases;
        const index = phase * 2 * ring.kept + (j + 1 - n) % ring.kept;
        const start = limits.usizeFrom(index) * ring.row_bytes;
        return ring.data[start..][0 .. ring.row_bytes * n];
    }

    /// The row starting at frame `position` (one this ring computes and still keeps).
    fn at(ring: *const Ring, position: u64) []u8 {
        std.debug.assert(position >= ring.base and (position - ring.base) % ring.step == 0);
        const m = (position - ring.base) / ring.step;
        std.debug.assert(m < ring.rows_done and m + @as(u64, ring.kept) * ring.phases >= ring.rows_done);
        return ring.slot(m, 0);
    }
};

/// One spatial layer run a row at a time.
const Stage = struct {
    /// The model's layer with its input `kernel_h` rows high and one output row (no pooling).
    layer: Layer,
    /// The model's own layer.
    model_layer: *const Layer,
    dilation: u32, // D: frames between the producer rows one row reads
    rows: Ring, // this layer's output rows: u8 activations, or i32 potentials (Tail.pooled's last)
    keeps_potentials: bool,
    frame: []u8, // the one-row layer's padded input (empty when it reads its input directly)
    // Models padded along time (see "Padding along time" in the file comment); unused otherwise.
    offset: i64, // the frame, relative to the window's first, where the cone of its row 0 starts
    clean_first: u32, // rows [clean_first, clean_end) of a window reach no padding: from `rows`
    clean_end: u32,
    edges: []Edge, // (2: rows [0, clean_first) and [clean_end, H) of every window; 0 unpadded)
    window: []u8, // (H, row) this window's rows of the layer: the edges and the clean rows next layer's edges read (last layer: all)
};

/// Consecutive rows of a window that reach the padding along time: the model's layer with its input
/// the rows they read and its output those rows, padded along time as the rows need.
const Edge = struct {
    layer: Layer,
    frame: []u8,
    first: u32, // first output row (of the window's H)
    count: u32, // output rows; 0: none
    input_first: i64, // first producer row read (of the producer's window rows)
    input_count: u32,
};

/// A dense layer after the spatial ones, run once per window.
const HeadStage = struct {
    layer: *const Layer,
    potentials: []i32, // (Cout_p)
    activations: []u8, // (Cout_p); empty for neuron none
};

pub const Stream = struct {
    magic: u32 = stream_magic,
    model: *const Model,
    hop_frames: u32,
    window_frames: u32, // model input H
    frame_values: usize, // W * C of one input frame
    frames_pushed: u64 = 0,
    input: Ring, // the model input's frames, channels padded
    stages: []Stage,
    tail: Tail,
    head: []HeadStage,
    pooled: []i32, // Tail.pooled: the last spatial layer's pool (Cout_p)
    pooled_activations: []u8, // its neuron stage (Cout_p); empty for neuron none (the model's output)
    padded: bool, // some layer pads along time: windows computed with their edges
    potentials: []i32, // scratch: one row (padded: one edge) of any stage's potentials
    events: []model_zig.Event, // scratch: the most any kernel call lists
    message: [limits.message_bytes_max]u8 = @splat(0),
};

/// The layout of a stream in its memory: byte offsets from the aligned start.
const Layout = struct {
    used: u64 = 0,

    fn take(layout: *Layout, bytes: u64) u64 {
        const offset = layout.used;
        layout.used = limits.alignUp(layout.used + bytes, limits.buffer_alignment);
        return offset;
    }
};

/// What `check` finds: the last spatial layer and how it ends.
const Shape = struct { spatial_count: u32, tail: Tail };

fn isSpatial(layer: *const Layer) bool {
    return switch (layer.kind) {
        .input_conv2d, .conv2d, .depthwise2d, .separable2d => true,
        .dense, .add, .concat => false,
    };
}

/// Whether the model streams (see the file comment), else a .layer failure naming the first layer
/// that does not and what would.
fn check(model: *const Model, hop_frames: u32, diag: *Diagnostic) Error!Shape {
    if (hop_frames < 1 or hop_frames > hop_frames_max) {
        return diag.fail(.argument, "hop_frames {d}, expected 1..{d} frames between windows", .{ hop_frames, hop_frames_max });
    }
    for (model.layers, 0..) |*layer, index| {
        const before: i32 = @as(i32, @intCast(index)) - 1;
        if (layer.input_count != 1 or layer.inputs[0] != before) {
            return diag.fail(.layer, "layer {d} ({s}) does not read only the layer before it: streaming runs a chain of layers", .{ index, @tagName(layer.kind) });
        }
        if (layer.neuron.isSpiking()) {
            return diag.fail(.layer, "layer {d} has spiking neurons ({s}): their state runs over timesteps, not over the rows of a window; run whole windows", .{ index, @tagName(layer.neuron) });
        }
    }
    var spatial_count: u32 = 0;
    var producer: Geometry = .{ .offset = 0, .clean_first = 0, .clean_end = model.input.h, .edges = undefined };
    var dilation: u32 = 1;
    while (spatial_count < model.layers.len and isSpatial(&model.layers[spatial_count])) : (spatial_count += 1) {
        const layer = &model.layers[spatial_count];
        const geometry = geometryOf(layer, producer, dilation);
        for (geometry.edges) |edge| {
            if (edge.count != 0 and edge.input_count == 0) {
                return diag.fail(.layer, "layer {d} ({s}): rows {d}..{d} of a window read only padding along time (top {d}, bottom {d}, kernel {d} rows): streaming computes rows from input rows; pad less than the kernel, or run whole windows", .{
                    spatial_count, @tagName(layer.kind), edge.first, edge.first + edge.count - 1, layer.pad_top, layer.pad_bottom, layer.kernel_h,
                });
            }
        }
        producer = geometry;
        dilation *= layer.stride_h;
    }
    if (spatial_count == 0) {
        return diag.fail(.layer, "layer 0 is {s}: it reads the whole window at once, nothing streams row by row (streaming needs convolutions first)", .{@tagName(model.layers[0].kind)});
    }
    const last = &model.layers[spatial_count - 1];
    for (model.layers[0 .. spatial_count - 1], 0..) |*layer, index| {
        if (layer.pool != .none) {
            return diag.fail(.layer, "layer {d} pools ({s}) inside the window: only a global average pool on the last convolution streams", .{ index, @tagName(layer.pool) });
        }
    }
    const tail: Tail = switch (last.pool) {
        .global_avg => .pooled,
        .none => .flattened,
        else => return diag.fail(.layer, "layer {d} pools ({s}) inside the window: only a global average pool on the last convolution streams", .{ spatial_count - 1, @tagName(last.pool) }),
    };
    if (tail == .flattened and (spatial_count == model.layers.len or last.neuron == .none)) {
        return diag.fail(.layer, "layer {d} is the last convolution and neither pools globally nor feeds a dense layer: its output rows are not streamed", .{spatial_count - 1});
    }
    for (model.layers[spatial_count..], spatial_count..) |*layer, index| {
        if (layer.kind != .dense) {
            return diag.fail(.layer, "layer {d} ({s}) follows the convolutions: streaming takes only dense layers after them", .{ index, @tagName(layer.kind) });
        }
    }
    return .{ .spatial_count = spatial_count, .tail = tail };
}

/// Where a layer's rows of a window come from when layers pad along time: the rows whose cone reaches
/// no padding (a row interval, `clean_first..clean_end`) are rows of the valid computation, kept in
/// the layer's ring; the rest, at most one run of rows at each end, are computed for each window.
const Geometry = struct {
    offset: i64, // frame (relative to the window's first) where row 0's cone starts
    clean_first: u32,
    clean_end: u32,
    edges: [2]EdgeShape,
};

const EdgeShape = struct {
    first: u32 = 0,
    count: u32 = 0,
    input_first: i64 = 0, // of the producer's window rows
    input_count: u32 = 0, // 0 with count != 0: the rows read only padding (refused by check)
    pad_top: u32 = 0,
    pad_bottom: u32 = 0,
};

/// A layer's Geometry from its producer's (the model input: clean 0..H, offset 0); `dilation` is
/// the product of the strides along time before the layer.
fn geometryOf(layer: *const Layer, producer: Geometry, dilation: u32) Geometry {
    const s: i64 = layer.stride_h;
    const pad: i64 = layer.pad_top;
    const kh: i64 = layer.kernel_h;
    const rows: i64 = layer.synaptic.h;
    const first = @min(std.math.divCeil(i64, @as(i64, producer.clean_first) + pad, s) catch unreachable, rows);
    const reach = @as(i64, producer.clean_end) + pad - kh; // the last clean row r has r * s <= reach
    const end = if (producer.clean_end > producer.clean_first and reach >= 0) @max(@min(@divFloor(reach, s) + 1, rows), first) else first;
    return .{
        .offset = producer.offset - pad * dilation,
        .clean_first = @intCast(first),
        .clean_end = @intCast(end),
        .edges = .{ edgeShape(layer, 0, @intCast(first)), edgeShape(layer, @intCast(end), @intCast(rows - end)) },
    };
}

fn edgeShape(layer: *const Layer, first: u32, count: u32) EdgeShape {
    if (count == 0) return .{};
    const s: i64 = layer.stride_h;
    const read_first = @as(i64, first) * s - layer.pad_top;
    const read_end = @as(i64, first + count - 1) * s - layer.pad_top + layer.kernel_h;
    const low = @max(read_first, 0);
    const high = @min(read_end, layer.input.h);
    if (high <= low) return .{ .first = first, .count = count };
    return .{
        .first = first,
        .count = count,
        .input_first = low,
        .input_count = @intCast(high - low),
        .pad_top = @intCast(low - read_first),
        .pad_bottom = @intCast(read_end - high),
    };
}

fn gcd(a: u64, b: u64) u32 {
    return @intCast(std.math.gcd(a, b));
}

/// Takes the stream's pieces from its memory in layout order (`memory` null: only sizes them).
const Carver = struct {
    memory: ?[]align(limits.buffer_alignment) u8,
    layout: *Layout,

    fn take(carver: Carver, comptime T: type, count: u64) []T {
        const offset = carver.layout.take(count * @sizeOf(T));
        const memory_ = carver.memory orelse return &.{};
        const piece = memory_[limits.usizeFrom(offset)..][0..limits.usizeFrom(count * @sizeOf(T))];
        return @as([*]T, @ptrCast(@alignCast(piece.ptr)))[0..limits.usizeFrom(count)];
    }

    fn ring(carver: Carver, row_bytes: u64, step: u32, base: u32, spacing: u32, kept: u32) Ring {
        const phases = spacing / step;
        const data = carver.take(u8, @as(u64, phases) * 2 * kept * row_bytes);
        return .{ .data = data, .row_bytes = limits.usizeFrom(row_bytes), .step = step, .base = base, .spacing = spacing, .phases = phases, .kept = kept };
    }

    /// The model's `layer` run on `input_rows` rows of its input padded along time by `pad_top` and
    /// `pad_bottom`, giving `output_rows` rows, without pooling: a stage's one-row layer (kernel_h
    /// rows in, no padding) or an edge. Its row taps come from the memory (none when not `live`).
    fn rowsLayer(carver: Carver, layer: *const Layer, input_rows: u32, pad_top: u32, pad_bottom: u32, output_rows: u32, live: bool) Layer {
        var rows = layer.*;
        rows.input.h = input_rows;
        rows.input_shapes[0].h = input_rows;
        rows.pad_top = pad_top;
        rows.pad_bottom = pad_bottom;
        rows.synaptic.h = output_rows;
        rows.pool = .none;
        rows.output = rows.synaptic;
        const taps = carver.take(model_zig.TapRange, if (live) input_rows else 0);
        for (taps, 0..) |*range, iy| range.* = vector.tapRange(@intCast(iy), pad_top, layer.kernel_h, layer.stride_h, output_rows);
        if (carver.memory != null) rows.row_taps = taps;
        return rows;
    }
};

/// Bytes of caller memory a stream of this model at this hop needs (alignment slack included), or a
/// failure saying why the model does not stream.
pub fn memoryBytes(model: *const Model, hop_frames: u32, diag: *Diagnostic) Error!u64 {
    const shape = try check(model, hop_frames, diag);
    var layout: Layout = .{};
    _ = plan(model, hop_frames, shape, &layout, null);
    return layout.used + limits.buffer_alignment - 1;
}

/// Lay the stream out (and build it when `memory` is given): one pass for both, so the sizes agree.
fn plan(model: *const Model, hop_frames: u32, shape: Shape, layout: *Layout, memory: ?[]align(limits.buffer_alignment) u8) ?*Stream {
    const carver: Carver = .{ .memory = memory, .layout = layout };
    const header = carver.take(Stream, 1);
    const spatial = model.layers[0..shape.spatial_count];
    const stages = carver.take(Stage, spatial.len);
    const head = carver.take(HeadStage, model.layers.len - spatial.len);
    const padded = for (spatial) |*layer| {
        if (layer.pad_top != 0 or layer.pad_bottom != 0) break true;
    } else false;
    const all_edges = carver.take(Edge, if (padded) 2 * spatial.len else 0);

    const window_frames = model.input.h;
    // the model input: every frame, kept as long as the first layer's window of rows (padded: the
    // whole window, which the first layer's edges read)
    const input_row_bytes = @as(u64, model.input.w) * model.input.channelsPadded();
    const input = carver.ring(input_row_bytes, 1, 0, 1, if (padded) @max(spatial[0].kernel_h, window_frames) else spatial[0].kernel_h);
    var potentials_max: u64 = 0;
    var events_max: u64 = 0;
    var dilation: u32 = 1;
    var producer: Geometry = .{ .offset = 0, .clean_first = 0, .clean_end = window_frames, .edges = undefined };
    var cone: u64 = 1; // frames under one row of the layer run valid
    for (spatial, 0..) |*layer, index| {
        const geometry = geometryOf(layer, producer, dilation);
        const sub = carver.rowsLayer(layer, layer.kernel_h, 0, 0, 1, true);
        const spacing = dilation * layer.stride_h;
        const step = gcd(hop_frames, spacing);
        const base: u32 = @intCast(@mod(geometry.offset, @as(i64, step)));
        const is_last = index + 1 == spatial.len;
        const keeps_potentials = is_last and shape.tail == .pooled;
        var kept = if (is_last) layer.synaptic.h else spatial[index + 1].kernel_h;
        cone += @as(u64, dilation) * (layer.kernel_h - 1);
        if (padded and geometry.clean_end > geometry.clean_first) {
            // a window's clean rows (Ring.at), from its first to the newest of its phase computed when
            // the window completes: that row starts at most window - cone frames after the window's first
            const first_clean = geometry.offset + @as(i64, geometry.clean_first) * spacing;
            const newest = @as(i64, window_frames) - @as(i64, @intCast(cone));
            kept = @max(kept, @as(u32, @intCast(@divFloor(newest - first_clean, spacing) + 1)));
        }
        const row_values = @as(u64, sub.synaptic.w) * sub.synaptic.channelsPadded();
        const row_bytes = row_values * @as(u64, if (keeps_potentials) @sizeOf(i32) else 1);
        const rows = carver.ring(row_bytes, step, base, spacing, kept);
        const frame = carver.take(u8, if (sub.usesFrame()) sub.frameBytes() else 0);
        potentials_max = @max(potentials_max, row_values);
        events_max = @max(events_max, planner.eventsMax(&sub));
        var edges: [2]Edge = undefined;
        for (geometry.edges, &edges) |shape_, *edge| {
            const live = padded and shape_.count != 0;
            const edge_layer = carver.rowsLayer(layer, shape_.input_count, shape_.pad_top, shape_.pad_bottom, shape_.count, live);
            const edge_frame = carver.take(u8, if (live and edge_layer.usesFrame()) edge_layer.frameBytes() else 0);
            if (live) {
                potentials_max = @max(potentials_max, row_values * shape_.count);
                events_max = @max(events_max, planner.eventsMax(&edge_layer));
            }
            edge.* = .{ .layer = edge_layer, .frame = edge_frame, .first = shape_.first, .count = if (live) shape_.count else 0, .input_first = shape_.input_first, .input_count = shape_.input_count };
        }
        const window = carver.take(u8, if (padded) row_bytes * layer.synaptic.h else 0);
        if (memory != null and padded) @memcpy(all_edges[2 * index ..][0..2], &edges);
        if (memory != null) {
            stages[index] = .{
                .layer = sub,
                .model_layer = layer,
                .dilation = dilation,
                .rows = rows,
                .keeps_potentials = keeps_potentials,
                .frame = frame,
                .offset = geometry.offset,
                .clean_first = geometry.clean_first,
                .clean_end = geometry.clean_end,
                .edges = if (padded) all_edges[2 * index ..][0..2] else &.{},
                .window = window,
            };
        }
        dilation = spacing;
        producer = geometry;
    }
    const last = &spatial[spatial.len - 1];
    const pooled = carver.take(i32, if (shape.tail == .pooled) last.output.valuesPadded() else 0);
    const pooled_activations = carver.take(u8, if (shape.tail == .pooled and last.neuron != .none) last.output.valuesPadded() else 0);
    for (model.layers[spatial.len..], 0..) |*layer, index| {
        const channels = layer.output.valuesPadded();
        const potentials = carver.take(i32, channels);
        const activations = carver.take(u8, if (layer.neuron == .none) 0 else channels);
        events_max = @max(events_max, planner.eventsMax(layer));
        if (memory != null) head[index] = .{ .layer = layer, .potentials = potentials, .activations = activations };
    }
    const potentials = carver.take(i32, potentials_max);
    const events = carver.take(model_zig.Event, events_max);
    if (memory == null) return null;
    const stream = &header[0];
    stream.* = .{
        .model = model,
        .hop_frames = hop_frames,
        .window_frames = model.input.h,
        .frame_values = limits.usizeFrom(@as(u64, model.input.w) * model.input.c),
        .input = input,
        .stages = stages,
        .tail = shape.tail,
        .head = head,
        .pooled = pooled,
        .pooled_activations = pooled_activations,
        .padded = padded,
        .potentials = potentials,
        .events = events,
    };
    for (stages) |*stage| {
        frame_zig.paint(&stage.layer, stage.frame);
        for (stage.edges) |*edge| {
            if (edge.count != 0) frame_zig.paint(&edge.layer, edge.frame);
        }
    }
    return stream;
}

/// Lay a stream out at the start of `memory` (any alignment, at least memoryBytes long).
pub fn init(model: *const Model, hop_frames: u32, memory: []u8, diag: *Diagnostic) Error!*Stream {
    const needed = try memoryBytes(model, hop_frames, diag);
    if (memory.len < needed) {
        return diag.fail(.argument, "memory: {d} bytes given, a stream of this model at a hop of {d} frames needs {d} (esnn_stream_bytes)", .{ memory.len, hop_frames, needed });
    }
    const start: usize = limits.usizeFrom(limits.alignUp(@intFromPtr(memory.ptr), limits.buffer_alignment) - @intFromPtr(memory.ptr));
    const used = limits.usizeFrom(needed - (limits.buffer_alignment - 1));
    const aligned: []align(limits.buffer_alignment) u8 = @alignCast(memory[start..][0..used]);
    @memset(aligned, 0); // padding lanes of the rows and the frames' borders start zero
    var layout: Layout = .{};
    const shape = check(model, hop_frames, diag) catch unreachable; // memoryBytes passed it
    const stream = plan(model, hop_frames, shape, &layout, aligned).?;
    std.debug.assert(layout.used == used);
    return stream;
}

/// Start a new stream (the frames pushed so far are forgotten).
pub fn reset(stream: *Stream) void {
    stream.frames_pushed = 0;
    stream.input.rows_done = 0;
    for (stream.stages) |*stage| stage.rows.rows_done = 0;
}

/// Windows that `frame_count` more frames complete.
pub fn windowsCompleted(stream: *const Stream, frame_count: u64) u64 {
    return windowsBy(stream, stream.frames_pushed + frame_count) - windowsBy(stream, stream.frames_pushed);
}

/// Windows complete after `frames` frames: those starting at 0, h, 2h, ... that fit.
fn windowsBy(stream: *const Stream, frames: u64) u64 {
    if (frames < stream.window_frames) return 0;
    return (frames - stream.window_frames) / stream.hop_frames + 1;
}

/// Push `frames` (frame_count, W, C) u8; the output of each window they complete goes to `outputs`
/// ((windows, OH, OW, OC) i32, in order). Returns the windows completed.
pub fn push(stream: *Stream, frames: []const u8, outputs: []i32, diag: *Diagnostic) Error!u64 {
    const model = stream.model;
    if (frames.len % stream.frame_values != 0) {
        return diag.fail(.argument, "frames: {d} values given, a whole number of frames of ({d}, {d}) = {d} values expected", .{
            frames.len, model.input.w, model.input.c, stream.frame_values,
        });
    }
    const frame_count = frames.len / stream.frame_values;
    const windows = windowsCompleted(stream, frame_count);
    const output_values = model.outputLayer().output.values();
    if (outputs.len < windows * output_values) {
        return diag.fail(.argument, "outputs: {d} values given, the {d} window(s) these {d} frame(s) complete need {d}", .{
            outputs.len, windows, frame_count, windows * output_values,
        });
    }
    const input_max = model.inputMax();
    if (input_max < std.math.maxInt(u8) and frames.len != 0 and vector.maxU8(frames) > input_max) {
        const index = for (frames, 0..) |value, i| {
            if (value > input_max) break i;
        } else unreachable;
        const within = index % stream.frame_values;
        return diag.fail(.input, "frame {d} (pushed frame {d}) column {d} channel {d} is {d}, above 2^input_bits - 1 = {d}", .{
            stream.frames_pushed + index / stream.frame_values, index / stream.frame_values, within / model.input.c, within % model.input.c, frames[index], input_max,
        });
    }
    var written: u64 = 0;
    for (0..frame_count) |f| {
        pushFrame(stream, frames[f * stream.frame_values ..][0..stream.frame_values]);
        const pushed = stream.frames_pushed;
        if (pushed >= stream.window_frames and (pushed - stream.window_frames) % stream.hop_frames == 0) {
            const output = outputs[limits.usizeFrom(written * output_values)..][0..limits.usizeFrom(output_values)];
            runWindow(stream, pushed - stream.window_frames, output);
            written += 1;
        }
    }
    std.debug.assert(written == windows);
    return written;
}

/// One frame into the input ring, then every row it completes, layer by layer.
fn pushFrame(stream: *Stream, frame: []const u8) void {
    const model = stream.model;
    const channels = model.input.c;
    const row = stream.input.slot(stream.input.rows_done, 0);
    frame_zig.copyPixels(row, model.input.channelsPadded(), frame, channels, channels, model.input.w);
    stream.input.mirror(stream.input.rows_done);
    stream.input.rows_done += 1;
    stream.frames_pushed += 1;
    var producer = &stream.input;
    var newest: u64 = stream.input.rows_done - 1; // the producer's row just written
    for (stream.stages) |*stage| {
        const position = producer.base + newest * producer.step; // where that row starts
        const reach = @as(u64, stage.dilation) * (stage.layer.kernel_h - 1);
        if (position < reach + stage.rows.base) return;
        const start = position - reach; // the row it completes starts here
        if ((start - stage.rows.base) % stage.rows.step != 0) return;
        const m = (start - stage.rows.base) / stage.rows.step;
        std.debug.assert(m == stage.rows.rows_done);
        runRow(stream, stage, producer.lastRows(newest, stage.layer.kernel_h), m);
        producer = &stage.rows;
        newest = m;
    }
}

/// Row m of a stage from its producer's rows (kernel_h rows, contiguous).
fn runRow(stream: *Stream, stage: *Stage, input: []const u8, m: u64) void {
    runRows(stream, &stage.layer, stage.frame, input, stage.rows.slot(m, 0), stage.keeps_potentials);
    stage.rows.mirror(m);
    stage.rows.rows_done = m + 1;
}

/// The output rows of `sub` (a stage's one-row layer or an edge) from its input rows into `target`:
/// i32 potentials when `keeps_potentials`, else u8 activations.
fn runRows(stream: *Stream, sub: *const Layer, frame: []u8, input: []const u8, target: []u8, keeps_potentials: bool) void {
    const values = limits.usizeFrom(@as(u64, sub.synaptic.h) * sub.synaptic.w * sub.synaptic.channelsPadded());
    const potentials = if (keeps_potentials)
        @as([*]i32, @ptrCast(@alignCast(target.ptr)))[0..values]
    else
        stream.potentials[0..values];
    var fused: neuron.Fused = .{ .layer = sub, .activations = target };
    const fuse = !keeps_potentials and planner.fusesRelu(sub);
    const fused_arg: ?*neuron.Fused = if (fuse) &fused else null;
    const quads: []model_zig.Quad = @as([*]model_zig.Quad, @ptrCast(stream.events.ptr))[0..stream.events.len];
    _ = switch (sub.kind) {
        .input_conv2d, .conv2d => conv2d.run(sub, input, if (sub.isNarrowConv()) 0 else vector.countNonZeroU8(input), potentials, quads, frame, fused_arg),
        .depthwise2d => depthwise2d.run(sub, input, frame, potentials, fused_arg),
        .separable2d => separable2d.run(sub, input, potentials, std.mem.sliceAsBytes(stream.events), fused_arg), // its row buffers: eventsMax sizes events by scratchBytes
        .dense, .add, .concat => unreachable,
    };
    if (!keeps_potentials and !fused.done) _ = neuron.run(sub, potentials, &.{}, target);
}

/// The window starting at frame `start`: its last spatial layer's rows reduced, then the head.
fn runWindow(stream: *Stream, start: u64, output: []i32) void {
    if (stream.padded) return runPaddedWindow(stream, start, output);
    const last = &stream.stages[stream.stages.len - 1];
    const rows = &last.rows;
    std.debug.assert(start % rows.step == 0);
    const first = start / rows.step; // the window's first row; its rows are first + r * phases
    const newest = first + @as(u64, rows.kept - 1) * rows.phases;
    std.debug.assert(newest < rows.rows_done and rows.rows_done <= newest + rows.phases);
    finishWindow(stream, rows.lastRows(newest, rows.kept), output);
}

/// A window of a model padded along time: layer by layer, its edge rows from the producer's rows
/// of this window (the edges' or the ring's), then the last layer's rows gathered whole.
fn runPaddedWindow(stream: *Stream, start: u64, output: []i32) void {
    for (stream.stages, 0..) |*stage, index| {
        for (stage.edges) |*edge| {
            if (edge.count == 0) continue;
            const row_bytes = stage.rows.row_bytes;
            runRows(stream, &edge.layer, edge.frame, edgeInput(stream, index, start, edge), stage.window[edge.first * row_bytes ..][0 .. edge.count * row_bytes], stage.keeps_potentials);
        }
    }
    const last = &stream.stages[stream.stages.len - 1];
    const row_bytes = last.rows.row_bytes;
    for (last.clean_first..last.clean_end) |r| {
        @memcpy(last.window[r * row_bytes ..][0..row_bytes], cleanRow(last, start, @intCast(r)));
    }
    finishWindow(stream, last.window, output);
}

/// The producer rows an edge of stage `index` reads in the window starting at `start`, one slice:
/// for the first stage a run of the input ring (which keeps the window's frames twice over), else
/// the producer's window rows, its edge rows there already and its clean rows among them copied in.
fn edgeInput(stream: *Stream, index: usize, start: u64, edge: *const Edge) []const u8 {
    const first: u32 = @intCast(edge.input_first);
    const count = edge.input_count;
    if (index == 0) return stream.input.lastRows(start + first + count - 1, count);
    const producer = &stream.stages[index - 1];
    const row_bytes = producer.rows.row_bytes;
    const clean_first = @max(first, producer.clean_first);
    const clean_end = @min(first + count, producer.clean_end);
    if (clean_first < clean_end) {
        for (clean_first..clean_end) |q| @memcpy(producer.window[q * row_bytes ..][0..row_bytes], cleanRow(producer, start, @intCast(q)));
    }
    return producer.window[first * row_bytes ..][0 .. count * row_bytes];
}

/// Clean row r of a stage's window starting at `start`: the ring's row where its cone starts.
fn cleanRow(stage: *const Stage, start: u64, r: u32) []const u8 {
    const position = @as(i64, @intCast(start)) + stage.offset + @as(i64, r) * stage.rows.spacing;
    return stage.rows.at(@intCast(position));
}

/// The last spatial layer's rows of a window (H rows, contiguous) reduced, then the head.
fn finishWindow(stream: *Stream, kept: []const u8, output: []i32) void {
    const model = stream.model;
    const last = &stream.stages[stream.stages.len - 1];
    var input: []const u8 = kept;
    var potentials: []const i32 = &.{};
    if (stream.tail == .pooled) {
        const sums = @as([*]const i32, @ptrCast(@alignCast(kept.ptr)))[0 .. kept.len / @sizeOf(i32)];
        pooling.run(last.model_layer, sums, stream.pooled);
        potentials = stream.pooled;
        if (stream.pooled_activations.len != 0) {
            _ = neuron.run(last.model_layer, stream.pooled, &.{}, stream.pooled_activations);
            input = stream.pooled_activations;
        }
    }
    const quads: []model_zig.Quad = @as([*]model_zig.Quad, @ptrCast(stream.events.ptr))[0..stream.events.len];
    for (stream.head) |*stage| {
        _ = dense.run(stage.layer, input, vector.countNonZeroU8(input), stage.potentials, quads);
        potentials = stage.potentials;
        if (stage.layer.neuron != .none) {
            _ = neuron.run(stage.layer, stage.potentials, &.{}, stage.activations);
            input = stage.activations;
        }
    }
    const out_layer = model.outputLayer();
    const channels = out_layer.output.c;
    const channels_padded = out_layer.output.channelsPadded();
    for (0..limits.usizeFrom(out_layer.output.pixels())) |pixel| {
        const target = output[pixel * channels ..][0..channels];
        if (out_layer.neuron == .none) {
            @memcpy(target, potentials[pixel * channels_padded ..][0..channels]);
        } else {
            for (target, input[pixel * channels_padded ..][0..channels]) |*value, activation| value.* = activation;
        }
    }
}
