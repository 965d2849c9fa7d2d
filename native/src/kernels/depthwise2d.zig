//! depthwise2d (docs/semantics.md): output channel o reads input channel o / M (M the depth
//! multiplier). The scatter (M = 1, pad values 0): for every input pixel with a non-zero channel,
//! every (output pixel, tap) it reaches gets value[c] * W[kh, kw, c] for all channels at once (a
//! vector over channels; zero channels add nothing). The gather: output-stationary over the frame,
//! which holds input channel o / M at channel o and the pad values in its border (kernels/frame.zig).
//! Also the first stage of separable2d, one output row at a time (gatherRow, scatterRow).

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const frame_zig = @import("frame.zig");
const neuron = @import("neuron.zig");
const conv2d_dense = @import("conv2d_dense.zig");

/// potentials: i32 (OH, OW, C_p) before pooling, set to `bias` (empty: zero) first;
/// input: u8 (H, W, C_p). Returns the synaptic operations: one per in-bounds tap of a non-zero input.
pub fn accumulate(layer: *const model.Layer, input: []const u8, bias: []const i32, potentials: []i32) u64 {
    std.debug.assert(layer.depth_multiplier == 1 and !layer.padsNonZero());
    const in = layer.input;
    const out_h = layer.synaptic.h;
    const out_w = layer.synaptic.w;
    const channels_padded = in.channelsPadded();
    std.debug.assert(input.len == in.valuesPadded());
    std.debug.assert(potentials.len == @as(usize, out_h) * out_w * channels_padded);
    vector.fillRows(potentials, bias);
    const weights = layer.depthwiseWeights();
    var synaptic_ops: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        if (rows.count == 0) continue;
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const pixel = input[(@as(usize, iy) * in.w + ix) * channels_padded ..][0..channels_padded];
            const events = vector.countNonZeroU8(pixel);
            if (events == 0) continue;
            layer.forEachReach(iy, ix, Scatter{ .weights = weights, .pixel = pixel, .potentials = potentials });
            synaptic_ops += events * rows.count * layer.column_taps[ix].count;
        }
    }
    return synaptic_ops;
}

/// One input pixel's values into the potentials of one (output pixel, tap) it reaches.
const Scatter = struct {
    weights: []const i32, // (taps, C_p)
    pixel: []const u8, // (C_p)
    potentials: []i32,

    pub inline fn visit(self: Scatter, output_pixel: usize, tap: usize) void {
        const channels = self.pixel.len;
        accumulatePixel(self.potentials[output_pixel * channels ..][0..channels], self.weights[tap * channels ..][0..channels], self.pixel);
    }
};

/// One output row of `accumulate` without a bias (separable2d on a sparse input): row (OW, C_p) =
/// for every active input pixel of the rows its windows reach, value[c] * W[kh, kw, c] into each
/// output pixel of the row it reaches (frame column ix + pad_left = ox * stride + kw).
pub fn scatterRow(layer: *const model.Layer, input: []const u8, oy: u32, row: []i32) void {
    std.debug.assert(layer.depth_multiplier == 1 and !layer.padsNonZero());
    const in = layer.input;
    const channels_padded = in.channelsPadded();
    std.debug.assert(row.len == @as(usize, layer.synaptic.w) * channels_padded);
    @memset(row, 0);
    const weights = layer.depthwiseWeights();
    for (0..layer.kernel_h) |kh| {
        const frame_row = @as(usize, oy) * layer.stride_h + kh;
        if (frame_row < layer.pad_top or frame_row - layer.pad_top >= in.h) continue; // pad values 0
        const iy = frame_row - layer.pad_top;
        for (0..in.w) |ix| {
            const pixel = input[(iy * in.w + ix) * channels_padded ..][0..channels_padded];
            if (vector.countNonZeroU8(pixel) == 0) continue;
            const frame_column = ix + layer.pad_left;
            for (0..@min(layer.kernel_w, frame_column + 1)) |kw| {
                const reach = frame_column - kw;
                if (reach % layer.stride_w != 0 or reach / layer.stride_w >= layer.synaptic.w) continue;
                const ox = reach / layer.stride_w;
                accumulatePixel(row[ox * channels_padded ..][0..channels_padded], weights[(kh * layer.kernel_w + kw) * channels_padded ..][0..channels_padded], pixel);
            }
        }
    }
}

