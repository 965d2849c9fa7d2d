//! Status codes returned across the C ABI, and the message that goes with them.

const std = @import("std");

/// Keep in sync with native/include/edgesnn.h (tests/test_native.py checks the header).
pub const Status = enum(c_int) {
    ok = 0,
    /// A null pointer, a zero count, an unaligned or too small buffer given by the caller.
    argument = 1,
    /// The bytes end before a header, table, section or tensor says they do.
    truncated = 2,
    /// Not an .esnn file (magic), or header_bytes / file_bytes wrong.
    magic = 3,
    /// A major version this reader does not know.
    version = 4,
    /// A CRC-32 does not match.
    checksum = 5,
    /// The section table: count, alignment, bounds, overlap, required tags.
    section = 6,
    /// The GRPH model record or a layer record: kinds, inputs, shapes, bit widths, geometry.
    layer = 7,
    /// A tensor slot: offset, length or alignment inside TENS.
    tensor = 8,
    /// A parameter outside its range (shift, multiplier, threshold, leak).
    range = 9,
    /// The int32 overflow bound of docs/semantics.md is exceeded.
    overflow = 10,
    /// A named limit of native/src/limits.zig is exceeded.
    limit = 11,
    /// An input value is larger than 2^input_bits - 1.
    input = 12,
};

pub fn name(status: Status) [:0]const u8 {
    return switch (status) {
        .ok => "ok",
        .argument => "argument",
        .truncated => "truncated",
        .magic => "magic",
        .version => "version",
        .checksum => "checksum",
        .section => "section",
        .layer => "layer",
        .tensor => "tensor",
        .range => "range",
        .overflow => "overflow",
        .limit => "limit",
        .input => "input",
    };
}

/// The status and message of a failed call. The message goes into a caller's buffer (possibly
/// empty) and is always NUL-terminated.
pub const Diagnostic = struct {
    buffer: []u8,
    status: Status = .ok,

    pub const Error = error{Invalid};

    /// Record the status and message; return error.Invalid so callers can `return diag.fail(...)`.
    pub fn fail(diag: *Diagnostic, status: Status, comptime fmt: []const u8, args: anytype) Error {
        std.debug.assert(status != .ok);
        diag.status = status;
        if (diag.buffer.len == 0) return error.Invalid;
        const text_max = diag.buffer.len - 1;
        const written = std.fmt.bufPrint(diag.buffer[0..text_max], fmt, args) catch |err| switch (err) {
            error.NoSpaceLeft => diag.buffer[0..text_max],
        };
        diag.buffer[written.len] = 0;
        return error.Invalid;
    }

    pub fn message(diag: *const Diagnostic) []const u8 {
        return std.mem.sliceTo(diag.buffer, 0);
    }
};

test "diagnostic truncates and terminates" {
    var buffer: [8]u8 = undefined;
    var diag: Diagnostic = .{ .buffer = &buffer };
    const result: Diagnostic.Error!void = diag.fail(.layer, "layer {d} is wrong", .{12});
    try std.testing.expectError(error.Invalid, result);
    try std.testing.expectEqual(Status.layer, diag.status);
    try std.testing.expectEqualStrings("layer 1", diag.message());
}
