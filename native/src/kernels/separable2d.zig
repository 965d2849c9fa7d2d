//! separable2d (docs/semantics.md): a depthwise stage (depth multiplier M) without bias into the
//! intermediate Q of C * M channels, requantized per channel to a signed mid_bits integer Mid, then
//! a pointwise stage over Mid. Fused, one output row at a time, so that neither Q nor the padded
//! input is ever a whole tensor: the frame rows a row of windows reads are filled into a ring of
//! KH rows (kernels/frame.zig fillRow: the border is computed there, no frame is kept), the
//! depthwise stage (depthwise2d.gatherRow; scatterRow when few input pixels are active) sums the
//! row's Q into a small i32 row buffer, and then,
//! a block of up to 4 pixels at a time (block_pixels_max) while their Q is in L1, Mid is requantized
//! with vector arithmetic into a small byte buffer as u = Mid + 128 (unsigned, so the pointwise stage
//! is a u8 x i8 dot product like a 1x1 conv's, over the quad layout of Layer.pointwise; each weight
//! vector loaded once for the block's pixels), and
//! P = (bias - 128 * sum over m of Pw[m, co]) + sum over m of Pw[m, co] * u[m]: the corrected bias is
//! computed once per call. A pixel whose Mid is all zero has P = bias (no dot products), and a row
//! of windows over zero rows has Q = 0 (no depthwise sums). Wrapping i32 arithmetic makes the result
//! exact whenever the true one fits i32 (the loader's overflow bound). The relu runs fused when the
//! engine asks (the potentials are then not written at all: the planner gives the layer none).

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const depthwise2d = @import("depthwise2d.zig");
const conv2d_dense = @import("conv2d_dense.zig");
const frame_zig = @import("frame.zig");
const neuron = @import("neuron.zig");

const lanes = vector.lanes;
const quad_bytes = vector.quad_bytes;
/// Output-channel vectors the pointwise stage keeps in registers.
const block_chunks_max = limits.block_chunks_max;
/// u = Mid + mid_offset lies in [0, 255] for every mid_bits <= 8.
const mid_offset = 128;
/// The split form's low part of the multiplier (requantizeForm).
const split_bits = 16;

/// The layer's scratch (the planner's events buffer, scratchBytes), each part 64-byte aligned:
const Scratch = struct {
    corrected: []i32, // (Cout_p) the corrected bias
    split: [4][]i32, // (Cmid_p) each: m >> 16, m & 0xffff, 2^(s'-17), s' - 16 (the split form; direct: 2^(s-1), s in the last two)
    q_row: []i32, // (OW, Cmid_p) one output row's Q
    mid_bytes: []u8, // (scratch_pixels, Cmid_p) a block of pixels' u
    ring: []u8, // (KH, frameWidth, Cmid_p) the frame rows of one row of windows

    fn parts(layer: *const model.Layer, bytes: ?[]u8) struct { Scratch, usize } {
        const mid_padded: usize = layer.depthwiseChannelsPadded();
        const sizes = [_]usize{
            layer.synaptic.channelsPadded() * @sizeOf(i32),
            mid_padded * @sizeOf(i32),
            mid_padded * @sizeOf(i32),
            mid_padded * @sizeOf(i32),
            mid_padded * @sizeOf(i32),
            layer.synaptic.w * mid_padded * @sizeOf(i32),
            scratch_pixels * mid_padded,
            ringSlotBytes(layer) * layer.kernel_h,
        };
        var offsets: [sizes.len]usize = undefined;
        var used: usize = 0;
        for (sizes, &offsets) |size, *offset| {
            offset.* = used;
            used = std.mem.alignForward(usize, used + size, limits.buffer_alignment);
        }
        const b = bytes orelse return .{ undefined, used };
        std.debug.assert(b.len >= used and @intFromPtr(b.ptr) % limits.buffer_alignment == 0);
        var scratch: Scratch = undefined;
        scratch.corrected = ints(b, offsets[0], sizes[0]);
        for (0..4) |k| scratch.split[k] = ints(b, offsets[1 + k], sizes[1 + k]);
        scratch.q_row = ints(b, offsets[5], sizes[5]);
        scratch.mid_bytes = b[offsets[6]..][0..sizes[6]];
        scratch.ring = b[offsets[7]..][0..sizes[7]];
        return .{ scratch, used };
    }

    fn ints(bytes: []u8, offset: usize, size: usize) []i32 {
        const piece: []align(4) u8 = @alignCast(bytes[offset..][0..size]);
        return std.mem.bytesAsSlice(i32, piece);
    }
};

