//! conv2d and dense on binary inputs (spikes, 1-bit activations, a 1-bit model input:
//! model.Layer.usesSpikeRows), event-driven per input value, not per group of 4 channels: every
//! non-zero input (iy, ix, ci) adds its weight row W[tap, ci, :] (model.Layer.spike_rows, i8
//! sign-extended on load, no multiplication: the value is 1) to each output pixel it reaches.
//! Cost: events x reached taps x Cout_p adds, whatever the layout of the events; a pixel without
//! events costs one vector test. On AVX-512 a stride-1 conv with i16 sums runs the framed scatter
//! (every event's KH x KW rows into a frame of sums padded so that no tap needs a bounds test, the
//! events of a pixel added together per tap; `conv2dFramed`). Elsewhere a stride-1 conv with at
//! least one event per two pixels gathers (each output pixel's sums stay in
//! registers while the events of its window stream by, two at a time on AVX2); other strides
//! scatter (each event's rows into the sums of the output pixels it reaches). Both accumulate in
//! i16 where every channel's sum of |W| fits (model.Layer.spike_sums_fit_i16: half the bytes per
//! add), then widen once and add the bias. conv2d.zig and dense.zig choose these kernels by their
//! input's event count (`conv2dWins`, `denseWins`) and run their quad kernels otherwise. Bit-exact
//! with them (integer sums, wrapping i32 arithmetic as theirs; exact whenever the true sum fits
//! i32, which the loader's overflow bound guarantees).

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");
const pooling = @import("pooling.zig");

const lanes = vector.lanes;
const VecI16 = @Vector(lanes, i16);
const VecI32 = vector.VecI32;
const VecU8 = vector.VecU8;
const LaneMask = @Int(.unsigned, lanes);

/// Input channels whose events one pass over a pixel's reach adds (a block of 4 vectors' lanes).
const block_channels = 4 * lanes;
/// Events per pass with a kernel unrolled for their count (more run in a loop).
const unrolled_max = 8;

/// Whether the spike scatter beats the dense kernel (conv2d_dense.zig) on an input with
/// `input_events` non-zero values. Per event and reached tap it adds one row (a load and an add per
/// output-channel vector; i16 rows hold twice the lanes), plus a load and store of the potentials
/// row per active pixel and tap; the dense kernel adds one u8 x i8 quad dot product per quad, tap
/// and output-channel vector of every output pixel, whatever the input. Weights fitted to the spike
/// density sweep of benchmarks/engine.py (AVX2).
pub fn conv2dWins(layer: *const model.Layer, input_events: u64) bool {
    if (layer.spike_rows.len == 0 or layer.padsNonZero()) return false;
    if (frame_kernels and frames(layer)) return frameWins(layer, input_events);
    // the i32 gather (a widened row per event, sums in two registers per vector) costs half again
    // the i32 scatter's per event: on the sweep's wide-sums conv it lost to the quad kernel from
    // density 0.3 (75.1 against 72.8 us at 1.0)
    // On AVX-512 VNNI (Zen 5) the dense kernel's quad costs a third of AVX2's, and the i16 gather's
    // event twice the weight fitted there: the sweep's i16 conv gathered in 7.6 us at density 0.2
    // against 6.3 us dense, its i32 one in 9.8
    const per_event: u64 = if (layer.spike_sums_fit_i16) (if (vector.wide_register_blocks) 4 else 2) else if (gathers(layer)) 6 else 4;
    const per_quad: u64 = if (vector.wide_register_blocks) 2 else dense_per_quad;
    const taps = @as(u64, layer.kernel_h) * layer.kernel_w;
    const reach = (taps + @as(u64, layer.stride_h) * layer.stride_w - 1) / (@as(u64, layer.stride_h) * layer.stride_w);
    const spike_cost = input_events * reach * per_event;
    const dense_cost = layer.synaptic.pixels() * taps * layer.input.channelQuads() * per_quad;
    return spike_cost < dense_cost;
}

/// Cost of one quad dot product of the dense kernel, in the units of conv2dWins and denseWins (a
/// spike row add of one i16 vector = 2).
const dense_per_quad = 6;

/// potentials: i32 (OH, OW, Cout_p) before pooling; input: u8 (H, W, Cin_p) of 0 and 1; scratch:
/// at least scratchBytes(layer) bytes (the gather's event lists, or the scatter's i16 sums);
/// input_events: the non-zero values of `input` (counted once by the caller). Returns the synaptic
/// operations.
pub fn conv2d(layer: *const model.Layer, input: []const u8, input_events: u64, potentials: []i32, scratch: []u8) u64 {
    std.debug.assert(layer.spike_rows.len != 0 and !layer.padsNonZero());
    std.debug.assert(input.len == layer.input.valuesPadded());
    std.debug.assert(potentials.len == layer.synaptic.valuesPadded());
    if (frame_kernels and frames(layer)) return conv2dFramed(layer, .potentials, input, potentials, scratch);
    // The gather lists the events first: at very few events (under one per two pixels) that
    // costs more than the scatter saves, so sparse inputs keep the scatter (measured on the
    // sweep conv: density 0 3.9 vs 6.7 us, 0.02 9.9 vs 11.0 us).
    if (gathers(layer) and 2 * input_events >= layer.input.pixels()) {
        const entries = gatherEntries(layer);
        std.debug.assert(scratch.len >= entries * @sizeOf(u32));
        const lists = @as([*]u32, @ptrCast(@alignCast(scratch.ptr)))[0..limits.usizeFrom(entries)];
        return if (layer.spike_sums_fit_i16) gather(i16, .potentials, layer, input, potentials, lists) else gather(i32, .potentials, layer, input, potentials, lists);
    }
    if (layer.spike_sums_fit_i16) {
        const sums_bytes = potentials.len * @sizeOf(i16);
        std.debug.assert(scratch.len >= sums_bytes);
        const sums = @as([*]i16, @ptrCast(@alignCast(scratch.ptr)))[0..potentials.len];
        @memset(sums, 0);
        const synaptic_ops = scatter(i16, layer, input, sums);
        widenAddBias(sums, layer.bias, potentials);
        return synaptic_ops;
    }
    vector.fillRows(potentials, layer.bias);
    return scatter(i32, layer, input, potentials);
}

/// Whether conv2dMax2x2 runs this layer on this input: a conv that gathers or runs the framed
/// scatter (conv2d above) followed by a plain 2x2 max pool (pooling.isPlainMax2x2).
pub fn gathersMax2x2(layer: *const model.Layer, input_events: u64) bool {
    return mayGatherMax2x2(layer) and conv2dWins(layer, input_events) and (frames(layer) or 2 * input_events >= layer.input.pixels());
}

/// gathersMax2x2's conditions that do not depend on the input (checked before its events are counted).
pub fn mayGatherMax2x2(layer: *const model.Layer) bool {
    return layer.isConv() and !layer.isNarrowConv() and layer.spike_rows.len != 0 and pooling.isPlainMax2x2(layer) and gathers(layer);
}

/// conv2d and its 2x2 max pool at once (where gathersMax2x2): pooled: i32 (OH/2, OW/2, Cout_p) (not
/// the layer's pooled buffer, which may share the scratch: engine.zig passes the potentials' start),
/// the pooled potentials, written without the potentials before pooling. Each pooled vector is
/// max(sums of its 4 pixels) + bias (= the max of the 4 potentials: the bias is the same and no sum
/// overflows), the maxima taken on the gather's registers: the potentials' stores, the pool's
/// reloads and three quarters of the widening and bias adds are saved, and an odd last row or
/// column that the pool leaves out is counted, not summed. Returns the synaptic operations (as
/// conv2d: every output pixel's).
pub fn conv2dMax2x2(layer: *const model.Layer, input: []const u8, input_events: u64, pooled: []i32, scratch: []u8) u64 {
    std.debug.assert(gathersMax2x2(layer, input_events));
    std.debug.assert(input.len == layer.input.valuesPadded());
    std.debug.assert(pooled.len == layer.output.valuesPadded());
    if (frame_kernels and frames(layer)) return conv2dFramed(layer, .max2x2, input, pooled, scratch);
    const entries = gatherEntries(layer);
    std.debug.assert(scratch.len >= entries * @sizeOf(u32));
    const lists = @as([*]u32, @ptrCast(@alignCast(scratch.ptr)))[0..limits.usizeFrom(entries)];
    return if (layer.spike_sums_fit_i16) gather(i16, .max2x2, layer, input, pooled, lists) else gather(i32, .max2x2, layer, input, pooled, lists);
}