/// row += weights * pixel over all channels. No per-chunk zero test: one multiply-add is cheaper
/// than the mispredicted branch; the pixel as a whole is skipped when it has no event.
fn accumulatePixel(row: []i32, weights: []const i32, pixel: []const u8) void {
    var chunk: usize = 0;
    while (chunk < row.len) : (chunk += vector.lanes) {
        const values: vector.VecU8 = pixel[chunk..][0..vector.lanes].*;
        const acc: vector.VecI32 = row[chunk..][0..vector.lanes].*;
        vector.storeVector(row, chunk, vector.multiplyAddWide(acc, values, weights[chunk..][0..vector.lanes].*));
    }
}

/// frame: the layer's padded-input scratch (empty when it reads its input directly).
/// fused: when given, the gather runs relu on its finished sums (kernels/neuron.zig Fused).
pub fn run(layer: *const model.Layer, input: []const u8, frame: []u8, potentials: []i32, fused: ?*neuron.Fused) u64 {
    return accumulateBest(layer, input, frame, layer.bias, potentials, fused);
}

/// `accumulate` by the cheaper kernel: the scatter above when few input pixels are active, else
/// the output-stationary gather below (no loads and stores of potentials per tap).
pub fn accumulateBest(layer: *const model.Layer, input: []const u8, frame: []u8, bias: []const i32, potentials: []i32, fused: ?*neuron.Fused) u64 {
    const counts = countEvents(layer, input);
    if (scatterWins(layer, counts)) return accumulate(layer, input, bias, potentials);
    gather(layer, if (layer.usesFrame()) frame_zig.fill(layer, input, frame) else input, bias, potentials, fused);
    if (fused) |f| f.done = true;
    return counts.synaptic_ops;
}

/// Whether the scatter is exact (no depth multiplier, pad values 0) and cheaper than the gather:
/// fewer than half the input pixels active.
pub fn scatterWins(layer: *const model.Layer, counts: Counts) bool {
    const scatter_exact = layer.depth_multiplier == 1 and !layer.padsNonZero();
    return scatter_exact and counts.active_pixels * 2 < layer.input.pixels();
}

pub const Counts = struct { active_pixels: u64, synaptic_ops: u64 };

/// Active input pixels, and the synaptic operations: every non-zero value times the in-bounds
/// (output pixel, tap) pairs it reaches, times the depth multiplier (its output channels).
pub fn countEvents(layer: *const model.Layer, input: []const u8) Counts {
    const in = layer.input;
    const channels_padded = in.channelsPadded();
    var counts: Counts = .{ .active_pixels = 0, .synaptic_ops = 0 };
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const events = vector.countNonZeroU8(input[(@as(usize, iy) * in.w + ix) * channels_padded ..][0..channels_padded]);
            counts.active_pixels += @intFromBool(events != 0);
            counts.synaptic_ops += events * rows.count * layer.column_taps[ix].count;
        }
    }
    counts.synaptic_ops *= layer.depth_multiplier;
    return counts;
}

/// The four sums of a group read as raw bytes (sum k, lane c: channel 4c + k) as the group's four
/// channel vectors in order (vector j, lane i: channel 16j + i = 4(4j + i/4) + i%4).
inline fn channelOrder(sums: [4]vector.VecI32) [4]vector.VecI32 {
    var ordered: [4]vector.VecI32 = undefined;
    inline for (0..4) |j| {
        const low = @shuffle(i32, sums[0], sums[1], pairMask(j)); // channels 4c, 4c+1 for c in 4j..4j+3
        const high = @shuffle(i32, sums[2], sums[3], pairMask(j)); // channels 4c+2, 4c+3
        ordered[j] = @shuffle(i32, low, high, quadMask());
    }
    return ordered;
}