fn ringSlotBytes(layer: *const model.Layer) usize {
    return @as(usize, layer.frameWidth()) * layer.frameChannels();
}

/// Bytes of scratch one call needs (planner.zig sizes the layer's events buffer by it).
pub fn scratchBytes(layer: *const model.Layer) u64 {
    return Scratch.parts(layer, null)[1];
}

/// potentials: i32 (OH, OW, Cout_p) before pooling, or empty when fused (never written then);
/// scratch: at least scratchBytes, 64-byte aligned.
/// Returns the synaptic operations: the depthwise count plus Cout per non-zero Mid.
/// fused: when given, relu runs on each pixel's finished sums and writes activations, not potentials.
pub fn run(layer: *const model.Layer, input: []const u8, potentials: []i32, scratch_bytes: []u8, fused: ?*neuron.Fused) u64 {
    std.debug.assert(potentials.len == layer.synaptic.valuesPadded() or (fused != null and potentials.len == 0));
    const scratch = Scratch.parts(layer, scratch_bytes)[0];
    correctedBias(layer, scratch.corrected);
    const form = requantizeForm(layer, scratch.split);
    // u <= 255 (Mid + 128 of a signed 8-bit Mid at most)
    const choice = conv2d_dense.choose(255, layer.weight_bits);
    const counts = depthwise2d.countEvents(layer, input);
    const scatter = depthwise2d.scatterWins(layer, counts);
    // only the forms and kernels this target can take are instantiated (choose picks `exact` without
    // the AVX2 sequences; the f32 form only where float_mid): less code in a firmware
    const nonzero = switch (form) {
        inline else => |f| if (f == .float and !float_mid) unreachable else switch (choice.kernel) {
            inline else => |kernel| if (!vector.has_pairs_fit_i16 and kernel != .exact)
                unreachable
            else
                rowsBy(f, kernel, layer, input, potentials, scratch, scatter, choice.sums_per_i16, fused),
        },
    };
    if (fused) |f| f.done = true;
    return counts.synaptic_ops + nonzero * layer.synaptic.c;
}

/// Every output row with requantization form `form` and pointwise kernel `kernel`, its Q by the
/// scatter (`scatter`: few active input pixels, depthwise2d.scatterWins) or the gather; returns the
/// non-zero Mid.
fn rowsBy(comptime form: Form, comptime kernel: conv2d_dense.Kernel, layer: *const model.Layer, input: []const u8, potentials: []i32, scratch: Scratch, scatter: bool, sums_per_i16: u32, fused: ?*neuron.Fused) u64 {
    const mid_padded = layer.depthwiseChannelsPadded();
    const cout_padded = layer.synaptic.channelsPadded();
    const out = layer.synaptic;
    var ring: Ring = .{};
    var nonzero: u64 = 0;
    var oy: u32 = 0;
    while (oy < out.h) : (oy += 1) {
        if (scatter) {
            depthwise2d.scatterRow(layer, input, oy, scratch.q_row);
        } else if (ring.load(layer, input, scratch.ring, oy)) {
            depthwise2d.gatherRow(layer, &ring.rows, &.{}, scratch.q_row, 0, null);
        } else {
            @memset(scratch.q_row, 0); // every window reads zeros only
        }
        var ox: u32 = 0;
        while (ox < out.w) {
            const pixels = @min(block_pixels_max, out.w - ox);
            var block_nonzero: u64 = 0;
            for (0..pixels) |p| {
                const q = scratch.q_row[(@as(usize, ox) + p) * mid_padded ..][0..mid_padded];
                block_nonzero += requantizePixel(form, layer, scratch.split, q, scratch.mid_bytes[p * mid_padded ..][0..mid_padded]);
            }
            nonzero += block_nonzero;
            const offset = (@as(usize, oy) * out.w + ox) * cout_padded;
            if (block_nonzero == 0) {
                for (0..pixels) |p| storeBias(layer, potentials, offset + p * cout_padded, fused); // u = 128 everywhere: P = bias
            } else {
                pointwisePixels(kernel, pixels, layer, scratch.mid_bytes, scratch.corrected, potentials, offset, sums_per_i16, fused);
            }
            ox += pixels;
        }
    }
    return nonzero;
}

