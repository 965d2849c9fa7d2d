//! Neuron stages (docs/semantics.md): relu (requantize and clamp, stateless), if and lif (state
//! kept across timesteps: shift leak or multiplicative decay, membrane floor, reset by subtraction,
//! to zero or none), and the saturating output accumulation of `none`.

const std = @import("std");
const model = @import("../model.zig");
const limits = @import("../limits.zig");
const vector = @import("vector.zig");

const int32_min = std.math.minInt(i32);
const int32_max = std.math.maxInt(i32);

/// requant(P, m, s) = (P * m + 2^(s-1)) >> s for s > 0, P * m for s = 0, in int64 (round half up).
pub fn requantize(potential: i32, multiplier: i32, shift: i32) i64 {
    std.debug.assert(multiplier >= 0 and shift >= 0 and shift <= 62);
    const product = @as(i64, potential) * multiplier;
    if (shift == 0) return product;
    const rounding = @as(i64, 1) << @intCast(shift - 1);
    return (product + rounding) >> @intCast(shift);
}

pub fn saturate32(value: i64) i32 {
    return @intCast(std.math.clamp(value, int32_min, int32_max));
}

/// potentials: i32 (OH, OW, C_p) after pooling; activations: u8 (OH, OW, C_p);
/// state: i32 (OH, OW, C_p) for if/lif, ignored for relu. Padding lanes produce 0 (their
/// multipliers are 0 and their thresholds 2^31 - 1, loader.zig). Returns the output events (the
/// non-zero activations), counted on the vectors as they are written.
pub fn run(layer: *const model.Layer, potentials: []const i32, state: []i32, activations: []u8) u64 {
    return switch (layer.neuron) {
        .relu => if (layer.relu_scale.len != 0) fire(.relu_float, layer, potentials, activations) else fire(.relu, layer, potentials, activations),
        .integrate_fire => fireSpiking(.none, layer, potentials, state, activations),
        .leaky_integrate_fire => if (layer.decay_shift != 0)
            fireSpiking(.decay, layer, potentials, state, activations)
        else
            fireSpiking(.shift, layer, potentials, state, activations),
        .none => unreachable,
    };
}

/// run for one timestep of a run of `timesteps`: if/lif add their potentials wrapping (one vpaddd,
/// not the saturating add's compare and blend) where the membrane provably stays in i32, |v| <=
/// timesteps x potential_max (model.Layer.potential_max), so that sat32(v + P) = v + P.
pub fn runTimesteps(layer: *const model.Layer, timesteps: u32, potentials: []const i32, state: []i32, activations: []u8) u64 {
    const wraps = @as(u64, timesteps) * layer.potential_max <= int32_max;
    if (!wraps) return run(layer, potentials, state, activations);
    return switch (layer.neuron) {
        .integrate_fire => fireSpikingAdd(.none, .wrapping, layer, potentials, state, activations),
        .leaky_integrate_fire => if (layer.decay_shift != 0)
            fireSpikingAdd(.decay, .wrapping, layer, potentials, state, activations)
        else
            fireSpikingAdd(.shift, .wrapping, layer, potentials, state, activations),
        .relu, .none => run(layer, potentials, state, activations),
    };
}

const Form = enum { relu, relu_float };

/// A relu stage run inside the synaptic kernel (engine.zig offers it to layers without pooling
/// whose potentials nobody else reads): the kernel hands each finished vector of potentials to
/// `store` instead of writing it to the potentials buffer, saving that buffer's store and reload.
/// A kernel that cannot (conv2d's scatter) leaves `done` false and the stage runs as usual.
pub const Fused = struct {
    layer: *const model.Layer,
    activations: []u8, // u8 (OH, OW, C_p)
    done: bool = false,

    /// Whether a layer's relu may run fused (the f32 form: the common case; others run apart).
    pub fn eligible(layer: *const model.Layer) bool {
        return layer.neuron == .relu and layer.pool == .none and layer.relu_scale.len != 0;
    }

    /// Activations [offset, offset + lanes) (channels [channel, channel + lanes) of a pixel) from
    /// their potentials. (The caller counts the events afterwards, on 64-byte vectors: a counter
    /// kept here would chain every store through memory.)
    pub inline fn store(fused: *const Fused, offset: usize, channel: usize, potential: VecI32) void {
        const target: *align(1) VecU8 = @ptrCast(fused.activations[offset..][0..vector.lanes]);
        target.* = reluFloat(fused.layer, potential, channel);
    }
};

