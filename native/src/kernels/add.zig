//! add (docs/semantics.md): P[y, x, c] = bias[c] + sum over inputs i of m[i, c] * a_i[y, x, c].

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const neuron = @import("neuron.zig");

/// inputs: each u8 (H, W, C_p); potentials: i32 (H, W, C_p). Returns synaptic ops = input events.
/// One pass over the pixels, every input's vector added in registers (no potentials read back per
/// input). fused: when given, relu runs on each finished vector and writes activations instead.
pub fn run(layer: *const model.Layer, inputs: []const []const u8, potentials: []i32, fused: ?*neuron.Fused) u64 {
    const channels_padded = layer.synaptic.channelsPadded();
    std.debug.assert(inputs.len == layer.input_count);
    for (inputs) |input| std.debug.assert(input.len == potentials.len);
    var pixel: usize = 0;
    while (pixel < potentials.len) : (pixel += channels_padded) {
        var channel: usize = 0;
        while (channel < channels_padded) : (channel += vector.lanes) {
            const offset = pixel + channel;
            var acc: vector.VecI32 = if (layer.bias.len == 0) @splat(0) else layer.bias[channel..][0..vector.lanes].*;
            for (inputs, 0..) |input, i| {
                const values: vector.VecU8 = input[offset..][0..vector.lanes].*;
                if (@reduce(.Max, values) == 0) continue; // no events (a spike input's usual vector)
                const multiplier: vector.VecI32 = layer.input_multipliers[i * channels_padded + channel ..][0..vector.lanes].*;
                acc +%= multiplier *% @as(vector.VecI32, values);
            }
            if (fused) |f| f.store(offset, channel, acc) else vector.storeVector(potentials, offset, acc);
        }
    }
    if (fused) |f| f.done = true;
    var synaptic_ops: u64 = 0;
    for (inputs) |input| synaptic_ops += vector.countNonZeroU8(input);
    return synaptic_ops;
}
