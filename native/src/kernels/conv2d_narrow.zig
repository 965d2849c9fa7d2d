//! conv2d / input_conv2d on an input with fewer channels than a quad (model.Layer.isNarrowConv):
//! quads along the kernel row. The input is copied into a zero-padded frame (u8, Cin unpadded), so
//! one kernel row (kw, ci) of a window is KW * Cin consecutive bytes; each 4 of them are one u8 x
//! i8 dot product per output channel with the weights unpacked in the same order (loader.zig
//! unpackRowQuadMatrix). Output-stationary like conv2d_dense.zig; a quad of zeros costs one dot
//! (cheaper than a mispredicted branch on such small inputs). Bit-exact with the other kernels.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");

const lanes = vector.lanes;
const quad_bytes = vector.quad_bytes;
const block_chunks_max = 4;

/// input: u8 (H, W, Cin_p); frame: the layer's padded-input scratch; potentials: i32 (OH, OW, Cout_p).
pub fn run(layer: *const model.Layer, input: []const u8, frame: []u8, potentials: []i32) void {
    std.debug.assert(layer.isNarrowConv());
    std.debug.assert(frame.len == layer.frameBytes());
    fillFrame(layer, input, frame);
    const chunks = layer.synaptic.channelsPadded() / lanes;
    var first: u32 = 0;
    while (first < chunks) {
        const count = @min(block_chunks_max, chunks - first);
        switch (count) {
            inline 1...block_chunks_max => |block| gatherBlock(block, layer, frame, potentials, first),
            else => unreachable,
        }
        first += count;
    }
}

/// Copy the input's real channels into the frame's interior (the border stays zero).
fn fillFrame(layer: *const model.Layer, input: []const u8, frame: []u8) void {
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    const frame_width = layer.frameWidth();
    var y: u32 = 0;
    while (y < in.h) : (y += 1) {
        var x: u32 = 0;
        while (x < in.w) : (x += 1) {
            const source = input[(@as(usize, y) * in.w + x) * cin_padded ..][0..in.c];
            const target = ((@as(usize, y) + layer.pad_top) * frame_width + x + layer.pad_left) * in.c;
            @memcpy(frame[target..][0..in.c], source);
        }
    }
}

fn gatherBlock(comptime block: u32, layer: *const model.Layer, frame: []const u8, potentials: []i32, first: u32) void {
    const out = layer.synaptic;
    const cin = layer.input.c;
    const cout_padded = out.channelsPadded();
    const row_quads = layer.rowQuads();
    const frame_row_bytes = @as(usize, layer.frameWidth()) * cin;
    const kernel_row_weights = @as(usize, row_quads) * cout_padded * limits.quad_channels;
    var oy: u32 = 0;
    while (oy < out.h) : (oy += 1) {
        var ox: u32 = 0;
        while (ox < out.w) : (ox += 1) {
            var acc: [block]vector.VecI32 = undefined;
            inline for (0..block) |k| acc[k] = layer.bias[(first + k) * lanes ..][0..lanes].*;
            const window = (@as(usize, oy) * layer.stride) * frame_row_bytes + @as(usize, ox) * layer.stride * cin;
            var kh: u32 = 0;
            while (kh < layer.kernel_h) : (kh += 1) {
                const row = frame[window + kh * frame_row_bytes ..];
                const row_weights = layer.weights[kh * kernel_row_weights ..][0..kernel_row_weights];
                var quad: u32 = 0;
                while (quad < row_quads) : (quad += 1) {
                    const values = std.mem.readInt(u32, row[quad * limits.quad_channels ..][0..4], .little);
                    const weights = row_weights[(@as(usize, quad) * cout_padded + first * lanes) * limits.quad_channels ..][0 .. block * quad_bytes];
                    inline for (0..block) |k| acc[k] = vector.dotQuad(acc[k], values, weights[k * quad_bytes ..][0..quad_bytes]);
                }
            }
            const out_row = potentials[(@as(usize, oy) * out.w + ox) * cout_padded ..][0..cout_padded];
            inline for (0..block) |k| vector.storeVector(out_row, (first + k) * lanes, acc[k]);
        }
    }
}
