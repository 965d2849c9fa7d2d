//! conv2d / input_conv2d, dense (docs/semantics.md; conv2d.zig picks it for narrow inputs and when
//! the input has too many events for the scatter to win, or its pad values are not 0). Output-stationary over a padded copy
//! of the input, the frame (u8 (frameHeight, frameWidth, frameChannels), model.Layer.usesFrame; a
//! conv without padding on whole-vector channels, and a 1x1 conv of stride 1 without padding, read
//! their input in place: Source). In the frame one kernel
//! row of a window is KW * frameChannels consecutive bytes, so each 4 of them are one u8 x i8 dot
//! product per output channel with the weights in the same row order (loader.zig), and no tap needs
//! a bounds test. A block of output pixels x output-channel vectors stays in registers: each weight
//! vector loaded serves every pixel of the block, and the block's independent sums hide the
//! dot-product latency. A quad of zeros costs one dot (a branch per quad mispredicts and costs
//! more), but the kernel rows and quads of a block's windows that lie wholly in a border of zero
//! pads are left out (reachingWindow). Bit-exact with the scatter kernel.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const frame_zig = @import("frame.zig");
const neuron = @import("neuron.zig");

const lanes = vector.lanes;
const quad_bytes = vector.quad_bytes;
/// Output-channel vectors one block keeps in registers.
const block_chunks_max = limits.block_chunks_max;
/// The fewest quads per i16 sum for which summing in i16 beats widening every pair (pairs_fit_i16):
/// with 2 the widening vpmaddwd already runs half as often; an 8-bit image under 4-bit weights
/// allows 8, 4-bit activations under 4-bit weights 136.
const min_pair_sums_per_i16 = 2;

/// How a block adds its dot products: vector.Dots (a widened i32 sum per quad), or `sums_i16`
/// (AVX2: the pair sums of up to `sums_per_i16` quads added in i16 lanes, widened once per group,
/// vector.pairSumsPerI16): half the multiplies of pairs_fit_i16.
/// `nibble_sums_i16`: as sums_i16 with every value split into its two nibbles (v = lo + 16 hi),
/// each summed apart: 8-bit values under 8-bit weights, whose pairs do not fit i16 (an image into
/// a first layer of 8-bit weights), in two multiplies per quad instead of dotBytesAvx2's widening.
pub const Kernel = enum {
    exact,
    pairs_fit_i16,
    sums_i16,
    nibble_sums_i16,

    pub fn dots(comptime kernel: Kernel) vector.Dots {
        return if (kernel == .pairs_fit_i16) .pairs_fit_i16 else .exact;
    }

    /// Output-channel vectors one block keeps in registers: the i16 sums take registers too.
    pub fn blockChunks(comptime kernel: Kernel) u32 {
        return switch (kernel) {
            .nibble_sums_i16 => @min(2, block_chunks_max),
            else => block_chunks_max,
        };
    }

    /// Whether the kernel has a paired form (outputRowsPaired): the i16-sum kernels, on AVX2.
    pub fn pairsPixels(comptime kernel: Kernel) bool {
        return vector.has_pairs_fit_i16 and (kernel == .sums_i16 or kernel == .nibble_sums_i16);
    }

    /// Pixel pairs of a paired block: its i16 sums in registers (2 for a pair, 4 split), each
    /// weight vector loaded once for all of them.
    pub fn blockPairs(comptime kernel: Kernel) u32 {
        return if (kernel == .nibble_sums_i16) 2 else 4;
    }

    /// Output pixels of a block of `chunks` vectors: the i16 sums of one or two vectors leave
    /// AVX2 registers for more pixels, each weight vector loaded then serving all of them (the
    /// few output channels of a stem or a small network's conv).
    pub fn blockPixels(comptime kernel: Kernel, comptime chunks: u32) u32 {
        return switch (kernel) {
            .sums_i16 => if (chunks == 1) 4 else if (chunks == 2) 2 else vector.blockPixels(chunks),
            .nibble_sums_i16 => if (chunks == 1) 2 else vector.blockPixels(chunks),
            else => vector.blockPixels(chunks),
        };
    }
};

