//! The frame: a padded copy of a layer's input in the arena (model.Layer.usesFrame), read by the
//! output-stationary kernels (conv2d_dense.zig, depthwise2d.zig) so that no tap of a window needs a
//! bounds test. Pixels hold model.Layer.frameChannels bytes each; a depthwise stage with depth
//! multiplier M holds input channel o / M at channel o, so that its kernels read every output
//! channel's input at that channel. The border holds the pad values (model.Layer.pad_pixel, zero
//! when empty): written once at context init (`paint`), never again.
//! A separable2d layer keeps no frame: it fills the rows its windows read one at a time into a
//! small ring (`fillRow`, kernels/separable2d.zig), the border computed as each row is filled.
//! A depthwise stage of at most 8 channels with stride 1 along rows keeps its frame packed
//! (`packedChannels`): pixels 4 or 8 bytes apart, so that one vector of 16 bytes holds one tap of
//! 4 or 2 neighbouring windows (depthwise2d.zig packedRow), not one window and 12 or 8 zero lanes.

const std = @import("std");
const limits = @import("../limits.zig");
const model = @import("../model.zig");
const vector = @import("vector.zig");

/// Bytes between neighbouring pixels of a packed frame (its first 4 or 8 channels: every channel of a
/// depthwise stage of at most 8), 0 when the frame is not packed: packed when the stage has no depth
/// multiplier, stride 1 along rows (neighbouring windows one pixel apart) and a frame (a separable2d
/// ring row, or a depthwise2d layer that does not read its input directly). The packed frame takes
/// at most half the bytes of frameBytes; the rest is slack that the last vector of a row reads.
pub fn packedChannels(layer: *const model.Layer) u32 {
    if (!layer.isDepthwise() or layer.depth_multiplier != 1 or layer.stride_w != 1) return 0;
    if (layer.kind == .depthwise2d and !layer.usesFrame()) return 0;
    const channels = layer.depthwiseChannels();
    return if (channels <= 4) 4 else if (channels <= 8) 8 else 0;
}

/// Bytes between neighbouring pixels of the layer's frame (packed or not).
pub fn pixelBytes(layer: *const model.Layer) u32 {
    const packed_channels = packedChannels(layer);
    return if (packed_channels != 0) packed_channels else layer.frameChannels();
}

/// Write the pad pixel into every pixel of a freshly zeroed frame (the interior is overwritten by
/// every `fill`). Nothing to do when every pad value is 0.
pub fn paint(layer: *const model.Layer, frame: []u8) void {
    if (!layer.usesFrame() or !layer.padsNonZero()) return;
    std.debug.assert(frame.len == layer.frameBytes());
    std.debug.assert(layer.pad_pixel.len == layer.frameChannels());
    const pixel_bytes = pixelBytes(layer);
    const pixels = @as(usize, layer.frameHeight()) * layer.frameWidth();
    for (0..pixels) |pixel| @memcpy(frame[pixel * pixel_bytes ..][0..pixel_bytes], layer.pad_pixel[0..pixel_bytes]);
}

/// Copy the input's channels (a narrow conv's real channels, a wide conv's channel quads, a
/// depthwise layer's padded channels, each repeated M times with a depth multiplier) into the
/// frame's interior; the border keeps its pad values. Returns the frame.
pub fn fill(layer: *const model.Layer, input: []const u8, frame: []u8) []const u8 {
    std.debug.assert(frame.len == layer.frameBytes());
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    std.debug.assert(input.len == in.valuesPadded());
    const frame_channels = layer.frameChannels();
    const frame_width = layer.frameWidth();
    const packed_channels = packedChannels(layer);
    var y: u32 = 0;
    while (y < in.h) : (y += 1) {
        const source_row = @as(usize, y) * in.w * cin_padded;
        if (packed_channels != 0) {
            const target = ((@as(usize, y) + layer.pad_top) * frame_width + layer.pad_left) * packed_channels;
            packPixels(frame[target..], input[source_row..], cin_padded, packed_channels, in.w);
            continue;
        }
        const target_row = ((@as(usize, y) + layer.pad_top) * frame_width + layer.pad_left) * frame_channels;
        if (layer.isDepthwise() and layer.depth_multiplier > 1) {
            repeatChannels(frame[target_row..], frame_channels, input[source_row..], cin_padded, in.c, layer.depth_multiplier, in.w);
            continue;
        }
        if (frame_channels == cin_padded) {
            const row_bytes = @as(usize, in.w) * cin_padded;
            @memcpy(frame[target_row..][0..row_bytes], input[source_row..][0..row_bytes]);
            continue;
        }
        copyPixels(frame[target_row..], frame_channels, input[source_row..], cin_padded, frame_channels, in.w);
    }
    return frame;
}

