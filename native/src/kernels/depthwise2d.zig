//! depthwise2d (channel multiplier 1, docs/semantics.md): for every input pixel with a non-zero
//! channel, every (output pixel, tap) it reaches gets value[c] * W[kh, kw, c] for all channels at
//! once (a vector over channels; zero channels add nothing). Also the first stage of separable2d.

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");

/// potentials: i32 (OH, OW, C_p) before pooling, set to `bias` (empty: zero) first;
/// input: u8 (H, W, C_p). Returns the synaptic operations: one per in-bounds tap of a non-zero input.
pub fn accumulate(layer: *const model.Layer, input: []const u8, bias: []const i32, potentials: []i32) u64 {
    const in = layer.input;
    const out_h = layer.synaptic.h;
    const out_w = layer.synaptic.w;
    const channels_padded = in.channelsPadded();
    std.debug.assert(input.len == in.valuesPadded());
    std.debug.assert(potentials.len == @as(usize, out_h) * out_w * channels_padded);
    vector.fillRows(potentials, bias);
    var synaptic_ops: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        if (rows.count == 0) continue;
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const pixel = input[(@as(usize, iy) * in.w + ix) * channels_padded ..][0..channels_padded];
            const events = vector.countNonZeroU8(pixel);
            if (events == 0) continue;
            const columns = layer.column_taps[ix];
            for (0..rows.count) |row_step| {
                const oy = rows.output_first - row_step;
                const kh = rows.kernel_first + row_step * layer.stride;
                for (0..columns.count) |column_step| {
                    const ox = columns.output_first - column_step;
                    const kw = columns.kernel_first + column_step * layer.stride;
                    const tap = kh * layer.kernel_w + kw;
                    const output_pixel = oy * out_w + ox;
                    accumulatePixel(
                        potentials[output_pixel * channels_padded ..][0..channels_padded],
                        layer.weights[tap * channels_padded ..][0..channels_padded],
                        pixel,
                    );
                }
            }
            synaptic_ops += events * rows.count * columns.count;
        }
    }
    return synaptic_ops;
}

/// row += weights * pixel over all channels. No per-chunk zero test: one multiply-add is cheaper
/// than the mispredicted branch; the pixel as a whole is skipped when it has no event.
fn accumulatePixel(row: []i32, weights: []const i8, pixel: []const u8) void {
    var chunk: usize = 0;
    while (chunk < row.len) : (chunk += vector.lanes) {
        const values: vector.VecU8 = pixel[chunk..][0..vector.lanes].*;
        const weight: vector.VecI8 = weights[chunk..][0..vector.lanes].*;
        const product: vector.VecI16 = @as(vector.VecI16, weight) *% @as(vector.VecI16, values); // exact: |w| <= 128, v <= 255
        const acc: vector.VecI32 = row[chunk..][0..vector.lanes].*;
        vector.storeVector(row, chunk, acc +% @as(vector.VecI32, product));
    }
}

pub fn run(layer: *const model.Layer, input: []const u8, potentials: []i32) u64 {
    return accumulate(layer, input, layer.bias, potentials);
}