/// Bytes of the conv kernel's scratch (in the arena's events buffer): the gather's event lists of
/// one output column, or the scatter's i16 sums.
pub fn scratchBytes(layer: *const model.Layer) u64 {
    if (layer.spike_rows.len == 0 or !layer.isConv()) return 0;
    const sums_bytes = layer.synaptic.valuesPadded() * @sizeOf(i16);
    if (frame_kernels and frames(layer)) return frameBytes(layer);
    if (gathers(layer)) return @max(gatherEntries(layer) * @sizeOf(u32), sums_bytes);
    return sums_bytes;
}

// -- the gather (stride 1): every output pixel sums the rows of the events in its window ---------
//
// The input's events are listed once, row by row and column by column, each as the offset of its
// weight row for a window at the origin: ((iy * KW + ix) * Cin + ci) * Cout_p. For each output
// column ox the runs of the input columns its windows read (KW of them) are copied row after row
// into a band, so that a window's events are one contiguous run of the band (input rows
// [oy - pad_top, oy - pad_top + KH)), and an event's tap row in the window of (oy, ox) lies a fixed
// distance before its listed offset (ky = iy - oy + pad_top, kx = ix - ox + pad_left):
// (tap * Cin + ci) * Cout_p = listed - ((oy * KW + ox) - (pad_top * KW + pad_left)) * Cin * Cout_p.
// Each output pixel's sums stay in registers while its events stream by (one loop per output pixel,
// no load and store of the sums per event and tap as in the scatter) and are written once, with the
// bias.

/// Whether the conv kernel gathers (stride 1, every listed offset within u32) or scatters.
fn gathers(layer: *const model.Layer) bool {
    if (layer.stride_h != 1 or layer.stride_w != 1) return false;
    const origin_rows = (@as(u64, layer.input.h) * layer.kernel_w + layer.input.w) * layer.input.c;
    return origin_rows * layer.synaptic.channelsPadded() <= std.math.maxInt(u32);
}

/// The gather's scratch, in u32 entries from its start.
const GatherScratch = struct {
    run_starts: u64, // (H + 1): where each input row's run starts in the band (then the band's end)
    column_starts: u64, // (H, W + 1): where each input pixel's events start in the list
    list: u64, // every event of the input, plus the slack of the branch-free appends and copies
    band: u64, // the runs of one output column's KW input columns in every row, plus copy slack
    pool_rows: u64, // (OH/2, Cout_p) i32 or i16: conv2dMax2x2's maxima of the even output column
    entries: u64,

    fn of(layer: *const model.Layer) GatherScratch {
        const in = layer.input;
        const run_starts: u64 = in.h + 1;
        const column_starts = @as(u64, in.h) * (in.w + 1);
        const list = in.pixels() * in.c + copy_chunk;
        const band = @as(u64, in.h) * @min(layer.kernel_w, in.w) * in.c + copy_chunk;
        const pool_rows = @as(u64, layer.output.h) * layer.synaptic.channelsPadded();
        const band_first = run_starts + column_starts + list;
        return .{ .run_starts = 0, .column_starts = run_starts, .list = run_starts + column_starts, .band = band_first, .pool_rows = band_first + band, .entries = band_first + band + pool_rows };
    }
};

fn gatherEntries(layer: *const model.Layer) u64 {
    return GatherScratch.of(layer).entries;
}

/// Entries a copy of a run moves at once (and the slack past the list and band it may touch; an
/// append writes 8).
const copy_chunk = 16;

/// The indices of the set bits of every byte, lowest first, one per byte of the u64.
const bit_indices: [256]u64 = table: {
    @setEvalBranchQuota(10_000);
    var table: [256]u64 = undefined;
    for (0..256) |mask| {
        var indices: u64 = 0;
        var count: u64 = 0;
        for (0..8) |bit| {
            if ((mask >> bit) & 1 != 0) {
                indices |= @as(u64, bit) << (8 * count);
                count += 1;
            }
        }
        table[mask] = indices;
    }
    break :table table;
};

/// Append the channels set in `mask` (8 channels from `row`'s) as row offsets (row + bit) *
/// cout_padded, branch-free: 8 entries are written, the count advances by the set bits.
inline fn appendEvents(list: []u32, count: usize, mask: u8, row: u32, cout_padded: u32) usize {
    const bits: @Vector(8, u8) = @bitCast(bit_indices[mask]);
    const offsets = (@as(@Vector(8, u32), bits) + @as(@Vector(8, u32), @splat(row))) * @as(@Vector(8, u32), @splat(cout_padded));
    const target: *align(1) @Vector(8, u32) = @ptrCast(list[count..][0..8]);
    target.* = offsets;
    return count + @popCount(mask);
}

const VecU32 = @Vector(lanes, u32);

/// Append the lanes of `values` set in `mask`, in order, branch-free (AVX-512 vpcompressd: all 16
/// entries are written, the count advances by the set bits); returns the new count.
inline fn appendCompressed(list: []u32, count: usize, values: VecU32, mask: LaneMask) usize {
    comptime std.debug.assert(compress_lists);
    const compressed = asm ("vpcompressd %[values], %[out] {%[mask]}{z}"
        : [out] "=v" (-> VecU32),
        : [values] "v" (values),
          [mask] "^Yk" (mask),
    );
    const target: *align(1) VecU32 = @ptrCast(list[count..][0..lanes]);
    target.* = compressed;
    return count + @popCount(mask);
}

/// The window [o - pad, o - pad + kernel) of input positions, clipped to [0, size).
fn windowRange(o: usize, pad: usize, kernel: usize, size: usize) struct { first: usize, end: usize } {
    const first = @min(size, if (o >= pad) o - pad else 0);
    const end = @min(size, (o + kernel) -| pad);
    return .{ .first = first, .end = @max(first, end) };
}

/// The input's events as listed offsets, pixel after pixel; column_starts[iy * (W + 1) + ix]: where
/// pixel (iy, ix)'s begin (ix = W: where the row's end).
fn listEvents(layer: *const model.Layer, input: []const u8, list: []u32, column_starts: []u32) void {
    const in = layer.input;
    const w: usize = in.w;
    const cin: usize = in.c;
    const cin_padded: usize = in.channelsPadded();
    const cout_padded: u32 = @intCast(layer.synaptic.channelsPadded());
    const kernel_w: usize = layer.kernel_w;
    var count: usize = 0;
    for (0..in.h) |iy| {
        const starts = column_starts[iy * (w + 1) ..][0 .. w + 1];
        for (0..w) |ix| {
            starts[ix] = @intCast(count);
            const pixel = input[(iy * w + ix) * cin_padded ..][0..cin_padded];
            const row: u32 = @intCast((iy * kernel_w + ix) * cin);
            var channel: usize = 0;
            while (channel < cin_padded) : (channel += lanes) {
                const bytes: VecU8 = pixel[channel..][0..lanes].*;
                const mask: u16 = @bitCast(bytes != @as(VecU8, @splat(0)));
                const channel_row = row + @as(u32, @intCast(channel));
                count = appendEvents(list, count, @truncate(mask), channel_row, cout_padded);
                count = appendEvents(list, count, @truncate(mask >> 8), channel_row + 8, cout_padded);
            }
        }
        starts[w] = @intCast(count);
    }
}

/// band[count..] = list[first..end] in chunks of copy_chunk (the last may copy past `end`: the
/// slack of both); returns the band's new count.
inline fn copyRun(band: []u32, count: usize, list: []const u32, first: usize, end: usize) usize {
    const Chunk = @Vector(copy_chunk, u32);
    var offset: usize = 0;
    while (first + offset < end) : (offset += copy_chunk) {
        const chunk: Chunk = list[first + offset ..][0..copy_chunk].*;
        const target: *align(1) Chunk = @ptrCast(band[count + offset ..][0..copy_chunk]);
        target.* = chunk;
    }
    return count + (end - first);
}

/// Where the gather's sums go: every output pixel's potentials (conv2d), or only the maxima of a
/// plain 2x2 max pool after the conv (conv2dMax2x2).
const Target = enum { potentials, max2x2 };

