//! Neuron stages (docs/semantics.md): relu (requantize and clamp, stateless), if and lif (state
//! kept across timesteps, subtractive reset), and the saturating output accumulation of `none`.

const std = @import("std");
const model = @import("../model.zig");

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

/// potentials: i32 (OH, OW, C_p) after pooling; activations: u8 (OH, OW, C_p), padding lanes zero;
/// state: i32 (OH, OW, C_p) for if/lif, ignored for relu.
pub fn run(layer: *const model.Layer, potentials: []const i32, state: []i32, activations: []u8) void {
    const channels = layer.output.c;
    const channels_padded = layer.output.channelsPadded();
    std.debug.assert(potentials.len == activations.len);
    @memset(activations, 0);
    var offset: usize = 0;
    while (offset < potentials.len) : (offset += channels_padded) {
        for (0..channels) |c| {
            const i = offset + c;
            activations[i] = switch (layer.neuron) {
                .relu => relu(layer, potentials[i], c),
                .integrate_fire => fire(layer, &state[i], potentials[i], c),
                .leaky_integrate_fire => blk: {
                    state[i] -= state[i] >> @intCast(layer.leak_shift);
                    break :blk fire(layer, &state[i], potentials[i], c);
                },
                .none => unreachable,
            };
        }
    }
}

fn relu(layer: *const model.Layer, potential: i32, c: usize) u8 {
    const scaled = requantize(potential, layer.out_multiplier[c], layer.out_shift[c]);
    return @intCast(std.math.clamp(scaled, 0, layer.outputMax()));
}

/// v = sat32(v + P); spike and subtract the threshold when v >= threshold.
fn fire(layer: *const model.Layer, v: *i32, potential: i32, c: usize) u8 {
    v.* = saturate32(@as(i64, v.*) + potential);
    if (v.* < layer.threshold[c]) return 0;
    v.* -= layer.threshold[c];
    return 1;
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