/// Output pixels one pointwise block computes at once (each weight vector loaded once for all of
/// them, and their independent sums hiding the dot-product latency): where the registers allow
/// (vector.blockPixels of a whole block of channel vectors: 4 with AVX-512), else 1.
/// A pixel of the block whose Mid is all zero computes P = corrected + 128 x sum of Pw = bias too
/// (wrapping), so a block is skipped only when all of its pixels are.
const block_pixels_max = vector.blockPixels(block_chunks_max);

/// Pixels of u the scratch holds, on every target (a 32-bit core uses one): the arena is then the
/// same whichever build plans it (edgesnn/devices.py sizes a microcontroller's on the host).
const scratch_pixels = 4;

comptime {
    std.debug.assert(block_pixels_max <= scratch_pixels);
}

/// The frame rows one row of windows reads, kept in KH slots (frame row r in slot r mod KH): a row
/// is filled once however many rows of windows read it.
const Ring = struct {
    rows: depthwise2d.Rows = undefined,
    held: [limits.kernel_max]u32 = @splat(std.math.maxInt(u32)), // the frame row in each slot
    nonzero: [limits.kernel_max]bool = @splat(false),

    /// rows[kh] = frame row oy * stride + kh, for every kh; whether any of them has a non-zero value.
    fn load(ring: *Ring, layer: *const model.Layer, input: []const u8, slots: []u8, oy: u32) bool {
        const slot_bytes = ringSlotBytes(layer);
        var any = false;
        for (0..layer.kernel_h) |kh| {
            const row: u32 = oy * layer.stride_h + @as(u32, @intCast(kh));
            const slot = row % layer.kernel_h;
            const target = slots[slot * slot_bytes ..][0..slot_bytes];
            if (ring.held[slot] != row) {
                ring.nonzero[slot] = frame_zig.fillRow(layer, input, row, target);
                ring.held[slot] = row;
            }
            ring.rows[kh] = target;
            any = any or ring.nonzero[slot];
        }
        return any;
    }
};

/// P = bias for one pixel (its Mid all zero).
fn storeBias(layer: *const model.Layer, potentials: []i32, offset: usize, fused: ?*neuron.Fused) void {
    var channel: usize = 0;
    while (channel < layer.synaptic.channelsPadded()) : (channel += lanes) {
        const bias: vector.VecI32 = layer.bias[channel..][0..lanes].*;
        if (fused) |f| f.store(offset + channel, channel, bias) else vector.storeVector(potentials, offset + channel, bias);
    }
}

/// How Mid = requant(Q, m, s) is computed, the cheapest exact form for this layer's bound on |Q|
/// (`float`, where the loader proved the f32 form exact for every Q on every channel, floatMid,
/// comes after `direct` and before the others):
/// `direct`, Q * m + 2^(s-1) in i32; `split`, m = mh * 2^16 + ml, so that
/// floor((Q * m + 2^(s-1)) / 2^s) = (Q * mh + 2^(s-17) + ((Q * ml) >> 16)) >> (s - 16), every term
/// in i32 (two vpmulld, where AVX2 has no i64 multiply or arithmetic shift by lane); `wide`, in i64.
const Form = enum { direct, split, wide, float };

