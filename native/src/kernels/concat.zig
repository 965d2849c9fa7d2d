//! concat (docs/semantics.md): every output channel j reads one channel of one input,
//! P[y, x, j] = bias[j] + m[j] * a_i[y, x, c] with (i, c) = sources[j] (a channel concatenation, a
//! split, a shuffle, or with one input a layer that only pools or rescales). A vector of output
//! channels whose sources are consecutive channels of one input (every vector of a plain channel
//! concatenation or split) is one load, one multiply-add and one store per pixel; any other vector
//! is gathered channel by channel.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const neuron = @import("neuron.zig");

const lanes = vector.lanes;

/// inputs: u8 (H, W, C_i padded) each; potentials: i32 (H, W, Cout_p). Returns the synaptic
/// operations: the (y, x, j) whose source value is non-zero.
/// fused: when given, relu runs on each finished vector and writes activations, not potentials.
pub fn run(layer: *const model.Layer, inputs: []const []const u8, potentials: []i32, fused: ?*neuron.Fused) u64 {
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
    var first: usize = 0; // the vector's first output channel
    while (first < cout_padded) : (first += lanes) {
        const real = @min(lanes, layer.synaptic.c -| first); // its channels below Cout
        if (real == 0) {
            for (0..pixels) |pixel| store(potentials, pixel * cout_padded + first, first, @splat(0), fused); // bias and m are 0 there
        } else if (consecutiveSource(layer, strides[0..inputs.len], first, real)) |source| {
            synaptic_ops += copyVector(layer, inputs[source.input], strides[source.input], source.channel, potentials, first, real, fused);
        } else {
            synaptic_ops += gatherVector(layer, inputs, strides[0..inputs.len], potentials, first, real, fused);
        }
    }
    if (fused) |f| f.done = true;
    return synaptic_ops;
}

/// The layer's potentials summed over its pixels into `pooled` (Cout_p), for a global average pool
/// (engine.zig poolByRows), when every vector of output channels reads consecutive channels of one
/// input (a layer that only pools, or a plain concatenation): sum over pixels of bias + m * a =
/// pixels * bias + m * (sum over pixels of a), wrapping as the pool sums (the same i32 sum), the
/// bytes summed in u16 over up to 257 pixels at a time. Returns the synaptic operations, or null
/// (nothing written) when a vector gathers its channels.
pub fn runPooled(layer: *const model.Layer, inputs: []const []const u8, pooled: []i32) ?u64 {
    std.debug.assert(layer.kind == .concat and inputs.len == layer.input_count);
    const cout_padded = layer.synaptic.channelsPadded();
    const pixels: usize = @intCast(layer.synaptic.pixels());
    std.debug.assert(pooled.len == cout_padded);
    var strides: [limits.inputs_max]usize = undefined;
    for (inputs, 0..) |input, i| {
        strides[i] = layer.input_shapes[i].channelsPadded();
        std.debug.assert(input.len == pixels * strides[i]);
    }
    var first: usize = 0;
    while (first < cout_padded) : (first += lanes) {
        const real = @min(lanes, layer.synaptic.c -| first);
        if (real != 0 and consecutiveSource(layer, strides[0..inputs.len], first, real) == null) return null;
    }
    var synaptic_ops: u64 = 0;
    first = 0;
    while (first < cout_padded) : (first += lanes) {
        const real = @min(lanes, layer.synaptic.c -| first);
        if (real == 0) {
            vector.storeVector(pooled, first, @splat(0)); // bias and m are 0 there
            continue;
        }
        const source = consecutiveSource(layer, strides[0..inputs.len], first, real).?;
        const stride = strides[source.input];
        const input = inputs[source.input];
        const lane_index = std.simd.iota(u32, lanes);
        const counted = lane_index < @as(@Vector(lanes, u32), @splat(@intCast(real)));
        var total: vector.VecI32 = @splat(0);
        var nonzero: @Vector(lanes, u32) = @splat(0);
        var pixel: usize = 0;
        while (pixel < pixels) {
            const end = @min(pixel + pooled_pixels_max, pixels);
            var sums: @Vector(lanes, u16) = @splat(0); // <= 257 * 255 < 2^16
            var events: @Vector(lanes, u16) = @splat(0);
            while (pixel < end) : (pixel += 1) {
                const values: vector.VecU8 = input[pixel * stride + source.channel ..][0..lanes].*;
                sums += @as(@Vector(lanes, u16), values);
                events += @select(u16, values != @as(vector.VecU8, @splat(0)), @as(@Vector(lanes, u16), @splat(1)), @as(@Vector(lanes, u16), @splat(0)));
            }
            total +%= @as(vector.VecI32, sums);
            nonzero += @as(@Vector(lanes, u32), events);
        }
        synaptic_ops += @reduce(.Add, @select(u32, counted, nonzero, @as(@Vector(lanes, u32), @splat(0))));
        const bias: vector.VecI32 = layer.bias[first..][0..lanes].*;
        const multiplier: vector.VecI32 = layer.input_multipliers[first..][0..lanes].*;
        const count: vector.VecI32 = @splat(@intCast(pixels)); // pixels <= limits: fits i32
        vector.storeVector(pooled, first, bias *% count +% multiplier *% total);
    }
    return synaptic_ops;
}

/// Pixels whose byte sums runPooled keeps in u16: 257 * 255 = 2^16 - 1.
const pooled_pixels_max = 257;

