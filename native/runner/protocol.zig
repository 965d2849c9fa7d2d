//! The device runner's link protocol (docs/protocol.md): framing, checksums and the parse of a
//! frame header. Pure functions over byte slices, no I/O: main.zig drives them, the fuzz target
//! (native/runner/fuzz.zig) calls `parseHeader` and `Session.handle` on arbitrary bytes.
//!
//! A frame (all integers little-endian):
//!   0  magic        u32  "ESNP" (0x504E5345)
//!   4  version      u16  protocol_version
//!   6  type         u16  Type
//!   8  sequence     u32  the request's number; a reply repeats it
//!  12  length       u32  payload bytes that follow the header
//!  16  payload_crc  u32  CRC-32 (ISO-HDLC, zlib's crc32) of the payload
//!  20  header_crc   u32  CRC-32 of bytes 0..20
//!  24  payload      [length]u8

const std = @import("std");

pub const magic: u32 = 0x504E5345; // "ESNP" in file order
pub const protocol_version: u16 = 2; // 2: RUN_TRACE / TRACE (the output after every timestep, early exit)
pub const header_bytes = 24;

/// Message types. Requests go host -> device; each gets exactly one reply (its type | 0x80, or error).
pub const Type = enum(u16) {
    hello = 0x01, // -> info
    load = 0x02, // payload: the .esnn bytes -> loaded
    run = 0x03, // payload: RunRequest then the input -> result
    stats = 0x04, // -> stats_reply
    reset = 0x05, // drop the loaded model -> ok
    run_trace = 0x06, // payload: RunRequest (its last field the early-exit margin) then the input -> trace
    info = 0x81,
    loaded = 0x82,
    result = 0x83,
    stats_reply = 0x84,
    ok = 0x85,
    trace = 0x86,
    @"error" = 0xFF, // payload: u32 code, u32 request type, message (UTF-8)
    _,
};

/// Codes of an error reply (docs/protocol.md lists what each means).
pub const ErrorCode = enum(u32) {
    header = 1, // bad magic or header CRC: the stream was resynchronized (input drained)
    version = 2, // the frame's protocol version is not this runner's
    oversized = 3, // length above the runner's frame limit
    checksum = 4, // payload CRC mismatch
    sequence = 5, // sequence number is not the expected one
    truncated = 6, // the payload stopped arriving before `length` bytes
    unknown_type = 7, // not a request type
    state = 8, // e.g. RUN before LOAD
    payload = 9, // the payload's size or fields are wrong for its type
    fit = 10, // the model does not fit the runner's memory budget (the reason says why)
    engine = 11, // the engine refused (status name and message follow)
};

pub const Header = struct {
    version: u16,
    kind: Type,
    sequence: u32,
    length: u32,
    payload_crc: u32,
};

pub const HeaderError = enum { magic, header_crc, version, oversized };

pub const Parsed = union(enum) {
    ok: Header,
    /// `header` is set when the header CRC was good (its length and sequence can be trusted).
    bad: struct { why: HeaderError, header: ?Header },
};

pub fn crc32(bytes: []const u8) u32 {
    return std.hash.Crc32.hash(bytes);
}

/// Parse and check a frame header; never fails on any bytes.
pub fn parseHeader(bytes: *const [header_bytes]u8, payload_bytes_max: u32) Parsed {
    if (std.mem.readInt(u32, bytes[0..4], .little) != magic) return .{ .bad = .{ .why = .magic, .header = null } };
    if (std.mem.readInt(u32, bytes[20..24], .little) != crc32(bytes[0..20])) {
        return .{ .bad = .{ .why = .header_crc, .header = null } };
    }
    const header: Header = .{
        .version = std.mem.readInt(u16, bytes[4..6], .little),
        .kind = @enumFromInt(std.mem.readInt(u16, bytes[6..8], .little)),
        .sequence = std.mem.readInt(u32, bytes[8..12], .little),
        .length = std.mem.readInt(u32, bytes[12..16], .little),
        .payload_crc = std.mem.readInt(u32, bytes[16..20], .little),
    };
    if (header.version != protocol_version) return .{ .bad = .{ .why = .version, .header = header } };
    if (header.length > payload_bytes_max) return .{ .bad = .{ .why = .oversized, .header = header } };
    return .{ .ok = header };
}

/// Write a header for `payload` (already in place after it) into `out`.
pub fn writeHeader(out: *[header_bytes]u8, kind: Type, sequence: u32, payload: []const u8) void {
    std.mem.writeInt(u32, out[0..4], magic, .little);
    std.mem.writeInt(u16, out[4..6], protocol_version, .little);
    std.mem.writeInt(u16, out[6..8], @intFromEnum(kind), .little);
    std.mem.writeInt(u32, out[8..12], sequence, .little);
    std.mem.writeInt(u32, out[12..16], @intCast(payload.len), .little);
    std.mem.writeInt(u32, out[16..20], crc32(payload), .little);
    std.mem.writeInt(u32, out[20..24], crc32(out[0..20]), .little);
}

/// The fixed part of a RUN payload; the input (batch * input_timesteps * H * W * C bytes) follows.
pub const run_request_bytes = 16;
pub const RunRequest = struct {
    batch: u32,
    input_timesteps: u32,
    timesteps: u32,
    flags: u32, // RUN: 0, reserved; RUN_TRACE: the early-exit margin (an i32 >= 0; 0: none)

    pub fn parse(bytes: *const [run_request_bytes]u8) RunRequest {
        return .{
            .batch = std.mem.readInt(u32, bytes[0..4], .little),
            .input_timesteps = std.mem.readInt(u32, bytes[4..8], .little),
            .timesteps = std.mem.readInt(u32, bytes[8..12], .little),
            .flags = std.mem.readInt(u32, bytes[12..16], .little),
        };
    }
};

test "a written header parses back; one flipped bit anywhere is refused" {
    var frame: [header_bytes + 3]u8 = undefined;
    @memcpy(frame[header_bytes..], "abc");
    writeHeader(frame[0..header_bytes], .run, 7, frame[header_bytes..]);
    const parsed = parseHeader(frame[0..header_bytes], 1024);
    try std.testing.expect(parsed == .ok);
    try std.testing.expectEqual(@as(u32, 3), parsed.ok.length);
    try std.testing.expectEqual(crc32("abc"), parsed.ok.payload_crc);
    for (0..header_bytes * 8) |bit| {
        var copy = frame;
        copy[bit / 8] ^= @as(u8, 1) << @intCast(bit % 8);
        try std.testing.expect(parseHeader(copy[0..header_bytes], 1024) == .bad);
    }
    try std.testing.expect(parseHeader(frame[0..header_bytes], 2) == .bad); // oversized
}