/// The form for this call, from a bound on |Q| per channel: the sum over taps of |W| times the
/// largest input value (pad values included), a few vector operations per tap and channel vector.
/// Fills the tables of the form it takes (split: all four; direct: the rounding and the shift).
fn requantizeForm(layer: *const model.Layer, split: [4][]i32) Form {
    const Wide = @Vector(lanes, i64);
    const channels_padded = layer.depthwiseChannelsPadded();
    const taps = @as(usize, layer.kernel_h) * layer.kernel_w;
    const weights = layer.depthwiseWeights();
    const value_max: Wide = @splat(@intCast(layer.input_max[0]));
    const limit: Wide = @splat(std.math.maxInt(i32));
    var direct = true;
    var splits = true;
    var chunk: usize = 0;
    while (chunk < channels_padded) : (chunk += lanes) {
        var weight_sum: vector.VecI32 = @splat(0); // |W| <= 128, taps <= limits: no overflow
        for (0..taps) |tap| weight_sum += @intCast(@abs(@as(vector.VecI32, weights[tap * channels_padded + chunk ..][0..lanes].*)));
        const q_max = @as(Wide, weight_sum) * value_max;
        const m: vector.VecI32 = layer.mid_multiplier[chunk..][0..lanes].*; // >= 0 (loader.zig)
        const s: vector.VecI32 = layer.mid_shift[chunk..][0..lanes].*;
        const one: Wide = @splat(1);
        const rounding = (one << @as(@Vector(lanes, u6), @intCast(s))) >> @splat(1);
        direct = direct and !@reduce(.Or, q_max * @as(Wide, m) + rounding > limit);
        // a channel with m = 0 gives 0 in every form: its tables are all 0 (Q * 0 + 0 >> 0)
        const used = m != @as(vector.VecI32, @splat(0));
        const zero: vector.VecI32 = @splat(0);
        const in_range = (s >= @as(vector.VecI32, @splat(split_bits + 1))) & (s <= @as(vector.VecI32, @splat(split_bits + 31)));
        const taken = used & in_range;
        const raised = @select(i32, taken, s, @as(vector.VecI32, @splat(split_bits + 1)));
        const high = m >> @splat(split_bits);
        const low = m & @as(vector.VecI32, @splat((1 << split_bits) - 1));
        const rounding_shift: @Vector(lanes, u5) = @intCast(raised - @as(vector.VecI32, @splat(split_bits + 1)));
        const high_rounding = @select(i32, used, @as(vector.VecI32, @splat(1)) << rounding_shift, zero);
        const low_max = q_max * @as(Wide, low);
        const sum_max = q_max * @as(Wide, high) + @as(Wide, high_rounding) + (low_max >> @splat(split_bits)) + one;
        const fits = taken & (low_max <= limit) & (sum_max <= limit);
        splits = splits and @reduce(.And, fits | !used);
        if (splits) {
            vector.storeVector(split[0], chunk, high);
            vector.storeVector(split[1], chunk, low);
            vector.storeVector(split[2], chunk, high_rounding);
            vector.storeVector(split[3], chunk, @select(i32, used, raised - @as(vector.VecI32, @splat(split_bits)), zero));
        }
    }
    if (!direct) return if (layer.mid_scale.len != 0) .float else if (splits) .split else .wide;
    // the direct form's tables: 2^(s-1) (below 2^31 where it is taken) and s (at most 31 then)
    chunk = 0;
    while (chunk < channels_padded) : (chunk += lanes) {
        const s: vector.VecI32 = layer.mid_shift[chunk..][0..lanes].*;
        const rounding = (@as(@Vector(lanes, u32), @splat(1)) << @as(@Vector(lanes, u5), @intCast(s))) >> @splat(1);
        vector.storeVector(split[2], chunk, @as(vector.VecI32, @bitCast(rounding)));
        vector.storeVector(split[3], chunk, s);
    }
    return .direct;
}

/// Quads of pointwise weights whose byte-wise sums fit i16: |sum| <= 256 * 128 = 2^15.
const weight_sum_quads_max = 256;