/// input: u8 (H, W, Cin_p); frame: the layer's padded-input scratch (empty when it reads its input
/// directly); potentials: i32 (OH, OW, Cout_p).
/// fused: when given, relu runs on the finished sums and writes activations, not potentials.
pub fn run(layer: *const model.Layer, input: []const u8, frame: []u8, potentials: []i32, fused: ?*neuron.Fused) void {
    std.debug.assert(layer.isConv());
    std.debug.assert(input.len == layer.input.valuesPadded());
    std.debug.assert(potentials.len == layer.synaptic.valuesPadded() or (fused != null and potentials.len == 0)); // fused: never written
    const source = Source.of(layer, input, frame);
    const choice = choose(layer.input_max[0], layer.weight_bits);
    switch (choice.kernel) {
        // a layer without a border of zeros runs the blocks without the trimming (comptime: no cost)
        inline else => |kernel| if (trimsPadding(layer))
            channelBlocks(kernel, true, layer, source, potentials, choice.sums_per_i16, fused)
        else
            channelBlocks(kernel, false, layer, source, potentials, choice.sums_per_i16, fused),
    }
    if (fused) |f| f.done = true;
}

pub const Choice = struct { kernel: Kernel, sums_per_i16: u32 = 0 };

/// What the blocks read: the frame, or the input in place, and its geometry. A 1x1 conv of stride 1
/// without padding reads its input in place even when the layer has a frame (input channels not a
/// multiple of 16: 8, 24, 56 ...): every window is one input pixel whose first row quads are the
/// window's quads, so the frame would only pack each pixel's quads tight (a copy of the whole input
/// per call). Such a conv's output pixels also run as one row of H x W pixels (`flat`): no short
/// block at the end of every row (a 4x4 or 2x2 map in blocks of 4 pixels).
const Source = struct {
    bytes: []const u8,
    pixel_bytes: usize, // between neighbouring input pixels (frameChannels, or Cin_p in place)
    row_bytes: usize, // between input rows
    flat: bool,

    fn of(layer: *const model.Layer, input: []const u8, frame: []u8) Source {
        const pointwise = layer.kernel_h == 1 and layer.kernel_w == 1 and layer.stride_h == 1 and layer.stride_w == 1 and
            layer.pad_top == 0 and layer.pad_left == 0 and !layer.isNarrowConv() and
            layer.frameHeight() == layer.input.h and layer.frameWidth() == layer.input.w;
        if (layer.usesFrame() and !pointwise) {
            const pixel_bytes: usize = layer.frameChannels();
            return .{ .bytes = frame_zig.fill(layer, input, frame), .pixel_bytes = pixel_bytes, .row_bytes = layer.frameWidth() * pixel_bytes, .flat = false };
        }
        const pixel_bytes: usize = layer.input.channelsPadded();
        return .{ .bytes = input, .pixel_bytes = pixel_bytes, .row_bytes = layer.input.w * pixel_bytes, .flat = pointwise };
    }

    /// Output rows and pixels per row the blocks run over.
    fn rows(source: Source, layer: *const model.Layer) struct { count: u32, width: u32 } {
        const out = layer.synaptic;
        return if (source.flat) .{ .count = 1, .width = out.h * out.w } else .{ .count = out.h, .width = out.w };
    }
};

/// The fastest exact way to add u8 x i8 dot products of values <= value_max under b-bit weights
/// (also the pointwise stage of separable2d.zig): i16 sums where enough quads fit, else one widened
/// sum per quad (the pair sums fit i16), else i16 sums of the values' nibbles, else the exact dots.
/// Only AVX2 without VNNI has the faster sequences; elsewhere always `exact`.
pub fn choose(value_max: u32, weight_bits: u32) Choice {
    if (!vector.has_pairs_fit_i16) return .{ .kernel = .exact };
    const sums = vector.pairSumsPerI16(value_max, weight_bits);
    if (sums >= min_pair_sums_per_i16) return .{ .kernel = .sums_i16, .sums_per_i16 = sums };
    if (sums == 1) return .{ .kernel = .pairs_fit_i16 };
    const nibble_sums = vector.pairSumsPerI16(vector.nibble_max, weight_bits);
    if (nibble_sums >= min_pair_sums_per_i16) return .{ .kernel = .nibble_sums_i16, .sums_per_i16 = nibble_sums };
    return .{ .kernel = .exact };
}

