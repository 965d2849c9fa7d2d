//! The frame: a padded copy of a layer's input in the arena (model.Layer.usesFrame), read by the
//! output-stationary kernels (conv2d_dense.zig, depthwise2d.zig) so that no tap of a window needs a
//! bounds test. Pixels hold model.Layer.frameChannels bytes each; a depthwise stage with depth
//! multiplier M holds input channel o / M at channel o, so that its kernels read every output
//! channel's input at that channel. The border holds the pad values (model.Layer.pad_pixel, zero
//! when empty): written once at context init (`paint`), never again.
//! A separable2d layer keeps no frame: it fills the rows its windows read one at a time into a
//! small ring (`fillRow`, kernels/separable2d.zig), the border computed as each row is filled.

const std = @import("std");
const model = @import("../model.zig");
const vector = @import("vector.zig");

/// Write the pad pixel into every pixel of a freshly zeroed frame (the interior is overwritten by
/// every `fill`). Nothing to do when every pad value is 0.
pub fn paint(layer: *const model.Layer, frame: []u8) void {
    if (!layer.usesFrame() or !layer.padsNonZero()) return;
    std.debug.assert(frame.len == layer.frameBytes());
    const frame_channels = layer.frameChannels();
    std.debug.assert(layer.pad_pixel.len == frame_channels);
    const pixels = @as(usize, layer.frameHeight()) * layer.frameWidth();
    for (0..pixels) |pixel| @memcpy(frame[pixel * frame_channels ..][0..frame_channels], layer.pad_pixel);
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
    var y: u32 = 0;
    while (y < in.h) : (y += 1) {
        const target_row = ((@as(usize, y) + layer.pad_top) * frame_width + layer.pad_left) * frame_channels;
        const source_row = @as(usize, y) * in.w * cin_padded;
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
    return vector.countNonZeroU8(target) != 0;
}

fn padPixel(layer: *const model.Layer, pixel: []u8) void {
    if (layer.padsNonZero()) @memcpy(pixel, layer.pad_pixel) else @memset(pixel, 0);
}

/// `count` pixels: target channel o = source channel o / multiplier, for o < channels * multiplier.
fn repeatChannels(target: []u8, target_stride: usize, source: []const u8, source_stride: usize, channels: usize, multiplier: usize, count: usize) void {
    for (0..count) |x| {
        const pixel = target[x * target_stride ..][0 .. channels * multiplier];
        for (0..channels) |c| @memset(pixel[c * multiplier ..][0..multiplier], source[x * source_stride + c]);
    }
}

/// Copy `count` pixels of `channels` bytes from `source` (`source_stride` bytes per pixel) to
/// `target` (`target_stride` bytes per pixel). Pixels of 1..3 bytes (a grey or RGB image, a
/// spectrogram) go through a byte loop, not a memcpy call per pixel.
pub fn copyPixels(target: []u8, target_stride: usize, source: []const u8, source_stride: usize, channels: usize, count: usize) void {
    switch (channels) {
        inline 1...3 => |small| for (0..count) |x| {
            inline for (0..small) |k| target[x * target_stride + k] = source[x * source_stride + k];
        },
        else => for (0..count) |x| {
            @memcpy(target[x * target_stride ..][0..channels], source[x * source_stride ..][0..channels]);
        },
    }
}

test "a depth multiplier repeats every input channel M times" {
    const source = [_]u8{ 1, 2, 0, 0, 3, 4, 0, 0 }; // two pixels of 2 channels, stride 4
    var target: [2 * 8]u8 = @splat(0xaa);
    repeatChannels(&target, 8, &source, 4, 2, 3, 2);
    try std.testing.expectEqualSlices(u8, &.{ 1, 1, 1, 2, 2, 2, 0xaa, 0xaa, 3, 3, 3, 4, 4, 4, 0xaa, 0xaa }, &target);
}
