//! The runner's frame handling as a fuzz target (docs/fuzzing.md): `esnn_runner_fuzz_one` feeds
//! bytes to `session.serve` through an in-memory link, as if they arrived on the wire, and checks
//! every reply the runner writes is a well-formed frame. Built into libedgesnn_runner_fuzz.so with
//! the engine (native/fuzz/build.sh) and driven by atheris (native/fuzz/fuzz_frames.py).
//!
//! Input: the first byte picks the mode. Even: the rest is the raw byte stream (exercises magic,
//! header CRC, version, length, truncation and resynchronization). Odd: the rest is a list of
//! records `kind u8, flags u8, length u16 (little-endian), payload`, each sent as a frame with right
//! CRCs (flags bit 0: skip a sequence number, bit 1: another protocol version, bit 2: flip a payload bit), so
//! mutations reach LOAD, RUN and the engine behind them.

const std = @import("std");
const protocol = @import("protocol.zig");
const session_zig = @import("session.zig");

comptime {
    _ = @import("engine"); // src/exports.zig, the engine's C API that session.zig calls (a module: see native/fuzz/build.sh)
}

const payload_bytes_max = 64 * 1024;
const budget_bytes = 1 << 20;
var memory: [session_zig.Session.memoryBytes(payload_bytes_max, budget_bytes)]u8 align(64) = undefined;
var stream: [2 * payload_bytes_max]u8 = undefined; // the framed mode's frames, built here

const MemLink = struct {
    bytes: []const u8,
    position: usize = 0,
    timed_out: bool = false,
    replies: u32 = 0,

    pub fn read(link: *MemLink, buffer: []u8, timeout_ms: i32) session_zig.Read {
        const left = link.bytes.len - link.position;
        if (left >= buffer.len) {
            @memcpy(buffer, link.bytes[link.position..][0..buffer.len]);
            link.position += buffer.len;
            return .ok;
        }
        link.position = link.bytes.len;
        if (timeout_ms >= 0 and !link.timed_out) { // the rest of a frame never came: once a timeout, then the end
            link.timed_out = true;
            return .timeout;
        }
        return .eof;
    }

    pub fn drain(link: *MemLink, quiet_ms: i32) session_zig.Read {
        _ = quiet_ms;
        link.position = link.bytes.len;
        return .ok;
    }

    pub fn write(link: *MemLink, bytes: []const u8) bool {
        checkReply(bytes);
        link.replies += 1;
        return true;
    }
};

/// Every reply is one whole frame: good header, matching length and CRC, a reply type.
fn checkReply(bytes: []const u8) void {
    if (bytes.len < protocol.header_bytes) @panic("reply shorter than a header");
    const parsed = protocol.parseHeader(bytes[0..protocol.header_bytes], payload_bytes_max);
    const header = switch (parsed) {
        .ok => |h| h,
        .bad => @panic("reply header does not parse"),
    };
    if (header.length != bytes.len - protocol.header_bytes) @panic("reply length mismatch");
    if (protocol.crc32(bytes[protocol.header_bytes..]) != header.payload_crc) @panic("reply CRC mismatch");
    if (@intFromEnum(header.kind) < 0x81) @panic("reply of a request type");
}

/// The framed mode: records -> frames with right CRCs in `stream`.
fn frames(records: []const u8) []const u8 {
    var in: usize = 0;
    var out: usize = 0;
    var sequence: u32 = 1;
    while (in + 4 <= records.len) {
        const kind = records[in];
        const flags = records[in + 1];
        const wanted = std.mem.readInt(u16, records[in + 2 ..][0..2], .little);
        in += 4;
        const length = @min(wanted, records.len - in);
        if (out + protocol.header_bytes + length > stream.len) break;
        const payload = stream[out + protocol.header_bytes ..][0..length];
        @memcpy(payload, records[in..][0..length]);
        in += length;
        if (flags & 1 != 0) sequence +%= 1;
        protocol.writeHeader(stream[out..][0..protocol.header_bytes], @enumFromInt(kind), sequence, payload);
        if (flags & 2 != 0) { // another version, header CRC made right again
            std.mem.writeInt(u16, stream[out + 4 ..][0..2], protocol.protocol_version + 1, .little);
            std.mem.writeInt(u32, stream[out + 20 ..][0..4], protocol.crc32(stream[out..][0..20]), .little);
        }
        if (flags & 4 != 0 and length > 0) payload[0] ^= 1;
        out += protocol.header_bytes + length;
        sequence +%= 1;
    }
    return stream[0..out];
}

fn clockZero() u64 {
    return 0;
}

/// Serve `data` as one link's input; returns the number of replies (each checked, else a panic).
export fn esnn_runner_fuzz_one(data: [*]const u8, len: usize) c_int {
    const input = data[0..len];
    if (input.len == 0) return 0;
    const bytes = if (input[0] % 2 == 0) input[1..] else frames(input[1..]);
    // a RUN of 2^20 timesteps is work, not a hang: bound it so one input stays fast (docs/fuzzing.md)
    var session = session_zig.Session.init(&memory, payload_bytes_max, .{ .timesteps_max = 64 }, &clockZero);
    var link: MemLink = .{ .bytes = bytes };
    session_zig.serve(MemLink, &link, &session);
    return @intCast(link.replies);
}
