//! conv2d / input_conv2d on a dense input (docs/semantics.md; conv2d.zig picks it when the input
//! has too many events for the scatter to win): output-stationary, each output pixel keeps a block
//! of up to 4 vectors of output channels in registers, started from the bias, and adds the dot
//! products of every quad of every input pixel in its window, branch-free. It saves the scatter's
//! loads and stores of potentials. Bit-exact with the scatter kernel.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");

const lanes = vector.lanes;
const quad_bytes = vector.quad_bytes;
/// Output-channel vectors one block keeps in registers.
const block_chunks_max = 4;

/// potentials: i32 (OH, OW, Cout_p) before pooling; input: u8 (H, W, Cin_p).
pub fn run(layer: *const model.Layer, input: []const u8, potentials: []i32) void {
    std.debug.assert(input.len == layer.input.valuesPadded());
    std.debug.assert(potentials.len == layer.synaptic.valuesPadded());
    const chunks = layer.synaptic.channelsPadded() / lanes;
    var first: u32 = 0;
    while (first < chunks) {
        const count = @min(block_chunks_max, chunks - first);
        switch (count) {
            inline 1...block_chunks_max => |block| gatherBlock(block, layer, input, potentials, first),
            else => unreachable,
        }
        first += count;
    }
}

/// Output channels [first * lanes, (first + block) * lanes) of every output pixel.
fn gatherBlock(comptime block: u32, layer: *const model.Layer, input: []const u8, potentials: []i32, first: u32) void {
    const in = layer.input;
    const out = layer.synaptic;
    const cin_padded = in.channelsPadded();
    const cout_padded = out.channelsPadded();
    const quad_count = in.channelQuads();
    const tap_weights_stride = @as(usize, quad_count) * cout_padded * limits.quad_channels;
    var oy: u32 = 0;
    while (oy < out.h) : (oy += 1) {
        var ox: u32 = 0;
        while (ox < out.w) : (ox += 1) {
            var acc: [block]vector.VecI32 = undefined;
            inline for (0..block) |k| acc[k] = layer.bias[(first + k) * lanes ..][0..lanes].*;
            var kh: u32 = 0;
            while (kh < layer.kernel_h) : (kh += 1) {
                const iy = @as(i64, oy) * layer.stride + kh - layer.pad_top;
                if (iy < 0 or iy >= in.h) continue;
                var kw: u32 = 0;
                while (kw < layer.kernel_w) : (kw += 1) {
                    const ix = @as(i64, ox) * layer.stride + kw - layer.pad_left;
                    if (ix < 0 or ix >= in.w) continue;
                    const pixel_index: usize = @intCast(iy * in.w + ix);
                    const pixel = input[pixel_index * cin_padded ..][0..cin_padded];
                    const tap = @as(usize, kh) * layer.kernel_w + kw;
                    addPixel(block, &acc, pixel, quad_count, layer.weights[tap * tap_weights_stride ..][0..tap_weights_stride], cout_padded, first);
                }
            }
            const row = potentials[(@as(usize, oy) * out.w + ox) * cout_padded ..][0..cout_padded];
            inline for (0..block) |k| vector.storeVector(row, (first + k) * lanes, acc[k]);
        }
    }
}

/// acc += the dot products of the pixel's non-zero quads with their weights (this block's channels).
inline fn addPixel(
    comptime block: u32,
    acc: *[block]vector.VecI32,
    pixel: []const u8,
    quad_count: u32,
    tap_weights: []const i8,
    cout_padded: u32,
    first: u32,
) void {
    var quad: u32 = 0;
    while (quad < quad_count) : (quad += 1) {
        // no zero test: on the inputs this kernel gets (conv2d.zig chooses) a branch per quad
        // mispredicts and costs more than the dot product it saves
        const values = std.mem.readInt(u32, pixel[quad * limits.quad_channels ..][0..4], .little);
        const weights = tap_weights[(@as(usize, quad) * cout_padded + first * lanes) * limits.quad_channels ..][0 .. block * quad_bytes];
        inline for (0..block) |k| acc[k] = vector.dotQuad(acc[k], values, weights[k * quad_bytes ..][0..quad_bytes]);
    }
}
