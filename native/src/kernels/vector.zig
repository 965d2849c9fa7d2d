//! Vector primitives shared by the kernels. Every buffer's channel axis is padded to a multiple of
//! `lanes` (limits.channel_lanes) with zeros, so these never need a scalar tail.

const std = @import("std");
const builtin = @import("builtin");
const limits = @import("../limits.zig");
const Event = @import("../model.zig").Event;
const Quad = @import("../model.zig").Quad;

pub const lanes = limits.channel_lanes;
pub const VecI32 = @Vector(lanes, i32);
pub const VecI8 = @Vector(lanes, i8);
pub const VecI16 = @Vector(lanes, i16);

/// Every event value the kernels scatter fits here: activations are u8 (<= 255) and separable
/// intermediates signed 8-bit at most, so value * weight (|w| <= 128) fits i16 exactly.
pub const event_value_max = 255;
pub const event_value_min = -128;

comptime {
    std.debug.assert(event_value_max * 128 <= std.math.maxInt(i16));
    std.debug.assert(event_value_min * -128 <= std.math.maxInt(i16));
}
pub const VecU8 = @Vector(lanes, u8);

/// row[c] += sum over events e of e.value * weights[e.index * row.len + c], for every c of the row:
/// the scatter of one group of events over their contiguous weight vectors (output channel fastest).
pub fn accumulateEvents(row: []i32, weights: []const i8, events: []const Event) void {
    const channels_padded = row.len;
    std.debug.assert(channels_padded % lanes == 0);
    var chunk: usize = 0;
    while (chunk < channels_padded) : (chunk += lanes) {
        var acc: VecI32 = row[chunk..][0..lanes].*;
        for (events) |event| {
            std.debug.assert(event.value >= event_value_min and event.value <= event_value_max);
            const weight: VecI8 = weights[event.index * channels_padded + chunk ..][0..lanes].*;
            const value: VecI16 = @splat(@intCast(event.value));
            const product: VecI16 = @as(VecI16, weight) *% value; // exact: see event_value_max
            acc +%= @as(VecI32, product);
        }
        row[chunk..][0..lanes].* = acc;
    }
}

/// x86-64 with AVX-512 VNNI: one vpdpbusd does 64 u8 x i8 multiply-adds.
pub const has_vnni512 = builtin.cpu.arch == .x86_64 and
    std.Target.x86.featureSetHas(builtin.cpu.features, .avx512vnni) and
    std.Target.x86.featureSetHas(builtin.cpu.features, .avx512bw);

pub const quad_bytes = lanes * limits.quad_channels;

/// Whether the kernels keep large blocks of running sums in registers, instantiating a kernel per
/// block shape: on x86-64 with AVX-512 (32 registers of 16 lanes each). Elsewhere (NEON, a
/// Cortex-M without vector registers) one 16-lane vector already spans several registers or none,
/// and every block shape is more code: blocks of one pixel and at most 4 vectors there.
pub const wide_register_blocks = builtin.cpu.arch == .x86_64 and
    std.Target.x86.featureSetHas(builtin.cpu.features, .avx512f);

/// Output pixels of a block of `chunks` channel vectors (conv2d_dense.zig, depthwise2d.zig): 16
/// running sums at most, the rest of the registers hold weights and inputs.
pub fn blockPixels(comptime chunks: u32) u32 {
    return if (wide_register_blocks) @min(8, 16 / chunks) else 1;
} // weights of one chunk of output channels for one quad

/// acc[c] + sum over k < 4 of values.byte[k] * weights[c * 4 + k], exactly (u8 x i8 products summed
/// in i32, as vpdpbusd does).
pub inline fn dotQuad(acc: VecI32, values: u32, weights: *const [quad_bytes]i8) VecI32 {
    return dotQuadVector(acc, values, weights.*);
}

/// dotQuad with the weights already in a vector (unpacked from nibbles, accumulateNibbleQuads).
pub inline fn dotQuadVector(acc: VecI32, values: u32, weight: @Vector(quad_bytes, i8)) VecI32 {
    const broadcast: @Vector(lanes, u32) = @splat(values);
    return dotBytes(acc, @bitCast(broadcast), weight);
}

/// dotQuadVector, by the given kind of dot product.
pub inline fn dotQuadVectorBy(comptime dots: Dots, acc: VecI32, values: u32, weight: @Vector(quad_bytes, i8)) VecI32 {
    if (comptime dots == .pairs_fit_i16 and has_pairs_fit_i16) {
        const broadcast: @Vector(lanes, u32) = @splat(values);
        return acc +% dotPairsI16(@bitCast(broadcast), weight);
    }
    return dotQuadVector(acc, values, weight);
}