fn channelBlocks(comptime kernel: Kernel, comptime trims: bool, layer: *const model.Layer, source: Source, potentials: []i32, sums_per_i16: u32, fused: ?*neuron.Fused) void {
    if (comptime kernel.pairsPixels()) {
        if (halfVector(layer)) return outputRowsPaired(kernel, trims, layer, source, potentials, sums_per_i16, fused);
    }
    const chunks = layer.synaptic.channelsPadded() / lanes;
    const block_chunks = comptime kernel.blockChunks();
    var first: u32 = 0;
    while (first < chunks) {
        const count = @min(block_chunks, chunks - first);
        switch (count) {
            inline 1...block_chunks => |chunk_count| outputRowsBy(kernel, trims, chunk_count, layer, source, potentials, first, sums_per_i16, fused),
            else => unreachable,
        }
        first += count;
    }
}

/// Kernel rows of at most this many quads whose pair sums all fit one i16 group run a block kernel
/// unrolled for their quad count (outputRowsBy).
const unrolled_quads_max = 8;

/// outputRows; a one-row kernel of at most unrolled_quads_max quads under the i16 sums (a 1x1
/// expansion of 4 to 32 channels, a 1xK conv on few channels) with its quads unrolled at compile
/// time and one widening per block: no group bookkeeping per quad, which cost about what the few
/// quads' multiplies do.
fn outputRowsBy(comptime kernel: Kernel, comptime trims: bool, comptime chunks: u32, layer: *const model.Layer, source: Source, potentials: []i32, first: u32, sums_per_i16: u32, fused: ?*neuron.Fused) void {
    if (comptime kernel == .sums_i16 and !trims) {
        const quads = layer.rowQuads();
        if (layer.kernel_h == 1 and quads <= unrolled_quads_max and quads <= sums_per_i16) switch (quads) {
            inline 1...unrolled_quads_max => |count| return outputRows(kernel, trims, chunks, count, layer, source, potentials, first, sums_per_i16, fused),
            else => unreachable,
        };
    }
    outputRows(kernel, trims, chunks, null, layer, source, potentials, first, sums_per_i16, fused);
}

/// Whether the layer's output channels fill at most half of its one channel vector (a stem or a
/// small conv of <= 8 channels): the paired kernel then puts two output pixels in that vector.
fn halfVector(layer: *const model.Layer) bool {
    return layer.synaptic.channelsPadded() == lanes and layer.synaptic.c <= half_lanes;
}

const half_lanes = lanes / 2;

/// Every output pixel of a layer of at most half a vector of output channels (halfVector), two
/// pixels per channel vector: lanes [0, 8) hold pixel ox's channels, lanes [8, 16) pixel ox + 1's,
/// each half's `vpmaddubsw` taking the same 8 channels' weights and its own pixel's values. Half
/// the multiplies of pixelBlock's one pixel per vector, whose upper half multiplies zero weights.
/// A row's odd last pixel runs pixelBlock.
fn outputRowsPaired(comptime kernel: Kernel, comptime trims: bool, layer: *const model.Layer, source: Source, potentials: []i32, sums_per_i16: u32, fused: ?*neuron.Fused) void {
    const pairs = comptime kernel.blockPairs();
    const rows = source.rows(layer);
    @setEvalBranchQuota(20_000); // the inline loops below instantiate a block kernel per width
    var oy: u32 = 0;
    while (oy < rows.count) : (oy += 1) {
        var ox: u32 = 0;
        while (ox + 2 * pairs <= rows.width) : (ox += 2 * pairs) pairBlock(kernel, pairs, layer, source, potentials, oy, ox, sums_per_i16, trims, fused);
        switch ((rows.width - ox) / 2) {
            0 => {},
            inline 1...pairs - 1 => |rest| pairBlock(kernel, rest, layer, source, potentials, oy, ox, sums_per_i16, trims, fused),
            else => unreachable,
        }
        ox += (rows.width - ox) / 2 * 2;
        if (ox < rows.width) pixelBlock(kernel, 1, 1, null, layer, source, potentials, 0, oy, ox, sums_per_i16, trims, fused);
    }
}

