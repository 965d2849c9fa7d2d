//! Pooling on potentials, before the neuron stage (docs/semantics.md): max (a min on channels whose
//! pool_sign is -1), avg (the sum of a window's in-bounds taps, scaled to the whole window where
//! padded taps were left out and count_include_pad is off; the divisor is folded into the neuron
//! stage by the converter) and global_avg (= spatial sum). Windows of PH x PW with strides and
//! padding; padded taps are never read.

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");

const VecI32 = vector.VecI32;

/// potentials: i32 (OH, OW, C_p) before pooling; pooled: i32 (PH, PW, C_p).
pub fn run(layer: *const model.Layer, potentials: []const i32, pooled: []i32) void {
    const in = layer.synaptic;
    const out = layer.output;
    const channels_padded = in.channelsPadded();
    std.debug.assert(pooled.len == out.valuesPadded());
    switch (layer.pool) {
        .none => unreachable,
        .global_avg => {
            @memset(pooled, 0);
            var pixel: usize = 0;
            while (pixel < in.pixels()) : (pixel += 1) {
                addRow(pooled, potentials[pixel * channels_padded ..][0..channels_padded]);
            }
        },
        .max, .avg => {
            if (isPlainMax2x2(layer)) return max2x2(layer, potentials, pooled);
            var py: u32 = 0;
            while (py < out.h) : (py += 1) {
                var px: u32 = 0;
                while (px < out.w) : (px += 1) {
                    const row = pooled[(@as(usize, py) * out.w + px) * channels_padded ..][0..channels_padded];
                    window(layer, potentials, py, px, row);
                }
            }
        },
    }
}

/// A 2x2 max pool with stride 2, no min channel and every window inside the potentials (no padding
/// before, and none of the padding after reached: a bottom or right pad that a window covers would
/// have the fast path read past the potentials; found by fuzz_model, docs/fuzzing.md).
pub fn isPlainMax2x2(layer: *const model.Layer) bool {
    return layer.pool == .max and layer.pool_h == 2 and layer.pool_w == 2 and layer.pool_stride_h == 2 and
        layer.pool_stride_w == 2 and layer.pool_pad_top == 0 and layer.pool_pad_left == 0 and layer.pool_sign.len == 0 and
        2 * layer.output.h <= layer.synaptic.h and 2 * layer.output.w <= layer.synaptic.w;
}

/// Max pooling 2x2 with stride 2 (the common case): four vector loads and three maxima per output
/// vector, without the general window loop.
fn max2x2(layer: *const model.Layer, potentials: []const i32, pooled: []i32) void {
    const in = layer.synaptic;
    const out = layer.output;
    const channels_padded: usize = in.channelsPadded();
    const row_values = @as(usize, in.w) * channels_padded;
    var py: usize = 0;
    while (py < out.h) : (py += 1) {
        var px: usize = 0;
        while (px < out.w) : (px += 1) {
            const top_left = (2 * py * in.w + 2 * px) * channels_padded;
            const target = (py * out.w + px) * channels_padded;
            var chunk: usize = 0;
            while (chunk < channels_padded) : (chunk += vector.lanes) {
                const at = top_left + chunk;
                const a: VecI32 = potentials[at..][0..vector.lanes].*;
                const b: VecI32 = potentials[at + channels_padded ..][0..vector.lanes].*;
                const c: VecI32 = potentials[at + row_values ..][0..vector.lanes].*;
                const d: VecI32 = potentials[at + row_values + channels_padded ..][0..vector.lanes].*;
                vector.storeVector(pooled, target + chunk, @max(@max(a, b), @max(c, d)));
            }
        }
    }
}

/// The in-bounds taps of one window along one axis: [first, end) of the potentials.
const Span = struct { first: u32, end: u32 };

fn span(output: u32, stride: u32, pad_before: u32, size: u32, extent: u32) Span {
    const start = @as(i64, output) * stride - pad_before; // may lie in the padding
    const first: u32 = @intCast(@max(start, 0));
    const end: u32 = @intCast(@min(start + size, extent));
    std.debug.assert(first < end); // loader.zig: every window holds an in-bounds tap
    return .{ .first = first, .end = end };
}

/// Output pixel (py, px): the max (min) or sum of its window's in-bounds taps.
fn window(layer: *const model.Layer, potentials: []const i32, py: u32, px: u32, row: []i32) void {
    const in = layer.synaptic;
    const rows = span(py, layer.pool_stride_h, layer.pool_pad_top, layer.pool_h, in.h);
    const columns = span(px, layer.pool_stride_w, layer.pool_pad_left, layer.pool_w, in.w);
    if (layer.pool == .max and layer.pool_sign.len != 0) {
        signedMaxWindow(layer, potentials, rows, columns, row);
        return;
    }
    switch (layer.pool) {
        inline .max, .avg => |pool| reduceWindow(pool, layer, potentials, rows, columns, row),
        else => unreachable,
    }
    if (layer.pool == .avg and !layer.count_include_pad) {
        const taps = (rows.end - rows.first) * (columns.end - columns.first);
        const window_taps = layer.pool_h * layer.pool_w;
        if (taps != window_taps) scaleRow(row, taps, window_taps);
    }
}

