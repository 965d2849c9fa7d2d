//! conv2d and input_conv2d (identical semantics, docs/semantics.md), event-driven.
//! Every input pixel's non-zero channel groups (quads) are listed once (kernels/conv2d_sparse.zig);
//! then each active pixel adds, for every (output pixel, tap) it reaches, sum over its listed quads
//! of value x W[kh, kw, quad, :] (a u8 x i8 dot product per output channel, kernels/vector.zig).
//! Cost: non-zero quads x reached taps x Cout. When the input has too many events for that to win,
//! the dense kernel (conv2d_dense.zig) runs instead, as it always does for an input with fewer
//! channels than a quad. A binary input (spikes) with few enough events runs the spike scatter
//! (kernels/spikes.zig: a weight row per event, no quads) instead of both.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const neuron = @import("neuron.zig");
const conv2d_dense = @import("conv2d_dense.zig");
const conv2d_sparse = @import("conv2d_sparse.zig");
const spikes = @import("spikes.zig");

const lanes = vector.lanes;

/// potentials: i32 (OH, OW, Cout_p) before pooling; input: u8 (H, W, Cin_p); quads_buffer: at
/// least conv2d_sparse.entriesMax entries. Returns the synaptic operations (docs/semantics.md).
/// input_events: the non-zero values of `input`.
/// fused: the relu stage for the dense kernel to run on its registers (kernels/neuron.zig Fused).
pub fn run(layer: *const model.Layer, input: []const u8, input_events: u64, potentials: []i32, quads_buffer: []model.Quad, frame: []u8, fused: ?*neuron.Fused) u64 {
    // the scatter leaves padding taps out: with non-zero pad values only the frame is exact
    if (layer.isNarrowConv() or layer.padsNonZero()) {
        conv2d_dense.run(layer, input, frame, potentials, fused);
        return synapticOps(layer, input);
    }
    // binary inputs (spikes): a row add per event, not a dot product per group of 4 channels
    if (spikes.conv2dWins(layer, input_events)) return spikes.conv2d(layer, input, input_events, potentials, std.mem.sliceAsBytes(quads_buffer));
    if (uniformReach(layer)) |reach| {
        // Above a quarter of the values non-zero, most quads hold an event whatever their layout
        // and the scatter cannot win: no lists to count, and the ops follow from the events alone.
        if (4 * input_events > layer.input.values()) {
            conv2d_dense.run(layer, input, frame, potentials, fused);
            return input_events * reach * layer.synaptic.c;
        }
    }
    // Above half the values non-zero the scatter cannot win whatever their layout: no lists.
    if (2 * input_events > layer.input.values()) {
        conv2d_dense.run(layer, input, frame, potentials, fused);
        return synapticOps(layer, input);
    }
    const counts = conv2d_sparse.count(layer, input);
    if (scatterIsCheaper(layer, counts)) {
        const parts = conv2d_sparse.split(layer, quads_buffer);
        _ = conv2d_sparse.compact(layer, input, parts);
        scatter(layer, parts, parts.active[0..@intCast(counts.active_pixels)], potentials);
    } else {
        conv2d_dense.run(layer, input, frame, potentials, fused);
    }
    return counts.synaptic_ops;
}

/// Per active input pixel and tap the scatter loads and stores a row of potentials and adds a dot
/// product per listed quad and output-channel vector, one after the other on that row (a chain of
/// dependent steps); the dense kernel adds a dot product per quad, tap and vector of every pixel,
/// about twice as fast per dot (independent sums in registers). Weights fitted to the sparsity
/// sweep of benchmarks/engine.py on AVX-512 VNNI (Zen 5). Without wide register blocks (AVX2: the
/// dense kernel holds one output pixel per block, so each weight load serves one pixel) a dense
/// dot costs about as much as a scatter dot, and the row's load and store per tap about two;
/// but when the dense kernel sums in i16 (conv2d_dense.choose: sums_i16, the 4-bit layers) its dot
/// costs half a scatter dot (a quarter in the paired kernel of <= 8 output channels) and a row
/// about one: a 3x3 64->64 conv on 8x8 4-bit values runs the dense kernel in 70 us and the scatter
/// in 112 (40 % non-zero) and 94 us (25 %), where the equal weights picked the scatter; a 3x3
/// 16->8 conv on 32x32 dense in 150 us, scatter in 268 (10 %). AMD Zen 1 (AVX2), interleaved runs.
fn scatterIsCheaper(layer: *const model.Layer, counts: conv2d_sparse.Counts) bool {
    const taps = @as(u64, layer.kernel_h) * layer.kernel_w;
    const chunks: u64 = layer.synaptic.channelsPadded() / lanes;
    const all_quads = layer.input.pixels() * layer.input.channelQuads();
    // in quarters of a scatter dot; the paired i16 sums (<= 8 output channels) half again
    const per_quad: u64, const per_pixel: u64, const per_dense_quad: u64 = if (vector.wide_register_blocks)
        .{ 8, 32, 4 }
    else if (conv2d_dense.choose(layer.input_max[0], layer.weight_bits).kernel == .sums_i16)
        .{ 4, 4, if (layer.synaptic.channelsPadded() == lanes and layer.synaptic.c <= lanes / 2) 1 else 2 }
    else
        .{ 4, 8, 4 };
    const scatter_cost = taps * chunks * (per_quad * counts.nonzero_quads + per_pixel * counts.active_pixels);
    const dense_cost = taps * chunks * per_dense_quad * all_quads;
    return scatter_cost < dense_cost;
}

