//! The C ABI (native/include/edgesnn.h): opaque handles, status codes, caller-owned memory.
//! A thin layer: it checks pointers and handles, turns C arguments into slices, and calls the
//! loader and the engine.

const std = @import("std");
/// The engine's limits, for Zig programs built with the engine as a module (the device runner).
pub const limits = @import("limits.zig");
const model_zig = @import("model.zig");
const loader = @import("loader.zig");
const engine = @import("engine.zig");
const status_zig = @import("status.zig");
const planner = @import("planner.zig");
const stream_zig = @import("stream.zig");

const Status = status_zig.Status;
const Diagnostic = status_zig.Diagnostic;
const Model = model_zig.Model;
const Context = engine.Context;
const LayerStats = model_zig.LayerStats;

pub const abi_version: u32 = 1;

fn code(status: Status) c_int {
    return @intFromEnum(status);
}

fn diagnosticFor(message: ?[*]u8, message_bytes: usize) Diagnostic {
    const buffer: []u8 = if (message) |m| m[0..message_bytes] else &.{};
    if (buffer.len > 0) buffer[0] = 0;
    return .{ .buffer = buffer };
}

fn modelFrom(handle: ?*const anyopaque) ?*const Model {
    const pointer = handle orelse return null;
    if (@intFromPtr(pointer) % @alignOf(Model) != 0) return null;
    const model: *const Model = @ptrCast(@alignCast(pointer));
    return if (model.magic == model_zig.model_magic) model else null;
}

fn contextFrom(handle: ?*anyopaque) ?*Context {
    const pointer = handle orelse return null;
    if (@intFromPtr(pointer) % @alignOf(Context) != 0) return null;
    const ctx: *Context = @ptrCast(@alignCast(pointer));
    return if (ctx.magic == engine.context_magic) ctx else null;
}

export fn esnn_abi_version() u32 {
    return abi_version;
}

export fn esnn_status_name(status: c_int) [*:0]const u8 {
    const known = std.enums.fromInt(Status, status) orelse return "unknown";
    return status_zig.name(known).ptr;
}

export fn esnn_model_memory_bytes(
    bytes: ?[*]const u8,
    bytes_len: usize,
    memory_bytes: ?*usize,
    message: ?[*]u8,
    message_bytes: usize,
) c_int {
    var diag = diagnosticFor(message, message_bytes);
    const file = bytes orelse return code(diag.fail(.argument, "bytes is NULL", .{}) catch diag.status);
    const out = memory_bytes orelse return code(diag.fail(.argument, "memory_bytes is NULL", .{}) catch diag.status);
    const validated = loader.validate(file[0..bytes_len], &diag) catch return code(diag.status);
    out.* = @intCast(validated.memory_bytes);
    return code(.ok);
}

/// The sizes of this build's Model and Layer records ({Model, Layer} bytes): what the model memory of
/// another target differs by (esnn_model_memory_bytes_for). Cross builds carry theirs in this symbol,
/// read from the library file by native/sizes.py.
export const esnn_record_bytes: [2]u32 = .{ @sizeOf(Model), @sizeOf(model_zig.Layer) };

/// esnn_model_memory_bytes as a target whose Model and Layer records take `record_bytes` ({Model,
/// Layer}, its esnn_record_bytes) would report it: the exact figure for a 32-bit build, from this one.
export fn esnn_model_memory_bytes_for(
    bytes: ?[*]const u8,
    bytes_len: usize,
    record_bytes: ?*const [2]u32,
    memory_bytes: ?*u64,
    message: ?[*]u8,
    message_bytes: usize,
) c_int {
    var diag = diagnosticFor(message, message_bytes);
    const file = bytes orelse return code(diag.fail(.argument, "bytes is NULL", .{}) catch diag.status);
    const records = record_bytes orelse return code(diag.fail(.argument, "record_bytes is NULL", .{}) catch diag.status);
    const out = memory_bytes orelse return code(diag.fail(.argument, "memory_bytes is NULL", .{}) catch diag.status);
    if (records[0] == 0 or records[1] == 0) {
        return code(diag.fail(.argument, "record_bytes {{{d}, {d}}}: expected a target's esnn_record_bytes (both non-zero)", .{ records[0], records[1] }) catch diag.status);
    }
    const validated = loader.validate(file[0..bytes_len], &diag) catch return code(diag.status);
    const here = loader.recordsBytes(@sizeOf(Model), @sizeOf(model_zig.Layer), validated.layer_count);
    out.* = validated.memory_bytes - here + loader.recordsBytes(records[0], records[1], validated.layer_count);
    return code(.ok);
}