/// acc[c] + sum over k < 4 of values[4c + k] * weights[4c + k], exactly (u8 x i8 products summed in
/// i32): what one vpdpbusd does.
pub inline fn dotBytes(acc: VecI32, values: @Vector(quad_bytes, u8), weights: @Vector(quad_bytes, i8)) VecI32 {
    if (comptime has_vnni512 and lanes == 16) {
        return asm ("vpdpbusd %[w], %[a], %[acc]"
            : [acc] "=v" (-> VecI32),
            : [acc_in] "0" (acc),
              [a] "v" (values),
              [w] "v" (weights),
        );
    }
    if (comptime has_avx2 and lanes == 16) return acc +% dotBytesAvx2(values, weights);
    const product: @Vector(quad_bytes, i16) = @as(@Vector(quad_bytes, i16), weights) *% @as(@Vector(quad_bytes, i16), values);
    var sum = acc;
    inline for (0..limits.quad_channels) |k| {
        const part: @Vector(lanes, i16) = @shuffle(i16, product, undefined, every_fourth[k]);
        sum +%= @as(VecI32, part);
    }
    return sum;
}

/// x86-64 with AVX-512BW: 512-bit vectors of bytes and i16 (32 i16 lanes per register).
pub const has_avx512bw = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512bw);

/// x86-64 with AVX2 (and without AVX-512 VNNI): dot products through vpmaddwd.
pub const has_avx2 = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx2);

/// sum over k < 4 of values[4c + k] * weights[4c + k] for the 16 channels c, exactly, without
/// VNNI: the bytes widened to i16 (u8 zero-, i8 sign-extended), four vpmaddwd give the i32 sums of
/// every pair (k = 0, 1 and k = 2, 3; |255 * 128 * 2| < 2^31, so no saturation, unlike
/// vpmaddubsw), and one add of the even and odd pair sums gives the quad sums in channel order.
/// The generic fallback below spends most of its time shuffling 64 i16 lanes on AVX2.
inline fn dotBytesAvx2(values: @Vector(quad_bytes, u8), weights: @Vector(quad_bytes, i8)) VecI32 {
    const values_wide: @Vector(quad_bytes, i16) = values;
    const weights_wide: @Vector(quad_bytes, i16) = weights;
    var pairs: [4]@Vector(8, i32) = undefined; // pairs[j] lane l: channel 4j + l / 2, pair l % 2
    inline for (0..4) |j| {
        const a: @Vector(16, i16) = @shuffle(i16, values_wide, undefined, sliceMask(16, j * 16));
        const b: @Vector(16, i16) = @shuffle(i16, weights_wide, undefined, sliceMask(16, j * 16));
        pairs[j] = asm ("vpmaddwd %[b], %[a], %[out]"
            : [out] "=x" (-> @Vector(8, i32)),
            : [a] "x" (a),
              [b] "x" (b),
        );
    }
    const low: @Vector(16, i32) = @shuffle(i32, pairs[0], pairs[1], concatMask(8));
    const high: @Vector(16, i32) = @shuffle(i32, pairs[2], pairs[3], concatMask(8));
    const even: VecI32 = @shuffle(i32, low, high, strideMask(16, 0));
    const odd: VecI32 = @shuffle(i32, low, high, strideMask(16, 1));
    return even +% odd;
}

/// How a kernel computes its u8 x i8 dot products (kernels choose per layer, once per call):
/// `exact` always (vpdpbusd with VNNI, dotBytesAvx2 with AVX2, the portable code elsewhere);
/// `pairs_fit_i16` when every sum of two products fits i16 (model.Layer.dotPairsFitI16), which
/// lets AVX2 use vpmaddubsw (saturating, here never saturated) and one vpmaddwd: a third of the
/// instructions of dotBytesAvx2.
pub const Dots = enum { exact, pairs_fit_i16 };

/// Whether `Dots.pairs_fit_i16` has a faster instruction sequence on this CPU.
pub const has_pairs_fit_i16 = has_avx2 and !has_vnni512 and lanes == 16;