fn fire(comptime form: Form, layer: *const model.Layer, potentials: []const i32, activations: []u8) u64 {
    const channels_padded = layer.output.channelsPadded();
    std.debug.assert(potentials.len == activations.len);
    var nonzero: @Vector(vector.lanes, u32) = @splat(0); // per lane: a masked add beats a popcount per vector
    var pixel: usize = 0;
    while (pixel < potentials.len) : (pixel += channels_padded) {
        var channel: usize = 0;
        while (channel < channels_padded) : (channel += vector.lanes) {
            const offset = pixel + channel;
            const potential: VecI32 = potentials[offset..][0..vector.lanes].*;
            const fired: VecU8 = switch (form) {
                .relu => relu(layer, potential, channel),
                .relu_float => reluFloat(layer, potential, channel),
            };
            const target: *align(1) VecU8 = @ptrCast(activations[offset..][0..vector.lanes]);
            target.* = fired; // one vector store (an array-typed store went through the stack)
            nonzero += @select(u32, fired != @as(VecU8, @splat(0)), @as(@Vector(vector.lanes, u32), @splat(1)), @as(@Vector(vector.lanes, u32), @splat(0)));
        }
    }
    return @reduce(.Add, @as(@Vector(vector.lanes, u64), nonzero));
}

const VecI32 = vector.VecI32;
const VecI64 = @Vector(vector.lanes, i64);
const VecU8 = vector.VecU8;

/// clamp(requant(P, m, s) + zero_point, 0, 2^bits - 1) for one vector of channels (see `requantize`).
fn relu(layer: *const model.Layer, potential: VecI32, channel: usize) VecU8 {
    // (no early return for all-non-positive vectors: a mispredicted branch costs more than the math)
    const multiplier: VecI32 = layer.out_multiplier[channel..][0..vector.lanes].*;
    const shift: VecI32 = layer.out_shift[channel..][0..vector.lanes].*;
    const shift64: @Vector(vector.lanes, u6) = @intCast(shift);
    const one: VecI64 = @splat(1);
    const rounding = (one << shift64) >> @splat(1); // 2^(s-1), or 0 for s = 0
    const product = @as(VecI64, potential) * @as(VecI64, multiplier);
    var scaled = (product + rounding) >> shift64;
    if (layer.out_zero_point.len != 0) {
        const zero_point: VecI32 = layer.out_zero_point[channel..][0..vector.lanes].*;
        scaled += @as(VecI64, zero_point);
    }
    const high: VecI64 = @splat(layer.outputMax());
    const clamped = @min(@max(scaled, @as(VecI64, @splat(0))), high);
    // Narrow in two exact steps: a direct i64 -> u8 vector cast was lowered with a signed
    // saturating pack on baseline x86-64 (255 became 127; tests/test_native_bitexact.py).
    const narrowed: VecI32 = @truncate(clamped);
    return @truncate(@as(@Vector(vector.lanes, u32), @bitCast(narrowed)));
}

const VecF32 = @Vector(vector.lanes, f32);

/// relu through its f32 form (floatRelu): P clamped to [0, ceiling], then trunc(P * scale + 0.5).
fn reluFloat(layer: *const model.Layer, potential: VecI32, channel: usize) VecU8 {
    const ceiling: VecI32 = layer.relu_ceiling[channel..][0..vector.lanes].*;
    const scale: VecF32 = layer.relu_scale[channel..][0..vector.lanes].*;
    const clamped = @min(@max(potential, @as(VecI32, @splat(0))), ceiling);
    const scaled: VecI32 = @intFromFloat(@as(VecF32, @floatFromInt(clamped)) * scale + @as(VecF32, @splat(0.5)));
    return @truncate(@as(@Vector(vector.lanes, u32), @bitCast(scaled)));
}

/// The scalar twin of reluFloat's arithmetic (the same two rounded f32 operations, no fused
/// multiply-add: Zig's strict float mode contracts neither).
fn floatOutput(potential: i32, scale: f32) u32 {
    return @intFromFloat(@as(f32, @floatFromInt(potential)) * scale + 0.5);
}

