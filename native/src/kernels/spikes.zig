//! conv2d and dense on binary inputs (spikes, 1-bit activations, a 1-bit model input:
//! model.Layer.usesSpikeRows), event-driven per input value, not per group of 4 channels: every
//! non-zero input (iy, ix, ci) adds its weight row W[tap, ci, :] (model.Layer.spike_rows, i8
//! sign-extended on load, no multiplication: the value is 1) to each output pixel it reaches.
//! Cost: events x reached taps x Cout_p adds, whatever the layout of the events; a pixel without
//! events costs one vector test. The conv scatter accumulates in i16 where every channel's sum of
//! |W| fits (model.Layer.spike_sums_fit_i16: half the bytes per add), then widens once and adds the
//! bias. conv2d.zig and dense.zig choose these kernels by their input's event count (`conv2dWins`,
//! `denseWins`) and run their quad kernels otherwise. Bit-exact with them (integer sums, wrapping
//! i32 arithmetic as theirs; exact whenever the true sum fits i32, which the loader's overflow bound
//! guarantees).

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");

const lanes = vector.lanes;
const VecI16 = @Vector(lanes, i16);
const VecI32 = vector.VecI32;
const VecU8 = vector.VecU8;
const LaneMask = @Int(.unsigned, lanes);

/// Input channels whose events one pass over a pixel's reach adds (a block of 4 vectors' lanes).
const block_channels = 4 * lanes;
/// Events per pass with a kernel unrolled for their count (more run in a loop).
const unrolled_max = 8;

/// Whether the spike scatter beats the dense kernel (conv2d_dense.zig) on an input with
/// `input_events` non-zero values. Per event and reached tap it adds one row (a load and an add per
/// output-channel vector; i16 rows hold twice the lanes), plus a load and store of the potentials
/// row per active pixel and tap; the dense kernel adds one u8 x i8 quad dot product per quad, tap
/// and output-channel vector of every output pixel, whatever the input. Weights fitted to the spike
/// density sweep of benchmarks/engine.py (AVX2).
pub fn conv2dWins(layer: *const model.Layer, input_events: u64) bool {
    if (layer.spike_rows.len == 0 or layer.padsNonZero()) return false;
    const per_event: u64 = if (layer.spike_sums_fit_i16) 2 else 4;
    const taps = @as(u64, layer.kernel_h) * layer.kernel_w;
    const reach = (taps + @as(u64, layer.stride_h) * layer.stride_w - 1) / (@as(u64, layer.stride_h) * layer.stride_w);
    const spike_cost = input_events * reach * per_event;
    const dense_cost = layer.synaptic.pixels() * taps * layer.input.channelQuads() * dense_per_quad;
    return spike_cost < dense_cost;
}

/// Cost of one quad dot product of the dense kernel, in the units of conv2dWins and denseWins (a
/// spike row add of one i16 vector = 2).
const dense_per_quad = 6;

/// potentials: i32 (OH, OW, Cout_p) before pooling; input: u8 (H, W, Cin_p) of 0 and 1; scratch:
/// at least scratchBytes(layer) bytes (the i16 sums). Returns the synaptic operations.
pub fn conv2d(layer: *const model.Layer, input: []const u8, potentials: []i32, scratch: []u8) u64 {
    std.debug.assert(layer.spike_rows.len != 0 and !layer.padsNonZero());
    std.debug.assert(input.len == layer.input.valuesPadded());
    std.debug.assert(potentials.len == layer.synaptic.valuesPadded());
    if (layer.spike_sums_fit_i16) {
        const sums_bytes = potentials.len * @sizeOf(i16);
        std.debug.assert(scratch.len >= sums_bytes);
        const sums = @as([*]i16, @ptrCast(@alignCast(scratch.ptr)))[0..potentials.len];
        @memset(sums, 0);
        const synaptic_ops = scatter(i16, layer, input, sums);
        widenAddBias(sums, layer.bias, potentials);
        return synaptic_ops;
    }
    vector.fillRows(potentials, layer.bias);
    return scatter(i32, layer, input, potentials);
}

