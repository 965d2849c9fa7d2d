//! Pooling on potentials, before the neuron stage (docs/semantics.md): max, avg (= window sum;
//! the divisor is folded into the neuron stage by the converter) and global_avg (= spatial sum).

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");

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
            if (layer.pool == .max and layer.pool_size == 2 and layer.pool_stride == 2) return max2x2(layer, potentials, pooled);
            var py: u32 = 0;
            while (py < out.h) : (py += 1) {
                var px: u32 = 0;
                while (px < out.w) : (px += 1) {
                    const row = pooled[(@as(usize, py) * out.w + px) * channels_padded ..][0..channels_padded];
                    window(layer, potentials, py * layer.pool_stride, px * layer.pool_stride, row);
                }
            }
        },
    }
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
                const a: vector.VecI32 = potentials[at..][0..vector.lanes].*;
                const b: vector.VecI32 = potentials[at + channels_padded ..][0..vector.lanes].*;
                const c: vector.VecI32 = potentials[at + row_values ..][0..vector.lanes].*;
                const d: vector.VecI32 = potentials[at + row_values + channels_padded ..][0..vector.lanes].*;
                vector.storeVector(pooled, target + chunk, @max(@max(a, b), @max(c, d)));
            }
        }
    }
}

/// Max or sum of the pool_size x pool_size window whose top-left potential is (y0, x0).
fn window(layer: *const model.Layer, potentials: []const i32, y0: u32, x0: u32, row: []i32) void {
    const in = layer.synaptic;
    const channels_padded = in.channelsPadded();
    const first = potentials[(@as(usize, y0) * in.w + x0) * channels_padded ..][0..channels_padded];
    @memcpy(row, first);
    var dy: u32 = 0;
    while (dy < layer.pool_size) : (dy += 1) {
        var dx: u32 = 0;
        while (dx < layer.pool_size) : (dx += 1) {
            if (dy == 0 and dx == 0) continue;
            const pixel = (@as(usize, y0 + dy) * in.w + x0 + dx) * channels_padded;
            const source = potentials[pixel..][0..channels_padded];
            if (layer.pool == .max) maxRow(row, source) else addRow(row, source);
        }
    }
}

fn addRow(row: []i32, source: []const i32) void {
    var chunk: usize = 0;
    while (chunk < row.len) : (chunk += vector.lanes) {
        const a: vector.VecI32 = row[chunk..][0..vector.lanes].*;
        const b: vector.VecI32 = source[chunk..][0..vector.lanes].*;
        row[chunk..][0..vector.lanes].* = a +% b;
    }
}

fn maxRow(row: []i32, source: []const i32) void {
    var chunk: usize = 0;
    while (chunk < row.len) : (chunk += vector.lanes) {
        const a: vector.VecI32 = row[chunk..][0..vector.lanes].*;
        const b: vector.VecI32 = source[chunk..][0..vector.lanes].*;
        row[chunk..][0..vector.lanes].* = @max(a, b);
    }
}