fn gather(comptime Acc: type, comptime target: Target, layer: *const model.Layer, input: []const u8, out: []i32, scratch: []u32) u64 {
    comptime std.debug.assert(lanes == 16); // two bytes of masks per vector of channels
    const in = layer.input;
    const h: usize = in.h;
    const w: usize = in.w;
    const cout_padded: usize = layer.synaptic.channelsPadded();
    const chunks = cout_padded / lanes;
    const kernel_w: usize = layer.kernel_w;
    const out_w: usize = layer.synaptic.w;
    const parts = GatherScratch.of(layer);
    const run_starts = scratch[limits.usizeFrom(parts.run_starts)..][0 .. h + 1];
    const column_starts = scratch[limits.usizeFrom(parts.column_starts)..][0 .. h * (w + 1)];
    const list = scratch[limits.usizeFrom(parts.list)..limits.usizeFrom(parts.band)];
    const band = scratch[limits.usizeFrom(parts.band)..limits.usizeFrom(parts.pool_rows)];
    const pool_rows = scratch[limits.usizeFrom(parts.pool_rows)..limits.usizeFrom(parts.entries)];
    listEvents(layer, input, list, column_starts);
    // the listed offset of an event minus its tap row's offset in the window of (oy, ox), wrapping
    const pad_rows = (@as(usize, layer.pad_top) * kernel_w + layer.pad_left) * in.c * cout_padded;
    // the pool reads output columns [0, 2 x its width): an odd last one is counted, not summed
    const summed_w: usize = if (target == .max2x2) 2 * @as(usize, layer.output.w) else out_w;
    var pairs: u64 = 0; // (event, in-bounds tap) pairs
    for (0..out_w) |ox| {
        const columns = windowRange(ox, layer.pad_left, kernel_w, w);
        var count: usize = 0;
        for (0..h) |iy| {
            run_starts[iy] = @intCast(count);
            const starts = column_starts[iy * (w + 1) ..][0 .. w + 1];
            count = copyRun(band, count, list, starts[columns.first], starts[columns.end]);
        }
        run_starts[h] = @intCast(count);
        const column: Column = .{
            .band = band,
            .run_starts = run_starts,
            .distance = (ox * in.c * cout_padded) -% pad_rows,
            .out_first = ox * cout_padded,
            .ox = ox,
            .pool_rows = pool_rows,
        };
        if (ox >= summed_w) {
            for (0..layer.synaptic.h) |oy| pairs += column.window(layer, oy).len;
            continue;
        }
        pairs += if (comptime !limits.kernel_variants) gatherColumn(Acc, target, null, layer, column, out) else switch (chunks) { // the output-channel vectors fixed at compile time where they are few
            inline 1...2 * gather_block_chunks => |n| gatherColumn(Acc, target, n, layer, column, out),
            else => gatherColumn(Acc, target, null, layer, column, out),
        };
    }
    return pairs * layer.synaptic.c;
}

/// One output column's band (its windows' events) and offsets.
const Column = struct {
    band: []const u32,
    run_starts: []const u32, // (H + 1)
    distance: usize, // listed offset - tap row offset for output row 0 (wrapping)
    out_first: usize, // the offset of output pixel (0, ox) in the potentials
    ox: usize,
    pool_rows: []u32, // max2x2: (OH/2, Cout_p) of Acc, the maxima of the even column before this odd one

    /// The events of output row oy's window.
    fn window(column: Column, layer: *const model.Layer, oy: usize) []const u32 {
        const rows = windowRange(oy, layer.pad_top, layer.kernel_h, layer.input.h);
        return column.band[column.run_starts[rows.first]..column.run_starts[rows.end]];
    }
};

/// Every output pixel of one column (max2x2: the two of each pooled pixel, one under the other):
/// its window's events summed `gather_block_chunks` vectors at a time. Returns the (event,
/// in-bounds tap) pairs.
fn gatherColumn(comptime Acc: type, comptime target: Target, comptime chunks: ?usize, layer: *const model.Layer, column: Column, out: []i32) u64 {
    const cout_padded: usize = layer.synaptic.channelsPadded();
    const row_distance = @as(usize, layer.kernel_w) * layer.input.c * cout_padded; // one output row down
    const row_out = @as(usize, layer.synaptic.w) * cout_padded;
    const step: usize = if (target == .max2x2) 2 else 1;
    // the pool reads output rows [0, 2 x its height): an odd last one is counted, not summed
    const summed_h: usize = if (target == .max2x2) 2 * @as(usize, layer.output.h) else layer.synaptic.h;
    var pairs: u64 = 0;
    var distance = column.distance;
    var oy: usize = 0;
    while (oy < summed_h) : (oy += step) {
        const pixel: Pixel = .{
            .events = column.window(layer, oy),
            .below = if (target == .max2x2) column.window(layer, oy + 1) else &.{},
            .distance = distance,
            .row_distance = row_distance,
            .out_offset = switch (target) {
                .potentials => column.out_first + oy * row_out,
                .max2x2 => ((oy / 2) * layer.output.w + column.ox / 2) * cout_padded,
            },
            .kept_offset = (oy / 2) * cout_padded,
        };
        pairs += pixel.events.len + pixel.below.len;
        if (chunks) |c| {
            comptime var first: usize = 0;
            inline while (first < c) : (first += gather_block_chunks) {
                gatherPixel(Acc, target, @min(gather_block_chunks, c - first), layer, column, pixel, first * lanes, out);
            }
        } else {
            var first: usize = 0;
            while (first < cout_padded / lanes) {
                const block = @min(gather_block_chunks, cout_padded / lanes - first);
                switch (block) {
                    inline 1...gather_block_chunks => |n| gatherPixel(Acc, target, n, layer, column, pixel, first * lanes, out),
                    else => unreachable,
                }
                first += block;
            }
        }
        distance +%= step * row_distance;
    }
    while (oy < layer.synaptic.h) : (oy += 1) pairs += column.window(layer, oy).len;
    return pairs;
}

/// Output-channel vectors whose sums one pass over a window's events keeps in registers.
const gather_block_chunks = limits.block_chunks_max;

/// One output pixel of gatherColumn (max2x2: the upper of two).
const Pixel = struct {
    events: []const u32,
    below: []const u32, // max2x2: the events of the pixel under it
    distance: usize,
    row_distance: usize,
    out_offset: usize, // of the pixel's (max2x2: the pooled pixel's) channel 0 in `out`
    kept_offset: usize, // max2x2: of its pooled row's channel 0 in the column's pool rows
};

/// Channels [channel, channel + chunks * lanes): potentials: out = bias + the rows of the pixel's
/// events; max2x2: the maximum of the two pixels' sums, kept in the pool rows for an even column,
/// and for an odd one the maximum with the kept one, plus the bias, into the pooled `out`.
inline fn gatherPixel(comptime Acc: type, comptime target: Target, comptime chunks: usize, layer: *const model.Layer, column: Column, pixel: Pixel, channel: usize, out: []i32) void {
    const Vec = @Vector(lanes, Acc);
    var sums = pixelSums(Acc, chunks, layer, pixel.events, pixel.distance, channel);
    if (target == .max2x2) {
        const lower = pixelSums(Acc, chunks, layer, pixel.below, pixel.distance +% pixel.row_distance, channel);
        inline for (0..chunks) |k| sums[k] = @max(sums[k], lower[k]);
        const kept: [*]Acc = @ptrCast(@alignCast(column.pool_rows.ptr));
        const at = pixel.kept_offset + channel;
        if (column.ox % 2 == 0) {
            inline for (0..chunks) |k| {
                const target_vector: *align(@alignOf(Acc)) Vec = @ptrCast(kept[at + k * lanes ..][0..lanes]);
                target_vector.* = sums[k];
            }
            return;
        }
        inline for (0..chunks) |k| sums[k] = @max(sums[k], @as(Vec, kept[at + k * lanes ..][0..lanes].*));
    }
    inline for (0..chunks) |k| {
        const offset = channel + k * lanes;
        const ordered: VecI32 = inOrder(Acc, chunks, sums, k);
        vector.storeVector(out, pixel.out_offset + offset, ordered +% @as(VecI32, layer.bias[offset..][0..lanes].*));
    }
}

/// Whether pixelSums adds two events at a time (sumPairs) and leaves its sums in sumPairs' layout.
fn paired(comptime Acc: type, comptime chunks: usize) bool {
    return vector.has_avx2 and Acc == i16 and chunks % 2 == 0;
}

/// The rows of `events` at channels [channel, channel + chunks * lanes) summed, without the bias; in
/// channel order, or (paired) per block of 32 channels sumPairs' low and high vectors (inOrder).
inline fn pixelSums(comptime Acc: type, comptime chunks: usize, layer: *const model.Layer, events: []const u32, distance: usize, channel: usize) [chunks]@Vector(lanes, Acc) {
    var acc: [chunks]@Vector(lanes, Acc) = @splat(@splat(0));
    if (comptime paired(Acc, chunks)) {
        const sums = sumPairs(chunks / 2, layer.spike_rows, events, distance, channel);
        inline for (0..chunks / 2) |u| {
            acc[2 * u] = sums.low[u];
            acc[2 * u + 1] = sums.high[u];
        }
        return acc;
    }
    for (events) |event| {
        const row = (@as(usize, event) -% distance) + channel;
        inline for (0..chunks) |k| acc[k] +%= weightVector(Acc, layer.spike_rows, row + k * lanes);
    }
    return acc;
}