/// dotQuad, by the given kind of dot product.
pub inline fn dotQuadBy(comptime dots: Dots, acc: VecI32, values: u32, weights: *const [quad_bytes]i8) VecI32 {
    if (comptime dots == .pairs_fit_i16 and has_pairs_fit_i16) {
        const broadcast: @Vector(lanes, u32) = @splat(values);
        return acc +% dotPairsI16(@bitCast(broadcast), weights.*);
    }
    return dotQuad(acc, values, weights);
}

/// sum over k < 4 of values[4c + k] * weights[4c + k] for 16 channels, when every
/// values[i] * weights[i] + values[i + 1] * weights[i + 1] of an even i fits i16: vpmaddubsw gives
/// those pair sums in i16 (exact, as they fit), vpmaddwd with ones adds each channel's two pairs
/// into its i32 lane, in channel order.
inline fn dotPairsI16(values: @Vector(quad_bytes, u8), weights: @Vector(quad_bytes, i8)) VecI32 {
    const ones: @Vector(16, i16) = @splat(1);
    var sums: [2]@Vector(8, i32) = undefined; // channels 8h .. 8h + 7
    inline for (0..2) |h| {
        const a: @Vector(32, u8) = @shuffle(u8, values, undefined, sliceMask(32, h * 32));
        const b: @Vector(32, i8) = @shuffle(i8, weights, undefined, sliceMask(32, h * 32));
        const pairs = asm ("vpmaddubsw %[b], %[a], %[out]"
            : [out] "=x" (-> @Vector(16, i16)),
            : [a] "x" (a),
              [b] "x" (b),
        );
        sums[h] = asm ("vpmaddwd %[ones], %[pairs], %[out]"
            : [out] "=x" (-> @Vector(8, i32)),
            : [pairs] "x" (pairs),
              [ones] "x" (ones),
        );
    }
    return @shuffle(i32, sums[0], sums[1], concatMask(8));
}

/// How many quads' pair sums (u8 x i8 products of neighbouring channels, summed in twos) one i16
/// lane can add up exactly: every pair sum lies in [-2 * value_max * 2^(b-1), 2 * value_max * 2^(b-1)]
/// for values <= value_max and b-bit weights, so `n` of them fit i16 when n times that bound does.
/// 0 when not even one pair fits (8-bit values with 8-bit weights), or on a CPU without the fast
/// sequence (has_pairs_fit_i16: AVX2 without VNNI; vpdpbusd needs none of this).
pub fn pairSumsPerI16(value_max: u32, weight_bits: u32) u32 {
    if (!has_pairs_fit_i16 or weight_bits == 0 or value_max == 0) return 0;
    const pair_max = 2 * @as(u64, value_max) << @intCast(weight_bits - 1);
    return @intCast(@min(@as(u64, std.math.maxInt(i16)) / pair_max, std.math.maxInt(u16)));
}

/// Running i16 sums of one channel vector: lanes 2c and 2c + 1 of half h hold two pair sums of
/// channel 8h + c (vpmaddubsw's output order). Exact as long as pairSumsPerI16 bounds their count.
pub const PairSumsI16 = [2]@Vector(16, i16);
pub const pair_sums_zero: PairSumsI16 = .{ @splat(0), @splat(0) };

/// sums + the pair sums of one quad of values (broadcast to every channel) with one channel
/// vector's quad weights: two vpmaddubsw and two vpaddw, no widening (widenPairSums does that once
/// per pairSumsPerI16 quads). Only where has_pairs_fit_i16.
pub inline fn addPairSumsI16(sums: PairSumsI16, values: u32, weights: *const [quad_bytes]i8) PairSumsI16 {
    comptime std.debug.assert(has_pairs_fit_i16);
    const broadcast: @Vector(lanes, u32) = @splat(values);
    const bytes: @Vector(quad_bytes, u8) = @bitCast(broadcast);
    const weight: @Vector(quad_bytes, i8) = weights.*;
    var result: PairSumsI16 = undefined;
    inline for (0..2) |h| {
        const a: @Vector(32, u8) = @shuffle(u8, bytes, undefined, sliceMask(32, h * 32));
        const b: @Vector(32, i8) = @shuffle(i8, weight, undefined, sliceMask(32, h * 32));
        const pairs = asm ("vpmaddubsw %[b], %[a], %[out]"
            : [out] "=x" (-> @Vector(16, i16)),
            : [a] "x" (a),
              [b] "x" (b),
        );
        result[h] = sums[h] +% pairs; // never wraps: see pairSumsPerI16
    }
    return result;
}

