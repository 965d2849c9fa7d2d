//! Root of `zig build test`: every file's unit tests, plus end-to-end tests that write small .esnn
//! files (docs/format.md) and compare the engine with naive loops written from docs/semantics.md.

const std = @import("std");

test {
    _ = @import("limits.zig");
    _ = @import("status.zig");
    _ = @import("loader.zig");
    _ = @import("planner.zig");
    _ = @import("engine.zig");
    _ = @import("exports.zig");
    _ = @import("stream.zig");
    _ = @import("kernels/vector.zig");
    _ = @import("kernels/neuron.zig");
    _ = @import("kernels/pooling.zig");
    _ = @import("kernels/conv2d.zig");
    _ = @import("kernels/conv2d_dense.zig");
    _ = @import("kernels/depthwise2d.zig");
    _ = @import("kernels/separable2d.zig");
    _ = @import("kernels/dense.zig");
    _ = @import("kernels/add.zig");
    _ = @import("kernels/concat.zig");
    _ = @import("kernels/frame.zig");
}