/// Potentials below this convert to f32 exactly.
const float_exact_limit: i32 = 1 << 24;

pub const FloatRelu = struct { ceiling: i32, scale: f32 };

/// relu's requantization clamp(requant(P, m, s), 0, output_max) as clamp(P, 0, ceiling) then
/// trunc(P * scale + 0.5) in f32, when that gives the same output for every i32 potential, else null.
/// ceiling is the smallest potential reaching output_max (it must lie below 2^24); scale = m / 2^s
/// rounded to f32. Both forms are non-decreasing in P (requant since m >= 0; the f32 form since
/// every rounding step is), so they agree everywhere once they agree on both sides of each step
/// t_k (the smallest P with requant(P) >= k), which is checked here for k = 1 .. output_max.
pub fn floatRelu(multiplier: i32, shift: i32, output_max: u32) ?FloatRelu {
    if (multiplier == 0) return .{ .ceiling = 0, .scale = 0 }; // always 0 (padding channels too)
    const ceiling = smallestReaching(multiplier, shift, output_max) orelse return null;
    const nearest: f32 = @as(f32, @floatFromInt(multiplier)) * std.math.pow(f32, 2.0, -@as(f32, @floatFromInt(shift)));
    // m / 2^s rounded to f32, or a neighbour of it when a step lies within rounding of a tie: the
    // check below proves whichever scale it accepts
    var scale = nearest;
    for (0..5) |attempt| {
        if (attempt > 0) scale = if (attempt % 2 == 1) std.math.nextAfter(f32, nearest, std.math.inf(f32)) else std.math.nextAfter(f32, nearest, 0);
        if (attempt > 2) scale = std.math.nextAfter(f32, scale, if (attempt % 2 == 1) std.math.inf(f32) else 0);
        if (agreesOnEveryStep(multiplier, shift, output_max, ceiling, scale)) return .{ .ceiling = ceiling, .scale = scale };
    }
    return null;
}

fn agreesOnEveryStep(multiplier: i32, shift: i32, output_max: u32, ceiling: i32, scale: f32) bool {
    if (floatOutput(ceiling, scale) != output_max) return false;
    var level: u32 = 1;
    while (level <= output_max) : (level += 1) {
        const step = smallestReaching(multiplier, shift, level).?; // <= ceiling
        if (floatOutput(step - 1, scale) >= level or floatOutput(step, scale) < level) return false;
    }
    return true;
}

/// The smallest potential in [1, 2^24) whose requantization reaches `level`, or null.
fn smallestReaching(multiplier: i32, shift: i32, level: u32) ?i32 {
    if (requantize(float_exact_limit - 1, multiplier, shift) < level) return null;
    var low: i32 = 0; // requant(low) < level (requant(0) = 0)
    var high: i32 = float_exact_limit - 1; // requant(high) >= level
    while (high - low > 1) {
        const middle = low + @divFloor(high - low, 2);
        if (requantize(middle, multiplier, shift) >= level) high = middle else low = middle;
    }
    return high;
}

test "the f32 relu agrees with the i64 one wherever it is taken" {
    const cases = [_][2]i32{ .{ 2142680300, 40 }, .{ 1, 0 }, .{ 3, 1 }, .{ 1 << 30, 31 }, .{ 2137624234, 38 }, .{ 7, 4 }, .{ 123456789, 33 } };
    for (cases) |case| {
        for ([_]u32{ 1, 15, 255 }) |output_max| {
            const form = floatRelu(case[0], case[1], output_max) orelse continue;
            var p: i32 = -3;
            while (p < form.ceiling + 1000) : (p += 1) {
                const expected = std.math.clamp(requantize(p, case[0], case[1]), 0, output_max);
                const clamped = std.math.clamp(p, 0, form.ceiling);
                try std.testing.expectEqual(@as(u32, @intCast(expected)), floatOutput(clamped, form.scale));
            }
        }
    }
}

/// How the membrane leaks before integrating: not at all (if), v - (v >> leak_shift) (lif), or
/// (v * decay_multiplier + 2^(decay_shift-1)) >> decay_shift (lif with a decay).
const Leak = enum { none, shift, decay };