/// addPairSumsI16 for two pixels in one channel vector of 8 channels (conv2d_dense.zig
/// outputRowsPaired): half 0 adds `first`'s pair sums, half 1 `second`'s, both with the same
/// 8 channels' quad weights. Only where has_pairs_fit_i16.
pub inline fn addPairSumsI16Paired(sums: PairSumsI16, first: u32, second: u32, weights: *const [quad_bytes / 2]i8) PairSumsI16 {
    comptime std.debug.assert(has_pairs_fit_i16);
    const weight: @Vector(quad_bytes / 2, i8) = weights.*;
    var result: PairSumsI16 = undefined;
    inline for (0..2) |h| {
        const broadcast: @Vector(lanes / 2, u32) = @splat(if (h == 0) first else second);
        const a: @Vector(quad_bytes / 2, u8) = @bitCast(broadcast);
        const pairs = asm ("vpmaddubsw %[b], %[a], %[out]"
            : [out] "=x" (-> @Vector(16, i16)),
            : [a] "x" (a),
              [b] "x" (weight),
        );
        result[h] = sums[h] +% pairs; // never wraps: see pairSumsPerI16
    }
    return result;
}

/// The largest nibble: a value split as lo + 16 hi has both parts <= this.
pub const nibble_max = 15;

/// acc + every channel's pair sums (one vpmaddwd by ones per half: the two i16 lanes of a channel
/// added into its i32 lane, in channel order).
pub inline fn widenPairSums(acc: VecI32, sums: PairSumsI16) VecI32 {
    return widenPairSumsBy(acc, sums, 1);
}

/// acc + factor x every channel's pair sums (|sum| <= 2^15, so |factor| <= 2^15 keeps it exact).
pub inline fn widenPairSumsBy(acc: VecI32, sums: PairSumsI16, comptime factor: i16) VecI32 {
    comptime std.debug.assert(has_pairs_fit_i16);
    const ones: @Vector(16, i16) = @splat(factor);
    var wide: [2]@Vector(8, i32) = undefined;
    inline for (0..2) |h| {
        wide[h] = asm ("vpmaddwd %[ones], %[pairs], %[out]"
            : [out] "=x" (-> @Vector(8, i32)),
            : [pairs] "x" (sums[h]),
              [ones] "x" (ones),
        );
    }
    return acc +% @shuffle(i32, wide[0], wide[1], concatMask(8));
}

/// Lanes [first, first + count) of one vector.
fn sliceMask(comptime count: usize, comptime first: usize) [count]i32 {
    @setEvalBranchQuota(10_000);
    var mask: [count]i32 = undefined;
    for (&mask, 0..) |*m, i| m.* = @intCast(first + i);
    return mask;
}

/// Both vectors of `half` lanes one after the other.
fn concatMask(comptime half: usize) [2 * half]i32 {
    @setEvalBranchQuota(10_000);
    var mask: [2 * half]i32 = undefined;
    for (0..half) |i| {
        mask[i] = @intCast(i);
        mask[half + i] = ~@as(i32, @intCast(i));
    }
    return mask;
}

/// Lanes 2i + offset of the concatenation of two vectors of `count` lanes (count results).
fn strideMask(comptime count: usize, comptime offset: usize) [count]i32 {
    @setEvalBranchQuota(10_000);
    var mask: [count]i32 = undefined;
    for (0..count) |i| {
        const lane = 2 * i + offset;
        mask[i] = if (lane < count) @intCast(lane) else ~@as(i32, @intCast(lane - count));
    }
    return mask;
}

/// acc[c] + values[c] * weights[c] with the weights already sign-extended to i32 (each in
/// [-128, 127]), exactly. With VNNI: one vpdpbusd on the zero-extended values; only byte 0 of each
/// value dword is non-zero, so only the weight's low byte (the i8 weight itself) counts.
pub inline fn multiplyAddWide(acc: VecI32, values: VecU8, weights: VecI32) VecI32 {
    if (comptime has_vnni512 and lanes == 16) {
        const value_dwords: @Vector(lanes, u32) = values;
        return asm ("vpdpbusd %[w], %[a], %[acc]"
            : [acc] "=v" (-> VecI32),
            : [acc_in] "0" (acc),
              [a] "v" (value_dwords),
              [w] "v" (weights),
        );
    }
    return acc +% @as(VecI32, values) *% weights; // exact: |w| <= 128, v <= 255
}

const every_fourth = blk: {
    var patterns: [limits.quad_channels][lanes]i32 = undefined;
    for (&patterns, 0..) |*pattern, k| pattern.* = everyFourth(k);
    break :blk patterns;
};