/// Vector k of pixelSums' sums in channel order (paired: 8 channels of block k / 2's low vector,
/// then 8 of its high one), widened to i32.
inline fn inOrder(comptime Acc: type, comptime chunks: usize, sums: [chunks]@Vector(lanes, Acc), comptime k: usize) VecI32 {
    if (comptime !paired(Acc, chunks)) return sums[k];
    return @shuffle(i16, sums[k - k % 2], sums[k - k % 2 + 1], halvesMask((k % 2) * 8));
}

const VecI8x32 = @Vector(32, i8);
const VecI16x32 = @Vector(32, i16);

/// Byte shuffles interleaving two rows of 32 channels within each 128-bit half (vpunpcklbw,
/// vpunpckhbw): channels 0..7 and 16..23 of both rows, pairwise; then 8..15 and 24..31.
const interleave_low = interleaveMask(0);
const interleave_high = interleaveMask(8);

fn interleaveMask(comptime first: i32) [32]i32 {
    var mask: [32]i32 = undefined;
    for (0..2) |half| {
        for (0..8) |i| {
            const channel: i32 = @intCast(half * 16 + i);
            mask[half * 16 + 2 * i] = first + channel;
            mask[half * 16 + 2 * i + 1] = ~(first + channel); // the second row's
        }
    }
    return mask;
}

/// The sums of the byte pairs of `pairs` as i16 (vpmaddubsw with ones: |w1 + w2| <= 256, exact).
inline fn addPairs(pairs: VecI8x32) VecI16 {
    const ones: @Vector(32, u8) = @splat(1);
    return asm ("vpmaddubsw %[b], %[a], %[out]"
        : [out] "=x" (-> VecI16),
        : [a] "x" (ones),
          [b] "x" (pairs),
    );
}

/// The i16 sums of `units` blocks of 32 channels over the rows of some events, as sumPairs leaves
/// them: per block, channels (0..7, 16..23) in `low` and (8..15, 24..31) in `high`.
fn PairSums(comptime units: usize) type {
    return struct {
        low: [units]VecI16,
        high: [units]VecI16,

        /// Channels [32 u + 16 half, +16) of block u in order: 8 of `low`, then 8 of `high`.
        inline fn inOrder(sums: @This(), comptime u: usize, comptime half: usize) VecI16 {
            return @shuffle(i16, sums.low[u], sums.high[u], halvesMask(half * 8));
        }
    };
}

/// The rows (rows[event - distance + channel ..]) of every event summed in i16 on AVX2, two events at
/// a time: their rows' bytes interleaved, one vpmaddubsw with ones sign-extends and adds both (a
/// quarter fewer vector operations per event than widening each row alone). An odd last event is
/// added with a zero row, without a branch (its count changes from window to window: a branch on it
/// was mispredicted about every other time). `events` must be readable one entry past its end (the
/// band's and the dense list's slack); the sums must fit i16 (at most 127 pairs of |w| <= 128, or
/// every channel's sum of |W| within i16).
inline fn sumPairs(comptime units: usize, rows: []const i8, events: []const u32, distance: usize, channel: usize) PairSums(units) {
    var sums: PairSums(units) = .{ .low = @splat(@splat(0)), .high = @splat(@splat(0)) };
    var index: usize = 0;
    while (index + 2 <= events.len) : (index += 2) {
        const first = (@as(usize, events[index]) -% distance) + channel;
        const second = (@as(usize, events[index + 1]) -% distance) + channel;
        inline for (0..units) |u| {
            const a: VecI8x32 = rows[first + u * 32 ..][0..32].*;
            const b: VecI8x32 = rows[second + u * 32 ..][0..32].*;
            sums.low[u] +%= addPairs(@shuffle(i8, a, b, interleave_low));
            sums.high[u] +%= addPairs(@shuffle(i8, a, b, interleave_high));
        }
    }
    // the odd event, or (even count) any in-bounds row masked to zero
    const odd = events.len & 1;
    const tail = (@as(usize, events.ptr[index]) -% distance) +% channel;
    const row = if (odd != 0) tail else channel;
    const keep: VecI8x32 = @splat(@bitCast(-%@as(u8, @intCast(odd))));
    const zero: VecI8x32 = @splat(0);
    inline for (0..units) |u| {
        const a: VecI8x32 = @as(VecI8x32, rows[row + u * 32 ..][0..32].*) & keep;
        sums.low[u] +%= addPairs(@shuffle(i8, a, zero, interleave_low));
        sums.high[u] +%= addPairs(@shuffle(i8, a, zero, interleave_high));
    }
    return sums;
}

/// Lanes [first, first + 8) of one vector, then the same of another.
fn halvesMask(comptime first: i32) [16]i32 {
    var mask: [16]i32 = undefined;
    for (0..8) |i| {
        mask[i] = first + @as(i32, @intCast(i));
        mask[8 + i] = ~(first + @as(i32, @intCast(i)));
    }
    return mask;
}

/// Every input event's rows into `sums` (Acc: i16 or i32, (OH, OW, Cout_p)); returns the synaptic
/// operations (events x in-bounds reached taps x Cout, docs/semantics.md).
fn scatter(comptime Acc: type, layer: *const model.Layer, input: []const u8, sums: []Acc) u64 {
    @setEvalBranchQuota(20_000); // the inline switches instantiate a walk per (vectors, events) pair
    if (comptime !limits.kernel_variants) return scatterBy(Acc, null, layer, input, sums);
    return switch (layer.synaptic.channelsPadded() / lanes) {
        inline 1...4 => |chunks| scatterBy(Acc, chunks, layer, input, sums),
        else => scatterBy(Acc, null, layer, input, sums),
    };
}

/// scatter with `chunks` output-channel vectors per row, compile-time where known.
fn scatterBy(comptime Acc: type, comptime chunks: ?usize, layer: *const model.Layer, input: []const u8, sums: []Acc) u64 {
    const in = layer.input;
    const cin_padded: usize = in.channelsPadded();
    const row_bytes = @as(usize, in.w) * cin_padded;
    var reach_events: u64 = 0;
    var iy: u32 = 0;
    while (iy < in.h) : (iy += 1) {
        const rows = layer.row_taps[iy];
        const input_row = input[@as(usize, iy) * row_bytes ..][0..row_bytes];
        if (rows.count == 0 or vector.maxU8(input_row) == 0) continue; // a row without events: one pass of tests
        // Neighbouring pixels reach overlapping output pixels: taken one after the other, each
        // pixel's loads would wait for the stores of the one before. Pixels a reach apart do not
        // overlap, so the row goes in `phases` passes of every phases-th pixel.
        const phases = @min(in.w, (layer.kernel_w + layer.stride_w - 1) / layer.stride_w);
        for (0..phases) |phase| {
            var ix: u32 = @intCast(phase);
            while (ix < in.w) : (ix += phases) {
                const pixel = input_row[@as(usize, ix) * cin_padded ..][0..cin_padded];
                var first: usize = 0;
                while (first < cin_padded) : (first += block_channels) {
                    var offsets: [block_channels]u32 = undefined; // rows of the events: ci * Cout_p
                    const count = blockEvents(layer, pixel, first, &offsets);
                    if (count == 0) continue;
                    const walk: Walk = .{ .layer = layer, .spike_rows = layer.spike_rows, .rows = rows, .columns = layer.column_taps[ix] };
                    reach_events += count * rows.count * walk.columns.count;
                    if (comptime !limits.kernel_variants) {
                        walk.add(Acc, chunks, null, sums, offsets[0..count]);
                    } else switch (count) {
                        inline 1...unrolled_max => |n| walk.add(Acc, chunks, n, sums, offsets[0..n]),
                        else => walk.add(Acc, chunks, null, sums, offsets[0..count]),
                    }
                }
            }
        }
    }
    return reach_events * layer.synaptic.c;
}