/// Bytes of the i16 sums the conv scatter keeps (its scratch, in the arena's events buffer).
pub fn scratchBytes(layer: *const model.Layer) u64 {
    if (layer.spike_rows.len == 0 or !layer.isConv()) return 0;
    return layer.synaptic.valuesPadded() * @sizeOf(i16);
}

/// Every input event's rows into `sums` (Acc: i16 or i32, (OH, OW, Cout_p)); returns the synaptic
/// operations (events x in-bounds reached taps x Cout, docs/semantics.md).
fn scatter(comptime Acc: type, layer: *const model.Layer, input: []const u8, sums: []Acc) u64 {
    @setEvalBranchQuota(20_000); // the inline switches instantiate a walk per (vectors, events) pair
    return switch (layer.synaptic.channelsPadded() / lanes) {
        inline 1...4 => |chunks| scatterBy(Acc, chunks, layer, input, sums),
        else => scatterBy(Acc, null, layer, input, sums),
    };
}

/// scatter with `chunks` output-channel vectors per row, compile-time where known.
fn scatterBy(comptime Acc: type, comptime chunks: ?usize, layer: *const model.Layer, input: []const u8, sums: []Acc) u64 {
    const in = layer.input;
    const cin_padded: usize = in.channelsPadded();
    const row_bytes = @as(usize, in.w) * cin_padded;
    var reach_events: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        const input_row = input[@as(usize, iy) * row_bytes ..][0..row_bytes];
        if (rows.count == 0 or vector.maxU8(input_row) == 0) continue; // a row without events: one pass of tests
        // Neighbouring pixels reach overlapping output pixels: taken one after the other, each
        // pixel's loads would wait for the stores of the one before. Pixels a reach apart do not
        // overlap, so the row goes in `phases` passes of every phases-th pixel.
        const phases = @min(in.w, (layer.kernel_w + layer.stride_w - 1) / layer.stride_w);
        for (0..phases) |phase| {
            var ix: u32 = @intCast(phase);
            while (ix < in.w) : (ix += phases) {
                const pixel = input_row[@as(usize, ix) * cin_padded ..][0..cin_padded];
                var first: usize = 0;
                while (first < cin_padded) : (first += block_channels) {
                    var offsets: [block_channels]u32 = undefined; // rows of the events: ci * Cout_p
                    const count = blockEvents(layer, pixel, first, &offsets);
                    if (count == 0) continue;
                    const walk: Walk = .{ .layer = layer, .spike_rows = layer.spike_rows, .rows = rows, .columns = layer.column_taps[ix] };
                    reach_events += count * rows.count * walk.columns.count;
                    switch (count) {
                        inline 1...unrolled_max => |n| walk.add(Acc, chunks, n, sums, offsets[0..n]),
                        else => walk.add(Acc, chunks, null, sums, offsets[0..count]),
                    }
                }
            }
        }
    }
    return reach_events * layer.synaptic.c;
}

/// The non-zero channels of pixel channels [first, first + block_channels) as row offsets
/// (ci * Cout_p); returns how many.
inline fn blockEvents(layer: *const model.Layer, pixel: []const u8, first: usize, offsets: *[block_channels]u32) usize {
    const cout_padded: u32 = layer.synaptic.channelsPadded();
    const end = @min(pixel.len, first + block_channels);
    var count: usize = 0;
    var chunk = first;
    while (chunk < end) : (chunk += lanes) {
        const bytes: VecU8 = pixel[chunk..][0..lanes].*;
        var mask: LaneMask = @bitCast(bytes != @as(VecU8, @splat(0)));
        while (mask != 0) : (mask &= mask - 1) {
            offsets[count] = @as(u32, @intCast(chunk + @ctz(mask))) * cout_padded;
            count += 1;
        }
    }
    return count;
}