fn everyFourth(k: usize) [lanes]i32 {
    var pattern: [lanes]i32 = undefined;
    for (&pattern, 0..) |*p, i| p.* = @intCast(i * limits.quad_channels + k);
    return pattern;
}

/// row[c] += sum over quads q, k < 4 of q.values.byte[k] * weights[((q.index * row.len + c) * 4 + k]:
/// the scatter of one pixel's (or a dense layer's) non-zero channel groups over their weight vectors
/// (quad layout, loader.zig unpackQuadMatrix). The row goes through in blocks of up to
/// `quads_block_chunks` vectors held in registers while every quad adds its dot products, so each
/// weight is read once and the row is loaded and stored once per block, not once per quad.
pub fn accumulateQuads(row: []i32, weights: []const i8, quads: []const Quad) void {
    accumulateQuadsBy(.exact, row, weights, quads);
}

/// accumulateQuads by the given kind of dot product (Dots).
pub fn accumulateQuadsBy(comptime dots: Dots, row: []i32, weights: []const i8, quads: []const Quad) void {
    std.debug.assert(row.len % lanes == 0);
    const chunks = row.len / lanes;
    @setEvalBranchQuota(10_000); // the inline switch instantiates a block kernel per width
    var first: usize = 0;
    while (first < chunks) {
        const count = @min(quads_block_chunks, chunks - first);
        switch (count) {
            inline 1...quads_block_chunks => |block| accumulateQuadsBlock(dots, block, row, weights, quads, first),
            else => unreachable,
        }
        first += count;
    }
}

/// Row vectors a block keeps in registers: with wide register blocks 16 of the 32 (one quad's
/// weights for them are 1 KiB, read contiguously).
const quads_block_chunks = if (wide_register_blocks) 16 else 4;

