//! separable2d (docs/semantics.md): a depthwise stage (depth multiplier M) without bias into the
//! intermediate Q of C * M channels, requantized per channel to a signed mid_bits integer Mid, then
//! a pointwise stage over Mid. The depthwise stage is depthwise2d's kernel (into the i32 scratch
//! `mid`); then, one pixel at a time while its Q is in L1, Mid is requantized with vector
//! arithmetic into a small byte buffer as u = Mid + 128 (unsigned, so the pointwise stage is a u8 x
//! i8 dot product like a 1x1 conv's, over the quad layout of Layer.pointwise), and
//! P = (bias - 128 * sum over m of Pw[m, co]) + sum over m of Pw[m, co] * u[m]: the corrected bias is
//! computed once per call. Wrapping i32 arithmetic makes the result exact whenever the true one
//! fits i32 (the loader's overflow bound).

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const depthwise2d = @import("depthwise2d.zig");
const conv2d_dense = @import("conv2d_dense.zig");
const neuron = @import("neuron.zig");

const lanes = vector.lanes;
const quad_bytes = vector.quad_bytes;
/// Output-channel vectors the pointwise stage keeps in registers.
const block_chunks_max = 4;
/// u = Mid + mid_offset lies in [0, 255] for every mid_bits <= 8.
const mid_offset = 128;

/// mid: i32 scratch (OH, OW, Cmid_p) for Q; potentials: i32 (OH, OW, Cout_p) before pooling;
/// events_buffer: at least Cmid_p bytes of scratch (planner.zig eventsMax), one pixel's u.
/// Returns the synaptic operations: the depthwise count plus Cout per non-zero Mid.
/// frame: the layer's padded-input scratch (empty when it reads its input directly).
/// fused: when given, relu runs on each pixel's finished sums and writes activations, not potentials.
pub fn run(layer: *const model.Layer, input: []const u8, frame: []u8, mid: []i32, potentials: []i32, events_buffer: []model.Event, fused: ?*neuron.Fused) u64 {
    const mid_padded = layer.depthwiseChannelsPadded();
    const cout_padded = layer.synaptic.channelsPadded();
    const pixels = layer.synaptic.pixels();
    std.debug.assert(mid.len == pixels * mid_padded);
    std.debug.assert(potentials.len == pixels * cout_padded);
    const mid_bytes: []u8 = std.mem.sliceAsBytes(events_buffer)[0..mid_padded];
    var synaptic_ops = depthwise2d.accumulateBest(layer, input, frame, &.{}, mid, null);
    // the corrected bias goes into the last pixel's row: each pixel reads it before any row is
    // written, and the last pixel reads each of its vectors before storing over it
    const corrected = potentials[@as(usize, @intCast(pixels - 1)) * cout_padded ..][0..cout_padded];
    correctedBias(layer, corrected);
    // u <= 255 (Mid + 128 of a signed 8-bit Mid at most)
    const choice = conv2d_dense.choose(255, layer.weight_bits);
    const requantize_i32 = requantizeFitsI32(layer);
    var nonzero: u64 = 0;
    var pixel: usize = 0;
    while (pixel < pixels) : (pixel += 1) {
        const q = mid[pixel * mid_padded ..][0..mid_padded];
        nonzero += if (requantize_i32) requantizePixel(i32, layer, q, mid_bytes) else requantizePixel(i64, layer, q, mid_bytes);
        const row = potentials[pixel * cout_padded ..][0..cout_padded];
        switch (choice.kernel) {
            inline else => |kernel| pointwisePixel(kernel, layer, mid_bytes, corrected, row, choice.sums_per_i16, pixel * cout_padded, fused),
        }
    }
    if (fused) |f| f.done = true;
    synaptic_ops += nonzero * layer.synaptic.c;
    return synaptic_ops;
}