/// The non-zero channels of pixel channels [first, first + block_channels) as row offsets
/// (ci * Cout_p); returns how many.
inline fn blockEvents(layer: *const model.Layer, pixel: []const u8, first: usize, offsets: *[block_channels]u32) usize {
    const cout_padded: u32 = layer.synaptic.channelsPadded();
    const end = @min(pixel.len, first + block_channels);
    var count: usize = 0;
    var chunk = first;
    while (chunk < end) : (chunk += lanes) {
        const bytes: VecU8 = pixel[chunk..][0..lanes].*;
        var mask: LaneMask = @bitCast(bytes != @as(VecU8, @splat(0)));
        while (mask != 0) : (mask &= mask - 1) {
            offsets[count] = @as(u32, @intCast(chunk + @ctz(mask))) * cout_padded;
            count += 1;
        }
    }
    return count;
}

/// The (output pixel, tap) pairs one input pixel reaches (model.Layer.forEachReach), walked with
/// the output row and the tap's weight rows as running offsets.
const Walk = struct {
    layer: *const model.Layer,
    spike_rows: []const i8, // the layer's, held here so that stores to the sums need not reload it
    rows: vector.TapRange,
    columns: vector.TapRange,

    /// Add the rows at `offsets` (one per event, from each tap's rows) to every reached output
    /// pixel's sums; `chunks` (output-channel vectors) and `count` (events) unrolled where known.
    inline fn add(walk: Walk, comptime Acc: type, comptime chunks: ?usize, comptime count: ?usize, sums: []Acc, offsets: []const u32) void {
        const layer = walk.layer;
        const cout_padded: usize = layer.synaptic.channelsPadded();
        const tap_stride = @as(usize, layer.input.c) * cout_padded;
        const out_w: usize = layer.synaptic.w;
        const kernel_w: usize = layer.kernel_w;
        const column_step = @as(usize, layer.stride_w) * tap_stride; // tap rows one column step apart
        for (0..walk.rows.count) |row_step| {
            const oy: usize = walk.rows.output_first - row_step;
            const kh: usize = walk.rows.kernel_first + row_step * layer.stride_h;
            var sums_offset = (oy * out_w + walk.columns.output_first) * cout_padded;
            var weights_offset = (kh * kernel_w + walk.columns.kernel_first) * tap_stride;
            for (0..walk.columns.count) |_| {
                const row = sums[sums_offset..][0..cout_padded];
                const tap_rows = walk.spike_rows[weights_offset..][0..tap_stride];
                if (chunks) |c| {
                    inline for (0..c) |k| addRows(Acc, count, row, tap_rows, offsets, k * lanes);
                } else {
                    var channel: usize = 0;
                    while (channel < cout_padded) : (channel += lanes) addRows(Acc, count, row, tap_rows, offsets, channel);
                }
                sums_offset -%= cout_padded; // the next column step reaches the output pixel to the left
                weights_offset += column_step;
            }
        }
    }
};

/// row[channel..][0..lanes] += the listed rows' vectors at `channel`.
inline fn addRows(comptime Acc: type, comptime count: ?usize, row: []Acc, tap_rows: []const i8, offsets: []const u32, channel: usize) void {
    var acc: @Vector(lanes, Acc) = row[channel..][0..lanes].*;
    if (count) |n| {
        inline for (0..n) |e| acc +%= weightVector(Acc, tap_rows, offsets[e] + channel);
    } else {
        for (offsets) |offset| acc +%= weightVector(Acc, tap_rows, offset + channel);
    }
    const target: *align(@alignOf(Acc)) @Vector(lanes, Acc) = @ptrCast(row[channel..][0..lanes]);
    target.* = acc;
}

/// Lanes [offset, offset + lanes) of i8 or i16 rows, sign-extended to Acc.
inline fn weightVector(comptime Acc: type, rows: anytype, offset: usize) @Vector(lanes, Acc) {
    const Weight = @typeInfo(@TypeOf(rows)).pointer.child;
    const weights: @Vector(lanes, Weight) = rows[offset..][0..lanes].*;
    return weights;
}

/// potentials[i] = sums[i] + bias[channel of i], every pixel (bias: one padded row).
fn widenAddBias(sums: []const i16, bias: []const i32, potentials: []i32) void {
    std.debug.assert(sums.len == potentials.len and potentials.len % bias.len == 0);
    var offset: usize = 0;
    while (offset < potentials.len) : (offset += bias.len) {
        var channel: usize = 0;
        while (channel < bias.len) : (channel += lanes) {
            const sum: VecI16 = sums[offset + channel ..][0..lanes].*;
            const b: VecI32 = bias[channel..][0..lanes].*;
            vector.storeVector(potentials, offset + channel, @as(VecI32, sum) +% b);
        }
    }
}

/// Whether the spike accumulation of a dense layer beats its quad kernel (dense.zig) on an input
/// with `input_events` non-zero values: a row add per event and output-channel vector (one i16
/// register) against, for the quad kernel, a test of every quad and a dot product per non-zero one
/// (at least events / 4 of them, at most events). On the IF model's dense 1568->64 (8-bit weights,
/// AVX2) the row adds win at every density, 100 % included (6.0 against 6.5 us).
pub fn denseWins(layer: *const model.Layer, input_events: u64) bool {
    if (layer.spike_rows.len == 0) return false;
    const quads = layer.input.pixels() * layer.input.channelQuads();
    const spike_cost = 2 * input_events;
    const quad_cost = quads + dense_per_quad * @max(input_events / 2, 1);
    return spike_cost <= quad_cost;
}

/// potentials: i32 (1, 1, Cout_p); input: u8 (H, W, Cin_p) of 0 and 1. Returns the synaptic
/// operations (events x Cout). On AVX2 the events are listed in chunks and their rows added two at a
/// time (denseListed); otherwise the sums of a block of output-channel vectors stay in registers while
/// the input's events stream by (found a vector of channels at a time, no list in memory).
pub fn dense(layer: *const model.Layer, input: []const u8, potentials: []i32) u64 {
    std.debug.assert(layer.spike_rows.len != 0);
    std.debug.assert(input.len == layer.input.valuesPadded());
    if (comptime vector.has_avx2 and lanes == 16) {
        if (layer.spike_rows.len <= std.math.maxInt(u32)) return denseListed(layer, input, potentials);
    }
    const chunks = layer.synaptic.channelsPadded() / lanes;
    std.debug.assert(potentials.len == chunks * lanes);
    @setEvalBranchQuota(10_000);
    var events: u64 = 0;
    var first: usize = 0;
    while (first < chunks) {
        const block = @min(dense_block_chunks, chunks - first);
        events = switch (block) {
            inline 1...dense_block_chunks => |n| denseBlock(n, layer, input, potentials, first),
            else => unreachable,
        };
        first += block;
    }
    return events * layer.synaptic.c;
}

/// Output-channel vectors one pass keeps in registers (i32: two AVX2 registers each).
const dense_block_chunks = 4;

/// Output channels [first * lanes, (first + chunks) * lanes) of a dense layer; returns the events.
fn denseBlock(comptime chunks: usize, layer: *const model.Layer, input: []const u8, potentials: []i32, first: usize) u64 {
    const in = layer.input;
    const cin_padded: usize = in.channelsPadded();
    const cout_padded: usize = layer.synaptic.channelsPadded();
    var acc: [chunks]VecI32 = undefined;
    inline for (0..chunks) |k| acc[k] = layer.bias[(first + k) * lanes ..][0..lanes].*;
    // rows add into i16 sums (one register per vector, not two), moved into the i32 ones before
    // they could leave i16: 255 rows of |w| <= 128 sum to at most 32640
    var narrow: [chunks]VecI16 = @splat(@splat(0));
    var narrow_rows: u32 = 0;
    var events: u64 = 0;
    var pixel: usize = 0;
    while (pixel < in.pixels()) : (pixel += 1) {
        const values = input[pixel * cin_padded ..][0..cin_padded];
        var chunk: usize = 0;
        while (chunk < cin_padded) : (chunk += lanes) {
            const bytes: VecU8 = values[chunk..][0..lanes].*;
            var mask: LaneMask = @bitCast(bytes != @as(VecU8, @splat(0)));
            events += @popCount(mask);
            while (mask != 0) : (mask &= mask - 1) {
                const row = (pixel * in.c + chunk + @ctz(mask)) * cout_padded + first * lanes;
                inline for (0..chunks) |k| narrow[k] +%= weightVector(i16, layer.spike_rows, row + k * lanes);
                narrow_rows += 1;
                if (narrow_rows == narrow_rows_max) {
                    inline for (0..chunks) |k| acc[k] +%= @as(VecI32, narrow[k]);
                    narrow = @splat(@splat(0));
                    narrow_rows = 0;
                }
            }
        }
    }
    inline for (0..chunks) |k| vector.storeVector(potentials, (first + k) * lanes, acc[k] +% @as(VecI32, narrow[k]));
    return events;
}

