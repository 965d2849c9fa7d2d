//! The frame: a zero-padded copy of a layer's input in the arena (model.Layer.usesFrame), read by
//! the output-stationary kernels (conv2d_dense.zig, depthwise2d.zig) so that no tap of a window
//! needs a bounds test. Pixels hold model.Layer.frameChannels bytes each.

const std = @import("std");
const model = @import("../model.zig");

/// Copy the input's channels (a narrow conv's real channels, a wide conv's channel quads, a
/// depthwise layer's padded channels) into the frame's interior; the border stays zero (zeroed at
/// context init, never written). Returns the frame.
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
        if (frame_channels == cin_padded) {
            const row_bytes = @as(usize, in.w) * cin_padded;
            @memcpy(frame[target_row..][0..row_bytes], input[source_row..][0..row_bytes]);
            continue;
        }
        copyPixels(frame[target_row..], frame_channels, input[source_row..], cin_padded, frame_channels, in.w);
    }
    return frame;
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