/// The (output pixel, tap) pairs one input pixel reaches (model.Layer.forEachReach), walked with
/// the output row and the tap's weight rows as running offsets.
const Walk = struct {
    layer: *const model.Layer,
    spike_rows: []const i8, // the layer's, held here so that stores to the sums need not reload it
    rows: vector.TapRange,
    columns: vector.TapRange,

    /// Add the rows at `offsets` (one per event, from each tap's rows) to every reached output
    /// pixel's sums; `chunks` (output-channel vectors) and `count` (events) unrolled where known.
    inline fn add(walk: Walk, comptime Acc: type, comptime chunks: ?usize, comptime count: ?usize, sums: []Acc, offsets: []const u32) void {
        const layer = walk.layer;
        const cout_padded: usize = layer.synaptic.channelsPadded();
        const tap_stride = @as(usize, layer.input.c) * cout_padded;
        const out_w: usize = layer.synaptic.w;
        const kernel_w: usize = layer.kernel_w;
        const column_step = @as(usize, layer.stride_w) * tap_stride; // tap rows one column step apart
        for (0..walk.rows.count) |row_step| {
            const oy: usize = walk.rows.output_first - row_step;
            const kh: usize = walk.rows.kernel_first + row_step * layer.stride_h;
            var sums_offset = (oy * out_w + walk.columns.output_first) * cout_padded;
            var weights_offset = (kh * kernel_w + walk.columns.kernel_first) * tap_stride;
            for (0..walk.columns.count) |_| {
                const row = sums[sums_offset..][0..cout_padded];
                const tap_rows = walk.spike_rows[weights_offset..][0..tap_stride];
                if (chunks) |c| {
                    inline for (0..c) |k| addRows(Acc, count, row, tap_rows, offsets, k * lanes);
                } else {
                    var channel: usize = 0;
                    while (channel < cout_padded) : (channel += lanes) addRows(Acc, count, row, tap_rows, offsets, channel);
                }
                sums_offset -%= cout_padded; // the next column step reaches the output pixel to the left
                weights_offset += column_step;
            }
        }
    }
};

/// row[channel..][0..lanes] += the listed rows' vectors at `channel`.
inline fn addRows(comptime Acc: type, comptime count: ?usize, row: []Acc, tap_rows: []const i8, offsets: []const u32, channel: usize) void {
    var acc: @Vector(lanes, Acc) = row[channel..][0..lanes].*;
    if (count) |n| {
        inline for (0..n) |e| acc +%= weightVector(Acc, tap_rows, offsets[e] + channel);
    } else {
        for (offsets) |offset| acc +%= weightVector(Acc, tap_rows, offset + channel);
    }
    const target: *align(@alignOf(Acc)) @Vector(lanes, Acc) = @ptrCast(row[channel..][0..lanes]);
    target.* = acc;
}

/// Lanes [offset, offset + lanes) of i8 or i16 rows, sign-extended to Acc.
inline fn weightVector(comptime Acc: type, rows: anytype, offset: usize) @Vector(lanes, Acc) {
    const Weight = @typeInfo(@TypeOf(rows)).pointer.child;
    const weights: @Vector(lanes, Weight) = rows[offset..][0..lanes].*;
    return weights;
}

/// potentials[i] = sums[i] + bias[channel of i], every pixel (bias: one padded row).
fn widenAddBias(sums: []const i16, bias: []const i32, potentials: []i32) void {
    std.debug.assert(sums.len == potentials.len and potentials.len % bias.len == 0);
    var offset: usize = 0;
    while (offset < potentials.len) : (offset += bias.len) {
        var channel: usize = 0;
        while (channel < bias.len) : (channel += lanes) {
            const sum: VecI16 = sums[offset + channel ..][0..lanes].*;
            const b: VecI32 = bias[channel..][0..lanes].*;
            vector.storeVector(potentials, offset + channel, @as(VecI32, sum) +% b);
        }
    }
}

