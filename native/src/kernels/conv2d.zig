//! conv2d and input_conv2d (identical semantics, docs/semantics.md): event-driven scatter.
//! For every input pixel with non-zero channels, every (output pixel, tap) it reaches gets
//! sum over those channels of value * W[kh, kw, ci, :], four channels at a time (one quad: a u8 x i8
//! dot product per output channel, kernels/vector.zig); all-zero quads are skipped.
//! Cost: events x reached taps x Cout, the synaptic operations counted by the statistics.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");

/// potentials: i32 (OH, OW, Cout_p) before pooling; input: u8 (H, W, Cin_p).
/// Returns the synaptic operations (docs/semantics.md).
pub fn run(layer: *const model.Layer, input: []const u8, potentials: []i32, quads_buffer: []model.Quad) u64 {
    const in = layer.input;
    const out = layer.synaptic;
    const cin_padded = in.channelsPadded();
    const cout_padded = out.channelsPadded();
    std.debug.assert(input.len == in.valuesPadded());
    std.debug.assert(potentials.len == out.valuesPadded());
    vector.fillRows(potentials, layer.bias);
    const quad_count = in.channelQuads();
    const tap_weights_stride = @as(usize, quad_count) * limits.quad_channels * cout_padded; // one (kh, kw) tap
    var synaptic_ops: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = vector.tapsOf(iy, layer.pad_top, layer.kernel_h, layer.stride, out.h);
        if (rows.len == 0) continue;
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const pixel = input[(@as(usize, iy) * in.w + ix) * cin_padded ..][0..cin_padded];
            const gathered = vector.gatherPixelQuads(pixel, quad_count, quads_buffer);
            if (gathered.events == 0) continue;
            const columns = vector.tapsOf(ix, layer.pad_left, layer.kernel_w, layer.stride, out.w);
            for (rows.slice()) |row| {
                for (columns.slice()) |column| {
                    const tap = @as(usize, row.kernel) * layer.kernel_w + column.kernel;
                    const output_pixel = @as(usize, row.output) * out.w + column.output;
                    vector.accumulateQuads(
                        potentials[output_pixel * cout_padded ..][0..cout_padded],
                        layer.weights[tap * tap_weights_stride ..][0..tap_weights_stride],
                        gathered.quads,
                    );
                }
            }
            synaptic_ops += gathered.events * rows.len * columns.len * out.c;
        }
    }
    return synaptic_ops;
}