/// Frame row `row` of a depthwise stage (frameWidth pixels of frameChannels bytes, as `fill` and
/// `paint` would leave it) into `target`: input row row - pad_top with the pad values around it,
/// or pad values only. Returns whether any of its bytes is non-zero.
pub fn fillRow(layer: *const model.Layer, input: []const u8, row: u32, target: []u8) bool {
    std.debug.assert(layer.isDepthwise() and row < layer.frameHeight());
    const in = layer.input;
    const cin_padded = in.channelsPadded();
    const frame_channels = layer.frameChannels();
    const frame_width = layer.frameWidth();
    std.debug.assert(target.len == @as(usize, frame_width) * frame_channels);
    std.debug.assert(input.len == in.valuesPadded());
    const inside = row >= layer.pad_top and row - layer.pad_top < in.h;
    const first: u32 = if (inside) layer.pad_left else frame_width; // interior columns [first, end)
    const end: u32 = if (inside) layer.pad_left + in.w else frame_width;
    const packed_channels = packedChannels(layer);
    if (packed_channels != 0) {
        // the row's first frameWidth * packed_channels bytes; the rest of the slot is slack
        for (0..first) |x| padPixel(layer, target[x * packed_channels ..][0..packed_channels]);
        for (end..frame_width) |x| padPixel(layer, target[x * packed_channels ..][0..packed_channels]);
        if (inside) {
            const source = input[@as(usize, row - layer.pad_top) * in.w * cin_padded ..][0 .. @as(usize, in.w) * cin_padded];
            packPixels(target[@as(usize, first) * packed_channels ..], source, cin_padded, packed_channels, in.w);
        }
        return !std.mem.allEqual(u8, target[0 .. @as(usize, frame_width) * packed_channels], 0);
    }
    for (0..first) |x| padPixel(layer, target[x * frame_channels ..][0..frame_channels]);
    for (end..frame_width) |x| padPixel(layer, target[x * frame_channels ..][0..frame_channels]);
    if (inside) {
        const source = input[@as(usize, row - layer.pad_top) * in.w * cin_padded ..][0 .. @as(usize, in.w) * cin_padded];
        const interior = target[@as(usize, first) * frame_channels ..][0 .. @as(usize, in.w) * frame_channels];
        if (layer.depth_multiplier > 1) {
            @memset(interior, 0); // the padding lanes past C * M
            repeatChannels(interior, frame_channels, source, cin_padded, in.c, layer.depth_multiplier, in.w);
        } else {
            std.debug.assert(frame_channels == cin_padded);
            @memcpy(interior, source);
        }
    }
    return vector.anyNonZeroU8(target);
}

fn padPixel(layer: *const model.Layer, pixel: []u8) void {
    if (layer.padsNonZero()) @memcpy(pixel, layer.pad_pixel[0..pixel.len]) else @memset(pixel, 0);
}

/// `count` pixels: the first `packed_channels` (4 or 8) bytes of each source pixel (`source_stride`
/// bytes apart) to `target`, packed_channels bytes apart.
fn packPixels(target: []u8, source: []const u8, source_stride: usize, packed_channels: u32, count: usize) void {
    switch (packed_channels) {
        inline 4, 8 => |bytes| for (0..count) |x| {
            target[x * bytes ..][0..bytes].* = source[x * source_stride ..][0..bytes].*;
        },
        else => unreachable,
    }
}