/// corrected[co] = bias[co] - 128 * sum over m of Pw[m, co] (wrapping), for every padded channel:
/// the weights of a chunk summed byte-wise in i16 over up to 256 quads (two adds per quad, not a
/// dot product), the four sums of each channel added in i32 and scaled by 128 once.
fn correctedBias(layer: *const model.Layer, corrected: []i32) void {
    const cout_padded = layer.synaptic.channelsPadded();
    const quads = (layer.depthwiseChannels() + limits.quad_channels - 1) / limits.quad_channels;
    const Sums = @Vector(quad_bytes, i16);
    var chunk: usize = 0;
    while (chunk < cout_padded) : (chunk += lanes) {
        var total: vector.VecI32 = @splat(0);
        var q: usize = 0;
        while (q < quads) {
            const end = @min(q + weight_sum_quads_max, quads);
            var sums: Sums = @splat(0);
            while (q < end) : (q += 1) {
                const weights: @Vector(quad_bytes, i8) = layer.pointwise[(q * cout_padded + chunk) * limits.quad_channels ..][0..quad_bytes].*;
                sums +%= @as(Sums, weights);
            }
            const wide: @Vector(quad_bytes, i32) = sums; // byte 4c + k: channel c, mid channel 4q + k
            inline for (0..limits.quad_channels) |k| total +%= @shuffle(i32, wide, undefined, everyFourth(k));
        }
        const bias: vector.VecI32 = layer.bias[chunk..][0..lanes].*;
        vector.storeVector(corrected, chunk, bias -% total *% @as(vector.VecI32, @splat(mid_offset)));
    }
}

fn everyFourth(k: usize) [lanes]i32 {
    var mask: [lanes]i32 = undefined;
    for (&mask, 0..) |*m, c| m.* = @intCast(c * limits.quad_channels + k);
    return mask;
}

/// One pixel's u = clamp(requant(Q, m, s), -2^(mid_bits-1), 2^(mid_bits-1) - 1) + 128 into `bytes`
/// (padding lanes: m = 0, so Mid = 0, and their pointwise weights are 0). Returns the non-zero Mid.
fn requantizePixel(comptime form: Form, layer: *const model.Layer, split: [4][]i32, q: []const i32, bytes: []u8) u64 {
    const low: vector.VecI32 = @splat(-(@as(i32, 1) << @intCast(layer.mid_bits - 1)));
    const high: vector.VecI32 = @splat((@as(i32, 1) << @intCast(layer.mid_bits - 1)) - 1);
    var nonzero: u64 = 0;
    var chunk: usize = 0;
    while (chunk < q.len) : (chunk += lanes) {
        const value: vector.VecI32 = q[chunk..][0..lanes].*;
        const clamped: vector.VecI32 = switch (form) {
            .split => blk: {
                const high_part = value *% @as(vector.VecI32, split[0][chunk..][0..lanes].*) +% @as(vector.VecI32, split[2][chunk..][0..lanes].*);
                const low_part = value *% @as(vector.VecI32, split[1][chunk..][0..lanes].*); // never wraps (requantizeForm)
                const shift: @Vector(lanes, u5) = @intCast(@as(vector.VecI32, split[3][chunk..][0..lanes].*));
                const scaled = (high_part +% (low_part >> @splat(split_bits))) >> shift; // arithmetic: floor
                break :blk std.math.clamp(scaled, low, high);
            },
            .direct => blk: {
                const multiplier: vector.VecI32 = layer.mid_multiplier[chunk..][0..lanes].*;
                const shift: @Vector(lanes, u5) = @intCast(@as(vector.VecI32, split[3][chunk..][0..lanes].*));
                const product = value *% multiplier; // never wraps (requantizeForm)
                const scaled = (product +% @as(vector.VecI32, split[2][chunk..][0..lanes].*)) >> shift; // arithmetic: floor
                break :blk std.math.clamp(scaled, low, high);
            },
            .float => {
                // u = trunc(clamp(Q, floor, ceiling) * scale + 128.5), in [0, 255] (floatMid)
                const floor: vector.VecI32 = layer.mid_floor[chunk..][0..lanes].*;
                const ceiling: vector.VecI32 = layer.mid_ceiling[chunk..][0..lanes].*;
                const scale: VecF32 = layer.mid_scale[chunk..][0..lanes].*;
                const bounded = @min(@max(value, floor), ceiling);
                const scaled: vector.VecI32 = @intFromFloat(@as(VecF32, @floatFromInt(bounded)) * scale + @as(VecF32, @splat(float_offset)));
                nonzero += std.simd.countTrues(scaled != @as(vector.VecI32, @splat(mid_offset)));
                const unsigned: @Vector(lanes, u8) = @truncate(@as(@Vector(lanes, u32), @bitCast(scaled)));
                bytes[chunk..][0..lanes].* = unsigned;
                continue;
            },
            .wide => blk: {
                const Int = i64;
                const Wide = @Vector(lanes, Int);
                const multiplier: vector.VecI32 = layer.mid_multiplier[chunk..][0..lanes].*;
                const shift: @Vector(lanes, std.math.Log2Int(Int)) = @intCast(@as(vector.VecI32, layer.mid_shift[chunk..][0..lanes].*));
                const one: Wide = @splat(1);
                const rounding = (one << shift) >> @splat(1); // 2^(s-1), and 0 for s = 0
                const product = @as(Wide, value) * @as(Wide, multiplier);
                const scaled = (product + rounding) >> shift; // arithmetic: floor, as neuron.requantize
                break :blk @intCast(std.math.clamp(scaled, @as(Wide, low), @as(Wide, high)));
            },
        };
        nonzero += std.simd.countTrues(clamped != @as(vector.VecI32, @splat(0)));
        // in [0, 255]: a truncation (a vector @intCast to u8 was lowered with signed saturation,
        // 128..255 -> 127, in ReleaseSafe builds)
        const offset: @Vector(lanes, u32) = @bitCast(clamped + @as(vector.VecI32, @splat(mid_offset)));
        const unsigned: @Vector(lanes, u8) = @truncate(offset);
        bytes[chunk..][0..lanes].* = unsigned;
    }
    return nonzero;
}