/// The potentials of output pixels (oy, ox .. ox + 2 * pairs) of a halfVector layer, two per vector.
inline fn pairBlock(
    comptime kernel: Kernel,
    comptime pairs: u32,
    layer: *const model.Layer,
    source: Source,
    potentials: []i32,
    oy: u32,
    ox: u32,
    sums_per_i16: u32,
    comptime trims: bool,
    fused: ?*neuron.Fused,
) void {
    comptime std.debug.assert(kernel.pairsPixels());
    std.debug.assert(sums_per_i16 >= min_pair_sums_per_i16);
    const out = layer.synaptic;
    const cout_padded = out.channelsPadded();
    const frame_row_bytes = source.row_bytes;
    const pixel_step = @as(usize, layer.stride_w) * source.pixel_bytes;
    const row_quads = layer.rowQuads();
    const kernel_row_weights = @as(usize, row_quads) * cout_padded * limits.quad_channels;
    const window = @as(usize, oy) * layer.stride_h * frame_row_bytes + ox * pixel_step;
    const split = kernel == .nibble_sums_i16;

    // the bias of channels 0 .. 7 in both halves (the upper half's channels are padding: bias 0)
    const bias: vector.VecI32 = layer.bias[0..lanes].*;
    const both_bias = @shuffle(i32, bias, undefined, halvesMask(0, 0));
    var acc: [pairs][1]vector.VecI32 = @splat(.{both_bias});
    var sums: [pairs][1]vector.PairSumsI16 = @splat(.{vector.pair_sums_zero});
    var high_sums: [pairs][1]vector.PairSumsI16 = @splat(.{vector.pair_sums_zero}); // split: of the high nibbles
    var group_left: u32 = sums_per_i16;
    const reach = reachingWindow(layer, trims, oy, ox, 2 * pairs);
    var kh: u32 = reach.kh_first;
    while (kh < reach.kh_end) : (kh += 1) {
        const row = source.bytes[window + kh * frame_row_bytes ..];
        const row_weights = layer.weights[kh * kernel_row_weights ..][0..kernel_row_weights];
        var quad: u32 = reach.quad_first;
        while (quad < reach.quad_end) {
            const end = quad + @min(group_left, reach.quad_end - quad);
            group_left -= end - quad;
            while (quad < end) : (quad += 1) {
                // channels 0 .. 7: the first half of the quad's weight vector
                const weights = row_weights[@as(usize, quad) * cout_padded * limits.quad_channels ..][0 .. quad_bytes / 2];
                inline for (0..pairs) |q| {
                    const first = std.mem.readInt(u32, row[2 * q * pixel_step + quad * limits.quad_channels ..][0..4], .little);
                    const second = std.mem.readInt(u32, row[(2 * q + 1) * pixel_step + quad * limits.quad_channels ..][0..4], .little);
                    const mask: u32 = if (split) 0x0f0f0f0f else 0xffffffff;
                    sums[q][0] = vector.addPairSumsI16Paired(sums[q][0], first & mask, second & mask, weights);
                    if (split) high_sums[q][0] = vector.addPairSumsI16Paired(high_sums[q][0], (first >> 4) & mask, (second >> 4) & mask, weights);
                }
            }
            if (group_left == 0) {
                widenBlock(1, pairs, split, &acc, &sums, &high_sums);
                group_left = sums_per_i16;
            }
        }
    }
    if (group_left != sums_per_i16) widenBlock(1, pairs, split, &acc, &sums, &high_sums);
    // each pixel's 8 channels back to the front of a vector of its own, the padding lanes 0
    var pixels: [2 * pairs][1]vector.VecI32 = undefined;
    const zero: vector.VecI32 = @splat(0);
    inline for (0..pairs) |q| {
        pixels[2 * q][0] = @shuffle(i32, acc[q][0], zero, halvesMask(0, null));
        pixels[2 * q + 1][0] = @shuffle(i32, acc[q][0], zero, halvesMask(half_lanes, null));
    }
    storeBlock(1, 2 * pairs, &pixels, potentials, (@as(usize, oy) * out.w + ox) * cout_padded, cout_padded, 0, fused);
}

