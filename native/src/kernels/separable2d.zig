//! separable2d (docs/semantics.md): a depthwise stage (depth multiplier M) without bias into the
//! intermediate Q of C * M channels, requantized per channel to a signed mid_bits integer Mid, then
//! a pointwise stage that scatters the pointwise weight vector of every non-zero Mid value over the
//! output channels.

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const neuron = @import("neuron.zig");
const depthwise2d = @import("depthwise2d.zig");

/// mid: i32 scratch (OH, OW, Cmid_p) for Q then Mid; potentials: i32 (OH, OW, Cout_p) before pooling.
/// Returns the synaptic operations: the depthwise count plus Cout per non-zero Mid.
/// frame: the layer's padded-input scratch (empty when it reads its input directly).
pub fn run(layer: *const model.Layer, input: []const u8, frame: []u8, mid: []i32, potentials: []i32, events_buffer: []model.Event) u64 {
    const mid_padded = layer.depthwiseChannelsPadded();
    const cout_padded = layer.synaptic.channelsPadded();
    const pixels = layer.synaptic.pixels();
    std.debug.assert(mid.len == pixels * mid_padded);
    std.debug.assert(potentials.len == pixels * cout_padded);
    var synaptic_ops = depthwise2d.accumulateBest(layer, input, frame, &.{}, mid, null);
    requantizeMid(layer, mid);
    vector.fillRows(potentials, layer.bias);
    var pixel: usize = 0;
    while (pixel < pixels) : (pixel += 1) {
        const events = gatherMidEvents(mid[pixel * mid_padded ..][0..layer.depthwiseChannels()], events_buffer);
        if (events.len == 0) continue;
        vector.accumulateEvents(potentials[pixel * cout_padded ..][0..cout_padded], layer.pointwise, events);
        synaptic_ops += @as(u64, events.len) * layer.synaptic.c;
    }
    return synaptic_ops;
}

/// Mid = clamp(requant(Q, mid_multiplier[m], mid_shift[m]), -2^(mid_bits-1), 2^(mid_bits-1) - 1), in place.
fn requantizeMid(layer: *const model.Layer, mid: []i32) void {
    const mid_padded = layer.depthwiseChannelsPadded();
    const low = -(@as(i64, 1) << @intCast(layer.mid_bits - 1));
    const high = (@as(i64, 1) << @intCast(layer.mid_bits - 1)) - 1;
    var offset: usize = 0;
    while (offset < mid.len) : (offset += mid_padded) {
        for (0..layer.depthwiseChannels()) |c| {
            const scaled = neuron.requantize(mid[offset + c], layer.mid_multiplier[c], layer.mid_shift[c]);
            mid[offset + c] = @intCast(std.math.clamp(scaled, low, high));
        }
    }
}

fn gatherMidEvents(values: []const i32, events: []model.Event) []model.Event {
    var count: usize = 0;
    for (values, 0..) |value, c| {
        if (value == 0) continue;
        events[count] = .{ .index = @intCast(c), .value = value };
        count += 1;
    }
    return events[0..count];
}