/// Rows the dense kernel's i16 sums take before they move into the i32 ones.
const narrow_rows_max = 255;

comptime {
    std.debug.assert(narrow_rows_max * 128 <= std.math.maxInt(i16));
}

// -- dense on AVX2: the events listed in chunks, their rows added two at a time ------------------

/// Events one chunk of the dense list holds: 127 pairs of rows of |w| <= 128 sum within i16.
const dense_list_max = 254;

comptime {
    std.debug.assert((dense_list_max / 2) * 256 <= std.math.maxInt(i16));
    std.debug.assert(dense_list_max % 2 == 0 and dense_list_max >= 2 * lanes);
}

/// dense on AVX2: the input's events are listed branch-free (8 channels per append, as the gather
/// lists them), a chunk of at most dense_list_max at a time, and each chunk's rows are summed two
/// events per vpmaddubsw (sumPairs) into i16, then added to the i32 potentials. One loop per chunk,
/// not one per 16 input channels with events (whose exits were mispredicted).
fn denseListed(layer: *const model.Layer, input: []const u8, potentials: []i32) u64 {
    const in = layer.input;
    const cin_padded: usize = in.channelsPadded();
    const cout_padded: u32 = @intCast(layer.synaptic.channelsPadded());
    @memcpy(potentials, layer.bias);
    // the chunk, plus the entry sumPairs may read past its end
    var list: [dense_list_max + 2]u32 = undefined;
    var count: usize = 0;
    var events: u64 = 0;
    var pixel: usize = 0;
    while (pixel < in.pixels()) : (pixel += 1) {
        const values = input[pixel * cin_padded ..][0..cin_padded];
        const row: u32 = @intCast(pixel * in.c);
        var chunk: usize = 0;
        while (chunk < cin_padded) : (chunk += lanes) {
            const bytes: VecU8 = values[chunk..][0..lanes].*;
            const mask: u16 = @bitCast(bytes != @as(VecU8, @splat(0)));
            const channel_row = row + @as(u32, @intCast(chunk));
            if (comptime compress_lists) {
                const rows = (std.simd.iota(u32, lanes) + @as(VecU32, @splat(channel_row))) * @as(VecU32, @splat(cout_padded));
                count = appendCompressed(&list, count, rows, mask);
            } else {
                count = appendEvents(&list, count, @truncate(mask), channel_row, cout_padded);
                count = appendEvents(&list, count, @truncate(mask >> 8), channel_row + 8, cout_padded);
            }
            if (count > dense_list_max - lanes) {
                addListed(layer.spike_rows, list[0..count], potentials);
                events += count;
                count = 0;
            }
        }
    }
    addListed(layer.spike_rows, list[0..count], potentials);
    events += count;
    return events * layer.synaptic.c;
}

/// potentials += the rows (i8, Cout_p each) at the listed offsets (at most dense_list_max).
fn addListed(rows: []const i8, listed: []const u32, potentials: []i32) void {
    std.debug.assert(listed.len <= dense_list_max);
    var channel: usize = 0;
    while (channel + 64 <= potentials.len) : (channel += 64) addListedPairs(2, rows, listed, channel, potentials);
    if (channel + 32 <= potentials.len) {
        addListedPairs(1, rows, listed, channel, potentials);
        channel += 32;
    }
    if (channel < potentials.len) { // the last 16 channels: one row at a time
        var acc: VecI16 = @splat(0);
        for (listed) |offset| acc +%= weightVector(i16, rows, offset + channel);
        vector.storeVector(potentials, channel, @as(VecI32, potentials[channel..][0..lanes].*) +% @as(VecI32, acc));
    }
}

inline fn addListedPairs(comptime units: usize, rows: []const i8, listed: []const u32, channel: usize, potentials: []i32) void {
    const sums = sumPairs(units, rows, listed, 0, channel);
    inline for (0..units) |u| {
        inline for (0..2) |half| {
            const offset = channel + u * 32 + half * lanes;
            vector.storeVector(potentials, offset, @as(VecI32, potentials[offset..][0..lanes].*) +% @as(VecI32, sums.inOrder(u, half)));
        }
    }
}

// -- the framed scatter (AVX-512BW, stride 1): every event's rows into a frame of i16 sums --------
//
// The sums live in a frame of (FH, FW, Cout_p) i16 (Acc) with room for every output pixel any
// event reaches, padding taps included: event (iy, ix, ci) adds its tap (ky, kx) row to frame
// pixel (iy + KH - 1 - ky, ix + KW - 1 - kx), and output pixel (oy, ox) is frame pixel
// (oy + KH - 1 - pad_top, ox + KW - 1 - pad_left). So every event adds all KH x KW of its rows at
// fixed distances from one base (the taps unrolled, no bounds per tap, no loop exit per output
// pixel: the gather's loops cost a mispredicted exit per output pixel, which on AVX-512 outweighed
// its adds); sums that fall outside the outputs are never read. The events are listed branch-free
// in chunks of at most frame_list_max (on the stack), then scattered; the output region of the
// frame is cleared once per call, and read once by the bias add (and the 2x2 max pool: the maxima
// of four i16 sums, then one widening and bias add per pooled vector).

/// Whether the framed scatter runs this conv layer on this CPU: AVX-512BW, stride 1, pads within
/// the kernel, i16 sums (model.Layer.spike_sums_fit_i16), at most frame_chunks_max i16 vectors of
/// 32 output channels.
pub fn frames(layer: *const model.Layer) bool {
    if (comptime !frame_kernels) return false;
    if (layer.spike_rows.len == 0 or !layer.isConv() or layer.isNarrowConv() or layer.padsNonZero()) return false;
    if (layer.stride_h != 1 or layer.stride_w != 1 or !layer.spike_sums_fit_i16) return false;
    if (layer.pad_top >= layer.kernel_h or layer.pad_left >= layer.kernel_w) return false;
    const cout_padded = layer.synaptic.channelsPadded();
    if (cout_padded % 32 != 0 or cout_padded / 32 > frame_chunks_max) return false;
    if (layer.input.channelsPadded() > frame_cin_max) return false;
    return FrameShape.of(layer).values() * @sizeOf(i16) <= std.math.maxInt(u32);
}

/// Whether this build has the framed scatter (other targets compile none of it).
const frame_kernels = compress_lists and limits.kernel_variants;

/// Whether event lists are appended with AVX-512's vpcompressd (appendCompressed), not bit tables.
const compress_lists = vector.has_avx512bw and lanes == 16;

/// 32-channel i16 vectors of one frame pixel the scatter's kernels are unrolled for.
const frame_chunks_max = 4;
/// Events one chunk of the framed scatter's list holds before it is scattered (FrameList).
const frame_list_max = 256;

/// The frame of the framed scatter: its size and where output pixel (0, 0) lies in it.
const FrameShape = struct {
    h: u64,
    w: u64,
    top: u64, // frame row of output row 0
    left: u64, // frame column of output column 0
    channels: u64, // Cout_p

    fn of(layer: *const model.Layer) FrameShape {
        const top = layer.kernel_h - 1 - layer.pad_top;
        const left = layer.kernel_w - 1 - layer.pad_left;
        return .{
            .h = @max(@as(u64, layer.input.h) + layer.kernel_h - 1, @as(u64, layer.synaptic.h) + top),
            .w = @max(@as(u64, layer.input.w) + layer.kernel_w - 1, @as(u64, layer.synaptic.w) + left),
            .top = top,
            .left = left,
            .channels = layer.synaptic.channelsPadded(),
        };
    }

    fn values(shape: FrameShape) u64 {
        return shape.h * shape.w * shape.channels;
    }
};

/// Bytes of the framed scatter's scratch: its frame of i16 sums.
fn frameBytes(layer: *const model.Layer) u64 {
    return FrameShape.of(layer).values() * @sizeOf(i16);
}

/// Whether the framed scatter beats the dense (VNNI) kernel on an input with `input_events`
/// non-zero values: per event and tap one row add (a load, a sign-extending load and a store per 32
/// channels), against the dense kernel's dot product per quad, tap and 16 output channels of
/// every output pixel, plus the clearing and reading of the frame. Fitted to the spike density
/// sweep of benchmarks/engine.py on AVX-512 VNNI (Zen 5).
pub fn frameWins(layer: *const model.Layer, input_events: u64) bool {
    if (!frames(layer)) return false;
    const taps = @as(u64, layer.kernel_h) * layer.kernel_w;
    const wide_chunks: u64 = layer.synaptic.channelsPadded() / 32;
    const frame_cost = input_events * taps * wide_chunks * frame_per_row + layer.synaptic.pixels() * wide_chunks * frame_per_pixel;
    const dense_cost = layer.synaptic.pixels() * taps * layer.input.channelQuads() * 2 * wide_chunks * frame_dense_per_quad;
    return frame_cost < dense_cost;
}