/// One finished vector of potentials (channels channel .. channel + lanes at `offset`): to the
/// potentials, or through the fused relu stage to the activations.
inline fn store(potentials: []i32, offset: usize, channel: usize, value: vector.VecI32, fused: ?*neuron.Fused) void {
    if (fused) |f| f.store(offset, channel, value) else vector.storeVector(potentials, offset, value);
}

/// The source of channel `first` when channels first .. first + real - 1 read consecutive channels
/// of one input, and a whole vector from there lies inside that input's padded pixel.
fn consecutiveSource(layer: *const model.Layer, strides: []const usize, first: usize, real: usize) ?model.ConcatSource {
    const start = layer.concat_sources[first];
    if (start.channel + lanes > strides[start.input]) return null;
    for (1..real) |t| {
        const source = layer.concat_sources[first + t];
        if (source.input != start.input or source.channel != start.channel + t) return null;
    }
    return start;
}

/// Output channels first .. first + lanes of every pixel from input channels channel .. channel + lanes
/// (lanes at and above `real` have m = 0 and bias 0: they stay 0 and count no event).
fn copyVector(layer: *const model.Layer, input: []const u8, stride: usize, channel: usize, potentials: []i32, first: usize, real: usize, fused: ?*neuron.Fused) u64 {
    const cout_padded = layer.synaptic.channelsPadded();
    const bias: vector.VecI32 = layer.bias[first..][0..lanes].*;
    const multiplier: vector.VecI32 = layer.input_multipliers[first..][0..lanes].*;
    const lane_index = std.simd.iota(u32, lanes);
    const counted = lane_index < @as(@Vector(lanes, u32), @splat(@intCast(real)));
    const zero: vector.VecU8 = @splat(0);
    var events: u64 = 0;
    var pixel: usize = 0;
    while (pixel * cout_padded < potentials.len) : (pixel += 1) {
        const values: vector.VecU8 = input[pixel * stride + channel ..][0..lanes].*;
        events += std.simd.countTrues(@select(bool, counted, values != zero, @as(@Vector(lanes, bool), @splat(false))));
        store(potentials, pixel * cout_padded + first, first, bias +% multiplier *% @as(vector.VecI32, values), fused);
    }
    return events;
}

/// A run of output lanes [lane, lane + count) of one vector that read consecutive channels
/// channel .. channel + count - 1 of one input; `lanes_in` marks those lanes.
const Segment = struct { input: u32, channel: u32, lane: u32, count: u32, lanes_in: @Vector(lanes, bool) };

/// The vector's lanes [0, real) as runs of consecutive source channels (at most `lanes` runs).
fn segments(layer: *const model.Layer, first: usize, real: usize, runs: *[lanes]Segment) []const Segment {
    var count: usize = 0;
    for (0..real) |t| {
        const source = layer.concat_sources[first + t];
        if (count > 0) {
            const last = &runs[count - 1];
            if (last.input == source.input and last.channel + last.count == source.channel) {
                last.count += 1;
                continue;
            }
        }
        runs[count] = .{ .input = source.input, .channel = source.channel, .lane = @intCast(t), .count = 1, .lanes_in = undefined };
        count += 1;
    }
    const lane_index = std.simd.iota(u32, lanes);
    for (runs[0..count]) |*segment| {
        const low: @Vector(lanes, u32) = @splat(segment.lane);
        const end: @Vector(lanes, u32) = @splat(segment.lane + segment.count);
        segment.lanes_in = @select(bool, lane_index >= low, lane_index < end, @as(@Vector(lanes, bool), @splat(false)));
    }
    return runs[0..count];
}

/// Output channels first .. first + lanes of every pixel, each from its own source: per pixel each
/// of the vector's runs of consecutive source channels (segments) is one vector load from the
/// input, shifted so that its channels fall on the run's lanes, blended into the values; then one
/// multiply-add, as copyVector does. Lanes at and above `real` are in no run: 0.
fn gatherVector(layer: *const model.Layer, inputs: []const []const u8, strides: []const usize, potentials: []i32, first: usize, real: usize, fused: ?*neuron.Fused) u64 {
    const cout_padded = layer.synaptic.channelsPadded();
    var runs_buffer: [lanes]Segment = undefined;
    const runs = segments(layer, first, real, &runs_buffer);
    const bias: vector.VecI32 = layer.bias[first..][0..lanes].*;
    const multiplier: vector.VecI32 = layer.input_multipliers[first..][0..lanes].*;
    const zero: vector.VecU8 = @splat(0);
    var events: u64 = 0;
    var pixel: usize = 0;
    while (pixel * cout_padded < potentials.len) : (pixel += 1) {
        var values = zero;
        for (runs) |segment| {
            const input = inputs[segment.input];
            const at = pixel * strides[segment.input] + segment.channel; // the run's first lane's value
            const loaded: vector.VecU8 = if (at >= segment.lane and at - segment.lane + lanes <= input.len)
                input[at - segment.lane ..][0..lanes].*
            else
                edgeLoad(input, at, segment);
            values = @select(u8, segment.lanes_in, loaded, values);
        }
        events += std.simd.countTrues(values != zero);
        // |P| <= the overflow bound (loader.zig); lanes at and above `real` have m = 0 and bias 0
        store(potentials, pixel * cout_padded + first, first, bias +% multiplier *% @as(vector.VecI32, values), fused);
    }
    return events;
}

/// A segment's values on its lanes where the shifted vector load would leave the input (the first
/// or the last pixel).
fn edgeLoad(input: []const u8, at: usize, segment: Segment) vector.VecU8 {
    var values: [lanes]u8 = @splat(0);
    @memcpy(values[segment.lane..][0..segment.count], input[at..][0..segment.count]);
    return values;
}