export fn esnn_model_load(
    bytes: ?[*]const u8,
    bytes_len: usize,
    memory: ?[*]u8,
    memory_bytes: usize,
    model_out: ?*?*const anyopaque,
    message: ?[*]u8,
    message_bytes: usize,
) c_int {
    return esnn_model_load_plan(bytes, bytes_len, memory, memory_bytes, @intFromEnum(planner.Kind.fast), model_out, message, message_bytes);
}

/// esnn_model_load keeping arena plan `plan` (ESNN_PLAN_FAST 0, ESNN_PLAN_LEAN 1; planner.zig).
export fn esnn_model_load_plan(
    bytes: ?[*]const u8,
    bytes_len: usize,
    memory: ?[*]u8,
    memory_bytes: usize,
    plan: c_int,
    model_out: ?*?*const anyopaque,
    message: ?[*]u8,
    message_bytes: usize,
) c_int {
    var diag = diagnosticFor(message, message_bytes);
    const kind = planKind(plan) orelse return code(diag.fail(.argument, "plan {d}, expected ESNN_PLAN_FAST (0) or ESNN_PLAN_LEAN (1)", .{plan}) catch diag.status);
    const file = bytes orelse return code(diag.fail(.argument, "bytes is NULL", .{}) catch diag.status);
    const mem = memory orelse return code(diag.fail(.argument, "memory is NULL", .{}) catch diag.status);
    const out = model_out orelse return code(diag.fail(.argument, "model_out is NULL", .{}) catch diag.status);
    out.* = null;
    const model = loader.loadPlanned(file[0..bytes_len], mem[0..memory_bytes], kind, &diag) catch return code(diag.status);
    out.* = model;
    return code(.ok);
}

/// 0 for an invalid handle.
export fn esnn_model_arena_bytes(handle: ?*const anyopaque) usize {
    const model = modelFrom(handle) orelse return 0;
    return @intCast(model.arenaBytes());
}

fn planKind(plan: c_int) ?planner.Kind {
    return std.enums.fromInt(planner.Kind, plan);
}

/// The arena bytes of either plan (esnn_model_arena_bytes of the model loaded with it); 0 for an
/// invalid handle or plan.
export fn esnn_model_plan_arena_bytes(handle: ?*const anyopaque, plan: c_int) usize {
    const model = modelFrom(handle) orelse return 0;
    const kind = planKind(plan) orelse return 0;
    return @intCast(model.planArenaBytes(kind));
}

/// 0 for an invalid handle.
export fn esnn_model_layer_count(handle: ?*const anyopaque) u32 {
    const model = modelFrom(handle) orelse return 0;
    return @intCast(model.layers.len);
}

/// shape_out: {H, W, C, input_bits} of the model input.
export fn esnn_model_input_shape(handle: ?*const anyopaque, shape_out: ?*[4]u32) c_int {
    const model = modelFrom(handle) orelse return code(.argument);
    const out = shape_out orelse return code(.argument);
    out.* = .{ model.input.h, model.input.w, model.input.c, model.input_bits };
    return code(.ok);
}

/// shape_out: {H, W, C} of the output potentials.
export fn esnn_model_output_shape(handle: ?*const anyopaque, shape_out: ?*[3]u32) c_int {
    const model = modelFrom(handle) orelse return code(.argument);
    const out = shape_out orelse return code(.argument);
    const shape = model.outputLayer().output;
    out.* = .{ shape.h, shape.w, shape.c };
    return code(.ok);
}

export fn esnn_context_init(
    handle: ?*const anyopaque,
    arena: ?[*]u8,
    arena_bytes: usize,
    context_out: ?*?*anyopaque,
    message: ?[*]u8,
    message_bytes: usize,
) c_int {
    var diag = diagnosticFor(message, message_bytes);
    const model = modelFrom(handle) orelse return code(diag.fail(.argument, "model is not a loaded esnn_model", .{}) catch diag.status);
    const memory = arena orelse return code(diag.fail(.argument, "arena is NULL", .{}) catch diag.status);
    const out = context_out orelse return code(diag.fail(.argument, "context_out is NULL", .{}) catch diag.status);
    out.* = null;
    const ctx = engine.initContext(model, memory[0..arena_bytes], &diag) catch return code(diag.status);
    out.* = ctx;
    return code(.ok);
}

/// The message of the context's last failed run ("" after a successful one).
export fn esnn_context_message(handle: ?*anyopaque) [*:0]const u8 {
    const ctx = contextFrom(handle) orelse return "not an esnn_context";
    return @ptrCast(&ctx.message);
}