fn pairMask(j: usize) [8]i32 {
    var mask: [8]i32 = undefined;
    for (0..4) |t| {
        mask[2 * t] = @intCast(4 * j + t);
        mask[2 * t + 1] = ~@as(i32, @intCast(4 * j + t));
    }
    return mask;
}

fn quadMask() [16]i32 {
    var mask: [16]i32 = undefined;
    for (0..4) |t| {
        mask[4 * t] = @intCast(2 * t);
        mask[4 * t + 1] = @intCast(2 * t + 1);
        mask[4 * t + 2] = ~@as(i32, @intCast(2 * t));
        mask[4 * t + 3] = ~@as(i32, @intCast(2 * t + 1));
    }
    return mask;
}

/// Output channel vectors one gather block keeps in registers.
const block_chunks_max = 4;

/// The source rows one output row's windows read, kernel row kh at rows[kh] (each from its first
/// pixel: the frame's or the input's row, or a row of separable2d's ring, kernels/frame.zig).
pub const Rows = [limits.kernel_max][]const u8;

/// potentials = bias (empty: zero) + the window sums, one output row at a time, from the padded
/// input (`source`: the frame, or the input itself when the layer has no padding).
fn gather(layer: *const model.Layer, source: []const u8, bias: []const i32, potentials: []i32, fused: ?*neuron.Fused) void {
    const source_row_bytes = @as(usize, if (layer.usesFrame()) layer.frameWidth() else layer.input.w) *
        (if (layer.usesFrame()) frame_zig.pixelBytes(layer) else layer.depthwiseChannelsPadded());
    const row_values = @as(usize, layer.synaptic.w) * layer.depthwiseChannelsPadded();
    var rows: Rows = undefined;
    var oy: u32 = 0;
    while (oy < layer.synaptic.h) : (oy += 1) {
        for (0..layer.kernel_h) |kh| rows[kh] = source[(@as(usize, oy) * layer.stride_h + kh) * source_row_bytes ..];
        gatherRow(layer, &rows, bias, potentials, oy * row_values, fused);
    }
}

/// One output row: out[start + ox * C_p + c] = bias (empty: zero) + the window sums over `rows`
/// (out: the potentials, start their row's first value; or a row buffer, start 0), a block of
/// output pixels at a time.
/// A packed frame (frame_zig.packedChannels) goes through packedRow.
pub fn gatherRow(layer: *const model.Layer, rows: *const Rows, bias: []const i32, out: []i32, start: usize, fused: ?*neuron.Fused) void {
    switch (frame_zig.packedChannels(layer)) {
        0 => {},
        inline 4, 8 => |packed_channels| {
            if (comptime vector.has_avx2 and !vector.has_vnni512) {
                if (windowSumsFitI16(layer)) return packedRow(packed_channels, .sums_i16, layer, rows, bias, out, start, fused);
            }
            return packedRow(packed_channels, .widened, layer, rows, bias, out, start, fused);
        },
        else => unreachable,
    }
    if (comptime vector.has_avx2 and !vector.has_vnni512) {
        // (products in i16 widened per tap measured 5 % slower than vpmulld's widened products)
        if (windowSumsFitI16(layer)) gatherBy(.sums_i16, layer, rows, bias, out, start, fused) else gatherBy(.widened, layer, rows, bias, out, start, fused);
    } else {
        gatherBy(.widened, layer, rows, bias, out, start, fused);
    }
}

fn gatherBy(comptime reading: Reading, layer: *const model.Layer, rows: *const Rows, bias: []const i32, out: []i32, start: usize, fused: ?*neuron.Fused) void {
    const chunks = layer.depthwiseChannelsPadded() / vector.lanes;
    var first: u32 = 0;
    while (first < chunks) {
        const count = @min(block_chunks_max, chunks - first);
        switch (count) {
            block_chunks_max => if (comptime vector.has_vnni512)
                outputRow(.group, block_chunks_max, layer, rows, bias, out, start, first, fused)
            else
                outputRow(reading, block_chunks_max, layer, rows, bias, out, start, first, fused),
            inline 1...block_chunks_max - 1 => |chunk_count| outputRow(reading, chunk_count, layer, rows, bias, out, start, first, fused),
            else => unreachable,
        }
        first += count;
    }
}

