//! dense (docs/semantics.md): the input flattened in HWC order; every non-zero input value
//! scatters its weight row W[i, :] over the output channels, four channels of a pixel at a time
//! (quads, kernels/vector.zig). Weights of at most 4 bits are read two per byte (loader.zig).

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const spikes = @import("spikes.zig");

/// potentials: i32 (1, 1, Cout_p); input: u8 (H, W, Cin_p) with `input_events` non-zero values.
/// Returns synaptic ops = events x Cout. A binary input (spikes) with few enough events adds a weight
/// row per event instead (kernels/spikes.zig).
pub fn run(layer: *const model.Layer, input: []const u8, input_events: u64, potentials: []i32, quads_buffer: []model.Quad) u64 {
    if (spikes.denseWins(layer, input_events)) return spikes.dense(layer, input, potentials);
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    const quad_count = in.channelQuads();
    std.debug.assert(input.len == in.valuesPadded());
    std.debug.assert(potentials.len == layer.synaptic.channelsPadded());
    var count: usize = 0;
    var events: u64 = 0;
    var pixel: usize = 0;
    while (pixel < in.pixels()) : (pixel += 1) {
        const channels = input[pixel * cin_padded ..][0..cin_padded];
        const gathered = vector.gatherPixelQuads(channels, quad_count, quads_buffer[count..]);
        for (gathered.quads) |*quad| quad.index += @intCast(pixel * quad_count); // row of the weights
        count += gathered.quads.len;
        events += gathered.events;
    }
    @memcpy(potentials, layer.bias);
    if (layer.packsNibbles()) {
        vector.accumulateNibbleQuads(potentials, @ptrCast(layer.weights), quads_buffer[0..count]);
        // every stored weight was w + 8: take 8 x the sum of the values back (wrapping, exact)
        const offset: i32 = @truncate(@as(i64, model.nibble_offset) * valueSum(input));
        for (potentials) |*potential| potential.* -%= offset;
    } else if (vector.has_pairs_fit_i16 and layer.dotPairsFitI16()) {
        vector.accumulateQuadsBy(.pairs_fit_i16, potentials, layer.weights, quads_buffer[0..count]);
    } else {
        vector.accumulateQuads(potentials, layer.weights, quads_buffer[0..count]);
    }
    return events * layer.synaptic.c;
}

/// The sum of the input values (u8, padding lanes zero).
fn valueSum(input: []const u8) i64 {
    var total: u64 = 0;
    var offset: usize = 0;
    while (offset < input.len) : (offset += vector.lanes) {
        const values: vector.VecU8 = input[offset..][0..vector.lanes].*;
        total += @reduce(.Add, @as(@Vector(vector.lanes, u32), values));
    }
    return @intCast(total);
}