/// P = corrected + sum over m of Pw[m, :] * u[m] for `pixels` neighbouring pixels of a row (their u
/// `Cmid_p` bytes apart in `bytes`), blocks of output-channel vectors x pixels in registers, by the
/// kernel conv2d_dense.choose picks (sums_per_i16: its group length).
/// offset: the first pixel's first value in the potentials (and activations, when fused).
fn pointwisePixels(comptime kernel: conv2d_dense.Kernel, pixels: u32, layer: *const model.Layer, bytes: []const u8, corrected: []const i32, potentials: []i32, offset: usize, sums_per_i16: u32, fused: ?*neuron.Fused) void {
    std.debug.assert(pixels >= 1 and pixels <= block_pixels_max);
    const chunks = layer.synaptic.channelsPadded() / lanes;
    const block_chunks = @min(block_chunks_max, comptime kernel.blockChunks());
    @setEvalBranchQuota(20_000); // the inline switches instantiate a block kernel per shape
    var first: usize = 0;
    while (first < chunks) {
        const count = @min(block_chunks, chunks - first);
        switch (count) {
            inline 1...block_chunks => |block| {
                const most = comptime @min(block_pixels_max, vector.blockPixels(block));
                var done: u32 = 0;
                while (done < pixels) {
                    const run_pixels = @min(most, pixels - done);
                    switch (run_pixels) {
                        inline 1...most => |p| pointwiseBlock(kernel, block, p, layer, bytes[done * layer.depthwiseChannelsPadded() ..], corrected, potentials, offset + done * layer.synaptic.channelsPadded(), first, sums_per_i16, fused),
                        else => unreachable,
                    }
                    done += run_pixels;
                }
            },
            else => unreachable,
        }
        first += count;
    }
}