/// Vectors of packed windows one packedBlock keeps in registers.
const packed_block_vectors = 4;

/// One output row from packed frame rows (pixels `packed_channels` bytes apart, stride 1 along
/// rows): lane j * packed_channels + c of a vector is channel c of output pixel ox + j, so that one
/// 16-byte load per tap serves lanes / packed_channels windows; a block of vectors shares each tap's
/// weights (its packed_channels weights repeated over the lanes).
fn packedRow(comptime packed_channels: u32, comptime reading: Reading, layer: *const model.Layer, rows: *const Rows, bias: []const i32, out: []i32, start: usize, fused: ?*neuron.Fused) void {
    const windows = vector.lanes / packed_channels; // output pixels per vector
    const width = layer.synaptic.w;
    const vectors = (width + windows - 1) / windows;
    var v: u32 = 0;
    while (v + packed_block_vectors <= vectors) : (v += packed_block_vectors) {
        packedBlock(packed_channels, reading, packed_block_vectors, layer, rows, bias, out, start, v * windows, fused);
    }
    switch (vectors - v) {
        0 => {},
        inline 1...packed_block_vectors - 1 => |rest| packedBlock(packed_channels, reading, rest, layer, rows, bias, out, start, v * windows, fused),
        else => unreachable,
    }
}

/// Lane i of the result: lane i % packed_channels of `values` (a tap's weights, or the bias, over
/// every window of a packed vector).
fn repeatMask(comptime packed_channels: u32) [vector.lanes]i32 {
    var mask: [vector.lanes]i32 = undefined;
    for (&mask, 0..) |*m, i| m.* = @intCast(i % packed_channels);
    return mask;
}

/// Lane i of the result: window `window`'s channel i of a packed vector for i < packed_channels,
/// else lane 0 of the second operand (zero).
fn unpackMask(comptime packed_channels: u32, comptime window: u32) [vector.lanes]i32 {
    var mask: [vector.lanes]i32 = undefined;
    for (&mask, 0..) |*m, i| m.* = if (i < packed_channels) @intCast(window * packed_channels + i) else ~@as(i32, 0);
    return mask;
}

/// Output pixels first .. first + count * windows (those below the row's width) of a packed row.
/// Lanes of windows past the row read frame bytes past it (the frame's slack): wrapping sums, never
/// stored.
inline fn packedBlock(
    comptime packed_channels: u32,
    comptime reading: Reading,
    comptime count: u32,
    layer: *const model.Layer,
    rows: *const Rows,
    bias: []const i32,
    out: []i32,
    start: usize,
    first: u32,
    fused: ?*neuron.Fused,
) void {
    const lanes = vector.lanes;
    const windows = lanes / packed_channels;
    const channels_padded = layer.depthwiseChannelsPadded(); // of the weights and the output
    const weights = layer.depthwiseWeights();
    const repeat = comptime repeatMask(packed_channels);
    var acc: [count]vector.VecI32 = @splat(@splat(0));
    var sums: [count]vector.VecI16 = @splat(@splat(0)); // sums_i16
    var kh: u32 = 0;
    while (kh < layer.kernel_h) : (kh += 1) {
        const row = rows[kh][@as(usize, first) * packed_channels ..];
        var kw: u32 = 0;
        while (kw < layer.kernel_w) : (kw += 1) {
            const tap = @as(usize, kh) * layer.kernel_w + kw;
            const tap_weights: vector.VecI32 = weights[tap * channels_padded ..][0..lanes].*;
            const weight: vector.VecI32 = @shuffle(i32, tap_weights, undefined, repeat);
            switch (reading) {
                .sums_i16 => {
                    const weight_i16: vector.VecI16 = @truncate(weight); // |W| <= 128
                    inline for (0..count) |v| {
                        const values: vector.VecU8 = row[(v * windows + kw) * packed_channels ..][0..lanes].*;
                        sums[v] +%= @as(vector.VecI16, values) *% weight_i16; // exact: |255 x 128| < 2^15
                    }
                },
                .widened => inline for (0..count) |v| {
                    const values: vector.VecU8 = row[(v * windows + kw) * packed_channels ..][0..lanes].*;
                    acc[v] = vector.multiplyAddWide(acc[v], values, weight);
                },
                .group => unreachable,
            }
        }
    }
    const bias_packed: vector.VecI32 = if (bias.len == 0) @splat(0) else @shuffle(i32, @as(vector.VecI32, bias[0..lanes].*), undefined, repeat);
    const zero: vector.VecI32 = @splat(0);
    inline for (0..count) |v| {
        // sums_i16: never wrapped for the windows inside the row (windowSumsFitI16)
        const total = (if (reading == .sums_i16) @as(vector.VecI32, sums[v]) else acc[v]) +% bias_packed;
        inline for (0..windows) |j| {
            const ox = first + v * windows + j;
            if (ox < layer.synaptic.w) {
                const pixel = @shuffle(i32, total, zero, unpackMask(packed_channels, j));
                const offset = start + @as(usize, ox) * channels_padded;
                if (fused) |f| f.store(offset, 0, pixel) else vector.storeVector(out, offset, pixel);
            }
        }
    }
}