const frame_per_row = 4;
const frame_per_pixel = 8;
const frame_dense_per_quad = 1;

/// conv2d by the framed scatter (where `frames`): potentials i32 (OH, OW, Cout_p) before pooling,
/// or (max2x2) the pooled i32 (OH/2, OW/2, Cout_p) of a plain 2x2 max pool; input u8 (H, W, Cin_p)
/// of 0 and 1; scratch at least frameBytes. Returns the synaptic operations (events x in-bounds
/// reached taps x Cout, as the other kernels count them).
pub fn conv2dFramed(layer: *const model.Layer, comptime target: Target, input: []const u8, out: []i32, scratch: []u8) u64 {
    std.debug.assert(frames(layer));
    std.debug.assert(input.len == layer.input.valuesPadded());
    std.debug.assert(out.len == if (target == .max2x2) layer.output.valuesPadded() else layer.synaptic.valuesPadded());
    std.debug.assert(scratch.len >= frameBytes(layer));
    const shape = FrameShape.of(layer);
    const frame = @as([*]i16, @ptrCast(@alignCast(scratch.ptr)))[0..limits.usizeFrom(shape.values())];
    return framedBy(target, layer, shape, input, layer.spike_rows, frame, out);
}

fn framedBy(comptime target: Target, layer: *const model.Layer, shape: FrameShape, input: []const u8, weights: []const i8, frame: []i16, out: []i32) u64 {
    @setEvalBranchQuota(20_000);
    return switch (layer.synaptic.channelsPadded() / 32) {
        inline 1...frame_chunks_max => |chunks| switch (layer.kernel_h * 16 + layer.kernel_w) {
            3 * 16 + 3 => framed(target, chunks, 3, 3, layer, shape, input, weights, frame, out),
            5 * 16 + 5 => framed(target, chunks, 5, 5, layer, shape, input, weights, frame, out),
            else => framed(target, chunks, null, null, layer, shape, input, weights, frame, out),
        },
        else => unreachable,
    };
}

fn framed(
    comptime target: Target,
    comptime chunks: usize,
    comptime kernel_h: ?usize,
    comptime kernel_w: ?usize,
    layer: *const model.Layer,
    shape: FrameShape,
    input: []const u8,
    weights: []const i8,
    frame: []i16,
    out: []i32,
) u64 {
    const in = layer.input;
    const cout_padded: usize = chunks * 32;
    const frame_w: usize = @intCast(shape.w);
    // the output region starts zero (the rest of the frame is written, never read)
    for (0..layer.synaptic.h) |oy| {
        const first = ((oy + shape.top) * frame_w + shape.left) * cout_padded;
        @memset(frame[first..][0 .. @as(usize, layer.synaptic.w) * cout_padded], 0);
    }
    const cin_padded: usize = in.channelsPadded();
    std.debug.assert(cin_padded <= frame_cin_max);
    var list: FrameList = undefined;
    // the weight row offsets (ci * Cout_p) of a vector of channels from 0
    const channel_rows = std.simd.iota(u32, lanes) * @as(VecU32, @splat(@intCast(cout_padded)));
    const column_taps = layer.column_taps; // (held here: the list's stores could alias the layer)
    // rows listed and records kept, in locals (as list fields every pixel chained through memory)
    var count: usize = 0;
    var pixels: usize = 0;
    var reach_events: u64 = 0;
    const row_bytes = @as(usize, in.w) * cin_padded;
    for (0..in.h) |iy| {
        // a row without events costs one pass of vector tests (as the scatter's; at T = 1 nearly
        // every row of the IF model's second conv input is empty)
        if (vector.maxU8(input[iy * row_bytes ..][0..row_bytes]) == 0) continue;
        const reach_rows = layer.row_taps[iy].count;
        for (0..in.w) |ix| {
            const pixel = input[(iy * in.w + ix) * cin_padded ..][0..cin_padded];
            const first = count;
            var channel: usize = 0;
            while (channel < cin_padded) : (channel += lanes) {
                const bytes: VecU8 = pixel[channel..][0..lanes].*;
                const mask: LaneMask = @bitCast(bytes != @as(VecU8, @splat(0)));
                const rows = channel_rows + @as(VecU32, @splat(@intCast(channel * cout_padded)));
                count = appendCompressed(&list.rows, count, rows, mask);
            }
            const events = count - first;
            // the pixel's record, branch-free: written always, kept when it has events
            list.records[pixels] = .{ .first = @intCast(first), .count = @intCast(events), .base = @intCast((iy * frame_w + ix) * cout_padded) };
            list.counts[pixels] = @intCast(events);
            pixels += @intFromBool(events != 0);
            reach_events += events * reach_rows * column_taps[ix].count;
            if (count > frame_list_max) {
                list.count = count;
                list.pixels = pixels;
                scatterFramed(chunks, kernel_h, kernel_w, layer, weights, frame_w, &list, frame);
                count = 0;
                pixels = 0;
            }
        }
    }
    list.count = count;
    list.pixels = pixels;
    scatterFramed(chunks, kernel_h, kernel_w, layer, weights, frame_w, &list, frame);
    switch (target) {
        .potentials => readFramed(chunks, layer, shape, frame, out),
        .max2x2 => readFramedMax2x2(chunks, layer, shape, frame, out),
    }
    return reach_events * layer.synaptic.c;
}

/// Input channels (padded) of a layer the framed scatter takes: one pixel's events fit its list.
const frame_cin_max = 128;
/// Pixels' events a pixel with more than this many adds in a loop (fewer: unrolled per count).
const frame_counted_max = 4;

/// One chunk of the framed scatter's events (on the stack): every active pixel's events' weight
/// row offsets (ci * Cout_p), pixel after pixel, and per active pixel a record of them.
const FrameList = struct {
    const capacity = frame_list_max + frame_cin_max + lanes; // the last pixel and the appends' slack
    rows: [capacity]u32,
    records: [capacity]PixelRecord,
    counts: [capacity]u16 align(32), // the records' event counts (grouped by vector compares)
    order: [capacity + lanes]u32, // the records grouped by event count (plus a compressed store's slack)
    count: usize, // rows listed
    pixels: usize, // records kept
};

const PixelRecord = struct {
    first: u16, // of its rows in the list
    count: u16, // its events
    base: u32, // its frame pixel's offset (iy * FW + ix) * Cout_p
};

/// Every listed pixel's events' KH x KW rows into the frame: the pixels grouped by event count
/// (1 .. frame_counted_max, then more), each group with a kernel unrolled for its count, so that a
/// pixel's sums are loaded and stored once per tap however many events it has, without a
/// mispredicted exit per pixel.
fn scatterFramed(comptime chunks: usize, comptime kernel_h: ?usize, comptime kernel_w: ?usize, layer: *const model.Layer, weights: []const i8, frame_w: usize, list: *FrameList, frame: []i16) void {
    const records = list.records[0..list.pixels];
    // each bucket's record indices compressed out of vectors of 16 counts (no counter in memory
    // per record); bucket 0 stays empty: only pixels with events are kept
    var sizes: [frame_counted_max + 2]usize = @splat(0);
    var total: usize = 0;
    inline for (1..frame_counted_max + 2) |bucket| {
        const first = total;
        var index: usize = 0;
        while (index < records.len) : (index += lanes) {
            const counts: @Vector(lanes, u16) = list.counts[index..][0..lanes].*;
            const in_bucket = if (bucket <= frame_counted_max) counts == @as(@Vector(lanes, u16), @splat(bucket)) else counts > @as(@Vector(lanes, u16), @splat(frame_counted_max));
            const valid = ~@as(LaneMask, 0) >> @intCast(lanes - @min(lanes, records.len - index));
            const indices = std.simd.iota(u32, lanes) + @as(VecU32, @splat(@intCast(index)));
            total = appendCompressed(&list.order, total, indices, @as(LaneMask, @bitCast(in_bucket)) & valid);
        }
        sizes[bucket] = total - first;
    }
    var start: usize = 0;
    inline for (1..frame_counted_max + 2) |bucket| {
        const count: ?usize = if (bucket <= frame_counted_max) bucket else null;
        for (list.order[start..][0..sizes[bucket]]) |index| {
            const record = records[index];
            const rows = list.rows[record.first..][0..record.count];
            framePixel(chunks, count, kernel_h, kernel_w, layer, weights, frame_w, rows, record.base, frame);
        }
        start += sizes[bucket];
    }
}

