//! add (docs/semantics.md): P[y, x, c] = bias[c] + sum over inputs i of m[i, c] * a_i[y, x, c].

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");

/// inputs: each u8 (H, W, C_p); potentials: i32 (H, W, C_p). Returns synaptic ops = input events.
pub fn run(layer: *const model.Layer, inputs: []const []const u8, potentials: []i32) u64 {
    const channels_padded = layer.synaptic.channelsPadded();
    std.debug.assert(inputs.len == layer.input_count);
    vector.fillRows(potentials, layer.bias);
    var synaptic_ops: u64 = 0;
    for (inputs, 0..) |input, i| {
        std.debug.assert(input.len == potentials.len);
        const multipliers = layer.input_multipliers[i * channels_padded ..][0..channels_padded];
        var pixel: usize = 0;
        while (pixel < input.len) : (pixel += channels_padded) {
            var channel: usize = 0;
            while (channel < channels_padded) : (channel += vector.lanes) {
                const offset = pixel + channel;
                const values: vector.VecU8 = input[offset..][0..vector.lanes].*;
                if (@reduce(.Max, values) == 0) continue;
                const multiplier: vector.VecI32 = multipliers[channel..][0..vector.lanes].*;
                var acc: vector.VecI32 = potentials[offset..][0..vector.lanes].*;
                acc +%= multiplier *% @as(vector.VecI32, values);
                potentials[offset..][0..vector.lanes].* = acc;
            }
        }
        synaptic_ops += vector.countNonZeroU8(input);
    }
    return synaptic_ops;
}
