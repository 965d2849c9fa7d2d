//! conv2d / input_conv2d on a sparse input (docs/semantics.md; conv2d.zig picks it by the input's
//! non-zero quads): event-driven in two passes. First every input pixel's non-zero channel groups
//! (quads) are compacted once into a list (`compact`); then each output pixel keeps a block of up to
//! 4 vectors of output channels in registers and adds the dot products of only the listed quads of
//! every input pixel in its window. The cost is the non-zero quads times the taps they reach times
//! Cout (the events' fan-out), with no loads and stores of potentials per event. Bit-exact with
//! conv2d_dense.zig (the same dot products, added in the same order per output channel: integer
//! addition is exact, so only the set of terms matters).

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");

const lanes = vector.lanes;
const quad_bytes = vector.quad_bytes;
const Quad = model.Quad;
const block_chunks_max = 4;

/// Entries of one input pixel's list: a header (index = quads listed, values = events) and room for
/// every quad of the padded channels (the branch-free compaction writes up to that many).
pub fn pixelEntries(layer: *const model.Layer) usize {
    return layer.input.channelsPadded() / limits.quad_channels + 1;
}

/// Quad entries the lists of the whole input need (planner.zig).
pub fn entriesMax(layer: *const model.Layer) u64 {
    return layer.input.pixels() * pixelEntries(layer);
}

/// What `compact` found: the non-zero quads and the synaptic operations of the input.
pub const Counts = struct { nonzero_quads: u64, active_pixels: u64, synaptic_ops: u64 };

/// List every input pixel's non-zero quads in `lists` (entriesMax entries) and count the synaptic
/// operations (docs/semantics.md): each non-zero value times the (output pixel, tap) pairs it reaches, times Cout.
pub fn compact(layer: *const model.Layer, input: []const u8, lists: []Quad) Counts {
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    const entries = pixelEntries(layer);
    const quad_count = in.channelQuads();
    std.debug.assert(lists.len >= entriesMax(layer));
    var nonzero_quads: u64 = 0;
    var reach_events: u64 = 0;
    var active_pixels: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const pixel_index = @as(usize, iy) * in.w + ix;
            const list = lists[pixel_index * entries ..][0..entries];
            const gathered = vector.gatherPixelQuads(input[pixel_index * cin_padded ..][0..cin_padded], quad_count, list[1..]);
            list[0] = .{ .index = @intCast(gathered.quads.len), .values = @intCast(gathered.events) };
            nonzero_quads += gathered.quads.len;
            active_pixels += @intFromBool(gathered.quads.len != 0);
            reach_events += gathered.events * rows.count * layer.column_taps[ix].count;
        }
    }
    return .{ .nonzero_quads = nonzero_quads, .active_pixels = active_pixels, .synaptic_ops = reach_events * layer.synaptic.c };
}

/// potentials: i32 (OH, OW, Cout_p) before pooling; lists: filled by `compact` for this input.
pub fn run(layer: *const model.Layer, lists: []const Quad, potentials: []i32) void {
    std.debug.assert(potentials.len == layer.synaptic.valuesPadded());
    const chunks = layer.synaptic.channelsPadded() / lanes;
    var first: u32 = 0;
    while (first < chunks) {
        const count = @min(block_chunks_max, chunks - first);
        switch (count) {
            inline 1...block_chunks_max => |block| gatherBlock(block, layer, lists, potentials, first),
            else => unreachable,
        }
        first += count;
    }
}

/// Output channels [first * lanes, (first + block) * lanes) of every output pixel.
fn gatherBlock(comptime block: u32, layer: *const model.Layer, lists: []const Quad, potentials: []i32, first: u32) void {
    const in = layer.input;
    const out = layer.synaptic;
    const cout_padded = out.channelsPadded();
    const entries = pixelEntries(layer);
    const tap_weights_stride = @as(usize, in.channelQuads()) * cout_padded * limits.quad_channels;
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
                    const list = lists[pixel_index * entries ..][0..entries];
                    const tap = @as(usize, kh) * layer.kernel_w + kw;
                    const tap_weights = layer.weights[tap * tap_weights_stride ..][0..tap_weights_stride];
                    for (list[1..][0..list[0].index]) |quad| {
                        const weights = tap_weights[(@as(usize, quad.index) * cout_padded + first * lanes) * limits.quad_channels ..][0 .. block * quad_bytes];
                        inline for (0..block) |k| acc[k] = vector.dotQuad(acc[k], quad.values, weights[k * quad_bytes ..][0..quad_bytes]);
                    }
                }
            }
            const row = potentials[(@as(usize, oy) * out.w + ox) * cout_padded ..][0..cout_padded];
            inline for (0..block) |k| vector.storeVector(row, (first + k) * lanes, acc[k]);
        }
    }
}
