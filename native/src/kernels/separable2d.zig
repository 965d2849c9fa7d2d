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
pub fn run(layer: *const model.Layer, input: []const u8, frame: []u8, mid: []i32, potentials: []i32, events_buffer: []model.Event) u64 {
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
    const fits = vector.has_pairs_fit_i16 and pointwisePairsFitI16(layer);
    var nonzero: u64 = 0;
    var pixel: usize = 0;
    while (pixel < pixels) : (pixel += 1) {
        nonzero += requantizePixel(layer, mid[pixel * mid_padded ..][0..mid_padded], mid_bytes);
        const row = potentials[pixel * cout_padded ..][0..cout_padded];
        if (fits) pointwisePixel(.pairs_fit_i16, layer, mid_bytes, corrected, row) else pointwisePixel(.exact, layer, mid_bytes, corrected, row);
    }
    synaptic_ops += nonzero * layer.synaptic.c;
    return synaptic_ops;
}

/// u <= 255 and |Pw| <= 2^(weight_bits - 1): two products fit i16 for weights of at most 4 bits.
fn pointwisePairsFitI16(layer: *const model.Layer) bool {
    const weight_max = @as(u64, 1) << @intCast(layer.weight_bits - 1);
    return 2 * 255 * weight_max <= std.math.maxInt(i16);
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
fn requantizePixel(layer: *const model.Layer, q: []const i32, bytes: []u8) u64 {
    const Wide = @Vector(lanes, i64);
    const low: vector.VecI32 = @splat(-(@as(i32, 1) << @intCast(layer.mid_bits - 1)));
    const high: vector.VecI32 = @splat((@as(i32, 1) << @intCast(layer.mid_bits - 1)) - 1);
    var nonzero: u64 = 0;
    var chunk: usize = 0;
    while (chunk < q.len) : (chunk += lanes) {
        const value: vector.VecI32 = q[chunk..][0..lanes].*;
        const multiplier: vector.VecI32 = layer.mid_multiplier[chunk..][0..lanes].*;
        const shift: @Vector(lanes, u6) = @intCast(@as(vector.VecI32, layer.mid_shift[chunk..][0..lanes].*));
        const one: Wide = @splat(1);
        const rounding = (one << shift) >> @splat(1); // 2^(s-1), and 0 for s = 0
        const product = @as(Wide, value) * @as(Wide, multiplier);
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

/// row = corrected + sum over m of Pw[m, :] * u[m], blocks of output-channel vectors in registers.
fn pointwisePixel(comptime dots: vector.Dots, layer: *const model.Layer, bytes: []const u8, corrected: []const i32, row: []i32) void {
    const chunks = row.len / lanes;
    var first: usize = 0;
    while (first < chunks) {
        const count = @min(block_chunks_max, chunks - first);
        switch (count) {
            inline 1...block_chunks_max => |block| pointwiseBlock(dots, block, layer, bytes, corrected, row, first),
            else => unreachable,
        }
        first += count;
    }
}

inline fn pointwiseBlock(comptime dots: vector.Dots, comptime chunks: usize, layer: *const model.Layer, bytes: []const u8, corrected: []const i32, row: []i32, first: usize) void {
    const cout_padded = row.len;
    const quads = (layer.depthwiseChannels() + limits.quad_channels - 1) / limits.quad_channels;
    var acc: [chunks]vector.VecI32 = undefined;
    inline for (0..chunks) |k| acc[k] = corrected[(first + k) * lanes ..][0..lanes].*;
    for (0..quads) |q| {
        const values = std.mem.readInt(u32, bytes[q * limits.quad_channels ..][0..4], .little);
        const weights = layer.pointwise[(q * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
        inline for (0..chunks) |k| acc[k] = vector.dotQuadBy(dots, acc[k], values, weights[k * quad_bytes ..][0..quad_bytes]);
    }
    inline for (0..chunks) |k| vector.storeVector(row, (first + k) * lanes, acc[k]);
}
