//! dense (docs/semantics.md): the input flattened in HWC order; every non-zero input value
//! scatters its weight row W[i, :] over the output channels.

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");

/// potentials: i32 (1, 1, Cout_p); input: u8 (H, W, Cin_p). Returns synaptic ops = events x Cout.
pub fn run(layer: *const model.Layer, input: []const u8, potentials: []i32, events_buffer: []model.Event) u64 {
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    std.debug.assert(input.len == in.valuesPadded());
    std.debug.assert(potentials.len == layer.synaptic.channelsPadded());
    var count: usize = 0;
    var pixel: usize = 0;
    while (pixel < in.pixels()) : (pixel += 1) {
        const channels = input[pixel * cin_padded ..][0..cin_padded];
        const pixel_events = vector.gatherPixelEvents(channels, events_buffer[count..]);
        for (pixel_events) |*event| event.index += @intCast(pixel * in.c); // flat HWC index
        count += pixel_events.len;
    }
    @memcpy(potentials, layer.bias);
    vector.accumulateEvents(potentials, layer.weights, events_buffer[0..count]);
    return @as(u64, count) * layer.synaptic.c;
}