inline fn pointwiseBlock(comptime kernel: conv2d_dense.Kernel, comptime chunks: usize, comptime pixels: usize, layer: *const model.Layer, bytes: []const u8, corrected: []const i32, potentials: []i32, offset: usize, first: usize, sums_per_i16: u32, fused: ?*neuron.Fused) void {
    const cout_padded = layer.synaptic.channelsPadded();
    const mid_padded = layer.depthwiseChannelsPadded();
    const quads = (layer.depthwiseChannels() + limits.quad_channels - 1) / limits.quad_channels;
    var acc: [pixels][chunks]vector.VecI32 = undefined;
    inline for (0..pixels) |p| {
        inline for (0..chunks) |k| acc[p][k] = corrected[(first + k) * lanes ..][0..lanes].*;
    }
    if (comptime vector.has_pairs_fit_i16 and (kernel == .sums_i16 or kernel == .nibble_sums_i16)) {
        const split = kernel == .nibble_sums_i16;
        var sums: [pixels][chunks]vector.PairSumsI16 = @splat(@splat(vector.pair_sums_zero));
        var high_sums: [pixels][chunks]vector.PairSumsI16 = @splat(@splat(vector.pair_sums_zero)); // split: of the high nibbles
        var q: usize = 0;
        while (q < quads) {
            const end = @min(q + sums_per_i16, quads);
            while (q < end) : (q += 1) {
                const weights = layer.pointwise[(q * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
                conv2d_dense.addQuadPairSums(chunks, pixels, split, &sums, &high_sums, bytes[q * limits.quad_channels ..], mid_padded, weights);
            }
            conv2d_dense.widenBlock(chunks, pixels, split, &acc, &sums, &high_sums);
        }
    } else {
        for (0..quads) |q| {
            const weights = layer.pointwise[(q * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
            inline for (0..pixels) |p| {
                const values = std.mem.readInt(u32, bytes[p * mid_padded + q * limits.quad_channels ..][0..4], .little);
                inline for (0..chunks) |k| acc[p][k] = vector.dotQuadBy(comptime kernel.dots(), acc[p][k], values, weights[k * quad_bytes ..][0..quad_bytes]);
            }
        }
    }
    conv2d_dense.storeBlock(chunks, pixels, &acc, potentials, offset, cout_padded, @intCast(first), fused);
}

const VecF32 = @Vector(lanes, f32);

/// u = Mid + 128 rounds half up as trunc(x + 128.5) once x + 128.5 >= 0.
const float_offset: f32 = @as(f32, mid_offset) + 0.5;

/// Q below this in magnitude converts to f32 exactly.
const float_exact_limit: i64 = 1 << 24;

pub const FloatMid = struct { floor: i32, ceiling: i32, scale: f32 };

/// Whether the loader fills the f32 tables (floatMid): on 64-bit targets (limits.kernel_variants),
/// where it saves the split form's two vector multiplies; a 32-bit core keeps the integer forms (no
/// f32 kernel in its firmware). The tables' memory is reserved on every target, so that the model
/// memory is the same whichever build computes it (edgesnn/devices.py, as scratch_pixels).
pub const float_mid = limits.kernel_variants;

/// The scalar twin of requantizePixel's f32 arithmetic (two rounded f32 operations, no fused
/// multiply-add: Zig's strict float mode contracts neither).
fn floatU(q: i32, scale: f32) i64 {
    return @intFromFloat(@as(f32, @floatFromInt(q)) * scale + float_offset);
}

/// Mid + 128 = clamp(requant(Q, m, s), -2^(b-1), 2^(b-1) - 1) + 128 as trunc(clamp(Q, floor,
/// ceiling) * scale + 128.5) in f32, when that gives the same value for every i32 Q, else null.
/// floor is the largest Q whose Mid is the lowest level, ceiling the smallest reaching the highest
/// (both within 2^24 of 0); scale = m / 2^s rounded to f32 (or a neighbour). Both forms are
/// non-decreasing in Q (requant since m >= 0; the f32 form since every rounding step is), so they
/// agree everywhere once they agree at floor, at ceiling and on both sides of every step t_k (the
/// smallest Q with requant(Q) >= k), which is checked here for every level k.
pub fn floatMid(multiplier: i32, shift: i32, mid_bits: u32) ?FloatMid {
    if (multiplier == 0) return .{ .floor = 0, .ceiling = 0, .scale = 0 }; // Mid = 0 (padding channels too)
    const low = -(@as(i64, 1) << @intCast(mid_bits - 1));
    const high = (@as(i64, 1) << @intCast(mid_bits - 1)) - 1;
    const floor = (smallestReaching(multiplier, shift, low + 1) orelse return null) - 1;
    const ceiling = smallestReaching(multiplier, shift, high) orelse return null;
    if (floor <= -float_exact_limit) return null;
    const nearest: f32 = @floatCast(@as(f64, @floatFromInt(multiplier)) * std.math.pow(f64, 2.0, -@as(f64, @floatFromInt(shift))));
    var scale = nearest;
    for (0..5) |attempt| {
        if (attempt > 0) scale = if (attempt % 2 == 1) std.math.nextAfter(f32, nearest, std.math.inf(f32)) else std.math.nextAfter(f32, nearest, 0);
        if (attempt > 2) scale = std.math.nextAfter(f32, scale, if (attempt % 2 == 1) std.math.inf(f32) else 0);
        if (agreesOnEveryStep(multiplier, shift, low, high, floor, ceiling, scale)) return .{ .floor = @intCast(floor), .ceiling = @intCast(ceiling), .scale = scale };
    }
    return null;
}

fn agreesOnEveryStep(multiplier: i32, shift: i32, low: i64, high: i64, floor: i64, ceiling: i64, scale: f32) bool {
    if (floatU(@intCast(floor), scale) != low + mid_offset or floatU(@intCast(ceiling), scale) != high + mid_offset) return false;
    var level = low + 1;
    while (level <= high) : (level += 1) {
        const step = smallestReaching(multiplier, shift, level).?; // in (floor, ceiling]
        if (floatU(@intCast(step - 1), scale) >= level + mid_offset or floatU(@intCast(step), scale) < level + mid_offset) return false;
    }
    return true;
}

/// The smallest Q in (-2^24, 2^24) whose requantization reaches `level`, or null (also when every
/// Q of that range does: the step lies outside it).
fn smallestReaching(multiplier: i32, shift: i32, level: i64) ?i64 {
    var low: i64 = -float_exact_limit + 1; // requant(low) < level
    var high: i64 = float_exact_limit - 1; // requant(high) >= level
    if (neuron.requantize(@intCast(high), multiplier, shift) < level) return null;
    if (neuron.requantize(@intCast(low), multiplier, shift) >= level) return null;
    while (high - low > 1) {
        const middle = low + @divFloor(high - low, 2);
        if (neuron.requantize(@intCast(middle), multiplier, shift) >= level) high = middle else low = middle;
    }
    return high;
}

test "the f32 mid requantization agrees with the i64 one wherever it is taken" {
    const cases = [_][2]i32{ .{ 2142680300, 40 }, .{ 1, 0 }, .{ 3, 1 }, .{ 1 << 30, 31 }, .{ 2137624234, 38 }, .{ 7, 4 }, .{ 123456789, 33 }, .{ 1500000000, 35 } };
    var taken: u32 = 0;
    for (cases) |case| {
        for ([_]u32{ 2, 4, 8 }) |mid_bits| {
            const form = floatMid(case[0], case[1], mid_bits) orelse continue;
            taken += 1;
            const low = -(@as(i64, 1) << @intCast(mid_bits - 1));
            const high = (@as(i64, 1) << @intCast(mid_bits - 1)) - 1;
            var q: i32 = form.floor - 1000;
            while (q < form.ceiling + 1000) : (q += 1) {
                const expected = std.math.clamp(neuron.requantize(q, case[0], case[1]), low, high) + mid_offset;
                try std.testing.expectEqual(expected, floatU(std.math.clamp(q, form.floor, form.ceiling), form.scale));
            }
        }
    }
    try std.testing.expect(taken >= 10);
}

test "the split requantization equals the i64 one over the whole range of Q it is taken for" {
    const cases = [_][2]i32{ .{ 2146703165, 35 }, .{ 1082174321, 31 }, .{ 1 << 30, 17 }, .{ 65535, 20 }, .{ 65536, 47 }, .{ 2147483647, 40 } };
    for (cases) |case| {
        const m = case[0];
        const s = case[1];
        const high = m >> split_bits;
        const low = m & ((1 << split_bits) - 1);
        const high_rounding = @as(i32, 1) << @intCast(s - split_bits - 1);
        // the largest |Q| requantizeForm takes the split form for, at this m and s
        var q_max: i64 = 1;
        while ((q_max + 1) * low <= std.math.maxInt(i32) and (q_max + 1) * high + high_rounding + (((q_max + 1) * low) >> split_bits) + 1 <= std.math.maxInt(i32) and q_max < 1 << 20) q_max += 1;
        var q: i64 = -q_max;
        while (q <= q_max) : (q += 1) {
            const v: i32 = @intCast(q);
            const expected = (q * m + (@as(i64, 1) << @intCast(s - 1))) >> @intCast(s);
            const split = (v *% high +% high_rounding +% ((v *% low) >> split_bits)) >> @intCast(s - split_bits);
            try std.testing.expectEqual(expected, split);
        }
    }
}