/// Whether some window reaches past the input into a border of zeros: only then can
/// reachingWindow leave taps out (a layer without one pays nothing per block). Not for kernel rows
/// of fewer than trim_row_quads quads (a stem's 3x3 on RGB, a conv on 8 channels), where the
/// per-block bounds cost about what the left-out dots would.
pub fn trimsPadding(layer: *const model.Layer) bool {
    if (!layer.usesFrame() or layer.padsNonZero() or layer.rowQuads() < trim_row_quads) return false;
    return layer.pad_top != 0 or layer.pad_left != 0 or layer.frameHeight() != layer.input.h or layer.frameWidth() != layer.input.w;
}

const trim_row_quads = 8;

/// Kernel rows [kh_first, kh_end) of a block's windows and, in each, quads [quad_first, quad_end).
pub const Window = struct { kh_first: u32, kh_end: u32, quad_first: u32, quad_end: u32 };

/// The part of a block's windows that can reach the input. A kernel row or a run of quads whose
/// bytes are padding for every pixel of the block (output row oy, pixels ox .. ox + pixels) is
/// left out: with zero pad values its dots add 0 (a 3x3 conv on a 1x1 input adds one tap of
/// nine, on 2x2 four; ResNet18's last stages at 32x32). Without `trims`, the whole window.
pub inline fn reachingWindow(layer: *const model.Layer, comptime trims: bool, oy: u32, ox: u32, pixels: u32) Window {
    const row_quads = layer.rowQuads();
    if (!trims) return .{ .kh_first = 0, .kh_end = layer.kernel_h, .quad_first = 0, .quad_end = row_quads };
    // frame row oy * stride_h + kh holds input row (that - pad_top); likewise for columns
    const top: i64 = @as(i64, oy) * layer.stride_h;
    const kh_first: i64 = std.math.clamp(@as(i64, layer.pad_top) - top, 0, layer.kernel_h);
    const kh_end: i64 = std.math.clamp(@as(i64, layer.pad_top) + layer.input.h - top, kh_first, layer.kernel_h);
    const left_first: i64 = @as(i64, ox) * layer.stride_w; // the block's first window
    const left_last: i64 = @as(i64, ox + pixels - 1) * layer.stride_w; // and its last
    const kw_first: i64 = std.math.clamp(@as(i64, layer.pad_left) - left_last, 0, layer.kernel_w);
    const kw_end: i64 = std.math.clamp(@as(i64, layer.pad_left) + layer.input.w - left_first, kw_first, layer.kernel_w);
    // quad q holds row bytes [4q, 4q + 4): leave out only quads all of whose bytes lie in the
    // left-out columns (a narrow conv's quads straddle pixels)
    const channels: i64 = layer.frameChannels();
    const quad_first: u32 = @intCast(@divFloor(kw_first * channels, limits.quad_channels));
    const quad_end: u32 = @intCast(@min(row_quads, @divFloor(kw_end * channels + limits.quad_channels - 1, limits.quad_channels)));
    if (kw_end == kw_first) return .{ .kh_first = 0, .kh_end = 0, .quad_first = 0, .quad_end = 0 };
    return .{ .kh_first = @intCast(kh_first), .kh_end = @intCast(kh_end), .quad_first = quad_first, .quad_end = @max(quad_first, quad_end) };
}

/// A shuffle mask of two halves of `half_lanes` lanes: the lower from lanes low .. low + 7 of the
/// first vector, the upper from lanes high .. high + 7 of it, or zeros (lane 0 of the second) for null.
fn halvesMask(comptime low: u32, comptime high: ?u32) [lanes]i32 {
    var mask: [lanes]i32 = undefined;
    for (0..half_lanes) |i| {
        mask[i] = @intCast(low + i);
        mask[half_lanes + i] = if (high) |h| @intCast(h + i) else ~@as(i32, 0);
    }
    return mask;
}

/// Output channels [first * lanes, (first + chunks) * lanes) of every output pixel, a block of
/// pixels along each output row at a time (a narrower block for the row's last pixels).
fn outputRows(comptime kernel: Kernel, comptime trims: bool, comptime chunks: u32, comptime quads: ?u32, layer: *const model.Layer, source: Source, potentials: []i32, first: u32, sums_per_i16: u32, fused: ?*neuron.Fused) void {
    const pixels = comptime kernel.blockPixels(chunks);
    const rows = source.rows(layer);
    @setEvalBranchQuota(20_000); // the inline loops below instantiate a block kernel per width
    var oy: u32 = 0;
    while (oy < rows.count) : (oy += 1) {
        var ox: u32 = 0;
        while (ox + pixels <= rows.width) : (ox += pixels) pixelBlock(kernel, chunks, pixels, quads, layer, source, potentials, first, oy, ox, sums_per_i16, trims, fused);
        if (comptime pixels > 1) switch (rows.width - ox) {
            0 => {},
            inline 1...pixels - 1 => |rest| pixelBlock(kernel, chunks, rest, quads, layer, source, potentials, first, oy, ox, sums_per_i16, trims, fused),
            else => unreachable,
        };
    }
}