/// The max or the sum of a window's taps, a vector of channels at a time kept in a register over
/// all taps (one load per tap and vector, one store per vector); rows of 2 or 3 taps unrolled.
fn reduceWindow(comptime pool: model.Pool, layer: *const model.Layer, potentials: []const i32, rows: Span, columns: Span, row: []i32) void {
    switch (columns.end - columns.first) {
        inline 2, 3 => |width| reduceWindowOf(pool, width, layer, potentials, rows, columns, row),
        else => reduceWindowOf(pool, null, layer, potentials, rows, columns, row),
    }
}

/// reduceWindow for windows of `width` taps per row where known at compile time.
inline fn reduceWindowOf(comptime pool: model.Pool, comptime width: ?u32, layer: *const model.Layer, potentials: []const i32, rows: Span, columns: Span, row: []i32) void {
    const in = layer.synaptic;
    const channels_padded = in.channelsPadded();
    const row_values = @as(usize, in.w) * channels_padded;
    const corner = (@as(usize, rows.first) * in.w + columns.first) * channels_padded;
    const taps = width orelse columns.end - columns.first;
    var chunk: usize = 0;
    while (chunk < channels_padded) : (chunk += vector.lanes) {
        var acc: VecI32 = potentials[corner + chunk ..][0..vector.lanes].*;
        acc = combineRow(pool, width, acc, potentials, corner + chunk, 1, taps, channels_padded); // the corner is acc
        var line = corner + chunk + row_values;
        var y = rows.first + 1;
        while (y < rows.end) : (y += 1) {
            acc = combineRow(pool, width, acc, potentials, line, 0, taps, channels_padded);
            line += row_values;
        }
        vector.storeVector(row, chunk, acc);
    }
}

/// acc combined with taps from .. taps - 1 of one window row (at `line`, `step` values apart).
inline fn combineRow(comptime pool: model.Pool, comptime width: ?u32, acc: VecI32, potentials: []const i32, line: usize, comptime from: u32, taps: u32, step: usize) VecI32 {
    var result = acc;
    if (width) |w| {
        inline for (from..w) |t| result = combine(pool, result, potentials[line + t * step ..][0..vector.lanes].*);
    } else {
        var t: u32 = from;
        while (t < taps) : (t += 1) result = combine(pool, result, potentials[line + t * step ..][0..vector.lanes].*);
    }
    return result;
}

inline fn combine(comptime pool: model.Pool, acc: VecI32, value: VecI32) VecI32 {
    return if (pool == .max) @max(acc, value) else acc +% value;
}

/// sign[c] * max over the taps of sign[c] * P: the max and the min of every channel, then the one
/// its sign picks.
fn signedMaxWindow(layer: *const model.Layer, potentials: []const i32, rows: Span, columns: Span, row: []i32) void {
    const in = layer.synaptic;
    const channels_padded = in.channelsPadded();
    var chunk: usize = 0;
    while (chunk < channels_padded) : (chunk += vector.lanes) {
        var high: VecI32 = @splat(std.math.minInt(i32));
        var low: VecI32 = @splat(std.math.maxInt(i32));
        var y = rows.first;
        while (y < rows.end) : (y += 1) {
            var x = columns.first;
            while (x < columns.end) : (x += 1) {
                const value: VecI32 = potentials[(@as(usize, y) * in.w + x) * channels_padded + chunk ..][0..vector.lanes].*;
                high = @max(high, value);
                low = @min(low, value);
            }
        }
        const sign: VecI32 = layer.pool_sign[chunk..][0..vector.lanes].*;
        vector.storeVector(row, chunk, @select(i32, sign < @as(VecI32, @splat(0)), low, high));
    }
}

/// A partial window's sum S of n taps scaled to the window's A taps: floor((2 * S * A + n) / (2 * n))
/// (S * A / n rounded half up), exact in i64 (|S| < 2^31, A <= 64).
fn scaleRow(row: []i32, taps: u32, window_taps: u32) void {
    const n: i64 = taps;
    const a: i64 = window_taps;
    for (row) |*value| {
        const scaled = @divFloor(2 * @as(i64, value.*) * a + n, 2 * n);
        value.* = @intCast(scaled); // |S * A / n| <= the overflow bound (loader.zig)
    }
}

fn addRow(row: []i32, source: []const i32) void {
    var chunk: usize = 0;
    while (chunk < row.len) : (chunk += vector.lanes) {
        const a: VecI32 = row[chunk..][0..vector.lanes].*;
        const b: VecI32 = source[chunk..][0..vector.lanes].*;
        row[chunk..][0..vector.lanes].* = a +% b;
    }
}

test "a partial average window scales its sum to the whole window, rounding half up" {
    var row = [_]i32{ 3, -3, 5, 0, 7 };
    scaleRow(&row, 2, 4); // S * 2: exact
    try std.testing.expectEqualSlices(i32, &.{ 6, -6, 10, 0, 14 }, &row);
    var odd = [_]i32{ 1, 2, -1, -2 };
    scaleRow(&odd, 3, 4); // 4/3 -> 1, 8/3 -> 3, -4/3 -> -1, -8/3 -> -3
    try std.testing.expectEqualSlices(i32, &.{ 1, 3, -1, -3 }, &odd);
    var half = [_]i32{ 3, -3 };
    scaleRow(&half, 2, 3); // 4.5 -> 5, -4.5 -> -4
    try std.testing.expectEqualSlices(i32, &.{ 5, -4 }, &half);
}
