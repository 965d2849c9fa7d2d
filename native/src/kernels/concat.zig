//! concat (docs/semantics.md): every output channel j reads one channel of one input,
//! P[y, x, j] = bias[j] + m[j] * a_i[y, x, c] with (i, c) = sources[j] (a channel concatenation, a
//! split, a shuffle, or with one input a layer that only pools or rescales). A gather per pixel.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");

/// inputs: u8 (H, W, C_i padded) each; potentials: i32 (H, W, Cout_p). Returns the synaptic
/// operations: the (y, x, j) whose source value is non-zero.
pub fn run(layer: *const model.Layer, inputs: []const []const u8, potentials: []i32) u64 {
    std.debug.assert(layer.kind == .concat and inputs.len == layer.input_count);
    const cout_padded = layer.synaptic.channelsPadded();
    const pixels: usize = @intCast(layer.synaptic.pixels());
    std.debug.assert(potentials.len == pixels * cout_padded);
    var strides: [limits.inputs_max]usize = undefined;
    for (inputs, 0..) |input, i| {
        strides[i] = layer.input_shapes[i].channelsPadded();
        std.debug.assert(input.len == pixels * strides[i]);
    }
    var synaptic_ops: u64 = 0;
    for (0..pixels) |pixel| {
        const row = potentials[pixel * cout_padded ..][0..cout_padded];
        @memcpy(row, layer.bias); // padding lanes: bias 0
        for (layer.concat_sources, 0..) |source, j| {
            const value = inputs[source.input][pixel * strides[source.input] + source.channel];
            row[j] +%= layer.input_multipliers[j] *% @as(i32, value); // |P| <= the overflow bound
            synaptic_ops += @intFromBool(value != 0);
        }
    }
    return synaptic_ops;
}
