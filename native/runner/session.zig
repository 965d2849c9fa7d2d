//! The runner's state machine: one Session holds the memory given at start (frames, model, arena)
//! and answers one checked frame at a time; `serve` reads frames from any link (a file descriptor in
//! main.zig, a byte buffer in fuzz.zig) and never allocates. The engine is reached only through its
//! C API (native/include/edgesnn.h), as a C application on the board would.

const std = @import("std");
const builtin = @import("builtin");
const protocol = @import("protocol.zig");

const Type = protocol.Type;
const ErrorCode = protocol.ErrorCode;
const header_bytes = protocol.header_bytes;

pub const runner_version = "edgesnn-runner 0.1.0";
pub const architecture = @tagName(builtin.cpu.arch) ++ "-" ++ @tagName(builtin.os.tag) ++ "-" ++ @tagName(builtin.abi);
pub const message_bytes_max = @import("engine").limits.message_bytes_max; // the engine's messages
pub const info_bytes = 108;
pub const loaded_bytes = 48;
pub const stats_bytes = 64;
pub const result_head_bytes = 8;

// the engine's limits as INFO reports them: native/src/limits.zig, their one home, through the engine
// module (src/exports.zig; native/build.zig, native/fuzz/build.sh)
const limits = @import("engine").limits;

comptime {
    _ = @import("engine"); // its C API, which this file calls through the extern declarations below
}
const layers_max = limits.layers_max;
const channels_max = limits.channels_max;
pub const timesteps_max = limits.timesteps_max;
const layer_kinds_mask = limits.layer_kinds_mask;
const weight_bits_mask = limits.weight_bits_mask;
const activation_bits_mask = limits.activation_bits_mask;

comptime {
    // RESULT's stats and potentials are written by the engine in host order; the protocol is little-endian
    std.debug.assert(builtin.cpu.arch.endian() == .little);
    std.debug.assert(@sizeOf(LayerStats) == 40);
}

pub const LayerStats = extern struct {
    input_events: u64,
    input_size: u64,
    output_events: u64,
    output_size: u64,
    synaptic_ops: u64,
};

extern fn esnn_abi_version() u32;
extern fn esnn_status_name(status: c_int) [*:0]const u8;
extern fn esnn_model_memory_bytes(bytes: [*]const u8, bytes_len: usize, memory_bytes: *usize, message: [*]u8, message_bytes: usize) c_int;
extern fn esnn_model_load(bytes: [*]const u8, bytes_len: usize, memory: [*]u8, memory_bytes: usize, model_out: *?*const anyopaque, message: [*]u8, message_bytes: usize) c_int;
extern fn esnn_model_arena_bytes(model: ?*const anyopaque) usize;
extern fn esnn_model_layer_count(model: ?*const anyopaque) u32;
extern fn esnn_model_input_shape(model: ?*const anyopaque, shape_out: *[4]u32) c_int;
extern fn esnn_model_output_shape(model: ?*const anyopaque, shape_out: *[3]u32) c_int;
extern fn esnn_context_init(model: ?*const anyopaque, arena: [*]u8, arena_bytes: usize, context_out: *?*anyopaque, message: [*]u8, message_bytes: usize) c_int;
extern fn esnn_context_message(context: ?*anyopaque) [*:0]const u8;
extern fn esnn_run_batch_trace(context: ?*anyopaque, input: [*]const u8, input_values: usize, batch: u32, input_timesteps: u32, timesteps: u32, early_exit_margin: i32, output: [*]i32, output_values: usize, trace: [*]i32, trace_values: usize, timesteps_used: [*]u32, timesteps_used_count: usize, stats: ?[*]LayerStats, stats_count: usize) c_int;
extern fn esnn_run_batch(context: ?*anyopaque, input: [*]const u8, input_values: usize, batch: u32, input_timesteps: u32, timesteps: u32, output: [*]i32, output_values: usize, stats: ?[*]LayerStats, stats_count: usize) c_int;

/// What a link's read returns.
pub const Read = enum { ok, eof, timeout, failed };

pub const Options = struct {
    /// Silence after a bad header before the stream counts as resynchronized.
    quiet_ms: i32 = 50,
    /// Longest wait for the rest of a frame once its first byte arrived.
    frame_timeout_ms: i32 = 1000,
    /// Most timesteps one RUN may ask for (at most the engine's limit): bounds the work of one request,
    /// which the runner cannot interrupt once started.
    timesteps_max: u32 = timesteps_max,
};