/// Whether every channel's Q * m + 2^(s-1) fits i32, so that requantizePixel(i32, ...) is exact: |Q|
/// is at most the sum over taps of |W| times the largest input value (pad values included), a bound
/// computed per call from the weights (a few vector operations per tap and channel vector).
fn requantizeFitsI32(layer: *const model.Layer) bool {
    const Wide = @Vector(lanes, i64);
    const channels_padded = layer.depthwiseChannelsPadded();
    const taps = @as(usize, layer.kernel_h) * layer.kernel_w;
    const weights = layer.depthwiseWeights();
    const value_max: Wide = @splat(@intCast(layer.input_max[0]));
    const limit: Wide = @splat(std.math.maxInt(i32));
    var chunk: usize = 0;
    while (chunk < channels_padded) : (chunk += lanes) {
        var weight_sum: vector.VecI32 = @splat(0); // |W| <= 128, taps <= limits: no overflow
        for (0..taps) |tap| weight_sum += @intCast(@abs(@as(vector.VecI32, weights[tap * channels_padded + chunk ..][0..lanes].*)));
        const multiplier: Wide = @abs(@as(vector.VecI32, layer.mid_multiplier[chunk..][0..lanes].*));
        const shift: @Vector(lanes, u6) = @intCast(@as(vector.VecI32, layer.mid_shift[chunk..][0..lanes].*));
        const rounding = (@as(Wide, @splat(1)) << shift) >> @splat(1);
        const bound = @as(Wide, weight_sum) * value_max * multiplier + rounding;
        if (@reduce(.Or, bound > limit)) return false;
    }
    return true;
}

/// corrected[co] = bias[co] - 128 * sum over m of Pw[m, co] (wrapping), for every padded channel.
fn correctedBias(layer: *const model.Layer, corrected: []i32) void {
    const cout_padded = layer.synaptic.channelsPadded();
    const quads = (layer.depthwiseChannels() + limits.quad_channels - 1) / limits.quad_channels;
    const offsets: u32 = 0x01_01_01_01 * mid_offset;
    var chunk: usize = 0;
    while (chunk < cout_padded) : (chunk += lanes) {
        var sum: vector.VecI32 = @splat(0);
        for (0..quads) |q| sum = vector.dotQuad(sum, offsets, layer.pointwise[(q * cout_padded + chunk) * limits.quad_channels ..][0..quad_bytes]);
        const bias: vector.VecI32 = layer.bias[chunk..][0..lanes].*;
        vector.storeVector(corrected, chunk, bias -% sum);
    }
}

/// One pixel's u = clamp(requant(Q, m, s), -2^(mid_bits-1), 2^(mid_bits-1) - 1) + 128 into `bytes`
/// (padding lanes: m = 0, so Mid = 0, and their pointwise weights are 0). Returns the non-zero Mid.
/// Int: i64, or i32 where requantizeFitsI32 (AVX2 has no i64 multiply or arithmetic shift by lane).
fn requantizePixel(comptime Int: type, layer: *const model.Layer, q: []const i32, bytes: []u8) u64 {
    const Wide = @Vector(lanes, Int);
    const low: vector.VecI32 = @splat(-(@as(i32, 1) << @intCast(layer.mid_bits - 1)));
    const high: vector.VecI32 = @splat((@as(i32, 1) << @intCast(layer.mid_bits - 1)) - 1);
    var nonzero: u64 = 0;
    var chunk: usize = 0;
    while (chunk < q.len) : (chunk += lanes) {
        const value: vector.VecI32 = q[chunk..][0..lanes].*;
        const multiplier: vector.VecI32 = layer.mid_multiplier[chunk..][0..lanes].*;
        const shift: @Vector(lanes, std.math.Log2Int(Int)) = @intCast(@as(vector.VecI32, layer.mid_shift[chunk..][0..lanes].*));
        const one: Wide = @splat(1);
        const rounding = (one << shift) >> @splat(1); // 2^(s-1), and 0 for s = 0
        const product = @as(Wide, value) *% @as(Wide, multiplier); // i32: never wraps (requantizeFitsI32)
        const scaled = (product + rounding) >> shift; // arithmetic: floor, as neuron.requantize
        const clamped: vector.VecI32 = @intCast(std.math.clamp(scaled, @as(Wide, low), @as(Wide, high)));
        nonzero += std.simd.countTrues(clamped != @as(vector.VecI32, @splat(0)));
        // in [0, 255]: a truncation (a vector @intCast to u8 was lowered with signed saturation,
        // 128..255 -> 127, in ReleaseSafe builds)
        const offset: @Vector(lanes, u32) = @bitCast(clamped + @as(vector.VecI32, @splat(mid_offset)));
        const unsigned: @Vector(lanes, u8) = @truncate(offset);
        bytes[chunk..][0..lanes].* = unsigned;
    }
    return nonzero;
}