/// Whether a whole window's products of one channel add up in i16 without overflow: every value is
/// at most the input's largest (pad values included) and |W| <= 2^(b-1), so taps x both fit.
fn windowSumsFitI16(layer: *const model.Layer) bool {
    const taps = @as(u64, layer.kernel_h) * layer.kernel_w;
    const weight_max = @as(u64, 1) << @intCast(layer.weight_bits - 1);
    return taps * layer.input_max[0] * weight_max <= std.math.maxInt(i16);
}

/// How a block reads its inputs: `group` (with VNNI), a whole group of 64 channels as the raw bytes,
/// with the weights' group layout (model.Layer.depthwise_groups), four dot products per tap and no
/// widening; `widened`, each vector of 16 inputs zero-extended to i32 (the channels after the last
/// group, and every channel without VNNI).
/// Without VNNI, on AVX2: `sums_i16`, each product in i16 (exact: 255 x 128 < 2^15, vpmullw on 16
/// lanes instead of two vpmulld on 8), the window's products summed in i16 and widened once
/// (windowSumsFitI16: 4-bit activations, or 8-bit ones under 4-bit weights).
const Reading = enum { group, widened, sums_i16 };

fn outputRow(comptime reading: Reading, comptime chunks: u32, layer: *const model.Layer, rows: *const Rows, bias: []const i32, out: []i32, start: usize, first: u32, fused: ?*neuron.Fused) void {
    // i16 sums of 16 channels take one AVX2 register: blocks of pixels sharing each weight vector
    const pixels = comptime if (reading == .sums_i16) @min(4, 12 / chunks) else vector.blockPixels(chunks);
    const width = layer.synaptic.w;
    @setEvalBranchQuota(20_000); // the inline loops below instantiate a block kernel per width
    var ox: u32 = 0;
    while (ox + pixels <= width) : (ox += pixels) pixelBlock(reading, chunks, pixels, layer, rows, bias, out, start, first, ox, fused);
    if (comptime pixels > 1) switch (width - ox) {
        0 => {},
        inline 1...pixels - 1 => |rest| pixelBlock(reading, chunks, rest, layer, rows, bias, out, start, first, ox, fused),
        else => unreachable,
    };
}