/// The membrane parameters of an if / lif layer, read once per run (inside the loop every store to
/// the u8 activations could alias the layer, so its fields would be reloaded at every vector).
const Membrane = struct {
    threshold: []const i32, // (C_p)
    decay_multiplier: []const i32, // (C_p), lif with a decay
    leak_shift: u5,
    decay_shift: u32,
    floor: VecI32,

    fn of(layer: *const model.Layer) Membrane {
        return .{
            .threshold = layer.threshold,
            .decay_multiplier = layer.decay_multiplier,
            .leak_shift = @intCast(layer.leak_shift),
            .decay_shift = layer.decay_shift,
            .floor = @splat(layer.membrane_floor),
        };
    }
};

/// if / lif over every neuron: the leak, reset and floor chosen once, not per vector. Returns the
/// output events.
fn fireSpiking(comptime leak: Leak, layer: *const model.Layer, potentials: []const i32, state: []i32, activations: []u8) u64 {
    return fireSpikingAdd(leak, .saturating, layer, potentials, state, activations);
}

/// How the membrane adds its potential: sat32(v + P), or v + P where that cannot overflow (runTimesteps).
const Add = enum { saturating, wrapping };

fn fireSpikingAdd(comptime leak: Leak, comptime add: Add, layer: *const model.Layer, potentials: []const i32, state: []i32, activations: []u8) u64 {
    const membrane = Membrane.of(layer);
    return switch (layer.reset) {
        inline else => |reset| if (layer.has_floor)
            integrateFireAll(leak, add, reset, true, membrane, layer.output.channelsPadded(), potentials, state, activations)
        else
            integrateFireAll(leak, add, reset, false, membrane, layer.output.channelsPadded(), potentials, state, activations),
    };
}

fn integrateFireAll(
    comptime leak: Leak,
    comptime add: Add,
    comptime reset: model.Reset,
    comptime floored: bool,
    membrane: Membrane,
    channels_padded: usize,
    potentials: []const i32,
    state: []i32,
    activations: []u8,
) u64 {
    std.debug.assert(potentials.len == activations.len and potentials.len == state.len);
    std.debug.assert(channels_padded % vector.lanes == 0 and potentials.len % channels_padded == 0);
    // one flat loop over the vectors, the channel wrapping at each pixel's end (a nested loop per
    // pixel cost an exit and its bookkeeping per pixel: most layers have 1 or 2 vectors a pixel)
    var events: u64 = 0;
    var channel: usize = 0;
    var offset: usize = 0;
    while (offset < potentials.len) : (offset += vector.lanes) {
        const potential: VecI32 = potentials[offset..][0..vector.lanes].*;
        const spike = integrateFire(leak, add, reset, floored, membrane, state[offset..][0..vector.lanes], potential, channel);
        const target: *align(1) VecU8 = @ptrCast(activations[offset..][0..vector.lanes]);
        target.* = @select(u8, spike, @as(VecU8, @splat(1)), @as(VecU8, @splat(0)));
        events += @popCount(@as(@Int(.unsigned, vector.lanes), @bitCast(spike)));
        channel += vector.lanes;
        channel = if (channel == channels_padded) 0 else channel;
    }
    return events;
}

/// if / lif for one vector of channels, in the order of docs/semantics.md: leak or decay,
/// v = sat32(v + P), floor, spike at threshold, reset (subtract, to zero, or none). Returns the
/// lanes that spike.
inline fn integrateFire(
    comptime leak: Leak,
    comptime add: Add,
    comptime reset: model.Reset,
    comptime floored: bool,
    membrane: Membrane,
    state: *[vector.lanes]i32,
    potential: VecI32,
    channel: usize,
) @Vector(vector.lanes, bool) {
    var v: VecI32 = state.*;
    switch (leak) {
        .none => {},
        .shift => v -= v >> @splat(membrane.leak_shift),
        .decay => v = decay(v, membrane.decay_multiplier[channel..][0..vector.lanes].*, membrane.decay_shift),
    }
    switch (add) {
        .saturating => v +|= potential, // sat32(v + P), in i32 lanes (twice the lanes per register of an i64 clamp)
        .wrapping => v +%= potential, // = sat32(v + P): |v + P| <= timesteps x potential_max <= 2^31 - 1
    }
    if (floored) v = @max(v, membrane.floor);
    const threshold: VecI32 = membrane.threshold[channel..][0..vector.lanes].*;
    const spike = v >= threshold;
    const next: VecI32 = switch (reset) {
        // Wrapping: the lanes that do not spike may hold v near int32_min, where v - threshold would
        // overflow; their difference is discarded, and a spiking lane (v >= threshold >= 1) never wraps.
        .subtract => @select(i32, spike, v -% threshold, v),
        .zero => @select(i32, spike, @as(VecI32, @splat(0)), v),
        .none => v,
    };
    vector.storeVector(state[0..], 0, next);
    return spike;
}