/// `count` pixels: target channel o = source channel o / multiplier, for o < channels * multiplier.
/// A multiplier of 2, 4 or 8 into pixels of whole vectors (a frame's) goes through repeatVectors on
/// 64-bit targets, which writes every channel of each target pixel (the padding lanes too: zero, see
/// there); a 32-bit core keeps the byte loop (less code).
fn repeatChannels(target: []u8, target_stride: usize, source: []const u8, source_stride: usize, channels: usize, multiplier: usize, count: usize) void {
    if (limits.kernel_variants and target_stride % vector.lanes == 0 and source_stride % vector.lanes == 0 and target_stride <= multiplier * source_stride) {
        switch (multiplier) {
            inline 2, 4, 8 => |m| return repeatVectors(m, target, target_stride, source, source_stride, count),
            else => {},
        }
    }
    for (0..count) |x| {
        const pixel = target[x * target_stride ..][0 .. channels * multiplier];
        for (0..channels) |c| {
            const value = source[x * source_stride + c];
            for (pixel[c * multiplier ..][0..multiplier]) |*byte| byte.* = value; // (a @memset was a call per channel)
        }
    }
}

/// repeatChannels by vectors: each vector j of a target pixel is lanes / m source bytes from
/// channel j * lanes / m on, each repeated m times (one shuffle). Lanes past channels * m read the
/// source pixel's padding lanes, which hold 0 like every buffer's (vector.zig), and stay inside it:
/// target_stride <= m * source_stride.
fn repeatVectors(comptime m: usize, target: []u8, target_stride: usize, source: []const u8, source_stride: usize, count: usize) void {
    const lanes = vector.lanes;
    const part = lanes / m; // source bytes per target vector
    const mask = comptime blk: {
        var repeat: [lanes]i32 = undefined;
        for (&repeat, 0..) |*lane, i| lane.* = @intCast(i / m);
        break :blk repeat;
    };
    for (0..count) |x| {
        var offset: usize = 0;
        while (offset < target_stride) : (offset += lanes) {
            const piece: @Vector(part, u8) = source[x * source_stride + offset / m ..][0..part].*;
            target[x * target_stride + offset ..][0..lanes].* = @shuffle(u8, piece, undefined, mask);
        }
    }
}

/// Copy `count` pixels of `channels` bytes from `source` (`source_stride` bytes per pixel) to
/// `target` (`target_stride` bytes per pixel). On 64-bit targets (limits.kernel_variants) pixels of
/// 2 to 16 bytes (an RGB image, a conv's 8 channels: the model input into its buffer, a layer's
/// input into its frame) go one 4-, 8- or 16-byte piece per pixel, not a byte loop or a memcpy call
/// per pixel: the
/// piece's bytes past `channels` are written as zero, into the target pixel's padding lanes (which
/// hold 0 in every buffer) or onto the next pixel's bytes (rewritten by the next pixel's piece or
/// copy); pieces run only while they stay inside the `count` pixels on both sides (a frame row's
/// border or the next buffer is never touched), the last pixels by an exact copy.
pub fn copyPixels(target: []u8, target_stride: usize, source: []const u8, source_stride: usize, channels: usize, count: usize) void {
    if (count == 0) return;
    if (limits.kernel_variants) {
        switch (channels) {
            // one byte (a spectrogram): a byte per pixel either way; the byte loop measured no slower
            1 => for (0..count) |x| {
                target[x * target_stride] = source[x * source_stride];
            },
            inline 2...16 => |small| copyPieces(small, target, target_stride, source, source_stride, count),
            else => copyEach(target, target_stride, source, source_stride, channels, count),
        }
    } else switch (channels) { // a 32-bit core: the byte loop and memcpy calls (less code)
        inline 1...3 => |small| for (0..count) |x| {
            inline for (0..small) |k| target[x * target_stride + k] = source[x * source_stride + k];
        },
        else => copyEach(target, target_stride, source, source_stride, channels, count),
    }
}

fn copyEach(target: []u8, target_stride: usize, source: []const u8, source_stride: usize, channels: usize, count: usize) void {
    for (0..count) |x| {
        @memcpy(target[x * target_stride ..][0..channels], source[x * source_stride ..][0..channels]);
    }
}

/// copyPixels of `small` (2..16) channels, a piece per pixel (see there).
inline fn copyPieces(comptime small: usize, target: []u8, target_stride: usize, source: []const u8, source_stride: usize, count: usize) void {
    const piece = comptime if (small <= 4) 4 else if (small <= 8) 8 else 16;
    // an integer of 4 or 8 bytes (a vector of 4 bytes was lowered to byte moves), else a vector
    const Piece = if (piece == 16) @Vector(16, u8) else if (piece == 8) u64 else u32;
    const keep: Piece = comptime if (piece == 16) blk: {
        var lanes_kept: [16]u8 = undefined;
        for (&lanes_kept, 0..) |*lane, i| lane.* = if (i < small) 0xff else 0;
        break :blk lanes_kept;
    } else (1 << (8 * small)) - 1;
    const pieces = @min(count, piecesWithin((count - 1) * target_stride + small, target_stride, piece), piecesWithin((count - 1) * source_stride + small, source_stride, piece));
    for (0..pieces) |x| {
        const values: Piece = @bitCast(source[x * source_stride ..][0..piece].*);
        target[x * target_stride ..][0..piece].* = @bitCast(values & keep);
    }
    for (pieces..count) |x| {
        target[x * target_stride ..][0..small].* = source[x * source_stride ..][0..small].*;
    }
}