/// The potentials of output pixels (oy, ox .. ox + pixels), channel vectors first .. first + chunks.
inline fn pixelBlock(
    comptime kernel: Kernel,
    comptime chunks: u32,
    comptime pixels: u32,
    comptime quads: ?u32, // the kernel row's quad count where unrolled (outputRowsBy: one row, one i16 group)
    layer: *const model.Layer,
    source: Source,
    potentials: []i32,
    first: u32,
    oy: u32,
    ox: u32,
    sums_per_i16: u32,
    comptime trims: bool,
    fused: ?*neuron.Fused,
) void {
    const out = layer.synaptic;
    const cout_padded = out.channelsPadded();
    const frame_row_bytes = source.row_bytes;
    const pixel_step = @as(usize, layer.stride_w) * source.pixel_bytes; // bytes between neighbouring windows
    const row_quads = layer.rowQuads();
    const kernel_row_weights = @as(usize, row_quads) * cout_padded * limits.quad_channels;
    const window = @as(usize, oy) * layer.stride_h * frame_row_bytes + ox * pixel_step;

    const reach = reachingWindow(layer, trims, oy, ox, pixels);
    var acc: [pixels][chunks]vector.VecI32 = undefined;
    inline for (0..pixels) |p| {
        inline for (0..chunks) |k| acc[p][k] = layer.bias[(first + k) * lanes ..][0..lanes].*;
    }
    if (comptime vector.has_pairs_fit_i16 and kernel == .sums_i16 and quads != null) {
        std.debug.assert(!trims and layer.kernel_h == 1 and quads.? == row_quads and row_quads <= sums_per_i16);
        var sums: [pixels][chunks]vector.PairSumsI16 = @splat(@splat(vector.pair_sums_zero));
        inline for (0..quads.?) |quad| {
            const weights = layer.weights[(quad * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
            inline for (0..pixels) |p| {
                const values = std.mem.readInt(u32, source.bytes[window + p * pixel_step + quad * limits.quad_channels ..][0..4], .little);
                inline for (0..chunks) |k| sums[p][k] = vector.addPairSumsI16(sums[p][k], values, weights[k * quad_bytes ..][0..quad_bytes]);
            }
        }
        widenBlock(chunks, pixels, false, &acc, &sums, &sums);
    } else if (comptime vector.has_pairs_fit_i16 and (kernel == .sums_i16 or kernel == .nibble_sums_i16)) {
        // the window's quads in groups of sums_per_i16 (a group may span kernel rows): pair sums
        // in i16, widened into acc once per group
        std.debug.assert(sums_per_i16 >= min_pair_sums_per_i16);
        const split = kernel == .nibble_sums_i16;
        var sums: [pixels][chunks]vector.PairSumsI16 = @splat(@splat(vector.pair_sums_zero));
        var high_sums: [pixels][chunks]vector.PairSumsI16 = @splat(@splat(vector.pair_sums_zero)); // split: of the high nibbles
        var group_left: u32 = sums_per_i16; // quads the running group can still take
        var kh: u32 = reach.kh_first;
        while (kh < reach.kh_end) : (kh += 1) {
            const row = source.bytes[window + kh * frame_row_bytes ..];
            const row_weights = layer.weights[kh * kernel_row_weights ..][0..kernel_row_weights];
            var quad: u32 = reach.quad_first;
            while (quad < reach.quad_end) {
                const end = quad + @min(group_left, reach.quad_end - quad);
                group_left -= end - quad;
                while (quad < end) : (quad += 1) {
                    const weights = row_weights[(@as(usize, quad) * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
                    addQuadPairSums(chunks, pixels, split, &sums, &high_sums, row[quad * limits.quad_channels ..], pixel_step, weights);
                }
                if (group_left == 0) {
                    widenBlock(chunks, pixels, split, &acc, &sums, &high_sums);
                    group_left = sums_per_i16;
                }
            }
        }
        if (group_left != sums_per_i16) widenBlock(chunks, pixels, split, &acc, &sums, &high_sums);
    } else {
        var kh: u32 = reach.kh_first;
        while (kh < reach.kh_end) : (kh += 1) {
            const row = source.bytes[window + kh * frame_row_bytes ..];
            const row_weights = layer.weights[kh * kernel_row_weights ..][0..kernel_row_weights];
            var quad: u32 = reach.quad_first;
            while (quad < reach.quad_end) : (quad += 1) {
                const weights = row_weights[(@as(usize, quad) * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
                inline for (0..pixels) |p| {
                    const values = std.mem.readInt(u32, row[p * pixel_step + quad * limits.quad_channels ..][0..4], .little);
                    inline for (0..chunks) |k| acc[p][k] = vector.dotQuadBy(comptime kernel.dots(), acc[p][k], values, weights[k * quad_bytes ..][0..quad_bytes]);
                }
            }
        }
    }
    storeBlock(chunks, pixels, &acc, potentials, (@as(usize, oy) * out.w + ox) * cout_padded, cout_padded, first, fused);
}

/// acc += the block's i16 pair sums, widened (split: + 16 x the high nibbles' sums); the sums
/// start again from zero.
pub inline fn widenBlock(
    comptime chunks: u32,
    comptime pixels: u32,
    comptime split: bool,
    acc: *[pixels][chunks]vector.VecI32,
    sums: *[pixels][chunks]vector.PairSumsI16,
    high_sums: *[pixels][chunks]vector.PairSumsI16,
) void {
    inline for (0..pixels) |p| {
        inline for (0..chunks) |k| {
            acc[p][k] = vector.widenPairSums(acc[p][k], sums[p][k]);
            sums[p][k] = vector.pair_sums_zero;
            if (split) {
                acc[p][k] = vector.widenPairSumsBy(acc[p][k], high_sums[p][k], 16);
                high_sums[p][k] = vector.pair_sums_zero;
            }
        }
    }
}

/// The finished sums of a block of output pixels (starting at value `start`, `row_values` apart):
/// to the potentials, or through the fused relu stage to the activations.
pub inline fn storeBlock(
    comptime chunks: u32,
    comptime pixels: u32,
    acc: *const [pixels][chunks]vector.VecI32,
    potentials: []i32,
    start: usize,
    row_values: usize,
    first: u32,
    fused: ?*neuron.Fused,
) void {
    inline for (0..pixels) |p| {
        inline for (0..chunks) |k| {
            const channel = (first + k) * lanes;
            const offset = start + p * row_values + channel;
            if (fused) |f| f.store(offset, channel, acc[p][k]) else vector.storeVector(potentials, offset, acc[p][k]);
        }
    }
}

/// One input quad of `pixels` pixels (`pixel_step` bytes apart from `bytes` on) into their i16 pair
/// sums over `chunks` output vectors; `split` (4-bit activations packed two to a byte): the low
/// nibbles into `sums`, the high ones into `high_sums`. The inner step of the dense conv2d and of
/// separable2d's pointwise stage.
pub inline fn addQuadPairSums(comptime chunks: usize, comptime pixels: usize, comptime split: bool, sums: *[pixels][chunks]vector.PairSumsI16, high_sums: *[pixels][chunks]vector.PairSumsI16, bytes: []const u8, pixel_step: usize, weights: *const [chunks * quad_bytes]i8) void {
    inline for (0..pixels) |p| {
        const values = std.mem.readInt(u32, bytes[p * pixel_step ..][0..4], .little);
        const low = if (split) values & 0x0f0f0f0f else values;
        inline for (0..chunks) |k| sums[p][k] = vector.addPairSumsI16(sums[p][k], low, weights[k * quad_bytes ..][0..quad_bytes]);
        if (split) {
            const high = (values >> 4) & 0x0f0f0f0f;
            inline for (0..chunks) |k| high_sums[p][k] = vector.addPairSumsI16(high_sums[p][k], high, weights[k * quad_bytes ..][0..quad_bytes]);
        }
    }
}