pub const Counters = struct {
    frames_received: u64 = 0,
    frames_rejected: u64 = 0,
    loads: u64 = 0,
    runs: u64 = 0,
    errors_sent: u64 = 0,
    bytes_received: u64 = 0,
    bytes_sent: u64 = 0,
    run_ns_total: u64 = 0,
};

pub const Loaded = struct {
    model: *const anyopaque,
    context: *anyopaque,
    program_bytes: usize,
    arena_bytes: usize,
    layer_count: u32,
    input_shape: [4]u32, // H, W, C, input_bits
    output_shape: [3]u32, // OH, OW, C
    input_values: u64, // H * W * C of one frame
    output_values: u64, // OH * OW * C of one sample
};

pub const Session = struct {
    rx: []u8, // header + payload_bytes_max: the frame being read          (bytes)
    tx: []align(8) u8, // header + payload_bytes_max: the reply being written (bytes)
    budget: []u8, // the memory budget: model memory, then the arena     (bytes)
    payload_bytes_max: u32,
    options: Options,
    loaded: ?Loaded = null,
    expected_sequence: ?u32 = null,
    counters: Counters = .{},
    clock: *const fn () u64,

    /// `memory` is every byte the runner will use, given once: 2 frames of `payload_bytes_max` and the budget.
    pub fn init(memory: []align(8) u8, payload_bytes_max: u32, options: Options, clock: *const fn () u64) Session {
        std.debug.assert(options.timesteps_max >= 1 and options.timesteps_max <= timesteps_max);
        const frame_bytes = std.mem.alignForward(usize, header_bytes + @as(usize, payload_bytes_max), 64);
        std.debug.assert(memory.len > 2 * frame_bytes);
        return .{
            .rx = memory[0..frame_bytes],
            .tx = @alignCast(memory[frame_bytes .. 2 * frame_bytes]),
            .budget = memory[2 * frame_bytes ..],
            .payload_bytes_max = payload_bytes_max,
            .options = options,
            .clock = clock,
        };
    }

    pub fn memoryBytes(payload_bytes_max: u32, budget_bytes: usize) usize {
        return 2 * std.mem.alignForward(usize, header_bytes + @as(usize, payload_bytes_max), 64) + budget_bytes;
    }

    fn payloadOut(session: *Session) []u8 {
        return session.tx[header_bytes..];
    }

    fn reply(session: *Session, kind: Type, sequence: u32, payload_len: usize) []const u8 {
        std.debug.assert(payload_len <= session.payload_bytes_max);
        const payload = session.tx[header_bytes..][0..payload_len];
        protocol.writeHeader(session.tx[0..header_bytes], kind, sequence, payload);
        return session.tx[0 .. header_bytes + payload_len];
    }

    /// An error reply: code, the request's type, then the message.
    pub fn fail(session: *Session, code: ErrorCode, request: u16, sequence: u32, comptime format: []const u8, args: anytype) []const u8 {
        session.counters.errors_sent += 1;
        const out = session.payloadOut();
        std.mem.writeInt(u32, out[0..4], @intFromEnum(code), .little);
        std.mem.writeInt(u32, out[4..8], request, .little);
        const room = @min(out.len - 8, 512);
        const text = std.fmt.bufPrint(out[8..][0..room], format, args) catch out[8..][0..room];
        return session.reply(.@"error", sequence, 8 + text.len);
    }

    /// Answer one frame whose header and payload CRC were checked.
    pub fn handle(session: *Session, header: protocol.Header, payload: []const u8) []const u8 {
        std.debug.assert(payload.len == header.length);
        session.counters.frames_received += 1;
        const kind = @intFromEnum(header.kind);
        if (header.kind == .hello) {
            session.expected_sequence = header.sequence +% 1;
            return session.info(header.sequence);
        }
        if (session.expected_sequence) |expected| {
            if (header.sequence != expected) {
                session.counters.frames_rejected += 1;
                return session.fail(.sequence, kind, header.sequence, "sequence number {d}, expected {d} (send HELLO to restart the numbering)", .{ header.sequence, expected });
            }
        }
        session.expected_sequence = header.sequence +% 1;
        return switch (header.kind) {
            .load => session.load(header.sequence, payload),
            .run => session.run(header.sequence, payload, false),
            .run_trace => session.run(header.sequence, payload, true),
            .stats => session.stats(header.sequence),
            .reset => blk: {
                session.loaded = null;
                break :blk session.reply(.ok, header.sequence, 0);
            },
            else => session.fail(.unknown_type, kind, header.sequence, "frame type 0x{x:0>2} is not a request (HELLO 0x01, LOAD 0x02, RUN 0x03, STATS 0x04, RESET 0x05, RUN_TRACE 0x06)", .{kind}),
        };
    }

    fn info(session: *Session, sequence: u32) []const u8 {
        const out = session.payloadOut()[0..info_bytes];
        @memset(out, 0);
        std.mem.writeInt(u16, out[0..2], protocol.protocol_version, .little);
        std.mem.writeInt(u32, out[4..8], esnn_abi_version(), .little);
        std.mem.writeInt(u64, out[8..16], session.budget.len, .little);
        std.mem.writeInt(u32, out[16..20], session.payload_bytes_max, .little);
        std.mem.writeInt(u32, out[20..24], layers_max, .little);
        std.mem.writeInt(u32, out[24..28], channels_max, .little);
        std.mem.writeInt(u32, out[28..32], session.options.timesteps_max, .little);
        std.mem.writeInt(u32, out[32..36], layer_kinds_mask, .little);
        std.mem.writeInt(u32, out[36..40], weight_bits_mask, .little);
        std.mem.writeInt(u32, out[40..44], activation_bits_mask, .little);
        const arch_len = @min(architecture.len, 31);
        @memcpy(out[44..][0..arch_len], architecture[0..arch_len]);
        @memcpy(out[76..][0..runner_version.len], runner_version);
        return session.reply(.info, sequence, info_bytes);
    }

    fn load(session: *Session, sequence: u32, file: []const u8) []const u8 {
        const kind = @intFromEnum(Type.load);
        session.loaded = null;
        var message: [message_bytes_max:0]u8 = undefined;
        message[0] = 0;
        var program_bytes: usize = 0;
        var status = esnn_model_memory_bytes(file.ptr, file.len, &program_bytes, &message, message.len);
        if (status != 0) return session.engineFail(kind, sequence, status, &message);
        const budget = session.budget;
        if (program_bytes > budget.len) {
            return session.fail(.fit, kind, sequence, "does not fit: the model needs {d} B of program memory, the runner's memory budget is {d} B", .{ program_bytes, budget.len });
        }
        var model: ?*const anyopaque = null;
        status = esnn_model_load(file.ptr, file.len, budget.ptr, program_bytes, &model, &message, message.len);
        if (status != 0) return session.engineFail(kind, sequence, status, &message);
        const arena_bytes = esnn_model_arena_bytes(model);
        if (arena_bytes > budget.len - program_bytes) {
            return session.fail(.fit, kind, sequence, "does not fit: program {d} B + arena {d} B = {d} B, the runner's memory budget is {d} B", .{ program_bytes, arena_bytes, program_bytes + arena_bytes, budget.len });
        }
        var context: ?*anyopaque = null;
        status = esnn_context_init(model, budget.ptr + program_bytes, arena_bytes, &context, &message, message.len);
        if (status != 0) return session.engineFail(kind, sequence, status, &message);
        var loaded: Loaded = .{
            .model = model.?,
            .context = context.?,
            .program_bytes = program_bytes,
            .arena_bytes = arena_bytes,
            .layer_count = esnn_model_layer_count(model),
            .input_shape = undefined,
            .output_shape = undefined,
            .input_values = 0,
            .output_values = 0,
        };
        _ = esnn_model_input_shape(model, &loaded.input_shape);
        _ = esnn_model_output_shape(model, &loaded.output_shape);
        loaded.input_values = @as(u64, loaded.input_shape[0]) * loaded.input_shape[1] * loaded.input_shape[2];
        loaded.output_values = @as(u64, loaded.output_shape[0]) * loaded.output_shape[1] * loaded.output_shape[2];
        session.loaded = loaded;
        session.counters.loads += 1;

        const out = session.payloadOut()[0..loaded_bytes];
        std.mem.writeInt(u64, out[0..8], program_bytes, .little);
        std.mem.writeInt(u64, out[8..16], arena_bytes, .little);
        std.mem.writeInt(u32, out[16..20], loaded.layer_count, .little);
        for (loaded.input_shape, 0..) |value, i| std.mem.writeInt(u32, out[20 + 4 * i ..][0..4], value, .little);
        for (loaded.output_shape, 0..) |value, i| std.mem.writeInt(u32, out[36 + 4 * i ..][0..4], value, .little);
        return session.reply(.loaded, sequence, loaded_bytes);
    }

    fn engineFail(session: *Session, request: u16, sequence: u32, status: c_int, message: [*:0]const u8) []const u8 {
        return session.fail(.engine, request, sequence, "engine status {d} ({s}): {s}", .{ status, esnn_status_name(status), std.mem.span(message) });
    }

    /// RUN (`traced` false) -> RESULT: layer count, output values, the layers' stats, the potentials.
    /// RUN_TRACE -> TRACE: the same head and stats, the timesteps each sample ran (u32 per sample),
    /// the final output, then the output after every timestep (batch x timesteps x output values).
    fn run(session: *Session, sequence: u32, payload: []const u8, traced: bool) []const u8 {
        const kind = @intFromEnum(if (traced) Type.run_trace else Type.run);
        const name = if (traced) "RUN_TRACE" else "RUN";
        const loaded = session.loaded orelse return session.fail(.state, kind, sequence, "{s} before LOAD: no model is loaded", .{name});
        if (payload.len < protocol.run_request_bytes) {
            return session.fail(.payload, kind, sequence, "{s} payload of {d} bytes, at least {d} expected", .{ name, payload.len, protocol.run_request_bytes });
        }
        const request = protocol.RunRequest.parse(payload[0..protocol.run_request_bytes]);
        const input = payload[protocol.run_request_bytes..];
        if (request.batch == 0 or request.timesteps == 0 or request.timesteps > session.options.timesteps_max or
            (request.input_timesteps != 1 and request.input_timesteps != request.timesteps))
        {
            return session.fail(.payload, kind, sequence, "{s} batch {d}, input_timesteps {d}, timesteps {d}: need batch >= 1, 1 <= timesteps <= {d}, input_timesteps 1 or timesteps", .{ name, request.batch, request.input_timesteps, request.timesteps, session.options.timesteps_max });
        }
        if (traced and request.flags > std.math.maxInt(i32)) {
            return session.fail(.payload, kind, sequence, "RUN_TRACE early-exit margin {d}: need 0 (none) to 2147483647", .{request.flags});
        }
        const input_values = @as(u64, request.batch) * request.input_timesteps * loaded.input_values;
        if (input_values != input.len) {
            return session.fail(.payload, kind, sequence, "{s} input of {d} bytes, batch {d} x input_timesteps {d} x {d} values = {d} expected", .{ name, input.len, request.batch, request.input_timesteps, loaded.input_values, input_values });
        }
        const stats_len = @as(u64, loaded.layer_count) * @sizeOf(LayerStats);
        const output_values = @as(u64, request.batch) * loaded.output_values;
        const used_len: u64 = if (traced) 4 * @as(u64, request.batch) else 0;
        const trace_values: u64 = if (traced) output_values * request.timesteps else 0;
        const result_bytes = result_head_bytes + stats_len + used_len + (output_values + trace_values) * @sizeOf(i32);
        if (result_bytes > session.payload_bytes_max) {
            return session.fail(.payload, kind, sequence, "the result of {d} bytes exceeds the frame limit of {d} bytes; send smaller batches", .{ result_bytes, session.payload_bytes_max });
        }
        const out = session.payloadOut();
        std.mem.writeInt(u32, out[0..4], loaded.layer_count, .little);
        std.mem.writeInt(u32, out[4..8], @intCast(output_values), .little);
        // tx is 8-aligned and the header 24 bytes, so the stats (u64) and everything after (u32, i32) are aligned
        const layer_stats: [*]LayerStats = @ptrCast(@alignCast(out[result_head_bytes..].ptr));
        const after_stats = result_head_bytes + stats_len;
        const started = session.clock();
        const status = if (traced) blk: {
            const used: [*]u32 = @ptrCast(@alignCast(out[after_stats..].ptr));
            const output: [*]i32 = @ptrCast(@alignCast(out[after_stats + used_len ..].ptr));
            const trace: [*]i32 = @ptrCast(@alignCast(out[after_stats + used_len + output_values * @sizeOf(i32) ..].ptr));
            break :blk esnn_run_batch_trace(loaded.context, input.ptr, input.len, request.batch, request.input_timesteps, request.timesteps, @intCast(request.flags), output, @intCast(output_values), trace, @intCast(trace_values), used, request.batch, layer_stats, loaded.layer_count);
        } else blk: {
            const output: [*]i32 = @ptrCast(@alignCast(out[after_stats..].ptr));
            break :blk esnn_run_batch(loaded.context, input.ptr, input.len, request.batch, request.input_timesteps, request.timesteps, output, @intCast(output_values), layer_stats, loaded.layer_count);
        };
        session.counters.run_ns_total +%= session.clock() -% started;
        if (status != 0) return session.engineFail(kind, sequence, status, esnn_context_message(loaded.context));
        session.counters.runs += 1;
        return session.reply(if (traced) .trace else .result, sequence, @intCast(result_bytes));
    }

    fn stats(session: *Session, sequence: u32) []const u8 {
        const out = session.payloadOut()[0..stats_bytes];
        const c = session.counters;
        const values = [_]u64{ c.frames_received, c.frames_rejected, c.loads, c.runs, c.errors_sent, c.bytes_received, c.bytes_sent, c.run_ns_total };
        for (values, 0..) |value, i| std.mem.writeInt(u64, out[8 * i ..][0..8], value, .little);
        return session.reply(.stats_reply, sequence, stats_bytes);
    }
};

