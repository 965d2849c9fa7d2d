//! The event lists of conv2d's scatter (kernels/conv2d.zig): every input pixel's non-zero channel
//! groups (quads) compacted once per layer call, with the counts that choose between the scatter
//! and the dense kernel and the layer's synaptic operations. Each pixel's list is a header
//! (index = quads listed, values = events) followed by room for all of its padded quads.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const spikes = @import("spikes.zig");

const Quad = model.Quad;

/// Entries of one input pixel's list: a header (index = quads listed, values = events) and room for
/// every quad of the padded channels (the branch-free compaction writes up to that many).
pub fn pixelEntries(layer: *const model.Layer) usize {
    return layer.input.channelsPadded() / limits.quad_channels + 1;
}

/// Quad entries the lists of the whole input need, and after them the active pixels in row order
/// and in the order the scatter takes them (one entry each, `compact`, `orderByCount`) (planner.zig).
/// The spike scatter keeps its i16 sums in the same buffer (kernels/spikes.zig scratchBytes).
pub fn entriesMax(layer: *const model.Layer) u64 {
    const spike_entries = (spikes.scratchBytes(layer) + @sizeOf(Quad) - 1) / @sizeOf(Quad);
    return @max(layer.input.pixels() * (pixelEntries(layer) + 2), spike_entries);
}

pub const Parts = struct { lists: []Quad, active: []Quad, order: []Quad };

/// The pixels' lists, and the room for the active pixels (row order, then scatter order), in a
/// buffer of entriesMax entries.
pub fn split(layer: *const model.Layer, buffer: []Quad) Parts {
    const pixels: usize = @intCast(layer.input.pixels());
    const lists_len = pixels * pixelEntries(layer);
    return .{
        .lists = buffer[0..lists_len],
        .active = buffer[lists_len..][0..pixels],
        .order = buffer[lists_len + pixels ..][0..pixels],
    };
}

/// Buckets of pixels by quad count: 1 .. counted_max, and one for more.
pub const counted_max = 8;
pub const bucket_count = counted_max + 2; // bucket 0 (inactive pixels) stays empty

/// Write the active pixels (`active`, from `compact`: index = row, values = column) into `order`
/// grouped by their quad count (bucket counted_max + 1: more quads), so that a kernel specialized
/// per count runs a whole group without a mispredicted jump per pixel. Returns where each bucket
/// ends in `order`.
pub fn orderByCount(layer: *const model.Layer, lists: []const Quad, active: []const Quad, order: []Quad) [bucket_count]usize {
    const in = layer.input;
    const entries = pixelEntries(layer);
    var sizes: [bucket_count]usize = @splat(0);
    for (active) |pixel| sizes[bucketOf(lists[(@as(usize, pixel.index) * in.w + pixel.values) * entries].index)] += 1;
    var ends: [bucket_count]usize = undefined;
    var next: [bucket_count]usize = undefined;
    var total: usize = 0;
    for (0..bucket_count) |bucket| {
        next[bucket] = total;
        if (bucket != 0) total += sizes[bucket];
        ends[bucket] = total;
    }
    for (active) |pixel| {
        const bucket = bucketOf(lists[(@as(usize, pixel.index) * in.w + pixel.values) * entries].index);
        order[next[bucket]] = pixel;
        next[bucket] += 1;
    }
    return ends;
}

fn bucketOf(quads: u32) usize {
    return @min(quads, counted_max + 1);
}

/// What `compact` found: the non-zero quads and the synaptic operations of the input.
pub const Counts = struct { nonzero_quads: u64, active_pixels: u64, synaptic_ops: u64 };

/// What `compact` finds, without writing the lists: enough to choose the kernel (and the dense
/// kernel's synaptic operations) before paying for the lists the dense kernel does not read.
pub fn count(layer: *const model.Layer, input: []const u8) Counts {
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    const quads_per_vector = vector.lanes / limits.quad_channels;
    const QuadWords = @Vector(quads_per_vector, u32);
    var counts: Counts = .{ .nonzero_quads = 0, .active_pixels = 0, .synaptic_ops = 0 };
    var reach_events: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const pixel = input[(@as(usize, iy) * in.w + ix) * cin_padded ..][0..cin_padded];
            var events: u64 = 0;
            var quads: u64 = 0;
            var chunk: usize = 0;
            while (chunk < cin_padded) : (chunk += vector.lanes) {
                const bytes: vector.VecU8 = pixel[chunk..][0..vector.lanes].*;
                events += std.simd.countTrues(bytes != @as(vector.VecU8, @splat(0)));
                quads += std.simd.countTrues(@as(QuadWords, @bitCast(bytes)) != @as(QuadWords, @splat(0)));
            }
            counts.nonzero_quads += quads;
            counts.active_pixels += @intFromBool(quads != 0);
            reach_events += events * rows.count * layer.column_taps[ix].count;
        }
    }
    counts.synaptic_ops = reach_events * layer.synaptic.c;
    return counts;
}

/// In one pass over the input: list every active pixel's non-zero quads in `parts.lists` (a header,
/// index = quads listed, values = events, then the quads), the active pixels in row order in
/// `parts.active`, and count the synaptic operations (docs/semantics.md): each non-zero value times
/// the (output pixel, tap) pairs it reaches, times Cout. A pixel without events costs one vector
/// test; its list is neither written nor read.
pub fn compact(layer: *const model.Layer, input: []const u8, parts: Parts) Counts {
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    const entries = pixelEntries(layer);
    const quad_count = in.channelQuads();
    var nonzero_quads: u64 = 0;
    var reach_events: u64 = 0;
    var active_pixels: usize = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        var ix: u32 = 0;
        while (ix < in.w) : (ix += 1) {
            const pixel_index = @as(usize, iy) * in.w + ix;
            const pixel = input[pixel_index * cin_padded ..][0..cin_padded];
            if (vector.maxU8(pixel) == 0) continue;
            const list = parts.lists[pixel_index * entries ..][0..entries];
            const gathered = vector.gatherPixelQuads(pixel, quad_count, list[1..]);
            list[0] = .{ .index = @intCast(gathered.quads.len), .values = @intCast(gathered.events) };
            parts.active[active_pixels] = .{ .index = iy, .values = ix };
            active_pixels += 1;
            nonzero_quads += gathered.quads.len;
            reach_events += gathered.events * rows.count * layer.column_taps[ix].count;
        }
    }
    return .{ .nonzero_quads = nonzero_quads, .active_pixels = active_pixels, .synaptic_ops = reach_events * layer.synaptic.c };
}