/// The pixels x (from 0, `stride` bytes apart) whose piece [x * stride, x * stride + piece) ends by
/// `end`.
fn piecesWithin(end: usize, stride: usize, piece: usize) usize {
    return if (end < piece) 0 else (end - piece) / stride + 1;
}

test "pixels of 1..16 bytes copy by pieces without a byte past the last pixel" {
    @setEvalBranchQuota(10_000);
    inline for (1..18) |channels| {
        for ([_]usize{ channels, 4, 8, 16, 32 }) |target_stride| {
            if (target_stride < channels) continue;
            for ([_]usize{ channels, 16, 32 }) |source_stride| {
                if (source_stride < channels) continue;
                for (0..6) |count| {
                    var source: [6 * 32]u8 = undefined;
                    for (&source, 0..) |*byte, i| byte.* = @intCast(i % 251 + 1);
                    var target: [6 * 32 + 16]u8 = @splat(0);
                    const end = if (count == 0) 0 else (count - 1) * target_stride + channels;
                    @memset(target[end..], 0xee); // past the last pixel: must stay
                    copyPixels(&target, target_stride, source[0 .. if (count == 0) 0 else (count - 1) * source_stride + channels], source_stride, channels, count);
                    for (0..count) |x| for (0..target_stride) |k| {
                        if (x * target_stride + k >= end) break;
                        const want: u8 = if (k < channels) source[x * source_stride + k] else 0;
                        try std.testing.expectEqual(want, target[x * target_stride + k]);
                    };
                    for (target[end..]) |byte| try std.testing.expectEqual(@as(u8, 0xee), byte);
                }
            }
        }
    }
}

test "a packed row keeps the first 4 bytes of each pixel" {
    const source = [_]u8{ 1, 2, 3, 4, 9, 9, 9, 9, 5, 6, 7, 8, 9, 9, 9, 9 }; // two pixels of 8 bytes
    var target: [12]u8 = @splat(0xaa);
    packPixels(&target, &source, 8, 4, 2);
    try std.testing.expectEqualSlices(u8, &.{ 1, 2, 3, 4, 5, 6, 7, 8, 0xaa, 0xaa, 0xaa, 0xaa }, &target);
}

test "a depth multiplier of 2, 4 or 8 repeats whole vectors of channels, the padding lanes zero" {
    if (!limits.kernel_variants) return error.SkipZigTest; // the byte loop leaves the padding lanes alone
    inline for (.{ 2, 4, 8 }) |m| {
        var source: [2 * 32]u8 = @splat(0); // two pixels of 32 padded channels, 5 real ones
        for (0..2) |x| for (0..5) |c| {
            source[x * 32 + c] = @intCast(10 * x + c + 1);
        };
        const stride = comptime (5 * m + 15) / 16 * 16;
        var target: [2 * stride]u8 = @splat(0xaa);
        repeatChannels(&target, stride, &source, 32, 5, m, 2);
        for (0..2) |x| for (0..stride) |o| {
            const expected: u8 = if (o < 5 * m) @intCast(10 * x + o / m + 1) else 0;
            try std.testing.expectEqual(expected, target[x * stride + o]);
        };
    }
}

test "a depth multiplier repeats every input channel M times" {
    const source = [_]u8{ 1, 2, 0, 0, 3, 4, 0, 0 }; // two pixels of 2 channels, stride 4
    var target: [2 * 8]u8 = @splat(0xaa);
    repeatChannels(&target, 8, &source, 4, 2, 3, 2);
    try std.testing.expectEqualSlices(u8, &.{ 1, 1, 1, 2, 2, 2, 0xaa, 0xaa, 3, 3, 3, 4, 4, 4, 0xaa, 0xaa }, &target);
}
