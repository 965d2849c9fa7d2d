//! conv2d / input_conv2d, dense (docs/semantics.md; conv2d.zig picks it for narrow inputs and when
//! the input has too many events for the scatter to win, or its pad values are not 0). Output-stationary over a padded copy
//! of the input, the frame (u8 (frameHeight, frameWidth, frameChannels), model.Layer.usesFrame; a
//! conv without padding on whole-vector channels reads its input directly). In the frame one kernel
//! row of a window is KW * frameChannels consecutive bytes, so each 4 of them are one u8 x i8 dot
//! product per output channel with the weights in the same row order (loader.zig), and no tap needs
//! a bounds test. A block of output pixels x output-channel vectors stays in registers: each weight
//! vector loaded serves every pixel of the block, and the block's independent sums hide the
//! dot-product latency. A quad of zeros costs one dot (a branch per quad mispredicts and costs
//! more). Bit-exact with the scatter kernel.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const frame_zig = @import("frame.zig");
const neuron = @import("neuron.zig");

const lanes = vector.lanes;
const quad_bytes = vector.quad_bytes;
/// Output-channel vectors one block keeps in registers.
const block_chunks_max = 4;

/// input: u8 (H, W, Cin_p); frame: the layer's padded-input scratch (empty when it reads its input
/// directly); potentials: i32 (OH, OW, Cout_p).
/// fused: when given, relu runs on the finished sums and writes activations, not potentials.
pub fn run(layer: *const model.Layer, input: []const u8, frame: []u8, potentials: []i32, fused: ?*neuron.Fused) void {
    std.debug.assert(layer.isConv());
    std.debug.assert(input.len == layer.input.valuesPadded());
    std.debug.assert(potentials.len == layer.synaptic.valuesPadded());
    const source = if (layer.usesFrame()) frame_zig.fill(layer, input, frame) else input;
    if (vector.has_pairs_fit_i16 and layer.dotPairsFitI16()) {
        channelBlocks(.pairs_fit_i16, layer, source, potentials, fused);
    } else {
        channelBlocks(.exact, layer, source, potentials, fused);
    }
    if (fused) |f| f.done = true;
}

fn channelBlocks(comptime dots: vector.Dots, layer: *const model.Layer, source: []const u8, potentials: []i32, fused: ?*neuron.Fused) void {
    const chunks = layer.synaptic.channelsPadded() / lanes;
    var first: u32 = 0;
    while (first < chunks) {
        const count = @min(block_chunks_max, chunks - first);
        switch (count) {
            inline 1...block_chunks_max => |chunk_count| outputRows(dots, chunk_count, layer, source, potentials, first, fused),
            else => unreachable,
        }
        first += count;
    }
}

/// Output channels [first * lanes, (first + chunks) * lanes) of every output pixel, a block of
/// pixels along each output row at a time (a narrower block for the row's last pixels).
fn outputRows(comptime dots: vector.Dots, comptime chunks: u32, layer: *const model.Layer, source: []const u8, potentials: []i32, first: u32, fused: ?*neuron.Fused) void {
    const pixels = comptime vector.blockPixels(chunks);
    const out = layer.synaptic;
    @setEvalBranchQuota(20_000); // the inline loops below instantiate a block kernel per width
    var oy: u32 = 0;
    while (oy < out.h) : (oy += 1) {
        var ox: u32 = 0;
        while (ox + pixels <= out.w) : (ox += pixels) pixelBlock(dots, chunks, pixels, layer, source, potentials, first, oy, ox, fused);
        if (comptime pixels > 1) switch (out.w - ox) {
            0 => {},
            inline 1...pixels - 1 => |rest| pixelBlock(dots, chunks, rest, layer, source, potentials, first, oy, ox, fused),
            else => unreachable,
        };
    }
}

/// The potentials of output pixels (oy, ox .. ox + pixels), channel vectors first .. first + chunks.
inline fn pixelBlock(
    comptime dots: vector.Dots,
    comptime chunks: u32,
    comptime pixels: u32,
    layer: *const model.Layer,
    source: []const u8,
    potentials: []i32,
    first: u32,
    oy: u32,
    ox: u32,
    fused: ?*neuron.Fused,
) void {
    const out = layer.synaptic;
    const cout_padded = out.channelsPadded();
    const frame_channels: usize = if (layer.usesFrame()) layer.frameChannels() else layer.input.channelsPadded();
    const frame_row_bytes = @as(usize, if (layer.usesFrame()) layer.frameWidth() else layer.input.w) * frame_channels;
    const pixel_step = @as(usize, layer.stride_w) * frame_channels; // bytes between neighbouring windows
    const row_quads = layer.rowQuads();
    const kernel_row_weights = @as(usize, row_quads) * cout_padded * limits.quad_channels;
    const window = @as(usize, oy) * layer.stride_h * frame_row_bytes + ox * pixel_step;

    var acc: [pixels][chunks]vector.VecI32 = undefined;
    inline for (0..pixels) |p| {
        inline for (0..chunks) |k| acc[p][k] = layer.bias[(first + k) * lanes ..][0..lanes].*;
    }
    var kh: u32 = 0;
    while (kh < layer.kernel_h) : (kh += 1) {
        const row = source[window + kh * frame_row_bytes ..];
        const row_weights = layer.weights[kh * kernel_row_weights ..][0..kernel_row_weights];
        var quad: u32 = 0;
        while (quad < row_quads) : (quad += 1) {
            const weights = row_weights[(@as(usize, quad) * cout_padded + first * lanes) * limits.quad_channels ..][0 .. chunks * quad_bytes];
            inline for (0..pixels) |p| {
                const values = std.mem.readInt(u32, row[p * pixel_step + quad * limits.quad_channels ..][0..4], .little);
                inline for (0..chunks) |k| acc[p][k] = vector.dotQuadBy(dots, acc[p][k], values, weights[k * quad_bytes ..][0..quad_bytes]);
            }
        }
    }
    storeBlock(chunks, pixels, &acc, potentials, (@as(usize, oy) * out.w + ox) * cout_padded, cout_padded, first, fused);
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
