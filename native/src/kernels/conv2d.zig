//! conv2d and input_conv2d (identical semantics, docs/semantics.md): event-driven scatter.
//! For every input pixel with non-zero channels, every (output pixel, tap) it reaches gets
//! sum over those channels of value * W[kh, kw, ci, :], four channels at a time (one quad: a u8 x i8
//! dot product per output channel, kernels/vector.zig); all-zero quads are skipped.
//! Cost: events x reached taps x Cout, the synaptic operations counted by the statistics.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const conv2d_dense = @import("conv2d_dense.zig");
const conv2d_narrow = @import("conv2d_narrow.zig");

/// Above this fraction of non-zero input values the dense kernel (conv2d_dense.zig) is faster.
pub const dense_fraction_min = 0.7;

/// potentials: i32 (OH, OW, Cout_p) before pooling; input: u8 (H, W, Cin_p).
/// Returns the synaptic operations (docs/semantics.md).
pub fn run(layer: *const model.Layer, input: []const u8, potentials: []i32, quads_buffer: []model.Quad, frame: []u8) u64 {
    if (layer.isNarrowConv()) {
        conv2d_narrow.run(layer, input, frame, potentials);
        return synapticOps(layer, input);
    }
    const events: f64 = @floatFromInt(vector.countNonZeroU8(input));
    if (events > dense_fraction_min * @as(f64, @floatFromInt(layer.input.values()))) {
        conv2d_dense.run(layer, input, potentials);
        return synapticOps(layer, input);
    }
    return scatter(layer, input, potentials, quads_buffer);
}

fn scatter(layer: *const model.Layer, input: []const u8, potentials: []i32, quads_buffer: []model.Quad) u64 {
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
        const rows = layer.row_taps[iy];
        if (rows.count == 0) continue;
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const pixel = input[(@as(usize, iy) * in.w + ix) * cin_padded ..][0..cin_padded];
            const gathered = vector.gatherPixelQuads(pixel, quad_count, quads_buffer);
            if (gathered.events == 0) continue;
            const columns = layer.column_taps[ix];
            for (0..rows.count) |row_step| {
                const oy = rows.output_first - row_step;
                const kh = rows.kernel_first + row_step * layer.stride;
                for (0..columns.count) |column_step| {
                    const ox = columns.output_first - column_step;
                    const kw = columns.kernel_first + column_step * layer.stride;
                    const tap = kh * layer.kernel_w + kw;
                    const output_pixel = oy * out.w + ox;
                    vector.accumulateQuads(
                        potentials[output_pixel * cout_padded ..][0..cout_padded],
                        layer.weights[tap * tap_weights_stride ..][0..tap_weights_stride],
                        gathered.quads,
                    );
                }
            }
            synaptic_ops += gathered.events * rows.count * columns.count * out.c;
        }
    }
    return synaptic_ops;
}

/// Synaptic ops as the statistics define them: for every input pixel, its non-zero values times
/// the in-bounds (output pixel, tap) pairs it reaches, times Cout.
pub fn synapticOps(layer: *const model.Layer, input: []const u8) u64 {
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    var ops: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        if (rows.count == 0) continue;
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const events = vector.countNonZeroU8(input[(@as(usize, iy) * in.w + ix) * cin_padded ..][0..cin_padded]);
            ops += events * rows.count * layer.column_taps[ix].count;
        }
    }
    return ops * layer.synaptic.c;
}
