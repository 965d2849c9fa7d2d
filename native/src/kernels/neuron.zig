//! Neuron stages (docs/semantics.md): relu (requantize and clamp, stateless), if and lif (state
//! kept across timesteps, subtractive reset), and the saturating output accumulation of `none`.

const std = @import("std");
const model = @import("../model.zig");
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
/// multipliers are 0 and their thresholds 2^31 - 1, loader.zig).
pub fn run(layer: *const model.Layer, potentials: []const i32, state: []i32, activations: []u8) void {
    const channels_padded = layer.output.channelsPadded();
    std.debug.assert(potentials.len == activations.len);
    var pixel: usize = 0;
    while (pixel < potentials.len) : (pixel += channels_padded) {
        var channel: usize = 0;
        while (channel < channels_padded) : (channel += vector.lanes) {
            const offset = pixel + channel;
            const potential: VecI32 = potentials[offset..][0..vector.lanes].*;
            const fired: VecU8 = switch (layer.neuron) {
                .relu => relu(layer, potential, channel),
                .integrate_fire => fire(layer, state[offset..][0..vector.lanes], potential, channel, false),
                .leaky_integrate_fire => fire(layer, state[offset..][0..vector.lanes], potential, channel, true),
                .none => unreachable,
            };
            const target: *align(1) VecU8 = @ptrCast(activations[offset..][0..vector.lanes]);
            target.* = fired; // one vector store (an array-typed store went through the stack)
        }
    }
}

const VecI32 = vector.VecI32;
const VecI64 = @Vector(vector.lanes, i64);
const VecU8 = vector.VecU8;

/// clamp(requant(P, m, s), 0, 2^bits - 1) for one vector of channels (see `requantize`).
fn relu(layer: *const model.Layer, potential: VecI32, channel: usize) VecU8 {
    // P <= 0 gives 0 whatever m >= 0 and s: (P * m + 2^(s-1)) >> s <= 0. Sparse layers mostly take this.
    // (no early return for all-non-positive vectors: a mispredicted branch costs more than the math)
    const multiplier: VecI32 = layer.out_multiplier[channel..][0..vector.lanes].*;
    const shift: VecI32 = layer.out_shift[channel..][0..vector.lanes].*;
    const shift64: @Vector(vector.lanes, u6) = @intCast(shift);
    const one: VecI64 = @splat(1);
    const rounding = (one << shift64) >> @splat(1); // 2^(s-1), or 0 for s = 0
    const product = @as(VecI64, potential) * @as(VecI64, multiplier);
    const scaled = (product + rounding) >> shift64;
    const high: VecI64 = @splat(layer.outputMax());
    const clamped = @min(@max(scaled, @as(VecI64, @splat(0))), high);
    // Narrow in two exact steps: a direct i64 -> u8 vector cast was lowered with a signed
    // saturating pack on baseline x86-64 (255 became 127; tests/test_native_bitexact.py).
    const narrowed: VecI32 = @truncate(clamped);
    return @truncate(@as(@Vector(vector.lanes, u32), @bitCast(narrowed)));
}

/// if / lif for one vector of channels: (leak,) v = sat32(v + P), spike and subtract at threshold.
fn fire(layer: *const model.Layer, state: *[vector.lanes]i32, potential: VecI32, channel: usize, leaky: bool) VecU8 {
    var v: VecI32 = state.*;
    if (leaky) v -= v >> @splat(@as(u5, @intCast(layer.leak_shift)));
    const sum = @as(VecI64, v) + @as(VecI64, potential);
    v = @intCast(@min(@max(sum, @as(VecI64, @splat(int32_min))), @as(VecI64, @splat(int32_max))));
    const threshold: VecI32 = layer.threshold[channel..][0..vector.lanes].*;
    const spike = v >= threshold;
    // Wrapping: the lanes that do not spike may hold v near int32_min, where v - threshold would
    // overflow; their difference is discarded, and a spiking lane (v >= threshold >= 1) never wraps.
    state.* = @select(i32, spike, v -% threshold, v);
    return @select(u8, spike, @as(VecU8, @splat(1)), @as(VecU8, @splat(0)));
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