/// row = corrected + sum over m of Pw[m, :] * u[m], blocks of output-channel vectors in registers,
/// by the kernel conv2d_dense.choose picks (sums_per_i16: its group length).
/// row_offset: the row's first value in the potentials (and activations, when fused).
fn pointwisePixel(comptime kernel: conv2d_dense.Kernel, layer: *const model.Layer, bytes: []const u8, corrected: []const i32, row: []i32, sums_per_i16: u32, row_offset: usize, fused: ?*neuron.Fused) void {
    const chunks = row.len / lanes;
    const block_chunks = @min(block_chunks_max, comptime kernel.blockChunks());
    var first: usize = 0;
    while (first < chunks) {
        const count = @min(block_chunks, chunks - first);
        switch (count) {
            inline 1...block_chunks => |block| pointwiseBlock(kernel, block, layer, bytes, corrected, row, first, sums_per_i16, row_offset, fused),
            else => unreachable,
        }
        first += count;
    }
}

inline fn pointwiseBlock(comptime kernel: conv2d_dense.Kernel, comptime chunks: usize, layer: *const model.Layer, bytes: []const u8, corrected: []const i32, row: []i32, first: usize, sums_per_i16: u32, row_offset: usize, fused: ?*neuron.Fused) void {
    const cout_padded = row.len;
    const quads = (layer.depthwiseChannels() + limits.quad_channels - 1) / limits.quad_channels;
    var acc: [1][chunks]vector.VecI32 = undefined;
    inline for (0..chunks) |k| acc[0][k] = corrected[(first + k) * lanes ..][0..lanes].*;
    if (comptime vector.has_pairs_fit_i16 and (kernel == .sums_i16 or kernel == .nibble_sums_i16)) {
        const split = kernel == .nibble_sums_i16;
        var sums: [1][chunks]vector.PairSumsI16 = @splat(@splat(vector.pair_sums_zero));
        var high_sums: [1][chunks]vector.PairSumsI16 = @splat(@splat(vector.pair_sums_zero)); // split: of the high nibbles
        var q: usize = 0;
        while (q < quads) {
            const end = @min(q + sums_per_i16, quads);
            while (q < end) : (q += 1) {
                const values = std.mem.readInt(u32, bytes[q * limits.quad_channels ..][0..4], .little);
                const weights = layer.pointwise[(q * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
                const low = if (split) values & 0x0f0f0f0f else values;
                inline for (0..chunks) |k| sums[0][k] = vector.addPairSumsI16(sums[0][k], low, weights[k * quad_bytes ..][0..quad_bytes]);
                if (split) {
                    const high = (values >> 4) & 0x0f0f0f0f;
                    inline for (0..chunks) |k| high_sums[0][k] = vector.addPairSumsI16(high_sums[0][k], high, weights[k * quad_bytes ..][0..quad_bytes]);
                }
            }
            conv2d_dense.widenBlock(chunks, 1, split, &acc, &sums, &high_sums);
        }
    } else {
        for (0..quads) |q| {
            const values = std.mem.readInt(u32, bytes[q * limits.quad_channels ..][0..4], .little);
            const weights = layer.pointwise[(q * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
            inline for (0..chunks) |k| acc[0][k] = vector.dotQuadBy(comptime kernel.dots(), acc[0][k], values, weights[k * quad_bytes ..][0..quad_bytes]);
        }
    }
    inline for (0..chunks) |k| {
        const channel = (first + k) * lanes;
        // fused: the corrected bias (the last row) is read before any pixel's activations are written,
        // and the potentials are not written at all
        if (fused) |f| f.store(row_offset + channel, channel, acc[0][k]) else vector.storeVector(row, channel, acc[0][k]);
    }
}