/// One pixel's events (rows: their weight row offsets; `count` of them where known at compile
/// time) into the frame pixels its taps reach from `base`: per tap, the sums loaded, every event's
/// row added, stored. (The offsets are copied into locals first: the stores to the frame could
/// otherwise alias the list and the layer, and every tap would reload them.)
inline fn framePixel(comptime chunks: usize, comptime count: ?usize, comptime kernel_h: ?usize, comptime kernel_w: ?usize, layer: *const model.Layer, weights: []const i8, frame_w: usize, rows: []const u32, base: usize, frame: []i16) void {
    const cout_padded: usize = chunks * 32;
    const tap_stride = @as(usize, layer.input.c) * cout_padded;
    const kh: usize = kernel_h orelse layer.kernel_h;
    const kw: usize = kernel_w orelse layer.kernel_w;
    if (count) |n| {
        var offsets: [n]usize = undefined;
        inline for (0..n) |e| offsets[e] = rows[e];
        framePixelTaps(chunks, kernel_h, kernel_w, kh, kw, tap_stride, weights, frame_w, &offsets, base, frame);
    } else {
        framePixelTaps(chunks, kernel_h, kernel_w, kh, kw, tap_stride, weights, frame_w, rows, base, frame);
    }
}

inline fn framePixelTaps(comptime chunks: usize, comptime kernel_h: ?usize, comptime kernel_w: ?usize, kh: usize, kw: usize, tap_stride: usize, weights: []const i8, frame_w: usize, offsets: anytype, base: usize, frame: []i16) void {
    const cout_padded: usize = chunks * 32;
    const unrolled = @typeInfo(@TypeOf(offsets)) == .pointer and @typeInfo(@TypeOf(offsets)).pointer.size == .one;
    if (kernel_h != null and kernel_w != null and unrolled) {
        // Per kernel row, every event's row pointer advanced once and the frame's row once; within
        // it the taps lie kx * tap_stride (the same KW distances for every row and pixel, kept in
        // registers) and kx * Cout_p (an immediate) away. (Written as ((ky * KW + kx) * tap_stride)
        // every tap's offset was computed again at every pixel.)
        const n = offsets.len;
        std.debug.assert(base + ((kernel_h.? - 1) * frame_w + kernel_w.? - 1) * cout_padded + cout_padded <= frame.len);
        var rows: [n][*]const i8 = undefined;
        inline for (0..n) |e| {
            std.debug.assert(offsets[e] + (kernel_h.? * kernel_w.? - 1) * tap_stride + cout_padded <= weights.len);
            rows[e] = weights.ptr + offsets[e];
        }
        var kx_offsets: [kernel_w.?]usize = undefined;
        inline for (0..kernel_w.?) |kx| kx_offsets[kx] = kx * tap_stride;
        const ky_step = kernel_w.? * tap_stride;
        var sums = frame.ptr + base + ((kernel_h.? - 1) * frame_w + kernel_w.? - 1) * cout_padded; // tap (0, 0)'s
        inline for (0..kernel_h.?) |_| {
            inline for (0..kernel_w.?) |kx| addFramedRowsAt(chunks, n, &rows, kx_offsets[kx], sums - kx * cout_padded);
            inline for (0..n) |e| rows[e] += ky_step;
            sums -= frame_w * cout_padded;
        }
    } else if (kernel_h != null and kernel_w != null) {
        inline for (0..kernel_h.?) |ky| {
            inline for (0..kernel_w.?) |kx| addFramedRows(chunks, weights, offsets, (ky * kernel_w.? + kx) * tap_stride, frame, base + ((kernel_h.? - 1 - ky) * frame_w + (kernel_w.? - 1 - kx)) * cout_padded);
        }
    } else {
        for (0..kh) |ky| {
            for (0..kw) |kx| addFramedRows(chunks, weights, offsets, (ky * kw + kx) * tap_stride, frame, base + ((kh - 1 - ky) * frame_w + (kw - 1 - kx)) * cout_padded);
        }
    }
}

/// frame[at..][0..Cout_p] += the rows weights[offsets[e] + tap..][0..Cout_p] of every event e (i8
/// sign-extended), 32 channels a vector; `offsets` an array (unrolled) or a slice.
inline fn addFramedRows(comptime chunks: usize, weights: []const i8, offsets: anytype, tap: usize, frame: []i16, at: usize) void {
    const unrolled = @typeInfo(@TypeOf(offsets)) == .pointer and @typeInfo(@TypeOf(offsets)).pointer.size == .one;
    inline for (0..chunks) |k| {
        var sums: VecI16x32 = frame[at + k * 32 ..][0..32].*;
        if (unrolled) {
            inline for (0..offsets.len) |e| {
                const bytes: VecI8x32 = weights[offsets[e] + tap + k * 32 ..][0..32].*;
                sums +%= @as(VecI16x32, bytes);
            }
        } else {
            for (offsets) |row| {
                const bytes: VecI8x32 = weights[row + tap + k * 32 ..][0..32].*;
                sums +%= @as(VecI16x32, bytes);
            }
        }
        const target: *align(2) VecI16x32 = @ptrCast(frame[at + k * 32 ..][0..32]);
        target.* = sums;
    }
}

/// sums[0..Cout_p] += the rows rows[e][tap..][0..Cout_p] of every event e (i8 sign-extended), 32
/// channels a vector (framePixelTaps' unrolled form: its callers assert the bounds).
inline fn addFramedRowsAt(comptime chunks: usize, comptime n: usize, rows: *const [n][*]const i8, tap: usize, sums: [*]i16) void {
    inline for (0..chunks) |k| {
        var acc: VecI16x32 = sums[k * 32 ..][0..32].*;
        inline for (0..n) |e| {
            const bytes: VecI8x32 = rows[e][tap + k * 32 ..][0..32].*;
            acc +%= @as(VecI16x32, bytes);
        }
        const target: *align(2) VecI16x32 = @ptrCast(sums[k * 32 ..][0..32]);
        target.* = acc;
    }
}

/// potentials (OH, OW, Cout_p) = the frame's output region widened, plus the bias.
fn readFramed(comptime chunks: usize, layer: *const model.Layer, shape: FrameShape, frame: []const i16, potentials: []i32) void {
    const cout_padded: usize = chunks * 32;
    const frame_w: usize = @intCast(shape.w);
    for (0..layer.synaptic.h) |oy| {
        for (0..layer.synaptic.w) |ox| {
            const at = ((oy + shape.top) * frame_w + ox + shape.left) * cout_padded;
            const to = (oy * layer.synaptic.w + ox) * cout_padded;
            inline for (0..2 * chunks) |k| {
                const sums: VecI16 = frame[at + k * lanes ..][0..lanes].*;
                const bias: VecI32 = layer.bias[k * lanes ..][0..lanes].*;
                vector.storeVector(potentials, to + k * lanes, @as(VecI32, sums) +% bias);
            }
        }
    }
}

/// pooled (OH/2, OW/2, Cout_p) = the maximum of each 2x2 window's frame sums, widened, plus the
/// bias (the bias is the same for the four and no sum overflows: the max of the potentials).
fn readFramedMax2x2(comptime chunks: usize, layer: *const model.Layer, shape: FrameShape, frame: []const i16, pooled: []i32) void {
    const cout_padded: usize = chunks * 32;
    const frame_w: usize = @intCast(shape.w);
    const row_step = frame_w * cout_padded;
    for (0..layer.output.h) |py| {
        for (0..layer.output.w) |px| {
            const at = ((2 * py + shape.top) * frame_w + 2 * px + shape.left) * cout_padded;
            const to = (py * layer.output.w + px) * cout_padded;
            inline for (0..2 * chunks) |k| {
                const o = at + k * lanes;
                const a: VecI16 = frame[o..][0..lanes].*;
                const b: VecI16 = frame[o + cout_padded ..][0..lanes].*;
                const c: VecI16 = frame[o + row_step ..][0..lanes].*;
                const d: VecI16 = frame[o + row_step + cout_padded ..][0..lanes].*;
                const bias: VecI32 = layer.bias[k * lanes ..][0..lanes].*;
                vector.storeVector(pooled, to + k * lanes, @as(VecI32, @max(@max(a, b), @max(c, d))) +% bias);
            }
        }
    }
}
