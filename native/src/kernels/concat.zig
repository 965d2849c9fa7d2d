//! concat (docs/semantics.md): every output channel j reads one channel of one input,
//! P[y, x, j] = bias[j] + m[j] * a_i[y, x, c] with (i, c) = sources[j] (a channel concatenation, a
//! split, a shuffle, or with one input a layer that only pools or rescales). When the inputs' channels
//! follow each other in whole vectors (one input, or inputs of whole vectors of channels but the last:
//! `isBlockwise`, decided at load) every vector of an input is one multiply-add into its output
//! channels; otherwise a gather per output channel.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");

/// Whether the sources are the inputs' channels in input order with every input but the last
/// holding whole vectors of channels, so that input i's vectors land on whole output vectors.
/// (loader.zig sets model.Layer.concat_blockwise from it.)
pub fn isBlockwise(layer: *const model.Layer) bool {
    var j: usize = 0;
    for (layer.input_shapes[0..layer.input_count], 0..) |shape, input| {
        if (input + 1 < layer.input_count and shape.c % vector.lanes != 0) return false;
        for (0..shape.c) |channel| {
            if (j == layer.concat_sources.len) return false; // fewer outputs than input channels
            const source = layer.concat_sources[j];
            if (source.input != input or source.channel != channel) return false;
            j += 1;
        }
    }
    return j == layer.synaptic.c;
}

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
    if (layer.concat_blockwise) return runBlockwise(layer, inputs, strides[0..inputs.len], potentials);
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

/// P[.., o_i + k] = bias + m * a_i[.., k] a vector at a time, o_i = the channels of the inputs before i
/// (whole vectors; the last input's padding lanes land on padding channels, whose multipliers and
/// biases are 0). The synaptic operations are the inputs' non-zero values.
fn runBlockwise(layer: *const model.Layer, inputs: []const []const u8, strides: []const usize, potentials: []i32) u64 {
    const lanes = vector.lanes;
    const cout_padded = layer.synaptic.channelsPadded();
    const pixels: usize = @intCast(layer.synaptic.pixels());
    var synaptic_ops: u64 = 0;
    var first: usize = 0; // output channel of input i's channel 0
    for (inputs, strides) |input, stride| {
        for (0..pixels) |pixel| {
            var chunk: usize = 0;
            while (chunk < stride) : (chunk += lanes) {
                const channel = first + chunk;
                const values: vector.VecU8 = input[pixel * stride + chunk ..][0..lanes].*;
                const multiplier: vector.VecI32 = layer.input_multipliers[channel..][0..lanes].*;
                const bias: vector.VecI32 = layer.bias[channel..][0..lanes].*;
                vector.storeVector(potentials, pixel * cout_padded + channel, bias +% multiplier *% @as(vector.VecI32, values));
            }
        }
        synaptic_ops += vector.countNonZeroU8(input);
        first += stride;
    }
    std.debug.assert(first == cout_padded);
    return synaptic_ops;
}
