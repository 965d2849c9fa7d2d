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

const lanes = vector.lanes;


/// potentials: i32 (OH, OW, Cout_p) before pooling; input: u8 (H, W, Cin_p).
/// Returns the synaptic operations (docs/semantics.md).
pub fn run(layer: *const model.Layer, input: []const u8, potentials: []i32, quads_buffer: []model.Quad, frame: []u8) u64 {
    if (layer.isNarrowConv()) {
        conv2d_narrow.run(layer, input, frame, potentials);
        return synapticOps(layer, input);
    }
    if (denseIsCheaper(layer, input)) {
        conv2d_dense.run(layer, input, potentials);
        return synapticOps(layer, input);
    }
    return scatter(layer, input, potentials, quads_buffer);
}

/// The scatter pays per active input pixel (loading and storing the potentials it reaches) and per
/// non-zero quad; the dense kernel per quad of every pixel. Both reach the same taps per pixel, so
/// per pixel: scatter ~ 1.8 x (2 x active pixels + non-zero quads) against all quads (1.8 measured
/// on AVX-512: the scatter's instructions are costlier than the dense kernel's streamed dots).
fn denseIsCheaper(layer: *const model.Layer, input: []const u8) bool {
    const cin_padded = layer.input.channelsPadded();
    var active_pixels: u64 = 0;
    var nonzero_quads: u64 = 0;
    var pixel: usize = 0;
    while (pixel < input.len) : (pixel += cin_padded) {
        var pixel_quads: u64 = 0;
        var chunk: usize = 0;
        while (chunk < cin_padded) : (chunk += lanes) {
            const words: @Vector(lanes / limits.quad_channels, u32) = @bitCast(@as(vector.VecU8, input[pixel + chunk ..][0..lanes].*));
            pixel_quads += std.simd.countTrues(words != @as(@Vector(lanes / limits.quad_channels, u32), @splat(0)));
        }
        nonzero_quads += pixel_quads;
        active_pixels += @intFromBool(pixel_quads != 0);
    }
    const scatter_cost = 18 * (2 * active_pixels + nonzero_quads);
    const dense_cost = 10 * layer.input.pixels() * layer.input.channelQuads();
    return dense_cost < scatter_cost;
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
