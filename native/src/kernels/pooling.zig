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