/// Row vectors [first, first + chunks) of accumulateQuads.
inline fn accumulateQuadsBlock(comptime dots: Dots, comptime chunks: usize, row: []i32, weights: []const i8, quads: []const Quad, first: usize) void {
    var acc: [chunks]VecI32 = undefined;
    inline for (0..chunks) |k| acc[k] = row[(first + k) * lanes ..][0..lanes].*;
    for (quads) |quad| {
        const quad_weights = weights[(quad.index * row.len + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
        inline for (0..chunks) |k| acc[k] = dotQuadBy(dots, acc[k], quad.values, quad_weights[k * quad_bytes ..][0..quad_bytes]);
    }
    inline for (0..chunks) |k| storeVector(row, (first + k) * lanes, acc[k]);
}

/// accumulateQuads with the weights two per byte (loader.zig unpackNibbleQuadMatrix), each stored
/// as w + 8: row[c] += sum over quads, k of q.values.byte[k] * (w + 8). The caller subtracts 8 x the
/// sum of every value afterwards; wrapping i32 arithmetic (as vpdpbusd's) makes the result exact
/// whenever the true one fits i32, which the loader's overflow bound guarantees.
pub fn accumulateNibbleQuads(row: []i32, weights: []const u8, quads: []const Quad) void {
    std.debug.assert(row.len % lanes == 0);
    const chunks = row.len / lanes;
    const pairs = (chunks + 1) / 2; // 64 bytes per quad and pair of row vectors
    @setEvalBranchQuota(10_000); // the inline switch instantiates a block kernel per width
    var first: usize = 0; // even
    while (first < chunks) {
        const count = @min(quads_block_chunks, chunks - first);
        switch (count) {
            inline 1...quads_block_chunks => |block| accumulateNibbleBlock(block, row, weights, quads, first, pairs),
            else => unreachable,
        }
        first += count;
    }
}

inline fn accumulateNibbleBlock(comptime chunks: usize, row: []i32, weights: []const u8, quads: []const Quad, first: usize, pairs: usize) void {
    comptime std.debug.assert(quads_block_chunks % 2 == 0); // blocks start on a pair
    const VecNibbles = @Vector(quad_bytes, u8);
    var acc: [chunks]VecI32 = undefined;
    inline for (0..chunks) |k| acc[k] = row[(first + k) * lanes ..][0..lanes].*;
    for (quads) |quad| {
        const quad_weights = weights[(quad.index * pairs + first / 2) * quad_bytes ..][0 .. (chunks + 1) / 2 * quad_bytes];
        inline for (0..(chunks + 1) / 2) |pair| {
            const both: VecNibbles = quad_weights[pair * quad_bytes ..][0..quad_bytes].*;
            const low = both & @as(VecNibbles, @splat(0x0f));
            // the stored weights lie in [0, 15]: 2 * 255 * 15 fits i16, so pairs always fit
            acc[2 * pair] = dotQuadVectorBy(.pairs_fit_i16, acc[2 * pair], quad.values, @bitCast(low));
            if (2 * pair + 1 < chunks) {
                const high = both >> @splat(4);
                acc[2 * pair + 1] = dotQuadVectorBy(.pairs_fit_i16, acc[2 * pair + 1], quad.values, @bitCast(high));
            }
        }
    }
    inline for (0..chunks) |k| storeVector(row, (first + k) * lanes, acc[k]);
}

/// accumulateQuads for a row of `chunks` vectors and, where `count` is not null, exactly that many
/// quads, unrolled at compile time (the scatter's inner loop: no loop exit to mispredict).
pub inline fn accumulateQuadsFixed(comptime chunks: usize, comptime count: ?usize, row: []i32, weights: []const i8, quads: []const Quad) void {
    std.debug.assert(row.len == chunks * lanes);
    var acc: [chunks]VecI32 = undefined;
    inline for (0..chunks) |k| acc[k] = row[k * lanes ..][0..lanes].*;
    if (count) |n| {
        inline for (0..n) |q| addQuad(chunks, &acc, weights, quads[q]);
    } else {
        for (quads) |quad| addQuad(chunks, &acc, weights, quad);
    }
    inline for (0..chunks) |k| storeVector(row, k * lanes, acc[k]);
}

inline fn addQuad(comptime chunks: usize, acc: *[chunks]VecI32, weights: []const i8, quad: Quad) void {
    const quad_weights = weights[quad.index * chunks * quad_bytes ..][0 .. chunks * quad_bytes];
    inline for (0..chunks) |k| acc[k] = dotQuad(acc[k], quad.values, quad_weights[k * quad_bytes ..][0..quad_bytes]);
}

/// row[offset..][0..lanes] = value, as one vector store (an array-typed store was split into
/// scalar stores by the code generator).
pub inline fn storeVector(row: []i32, offset: usize, value: VecI32) void {
    const target: *align(@alignOf(i32)) VecI32 = @ptrCast(row[offset..][0..lanes]);
    target.* = value;
}

/// The channel groups of one pixel (`quad_count` groups of 4 channels; `pixel.len` = padded
/// channels) with a non-zero value, and how many non-zero values (events) they hold. Branch-free
/// compaction: every quad is written at the next free slot, which advances only for non-zero ones
/// (so `quads` needs room for the pixel's quads rounded up to whole vectors).
pub fn gatherPixelQuads(pixel: []const u8, quad_count: u32, quads: []Quad) struct { quads: []Quad, events: u64 } {
    const quads_per_vector = lanes / limits.quad_channels;
    std.debug.assert(quad_count * limits.quad_channels <= pixel.len);
    var count: usize = 0;
    var events: u64 = 0;
    var first: u32 = 0;
    while (first < quad_count) : (first += quads_per_vector) {
        const bytes: VecU8 = pixel[first * limits.quad_channels ..][0..lanes].*;
        const nonzero = bytes != @as(VecU8, @splat(0));
        // no test for an all-zero vector: on inputs with scattered zeros it mispredicts often and
        // costs more than the four slot writes it saves
        events += std.simd.countTrues(nonzero);
        const words: [quads_per_vector]u32 = @bitCast(bytes);
        inline for (words, 0..) |word, k| {
            quads[count] = .{ .index = first + @as(u32, k), .values = word };
            count += @intFromBool(word != 0);
        }
    }
    return .{ .quads = quads[0..count], .events = events };
}

test "multiplyAddWide equals the scalar product, at the extremes too" {
    var values: [lanes]u8 = undefined;
    var weights: [lanes]i8 = undefined;
    for (&values, &weights, 0..) |*v, *w, i| {
        v.* = @intCast((i * 97 + 255) % 256); // 255 first
        w.* = @intCast(@as(i32, @intCast(i * 41 % 256)) - 128); // -128 first
    }
    const acc: VecI32 = @splat(-7);
    const result: [lanes]i32 = multiplyAddWide(acc, values, @as(@Vector(lanes, i8), weights));
    for (result, values, weights) |r, v, w| try std.testing.expectEqual(-7 + @as(i32, v) * w, r);
}

test "dotBytes equals the scalar sums, at the extremes too" {
    var values: [quad_bytes]u8 = undefined;
    var weights: [quad_bytes]i8 = undefined;
    for (&values, &weights, 0..) |*v, *w, i| {
        v.* = if (i % 3 == 0) 255 else @intCast((i * 89 + 7) % 256);
        w.* = if (i % 5 < 2) -128 else @intCast(@as(i32, @intCast(i * 53 % 256)) - 128);
    }
    const acc: VecI32 = @splat(2_000_000_000); // wraps as vpdpbusd's sums do
    const result: [lanes]i32 = dotBytes(acc, values, weights);
    for (result, 0..) |value, c| {
        var expected: i32 = 2_000_000_000;
        for (0..4) |k| expected +%= @as(i32, values[4 * c + k]) * weights[4 * c + k];
        try std.testing.expectEqual(expected, value);
    }
}

test "dotQuadBy(.pairs_fit_i16) equals the exact dot where pairs fit i16" {
    var weights: [quad_bytes]i8 = undefined;
    var narrow: [quad_bytes]i8 = undefined; // 4-bit weights
    for (&weights, &narrow, 0..) |*w, *n, i| {
        w.* = if (i % 7 == 0) -128 else @intCast(@as(i32, @intCast(i * 37 % 256)) - 128);
        n.* = @intCast(@as(i32, @intCast(i % 16)) - 8);
    }
    const acc: VecI32 = @splat(-5);
    for ([_]u32{ 0x7f_7f_7f_7f, 0x00_7f_01_7f, 0x12_34_56_78 & 0x7f7f7f7f }) |values| { // values <= 127
        const fast: [lanes]i32 = dotQuadBy(.pairs_fit_i16, acc, values, &weights);
        const exact: [lanes]i32 = dotQuadBy(.exact, acc, values, &weights);
        try std.testing.expectEqualSlices(i32, &exact, &fast);
    }
    for ([_]u32{ 0xff_ff_ff_ff, 0xff_00_80_01 }) |values| { // any u8 with |w| <= 8
        const fast: [lanes]i32 = dotQuadBy(.pairs_fit_i16, acc, values, &narrow);
        const exact: [lanes]i32 = dotQuadBy(.exact, acc, values, &narrow);
        try std.testing.expectEqualSlices(i32, &exact, &fast);
    }
}

test "dot of a quad equals the scalar sum" {
    var weights: [quad_bytes]i8 = undefined;
    for (&weights, 0..) |*w, i| w.* = @intCast(@as(i32, @intCast(i * 37 % 256)) - 128);
    const values: u32 = 0xff_00_80_01; // channels: 1, 128, 0, 255
    const acc: VecI32 = @splat(-5);
    const result: [lanes]i32 = dotQuad(acc, values, &weights);
    const channel_values = [_]i32{ 1, 128, 0, 255 };
    for (result, 0..) |value, c| {
        var expected: i32 = -5;
        for (channel_values, 0..) |a, k| expected += a * weights[c * 4 + k];
        try std.testing.expectEqual(expected, value);
    }
}

/// Set every row (pixel) of `potentials` to `bias` (one padded row), or to zero if bias is empty.
pub fn fillRows(potentials: []i32, bias: []const i32) void {
    if (bias.len == 0) {
        @memset(potentials, 0);
        return;
    }
    fillRowsVector(potentials, bias);
}

/// The largest value (0 for an empty slice).
pub fn maxU8(values: []const u8) u8 {
    var largest: VecU8 = @splat(0);
    var offset: usize = 0;
    while (offset + lanes <= values.len) : (offset += lanes) {
        largest = @max(largest, @as(VecU8, values[offset..][0..lanes].*));
    }
    var result = @reduce(.Max, largest);
    for (values[offset..]) |value| result = @max(result, value);
    return result;
}

/// Set every row (pixel) of `potentials` to `bias` (one padded row), with vector stores.
pub fn fillRowsVector(potentials: []i32, bias: []const i32) void {
    std.debug.assert(bias.len % lanes == 0 and potentials.len % bias.len == 0);
    var offset: usize = 0;
    while (offset < potentials.len) : (offset += bias.len) {
        var chunk: usize = 0;
        while (chunk < bias.len) : (chunk += lanes) storeVector(potentials, offset + chunk, bias[chunk..][0..lanes].*);
    }
}

/// Whether any value is non-zero (an OR of whole vectors and one test: no count per vector).
pub fn anyNonZeroU8(values: []const u8) bool {
    std.debug.assert(values.len % lanes == 0);
    const Wide = @Vector(4 * lanes, u8);
    var any: Wide = @splat(0);
    var offset: usize = 0;
    while (offset + 4 * lanes <= values.len) : (offset += 4 * lanes) any |= @as(Wide, values[offset..][0 .. 4 * lanes].*);
    var narrow: VecU8 = @splat(0);
    while (offset < values.len) : (offset += lanes) narrow |= @as(VecU8, values[offset..][0..lanes].*);
    return @reduce(.Or, any) != 0 or @reduce(.Or, narrow) != 0;
}

pub fn countNonZeroU8(values: []const u8) u64 {
    std.debug.assert(values.len % lanes == 0);
    const Wide = @Vector(4 * lanes, u8); // a whole 64-byte vector per step where the length allows
    var count: u64 = 0;
    var offset: usize = 0;
    while (offset + 4 * lanes <= values.len) : (offset += 4 * lanes) {
        const wide: Wide = values[offset..][0 .. 4 * lanes].*;
        count += std.simd.countTrues(wide != @as(Wide, @splat(0)));
    }
    while (offset < values.len) : (offset += lanes) {
        const vector: VecU8 = values[offset..][0..lanes].*;
        count += std.simd.countTrues(vector != @as(VecU8, @splat(0)));
    }
    return count;
}

/// The (output coordinate, kernel tap) pairs through which input coordinate i reaches the output
/// along one axis (o * stride + k - pad == i, padding taps left out): pair j < count is
/// (output_first - j, kernel_first + j * stride). Computed once per layer at load (loader.zig), so
/// kernels never divide.
pub const TapRange = extern struct {
    output_first: u32,
    kernel_first: u32,
    count: u32,
};

pub fn tapRange(input: u32, pad_before: u32, kernel: u32, stride: u32, output_size: u32) TapRange {
    const shifted = input + pad_before; // = o * stride + k
    var k = shifted % stride;
    var o = shifted / stride; // the largest output reached, through the smallest tap
    if (o >= output_size) {
        const skip = o - (output_size - 1);
        o -= skip;
        k += skip * stride;
    }
    if (k >= kernel) return .{ .output_first = 0, .kernel_first = 0, .count = 0 };
    const by_kernel = (kernel - 1 - k) / stride + 1; // taps k, k + s, ... < kernel
    return .{ .output_first = o, .kernel_first = k, .count = @min(by_kernel, o + 1) };
}

test "tap ranges match brute force" {
    for (1..6) |kernel| for (1..4) |stride| for (1..9) |size| for (0..3) |pad| {
        if (size + 2 * pad < kernel) continue;
        const output_size: u32 = @intCast((size + 2 * pad - kernel) / stride + 1);
        for (0..size) |input| {
            const range = tapRange(@intCast(input), @intCast(pad), @intCast(kernel), @intCast(stride), output_size);
            var count: u32 = 0;
            for (0..kernel) |k| {
                const shifted = @as(i64, @intCast(input + pad)) - @as(i64, @intCast(k));
                if (shifted < 0 or @mod(shifted, @as(i64, @intCast(stride))) != 0) continue;
                const o = @divFloor(shifted, @as(i64, @intCast(stride)));
                if (o >= output_size) continue;
                // brute-force pairs come in increasing k: the j-th one must match the range's
                try std.testing.expectEqual(@as(i64, range.output_first) - count, o);
                try std.testing.expectEqual(range.kernel_first + count * @as(u32, @intCast(stride)), @as(u32, @intCast(k)));
                count += 1;
            }
            try std.testing.expectEqual(count, range.count);
        }
    };
}

test "accumulate events scatters weight vectors" {
    var row: [2 * lanes]i32 = @splat(1);
    var weights: [3 * 2 * lanes]i8 = undefined;
    for (&weights, 0..) |*w, i| w.* = @intCast(@as(i32, @intCast(i % 7)) - 3);
    const events = [_]Event{ .{ .index = 0, .value = 2 }, .{ .index = 2, .value = 5 } };
    accumulateEvents(&row, &weights, &events);
    for (row, 0..) |value, c| {
        const expected = 1 + 2 * @as(i32, weights[c]) + 5 * @as(i32, weights[2 * 2 * lanes + c]);
        try std.testing.expectEqual(expected, value);
    }
}