export fn esnn_run_batch(
    handle: ?*anyopaque,
    input: ?[*]const u8,
    input_values: usize,
    batch: u32,
    input_timesteps: u32,
    timesteps: u32,
    output: ?[*]i32,
    output_values: usize,
    stats: ?[*]LayerStats,
    stats_count: usize,
) c_int {
    return esnn_run_batch_trace(handle, input, input_values, batch, input_timesteps, timesteps, 0, output, output_values,
        null, 0, null, 0, stats, stats_count);
}

/// esnn_run_batch keeping the output after every timestep (`trace`, may be NULL) with an optional
/// early exit (`early_exit_margin` > 0) and the timesteps each sample ran (`timesteps_used`, may be NULL).
export fn esnn_run_batch_trace(
    handle: ?*anyopaque,
    input: ?[*]const u8,
    input_values: usize,
    batch: u32,
    input_timesteps: u32,
    timesteps: u32,
    early_exit_margin: i32,
    output: ?[*]i32,
    output_values: usize,
    trace: ?[*]i32,
    trace_values: usize,
    timesteps_used: ?[*]u32,
    timesteps_used_count: usize,
    stats: ?[*]LayerStats,
    stats_count: usize,
) c_int {
    const ctx = contextFrom(handle) orelse return code(.argument);
    var diag: Diagnostic = .{ .buffer = &ctx.message };
    ctx.message[0] = 0;
    var run = batchOf(input, input_values, batch, input_timesteps, timesteps, output, output_values, stats, stats_count, &diag) catch
        return code(diag.status);
    run.trace = if (trace) |t| t[0..trace_values] else null;
    run.early_exit_margin = early_exit_margin;
    run.timesteps_used = if (timesteps_used) |u| u[0..timesteps_used_count] else null;
    engine.runBatch(ctx, &run, &diag) catch return code(diag.status);
    return code(.ok);
}

/// The engine.Batch of a run's C arguments (NULL input or output refused, naming which).
fn batchOf(
    input: ?[*]const u8,
    input_values: usize,
    batch: u32,
    input_timesteps: u32,
    timesteps: u32,
    output: ?[*]i32,
    output_values: usize,
    stats: ?[*]LayerStats,
    stats_count: usize,
    diag: *Diagnostic,
) Diagnostic.Error!engine.Batch {
    const input_pointer = input orelse return diag.fail(.argument, "input is NULL", .{});
    const output_pointer = output orelse return diag.fail(.argument, "output is NULL", .{});
    return .{
        .input = input_pointer[0..input_values],
        .batch = batch,
        .input_timesteps = input_timesteps,
        .timesteps = timesteps,
        .output = output_pointer[0..output_values],
        .stats = if (stats) |s| s[0..stats_count] else null,
    };
}

/// Bind a batch's buffers to the context (checked now as esnn_run_batch checks them, and again at
/// every run): esnn_run_bound then runs that batch on what its input holds, with no arguments to
/// pass per call (the bound buffers must stay valid while bound; a new bind replaces the old one).
export fn esnn_context_bind(
    handle: ?*anyopaque,
    input: ?[*]const u8,
    input_values: usize,
    batch: u32,
    input_timesteps: u32,
    timesteps: u32,
    output: ?[*]i32,
    output_values: usize,
    stats: ?[*]LayerStats,
    stats_count: usize,
) c_int {
    const ctx = contextFrom(handle) orelse return code(.argument);
    var diag: Diagnostic = .{ .buffer = &ctx.message };
    ctx.message[0] = 0;
    ctx.bound = null;
    const bound = batchOf(input, input_values, batch, input_timesteps, timesteps, output, output_values, stats, stats_count, &diag) catch
        return code(diag.status);
    engine.checkBatch(ctx.model, &bound, &diag) catch return code(diag.status);
    ctx.bound = bound;
    return code(.ok);
}

/// Run the batch bound by esnn_context_bind; ESNN_ERROR_ARGUMENT when none is bound.
export fn esnn_run_bound(handle: ?*anyopaque) c_int {
    const ctx = contextFrom(handle) orelse return code(.argument);
    var diag: Diagnostic = .{ .buffer = &ctx.message };
    ctx.message[0] = 0;
    const bound = ctx.bound orelse return code(diag.fail(.argument, "no batch is bound to this context (esnn_context_bind)", .{}) catch diag.status);
    engine.runBatch(ctx, &bound, &diag) catch return code(diag.status);
    return code(.ok);
}