/// Every active input pixel adds its listed quads' dot products to every (output pixel, tap) it
/// reaches. Pixels run grouped by quad count, each group with a kernel unrolled for its count.
fn scatter(layer: *const model.Layer, parts: conv2d_sparse.Parts, active: []const model.Quad, potentials: []i32) void {
    const ends = conv2d_sparse.orderByCount(layer, parts.lists, active, parts.order);
    const entries = conv2d_sparse.pixelEntries(layer);
    @setEvalBranchQuota(10_000); // the inline loops below instantiate chunks x count pixel kernels
    vector.fillRows(potentials, layer.bias);
    // a kernel per (vectors, quad count) pair only where registers hold it (kernels/vector.zig)
    const specialized: usize = if (vector.wide_register_blocks) layer.synaptic.channelsPadded() / lanes else 0;
    switch (specialized) {
        inline 1...4 => |chunks| {
            var start = ends[0];
            inline for (1..conv2d_sparse.bucket_count) |bucket| {
                const count: ?usize = if (bucket <= conv2d_sparse.counted_max) bucket else null;
                for (parts.order[start..ends[bucket]]) |pixel| {
                    const list = parts.lists[(@as(usize, pixel.index) * layer.input.w + pixel.values) * entries ..][0..entries];
                    scatterPixel(chunks, count, layer, pixel.index, pixel.values, list[1..][0..list[0].index], potentials);
                }
                start = ends[bucket];
            }
        },
        else => for (parts.order[ends[0]..ends[conv2d_sparse.bucket_count - 1]]) |pixel| {
            const list = parts.lists[(@as(usize, pixel.index) * layer.input.w + pixel.values) * entries ..][0..entries];
            scatterPixel(null, null, layer, pixel.index, pixel.values, list[1..][0..list[0].index], potentials);
        },
    }
}

/// One input pixel's quads into every (output pixel, tap) it reaches; `chunks` (output-channel
/// vectors) and `count` (quads) are compile-time where known, so the row stays in registers.
fn scatterPixel(comptime chunks: ?usize, comptime count: ?usize, layer: *const model.Layer, iy: u32, ix: u32, quads: []const model.Quad, potentials: []i32) void {
    const Scatter = struct {
        layer: *const model.Layer,
        quads: []const model.Quad,
        potentials: []i32,

        pub inline fn visit(self: @This(), output_pixel: usize, tap: usize) void {
            const cout_padded = self.layer.synaptic.channelsPadded();
            const tap_weights_stride = @as(usize, self.layer.input.channelQuads()) * limits.quad_channels * cout_padded;
            const row = self.potentials[output_pixel * cout_padded ..][0..cout_padded];
            const tap_weights = self.layer.weights[tap * tap_weights_stride ..][0..tap_weights_stride];
            if (chunks) |c| {
                vector.accumulateQuadsFixed(c, count, row, tap_weights, if (count) |n| self.quads[0..n] else self.quads);
            } else if (vector.has_pairs_fit_i16 and self.layer.dotPairsFitI16()) {
                vector.accumulateQuadsBy(.pairs_fit_i16, row, tap_weights, self.quads);
            } else {
                vector.accumulateQuads(row, tap_weights, self.quads);
            }
        }
    };
    layer.forEachReach(iy, ix, Scatter{ .layer = layer, .quads = quads, .potentials = potentials });
}

/// The (output pixel, tap) pairs every input pixel reaches, when that is the same for all of them
/// (a 1x1 conv with stride 1, say), else null.
fn uniformReach(layer: *const model.Layer) ?u64 {
    const rows = layer.row_taps[0].count;
    const columns = layer.column_taps[0].count;
    for (layer.row_taps) |range| if (range.count != rows) return null;
    for (layer.column_taps) |range| if (range.count != columns) return null;
    return @as(u64, rows) * columns;
}

/// Synaptic ops as the statistics define them: for every input pixel, its non-zero values times
/// the in-bounds (output pixel, tap) pairs it reaches, times Cout.
pub fn synapticOps(layer: *const model.Layer, input: []const u8) u64 {
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    var ops: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        if (rows.count == 0) continue;
        const row = input[@as(usize, iy) * in.w * cin_padded ..][0 .. @as(usize, in.w) * cin_padded];
        var row_ops: u64 = 0;
        var ix: u32 = 0;
        if (limits.kernel_variants and cin_padded == lanes) {
            // pixels of one vector (up to 16 channels): four per 64-byte compare, a popcount each
            // (their padding lanes are 0, as every buffer's: counting them adds nothing)
            const Wide = @Vector(4 * lanes, u8);
            while (ix + 4 <= in.w) : (ix += 4) {
                const values: Wide = row[@as(usize, ix) * lanes ..][0 .. 4 * lanes].*;
                const nonzero: u64 = @bitCast(values != @as(Wide, @splat(0)));
                inline for (0..4) |k| row_ops += @as(u64, @popCount(@as(u16, @truncate(nonzero >> (16 * k))))) * layer.column_taps[ix + k].count;
            }
        }
        while (ix < in.w) : (ix += 1) {
            const pixel = row[@as(usize, ix) * cin_padded ..][0..cin_padded];
            row_ops += pixelEvents(in.c, pixel) * layer.column_taps[ix].count;
        }
        ops += row_ops * rows.count;
    }
    return ops * layer.synaptic.c;
}

/// The non-zero values of one pixel; a narrow input's 1..3 channels are tested one by one.
inline fn pixelEvents(channels: u32, pixel: []const u8) u64 {
    return switch (channels) {
        inline 1...3 => |small| blk: {
            var events: u64 = 0;
            inline for (0..small) |c| events += @intFromBool(pixel[c] != 0);
            break :blk events;
        },
        else => vector.countNonZeroU8(pixel),
    };
}