/// Serve frames from `link` until it closes. `Link` has
/// `read(buffer, timeout_ms) Read` (fill all of buffer; timeout_ms -1: wait for ever),
/// `drain(quiet_ms) Read` (discard input until `quiet_ms` of silence) and `write(bytes) bool`.
pub fn serve(comptime Link: type, link: *Link, session: *Session) void {
    const sequence_unknown: u32 = 0xFFFF_FFFF;
    while (true) {
        const head = session.rx[0..header_bytes];
        // the first byte may take for ever; the rest of the frame must follow within the frame timeout
        switch (link.read(head[0..1], -1)) {
            .ok => {},
            else => return,
        }
        switch (link.read(head[1..], session.options.frame_timeout_ms)) {
            .ok => {},
            .timeout => {
                if (!send(Link, link, session, session.fail(.truncated, 0, sequence_unknown, "truncated frame: the header stopped after fewer than {d} bytes", .{header_bytes}))) return;
                continue;
            },
            else => return,
        }
        session.counters.bytes_received += header_bytes;
        const answer: []const u8 = switch (protocol.parseHeader(head, session.payload_bytes_max)) {
            .ok => |header| blk: {
                const payload = session.rx[header_bytes..][0..header.length];
                switch (link.read(payload, session.options.frame_timeout_ms)) {
                    .ok => {},
                    .timeout => break :blk session.fail(.truncated, @intFromEnum(header.kind), header.sequence, "truncated frame: the payload stopped before its {d} bytes arrived", .{header.length}),
                    else => return,
                }
                session.counters.bytes_received += header.length;
                if (protocol.crc32(payload) != header.payload_crc) {
                    session.counters.frames_rejected += 1;
                    break :blk session.fail(.checksum, @intFromEnum(header.kind), header.sequence, "payload CRC-32 mismatch ({d} bytes): the frame was corrupted on the link", .{header.length});
                }
                break :blk session.handle(header, payload);
            },
            .bad => |bad| blk: {
                session.counters.frames_rejected += 1;
                const sequence = if (bad.header) |h| h.sequence else sequence_unknown;
                const kind: u16 = if (bad.header) |h| @intFromEnum(h.kind) else 0;
                if (bad.why == .version and bad.header.?.length <= session.payload_bytes_max) {
                    const skipped = link.read(session.rx[header_bytes..][0..bad.header.?.length], session.options.frame_timeout_ms);
                    if (skipped == .eof or skipped == .failed) return;
                } else if (link.drain(session.options.quiet_ms) != .ok) return;
                break :blk switch (bad.why) {
                    .magic => session.fail(.header, kind, sequence, "bad magic: not an edgesnn link frame (expected \"ESNP\"); input discarded until the link was quiet", .{}),
                    .header_crc => session.fail(.header, kind, sequence, "header CRC-32 mismatch: the header was corrupted; input discarded until the link was quiet", .{}),
                    .version => session.fail(.version, kind, sequence, "protocol version {d}; this runner speaks version {d}", .{ bad.header.?.version, protocol.protocol_version }),
                    .oversized => session.fail(.oversized, kind, sequence, "frame payload of {d} bytes exceeds this runner's limit of {d} bytes (--frame-bytes)", .{ bad.header.?.length, session.payload_bytes_max }),
                };
            },
        };
        if (!send(Link, link, session, answer)) return;
    }
}

fn send(comptime Link: type, link: *Link, session: *Session, bytes: []const u8) bool {
    session.counters.bytes_sent += bytes.len;
    return link.write(bytes);
}