export fn esnn_run(
    handle: ?*anyopaque,
    input: ?[*]const u8,
    input_values: usize,
    input_timesteps: u32,
    timesteps: u32,
    output: ?[*]i32,
    output_values: usize,
    stats: ?[*]LayerStats,
    stats_count: usize,
) c_int {
    return esnn_run_batch(handle, input, input_values, 1, input_timesteps, timesteps, output, output_values, stats, stats_count);
}

// -- streaming (stream.zig, docs/c-api.md "Streaming") ----------------------------------------------

fn streamFrom(handle: ?*anyopaque) ?*stream_zig.Stream {
    const pointer = handle orelse return null;
    if (@intFromPtr(pointer) % @alignOf(stream_zig.Stream) != 0) return null;
    const stream: *stream_zig.Stream = @ptrCast(@alignCast(pointer));
    return if (stream.magic == stream_zig.stream_magic) stream else null;
}

/// The memory a stream of this model with a window every `hop_frames` frames needs; ESNN_LAYER with
/// the reason when the model cannot stream (it pads along time, pools inside the window, ...).
export fn esnn_stream_bytes(handle: ?*const anyopaque, hop_frames: u32, bytes_out: ?*usize, message: ?[*]u8, message_bytes: usize) c_int {
    var diag = diagnosticFor(message, message_bytes);
    const model = modelFrom(handle) orelse return code(diag.fail(.argument, "model is not a loaded esnn_model", .{}) catch diag.status);
    const out = bytes_out orelse return code(diag.fail(.argument, "bytes_out is NULL", .{}) catch diag.status);
    const bytes = stream_zig.memoryBytes(model, hop_frames, &diag) catch return code(diag.status);
    out.* = @intCast(bytes);
    return code(.ok);
}

export fn esnn_stream_init(
    handle: ?*const anyopaque,
    hop_frames: u32,
    memory: ?[*]u8,
    memory_bytes: usize,
    stream_out: ?*?*anyopaque,
    message: ?[*]u8,
    message_bytes: usize,
) c_int {
    var diag = diagnosticFor(message, message_bytes);
    const model = modelFrom(handle) orelse return code(diag.fail(.argument, "model is not a loaded esnn_model", .{}) catch diag.status);
    const mem = memory orelse return code(diag.fail(.argument, "memory is NULL", .{}) catch diag.status);
    const out = stream_out orelse return code(diag.fail(.argument, "stream_out is NULL", .{}) catch diag.status);
    out.* = null;
    const stream = stream_zig.init(model, hop_frames, mem[0..memory_bytes], &diag) catch return code(diag.status);
    out.* = stream;
    return code(.ok);
}

/// Push `frame_values` / (W * C) frames (u8, each one row of the model input); the output of every
/// window they complete goes to `outputs` in order, their count to `windows_out`.
export fn esnn_stream_push(
    handle: ?*anyopaque,
    frames: ?[*]const u8,
    frame_values: usize,
    outputs: ?[*]i32,
    output_values: usize,
    windows_out: ?*u32,
) c_int {
    const stream = streamFrom(handle) orelse return code(.argument);
    var diag: Diagnostic = .{ .buffer = &stream.message };
    stream.message[0] = 0;
    const out = windows_out orelse return code(diag.fail(.argument, "windows_out is NULL", .{}) catch diag.status);
    out.* = 0;
    const frames_slice: []const u8 = if (frames) |f| f[0..frame_values] else if (frame_values == 0) &.{} else return code(diag.fail(.argument, "frames is NULL", .{}) catch diag.status);
    const outputs_slice: []i32 = if (outputs) |o| o[0..output_values] else &.{};
    const windows = stream_zig.push(stream, frames_slice, outputs_slice, &diag) catch return code(diag.status);
    out.* = @intCast(windows);
    return code(.ok);
}

/// Forget the frames pushed: the next frame starts a new stream.
export fn esnn_stream_reset(handle: ?*anyopaque) c_int {
    const stream = streamFrom(handle) orelse return code(.argument);
    stream_zig.reset(stream);
    return code(.ok);
}

/// The message of the stream's last failed push ("" after a successful one).
export fn esnn_stream_message(handle: ?*anyopaque) [*:0]const u8 {
    const stream = streamFrom(handle) orelse return "not an esnn_stream";
    return @ptrCast(&stream.message);
}

comptime {
    std.debug.assert(@sizeOf(LayerStats) == 40);
    std.debug.assert(@sizeOf(c_int) == 4);
}
