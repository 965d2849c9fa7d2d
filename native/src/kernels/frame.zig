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
        var x: u32 = 0;
        while (x < in.w) : (x += 1) {
            @memcpy(frame[target_row + x * frame_channels ..][0..frame_channels], input[source_row + x * cin_padded ..][0..frame_channels]);
        }
    }
    return frame;
}