/// Whether the spike accumulation of a dense layer beats its quad kernel (dense.zig) on an input
/// with `input_events` non-zero values: a row add per event and output-channel vector (one i16
/// register) against, for the quad kernel, a test of every quad and a dot product per non-zero one
/// (at least events / 4 of them, at most events). On the IF model's dense 1568->64 (8-bit weights,
/// AVX2) the row adds win at every density, 100 % included (6.0 against 6.5 us).
pub fn denseWins(layer: *const model.Layer, input_events: u64) bool {
    if (layer.spike_rows.len == 0) return false;
    const quads = layer.input.pixels() * layer.input.channelQuads();
    const spike_cost = 2 * input_events;
    const quad_cost = quads + dense_per_quad * @max(input_events / 2, 1);
    return spike_cost <= quad_cost;
}

/// potentials: i32 (1, 1, Cout_p); input: u8 (H, W, Cin_p) of 0 and 1. Returns the synaptic
/// operations (events x Cout). The sums of a block of output-channel vectors stay in registers while
/// the input's events stream by (found a vector of channels at a time, no list in memory).
pub fn dense(layer: *const model.Layer, input: []const u8, potentials: []i32) u64 {
    std.debug.assert(layer.spike_rows.len != 0);
    std.debug.assert(input.len == layer.input.valuesPadded());
    const chunks = layer.synaptic.channelsPadded() / lanes;
    std.debug.assert(potentials.len == chunks * lanes);
    @setEvalBranchQuota(10_000);
    var events: u64 = 0;
    var first: usize = 0;
    while (first < chunks) {
        const block = @min(dense_block_chunks, chunks - first);
        events = switch (block) {
            inline 1...dense_block_chunks => |n| denseBlock(n, layer, input, potentials, first),
            else => unreachable,
        };
        first += block;
    }
    return events * layer.synaptic.c;
}

/// Output-channel vectors one pass keeps in registers (i32: two AVX2 registers each).
const dense_block_chunks = 4;

/// Output channels [first * lanes, (first + chunks) * lanes) of a dense layer; returns the events.
fn denseBlock(comptime chunks: usize, layer: *const model.Layer, input: []const u8, potentials: []i32, first: usize) u64 {
    const in = layer.input;
    const cin_padded: usize = in.channelsPadded();
    const cout_padded: usize = layer.synaptic.channelsPadded();
    var acc: [chunks]VecI32 = undefined;
    inline for (0..chunks) |k| acc[k] = layer.bias[(first + k) * lanes ..][0..lanes].*;
    // rows add into i16 sums (one register per vector, not two), moved into the i32 ones before
    // they could leave i16: 255 rows of |w| <= 128 sum to at most 32640
    var narrow: [chunks]VecI16 = @splat(@splat(0));
    var narrow_rows: u32 = 0;
    var events: u64 = 0;
    var pixel: usize = 0;
    while (pixel < in.pixels()) : (pixel += 1) {
        const values = input[pixel * cin_padded ..][0..cin_padded];
        var chunk: usize = 0;
        while (chunk < cin_padded) : (chunk += lanes) {
            const bytes: VecU8 = values[chunk..][0..lanes].*;
            var mask: LaneMask = @bitCast(bytes != @as(VecU8, @splat(0)));
            events += @popCount(mask);
            while (mask != 0) : (mask &= mask - 1) {
                const row = (pixel * in.c + chunk + @ctz(mask)) * cout_padded + first * lanes;
                inline for (0..chunks) |k| narrow[k] +%= weightVector(i16, layer.spike_rows, row + k * lanes);
                narrow_rows += 1;
                if (narrow_rows == narrow_rows_max) {
                    inline for (0..chunks) |k| acc[k] +%= @as(VecI32, narrow[k]);
                    narrow = @splat(@splat(0));
                    narrow_rows = 0;
                }
            }
        }
    }
    inline for (0..chunks) |k| vector.storeVector(potentials, (first + k) * lanes, acc[k] +% @as(VecI32, narrow[k]));
    return events;
}

/// Rows the dense kernel's i16 sums take before they move into the i32 ones.
const narrow_rows_max = 255;

comptime {
    std.debug.assert(narrow_rows_max * 128 <= std.math.maxInt(i16));
}