/// Output pixels ox .. ox + pixels of a row, channel vectors first .. first + chunks: every tap's
/// weight vector is loaded once for the whole block.
inline fn pixelBlock(
    comptime reading: Reading,
    comptime chunks: u32,
    comptime pixels: u32,
    layer: *const model.Layer,
    rows: *const Rows,
    bias: []const i32,
    out: []i32,
    start: usize,
    first: u32,
    ox: u32,
    fused: ?*neuron.Fused,
) void {
    const lanes = vector.lanes;
    const channels_padded = layer.depthwiseChannelsPadded(); // of the frame and the output
    const pixel_step = @as(usize, layer.stride_w) * channels_padded; // bytes between neighbouring windows
    const weights = layer.depthwiseWeights();
    var acc: [pixels][chunks]vector.VecI32 = undefined;
    inline for (0..pixels) |p| {
        inline for (0..chunks) |k| acc[p][k] = if (reading == .group or bias.len == 0) @splat(0) else bias[(first + k) * lanes ..][0..lanes].*;
    }
    var sums: [pixels][chunks]vector.VecI16 = @splat(@splat(@splat(0))); // sums_i16
    var kh: u32 = 0;
    while (kh < layer.kernel_h) : (kh += 1) {
        const row = rows[kh][@as(usize, ox) * pixel_step ..];
        var kw: u32 = 0;
        while (kw < layer.kernel_w) : (kw += 1) {
            const tap = @as(usize, kh) * layer.kernel_w + kw;
            switch (reading) {
                .group => {
                    const Bytes = @Vector(4 * lanes, u8);
                    const group_weights = layer.depthwise_groups[((tap * layer.depthwiseGroupCount()) + first / 4) * 4 * 4 * lanes ..][0 .. 4 * 4 * lanes];
                    var weight: [4]@Vector(4 * lanes, i8) = undefined;
                    inline for (0..4) |k| weight[k] = group_weights[k * 4 * lanes ..][0 .. 4 * lanes].*;
                    inline for (0..pixels) |p| {
                        const values: Bytes = row[p * pixel_step + kw * channels_padded + first * lanes ..][0 .. 4 * lanes].*;
                        inline for (0..4) |k| acc[p][k] = vector.dotBytes(acc[p][k], values, weight[k]);
                    }
                },
                .widened => {
                    const tap_weights = weights[tap * channels_padded ..][0..channels_padded];
                    inline for (0..chunks) |k| {
                        const offset = (first + k) * lanes;
                        const weight: vector.VecI32 = tap_weights[offset..][0..lanes].*;
                        inline for (0..pixels) |p| {
                            const values: vector.VecU8 = row[p * pixel_step + kw * channels_padded + offset ..][0..lanes].*;
                            acc[p][k] = vector.multiplyAddWide(acc[p][k], values, weight);
                        }
                    }
                },
                .sums_i16 => {
                    const tap_weights = weights[tap * channels_padded ..][0..channels_padded];
                    inline for (0..chunks) |k| {
                        const offset = (first + k) * lanes;
                        // |W| <= 128: the low half of each i32 weight is the weight
                        const weight: vector.VecI16 = @truncate(@as(vector.VecI32, tap_weights[offset..][0..lanes].*));
                        inline for (0..pixels) |p| {
                            const values: vector.VecU8 = row[p * pixel_step + kw * channels_padded + offset ..][0..lanes].*;
                            const product = @as(vector.VecI16, values) *% weight; // exact: |255 x 128| < 2^15
                            sums[p][k] +%= product;
                        }
                    }
                },
            }
        }
    }
    if (reading == .sums_i16) {
        inline for (0..pixels) |p| {
            inline for (0..chunks) |k| acc[p][k] +%= @as(vector.VecI32, sums[p][k]); // never wrapped: windowSumsFitI16
        }
    }
    if (reading == .group) {
        // lane c of sum k holds channel 4c + k: back to channel order, then the bias
        inline for (0..pixels) |p| {
            acc[p] = channelOrder(acc[p]);
            if (bias.len != 0) inline for (0..4) |k| {
                acc[p][k] +%= bias[(first + k) * lanes ..][0..lanes].*;
            };
        }
    }
    conv2d_dense.storeBlock(chunks, pixels, &acc, out, start + @as(usize, ox) * channels_padded, channels_padded, first, fused);
}