/// (v * m + 2^(s-1)) >> s in i64 (requantize's rounding: half up, also for negative v), for m in
/// [0, 2^s] and s in 1..decay_shift_max (loader.zig): |result| <= |v|, so it narrows to i32 exactly.
fn decay(v: VecI32, multiplier: VecI32, shift: u32) VecI32 {
    std.debug.assert(shift >= 1 and shift <= limits.decay_shift_max);
    const shift64: @Vector(vector.lanes, u6) = @splat(@intCast(shift));
    const rounding: VecI64 = @splat(@as(i64, 1) << @intCast(shift - 1));
    const decayed = (@as(VecI64, v) * @as(VecI64, multiplier) + rounding) >> shift64;
    return @intCast(decayed);
}

/// The scalar decay of one membrane value (the reference's arithmetic, for the tests below).
fn decayScalar(v: i32, multiplier: i32, shift: u32) i32 {
    return @intCast(requantize(v, multiplier, @intCast(shift)));
}

test "decay rounds half up, never grows the membrane and matches its scalar form" {
    const values = [_]i32{ 0, 1, -1, 2, -2, 3, -3, 5, -5, 1000, -1000, int32_max, int32_min, int32_max - 1, int32_min + 1 };
    const shifts = [_]u32{ 1, 2, 8, 16, 30 };
    for (shifts) |shift| {
        const one: i64 = @as(i64, 1) << @intCast(shift);
        const multipliers = [_]i64{ 0, 1, @divFloor(one, 2), @divFloor(one * 4, 5), one - 1, one };
        for (multipliers) |m| {
            for (values) |v| {
                const out = decay(@splat(v), @splat(@intCast(m)), shift);
                try std.testing.expectEqual(decayScalar(v, @intCast(m), shift), out[0]);
                try std.testing.expect(@abs(@as(i64, out[0])) <= @abs(@as(i64, v)));
                if (m == one) try std.testing.expectEqual(v, out[0]);
            }
        }
    }
    try std.testing.expectEqual(@as(i32, -1), decayScalar(-3, 1, 1)); // -1.5 -> -1
    try std.testing.expectEqual(@as(i32, 0), decayScalar(-1, 1, 1)); // -0.5 -> 0
    try std.testing.expectEqual(@as(i32, 3), decayScalar(4, 3, 2)); // 3 -> 3
}

test "requantize rounds half up, also for negative values" {
    try std.testing.expectEqual(@as(i64, 2), requantize(3, 1, 1)); // 1.5 -> 2
    try std.testing.expectEqual(@as(i64, -1), requantize(-3, 1, 1)); // -1.5 -> -1
    try std.testing.expectEqual(@as(i64, -2), requantize(-5, 1, 1)); // -2.5 -> -2
    try std.testing.expectEqual(@as(i64, 21), requantize(7, 3, 0));
    try std.testing.expectEqual(@as(i64, 1), requantize(5, 3, 4)); // 15/16 -> 1
    try std.testing.expectEqual(@as(i64, 0), requantize(2, 3, 4)); // 6/16 -> 0 (0.375)
    try std.testing.expectEqual(@as(i64, 1), requantize(int32_max, int32_max, 62)); // (2^31-1)^2 / 2^62 ~ 1
}

test "saturate32 clamps" {
    try std.testing.expectEqual(@as(i32, int32_max), saturate32(@as(i64, int32_max) + 5));
    try std.testing.expectEqual(@as(i32, int32_min), saturate32(@as(i64, int32_min) - 5));
}
