//! The native reader of .esnn bytes (docs/format.md). `validate` checks everything before anything
//! is built: header, CRCs, section table, every layer record (kinds, inputs, shape chain, geometry,
//! bit widths, tensor slots, parameter ranges) and the int32 overflow bound. Every read goes through
//! a bounds-checked helper after the length was checked, so no byte sequence makes it read outside
//! `bytes`.
//!
//! Memory: the loader allocates nothing. `validate` reports `memory_bytes`; `load` builds the Model,
//! its layers and its unpacked parameters (weights as i8, channel axes padded to whole vectors)
//! inside one caller-given buffer of at least that many bytes (any alignment), which must outlive
//! the model. The .esnn bytes are not referenced after `load` returns.

const std = @import("std");
const limits = @import("limits.zig");
const model_zig = @import("model.zig");
const planner = @import("planner.zig");
const status_zig = @import("status.zig");
const vector = @import("kernels/vector.zig");
const neuron_kernel = @import("kernels/neuron.zig");
const separable_kernel = @import("kernels/separable2d.zig");

const Diagnostic = status_zig.Diagnostic;
const Error = Diagnostic.Error;
const Layer = model_zig.Layer;
const Model = model_zig.Model;
const Shape = model_zig.Shape;
const Kind = model_zig.Kind;
const Neuron = model_zig.Neuron;
const Pool = model_zig.Pool;

const magic = [8]u8{ 0x89, 'E', 'S', 'N', 0x0D, 0x0A, 0x1A, 0x0A };
const int32_max: u128 = std.math.maxInt(i32);

const Section = struct {
    offset: u64,
    bytes: u64,

    fn slice(section: Section, file: []const u8) []const u8 {
        return file[limits.usizeFrom(section.offset)..][0..limits.usizeFrom(section.bytes)];
    }
};

/// The four required sections, located and bounds-checked.
const Sections = struct {
    grph: Section,
    tens: Section,
    name: Section,
    meta: Section,
};

pub const Validated = struct {
    sections: Sections,
    layer_count: u32,
    input: Shape,
    input_bits: u32,
    /// Bytes `load` needs for the model memory, alignment slack included.
    memory_bytes: u64,
};

// -- little-endian reads (callers check bounds first; the slicing asserts it again) ---------------

fn readU16(bytes: []const u8, offset: u64) u16 {
    return std.mem.readInt(u16, bytes[limits.usizeFrom(offset)..][0..2], .little);
}

fn readU32(bytes: []const u8, offset: u64) u32 {
    return std.mem.readInt(u32, bytes[limits.usizeFrom(offset)..][0..4], .little);
}

fn readI32(bytes: []const u8, offset: u64) i32 {
    return std.mem.readInt(i32, bytes[limits.usizeFrom(offset)..][0..4], .little);
}

fn readU64(bytes: []const u8, offset: u64) u64 {
    return std.mem.readInt(u64, bytes[limits.usizeFrom(offset)..][0..8], .little);
}

/// Element `index` of a packed signed `bits`-bit tensor (docs/format.md, "Packing").
pub fn packedWeight(data: []const u8, bits: u32, index: u64) i8 {
    std.debug.assert(bits == 2 or bits == 4 or bits == 8);
    const bit = index * bits;
    const byte = data[limits.usizeFrom(bit / 8)];
    const shift: u3 = @intCast(bit % 8);
    const mask: u32 = (@as(u32, 1) << @intCast(bits)) - 1;
    const raw: i32 = @intCast((@as(u32, byte) >> shift) & mask);
    const sign: i32 = @as(i32, 1) << @intCast(bits - 1);
    return @intCast(if (raw >= sign) raw - 2 * sign else raw);
}

// -- the layer record -------------------------------------------------------------------------------

const Slot = enum(u32) {
    weights = 0,
    pointwise = 1,
    bias = 2,
    out_multiplier = 3,
    out_shift = 4,
    threshold = 5,
    mid_multiplier = 6,
    mid_shift = 7,
    input_multipliers = 8,
    pad_value = 9,
    out_zero_point = 10,
    pool_sign = 11,
    sources = 12,
    decay_multiplier = 13,
    reserved_14 = 14,
    reserved_15 = 15,
};

comptime {
    std.debug.assert(@typeInfo(Slot).@"enum".field_names.len == limits.tensor_slot_count);
}

/// Which record layout a file uses: its major version (docs/format.md).
const Version = enum(u16) {
    v1 = 1,
    v2 = 2,

    fn of(file: []const u8) Version {
        return std.enums.fromInt(Version, readU16(file, 8)).?; // checkHeader accepted it
    }

    fn recordBytes(version: Version) u32 {
        return switch (version) {
            .v1 => limits.layer_record_bytes_v1,
            .v2 => limits.layer_record_bytes,
        };
    }
};

/// Byte offset of layer record `index` in the file.
fn recordOffset(file: []const u8, grph_offset: u64, index: u32) u64 {
    return grph_offset + limits.model_record_bytes + @as(u64, index) * Version.of(file).recordBytes();
}

/// The raw fields of one layer record (docs/format.md, "Layer record"); a version-1 record reads
/// with the version-2 fields at their defaults.
const Record = struct {
    version: Version,
    kind: u32,
    neuron: u32,
    name_offset: u32,
    name_bytes: u32,
    input_count: u32,
    inputs: [4]i32,
    in: [3]u32,
    out: [3]u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    padding: u32,
    pads: [4]u32, // top, bottom, left, right (version 2; resolved from `padding` in version 1)
    depth_multiplier: u32,
    pool: u32,
    pool_h: u32,
    pool_w: u32,
    pool_stride_h: u32,
    pool_stride_w: u32,
    pool_pads: [4]u32, // top, bottom, left, right
    pool_flags: u32,
    weight_bits: u32,
    activation_bits: u32,
    mid_bits: u32,
    leak_shift: u32,
    slots: [limits.tensor_slot_count]Section,
    // the if/lif dynamics of bytes 284..300 (version 2; all 0 in version 1: shift leak, subtractive
    // reset, no floor)
    decay_shift: u32,
    reset: u32,
    neuron_flags: u32,
    membrane_floor: i32,

    fn decode(grph: []const u8, version: Version, index: u32) Record {
        const record_bytes = version.recordBytes();
        const base = limits.model_record_bytes + @as(u64, index) * record_bytes;
        const r = grph[limits.usizeFrom(base)..][0..record_bytes];
        var record: Record = undefined;
        record.version = version;
        record.kind = readU32(r, 0);
        record.neuron = readU32(r, 4);
        record.name_offset = readU32(r, 8);
        record.name_bytes = readU32(r, 12);
        record.input_count = readU32(r, 16);
        for (&record.inputs, 0..) |*input, i| input.* = readI32(r, 20 + 4 * i);
        for (&record.in, 0..) |*dim, i| dim.* = readU32(r, 36 + 4 * i);
        for (&record.out, 0..) |*dim, i| dim.* = readU32(r, 48 + 4 * i);
        record.kernel_h = readU32(r, 60);
        record.kernel_w = readU32(r, 64);
        record.stride_h = readU32(r, 68);
        record.padding = readU32(r, 72);
        record.pool = readU32(r, 76);
        record.pool_h = readU32(r, 80);
        record.pool_stride_h = readU32(r, 84);
        record.weight_bits = readU32(r, 88);
        record.activation_bits = readU32(r, 92);
        record.mid_bits = readU32(r, 96);
        record.leak_shift = readU32(r, 100);
        for (&record.slots, 0..) |*slot, i| {
            const used = version == .v2 or i < limits.tensor_slot_count_v1;
            slot.* = if (used) .{ .offset = readU32(r, 128 + 8 * i), .bytes = readU32(r, 132 + 8 * i) } else .{ .offset = 0, .bytes = 0 };
        }
        switch (version) {
            .v1 => {
                record.stride_w = record.stride_h;
                record.pads = @splat(0); // resolved from the mode in checkGeometry
                record.depth_multiplier = 1;
                record.pool_w = record.pool_h;
                record.pool_stride_w = record.pool_stride_h;
                record.pool_pads = @splat(0);
                record.pool_flags = 0;
                record.decay_shift = 0;
                record.reset = 0;
                record.neuron_flags = 0;
                record.membrane_floor = 0;
            },
            .v2 => {
                record.stride_w = readU32(r, 104);
                for (&record.pads, 0..) |*pad, i| pad.* = readU32(r, 108 + 4 * i);
                record.depth_multiplier = readU32(r, 124);
                record.pool_w = readU32(r, 256);
                record.pool_stride_w = readU32(r, 260);
                for (&record.pool_pads, 0..) |*pad, i| pad.* = readU32(r, 264 + 4 * i);
                record.pool_flags = readU32(r, 280);
                record.decay_shift = readU32(r, 284);
                record.reset = readU32(r, 288);
                record.neuron_flags = readU32(r, 292);
                record.membrane_floor = readI32(r, 296);
            },
        }
        return record;
    }

    fn outShape(record: *const Record) Shape {
        return .{ .h = record.out[0], .w = record.out[1], .c = record.out[2] };
    }

    fn inShape(record: *const Record) Shape {
        return .{ .h = record.in[0], .w = record.in[1], .c = record.in[2] };
    }

    /// Bits of the values this layer emits (valid after the record was checked).
    fn outputMax(record: *const Record) u32 {
        return (@as(u32, 1) << @intCast(record.activation_bits)) - 1;
    }
};

/// Context for checking one layer: the file, its sections and the record's index.
const LayerCheck = struct {
    file: []const u8,
    sections: *const Sections,
    index: u32,
    record: Record,
    diag: *Diagnostic,

    fn name(check: *const LayerCheck) []const u8 {
        const names = check.sections.name.slice(check.file);
        const r = &check.record;
        if (r.name_bytes == 0 or r.name_bytes > limits.name_bytes_max) return "?";
        if (@as(u64, r.name_offset) + r.name_bytes > names.len) return "?";
        return names[r.name_offset..][0..r.name_bytes];
    }

    fn fail(check: *const LayerCheck, status: status_zig.Status, comptime fmt: []const u8, args: anytype) Error {
        const where_offset = recordOffset(check.file, check.sections.grph.offset, check.index);
        return check.diag.fail(status, "GRPH layer {d} '{s}' (record at byte offset {d}): " ++ fmt, .{
            check.index, check.name(), where_offset,
        } ++ args);
    }

    fn tensor(check: *const LayerCheck, slot: Slot) []const u8 {
        return check.record.slots[@intFromEnum(slot)].slice(check.sections.tens.slice(check.file));
    }
};

// -- validation -------------------------------------------------------------------------------------

/// The model memory's Model and Layer records with the alignment slack: the part of memory_bytes that
/// depends on the target (its pointers' size); the parameters that follow are the same everywhere.
pub fn recordsBytes(model_struct_bytes: u64, layer_struct_bytes: u64, layer_count: u64) u64 {
    return limits.buffer_alignment - 1 + limits.alignUp(model_struct_bytes, limits.buffer_alignment) +
        limits.alignUp(layer_count * layer_struct_bytes, limits.buffer_alignment);
}

pub fn validate(file: []const u8, diag: *Diagnostic) Error!Validated {
    try checkHeader(file, diag);
    const sections = try checkSectionTable(file, diag);
    const grph = sections.grph.slice(file);
    if (grph.len < limits.model_record_bytes) {
        return diag.fail(.layer, "GRPH section (byte offset {d}) has {d} bytes, less than the {d}-byte model record", .{
            sections.grph.offset, grph.len, limits.model_record_bytes,
        });
    }
    const layer_count = readU32(grph, 0);
    const input: Shape = .{ .h = readU32(grph, 4), .w = readU32(grph, 8), .c = readU32(grph, 12) };
    const input_bits = readU32(grph, 16);
    try checkModelRecord(grph, Version.of(file), sections.grph.offset, diag);
    if (reservedMustBeZero(file)) try checkZero(file, sections.grph.offset + 28, sections.grph.offset + limits.model_record_bytes, "GRPH model record reserved", diag);
    try checkShapeLimits(input, "the model input", diag);

    var memory_bytes: u64 = recordsBytes(@sizeOf(Model), @sizeOf(Layer), layer_count);
    var index: u32 = 0;
    while (index < layer_count) : (index += 1) {
        var check: LayerCheck = .{
            .file = file,
            .sections = &sections,
            .index = index,
            .record = Record.decode(grph, Version.of(file), index),
            .diag = diag,
        };
        const layer = try checkLayer(&check, input, input_bits, layer_count);
        try checkTensors(&check, &layer);
        try checkParameters(&check, &layer);
        try checkOverflowBound(&check, &layer);
        memory_bytes += parameterBytes(&layer, check.record.weight_bits != 0);
    }
    try checkNamesUnique(file, &sections, layer_count, diag);
    return .{
        .sections = sections,
        .layer_count = layer_count,
        .input = input,
        .input_bits = input_bits,
        .memory_bytes = memory_bytes,
    };
}

fn checkHeader(file: []const u8, diag: *Diagnostic) Error!void {
    if (file.len < limits.header_bytes) {
        return diag.fail(.truncated, "header: {d} bytes given, an .esnn file has at least the {d}-byte header", .{
            file.len, limits.header_bytes,
        });
    }
    if (!std.mem.eql(u8, file[0..8], &magic)) {
        return diag.fail(.magic, "header: bad magic at byte offset 0, expected 89 45 53 4E 0D 0A 1A 0A (not an .esnn file, or mangled in text mode)", .{});
    }
    const major = readU16(file, 8);
    if (major < limits.version_major_min or major > limits.version_major) {
        return diag.fail(.version, "header: version_major {d} at byte offset 8, this reader reads versions {d}.x to {d}.x", .{
            major, limits.version_major_min, limits.version_major,
        });
    }
    const header_bytes = readU32(file, 12);
    if (header_bytes != limits.header_bytes) {
        return diag.fail(.magic, "header: header_bytes {d} at byte offset 12, expected {d}", .{ header_bytes, limits.header_bytes });
    }
    const header_crc = readU32(file, 36);
    const header_crc_computed = std.hash.Crc32.hash(file[0..36]);
    if (header_crc != header_crc_computed) {
        return diag.fail(.checksum, "header: header_crc32 at byte offset 36 is 0x{x:0>8}, the header bytes [0, 36) give 0x{x:0>8}", .{
            header_crc, header_crc_computed,
        });
    }
    const file_bytes = readU64(file, 16);
    if (file_bytes != file.len) {
        return diag.fail(.truncated, "header: file_bytes at byte offset 16 says {d} bytes, {d} were given (truncated or padded file)", .{
            file_bytes, file.len,
        });
    }
    if (reservedMustBeZero(file)) {
        if (readU32(file, 28) != 0) {
            return diag.fail(.magic, "header: flags at byte offset 28 is 0x{x}, must be 0 in a version {d}.0 file", .{ readU32(file, 28), readU16(file, 8) });
        }
        try checkZero(file, 40, 64, "header reserved", diag);
    }
    const body_crc = readU32(file, 32);
    const body_crc_computed = std.hash.Crc32.hash(file[limits.header_bytes..]);
    if (body_crc != body_crc_computed) {
        return diag.fail(.checksum, "header: body_crc32 at byte offset 32 is 0x{x:0>8}, the body [64, {d}) gives 0x{x:0>8} (corrupted file)", .{
            body_crc, file.len, body_crc_computed,
        });
    }
}

/// In a file of minor version 0, flags and reserved bytes must be zero (docs/format.md).
fn reservedMustBeZero(file: []const u8) bool {
    return readU16(file, 10) == 0;
}

fn checkZero(bytes: []const u8, start: u64, end: u64, comptime what: []const u8, diag: *Diagnostic) Error!void {
    for (bytes[limits.usizeFrom(start)..limits.usizeFrom(end)], limits.usizeFrom(start)..) |byte, offset| {
        if (byte != 0) {
            return diag.fail(.layer, what ++ ": byte offset {d} is 0x{x:0>2}, reserved bytes must be zero in a file of minor version 0", .{ offset, byte });
        }
    }
}

fn checkSectionTable(file: []const u8, diag: *Diagnostic) Error!Sections {
    const count = readU32(file, 24);
    if (count < 1 or count > limits.section_count_max) {
        return diag.fail(.section, "header: section_count {d} at byte offset 24, expected 1..{d}", .{ count, limits.section_count_max });
    }
    const table_end = limits.header_bytes + @as(u64, count) * limits.section_entry_bytes;
    if (table_end > file.len) {
        return diag.fail(.truncated, "section table: {d} entries end at byte {d}, past the end of the {d}-byte file", .{
            count, table_end, file.len,
        });
    }
    const required = [_]*const [4]u8{ "GRPH", "TENS", "NAME", "META" };
    var found: [required.len]?Section = @splat(null);
    var previous_end: u64 = limits.alignUp(table_end, limits.section_alignment);
    var i: u32 = 0;
    while (i < count) : (i += 1) {
        const entry = limits.header_bytes + @as(u64, i) * limits.section_entry_bytes;
        const tag = file[limits.usizeFrom(entry)..][0..4];
        const section: Section = .{ .offset = readU32(file, entry + 8), .bytes = readU32(file, entry + 12) };
        if (reservedMustBeZero(file) and readU32(file, entry + 4) != 0) {
            return diag.fail(.section, "section table entry {d} ('{s}', byte offset {d}): flags 0x{x}, must be 0 in a file of minor version 0", .{
                i, printableTag(tag), entry + 4, readU32(file, entry + 4),
            });
        }
        if (section.offset % limits.section_alignment != 0) {
            return diag.fail(.section, "section table entry {d} ('{s}', byte offset {d}): offset {d} is not a multiple of {d}", .{
                i, printableTag(tag), entry, section.offset, limits.section_alignment,
            });
        }
        if (section.offset < previous_end) {
            return diag.fail(.section, "section table entry {d} ('{s}', byte offset {d}): offset {d} overlaps the section table or the previous section (sections must follow the table in table order, first free byte {d})", .{
                i, printableTag(tag), entry, section.offset, previous_end,
            });
        }
        if (section.offset + section.bytes > file.len) {
            return diag.fail(.truncated, "section table entry {d} ('{s}', byte offset {d}): section [{d}, {d}) ends past the end of the {d}-byte file", .{
                i, printableTag(tag), entry, section.offset, section.offset + section.bytes, file.len,
            });
        }
        previous_end = section.offset + section.bytes;
        for (required, &found) |required_tag, *slot| {
            if (!std.mem.eql(u8, tag, required_tag)) continue;
            if (slot.* != null) {
                return diag.fail(.section, "section table entry {d} (byte offset {d}): a second '{s}' section, each required section appears once", .{
                    i, entry, required_tag,
                });
            }
            slot.* = section;
        }
    }
    for (required, found) |required_tag, slot| {
        if (slot == null) {
            return diag.fail(.section, "section table (byte offset 64): the required section '{s}' is missing", .{required_tag});
        }
    }
    return .{ .grph = found[0].?, .tens = found[1].?, .name = found[2].?, .meta = found[3].? };
}

fn printableTag(tag: *const [4]u8) []const u8 {
    for (tag) |c| if (c < 0x20 or c > 0x7e) return "????";
    return tag;
}

fn checkModelRecord(grph: []const u8, version: Version, grph_offset: u64, diag: *Diagnostic) Error!void {
    const layer_count = readU32(grph, 0);
    if (layer_count < 1 or layer_count > limits.layers_max) {
        return diag.fail(.limit, "GRPH model record (byte offset {d}): layer_count {d}, expected 1..{d}", .{
            grph_offset, layer_count, limits.layers_max,
        });
    }
    const expected_bytes = limits.model_record_bytes + @as(u64, layer_count) * version.recordBytes();
    if (grph.len != expected_bytes) {
        return diag.fail(.layer, "GRPH section (byte offset {d}): {d} bytes, a model record and {d} layer records take {d}", .{
            grph_offset, grph.len, layer_count, expected_bytes,
        });
    }
    const input_bits = readU32(grph, 16);
    if (input_bits < 1 or input_bits > limits.input_bits_max) {
        return diag.fail(.layer, "GRPH model record (byte offset {d}): input_bits {d}, expected 1..8", .{ grph_offset + 16, input_bits });
    }
    const output_layer = readU32(grph, 20);
    if (output_layer != layer_count - 1) {
        return diag.fail(.layer, "GRPH model record (byte offset {d}): output_layer {d}, expected layer_count - 1 = {d}", .{
            grph_offset + 20, output_layer, layer_count - 1,
        });
    }
    const record_bytes = readU32(grph, 24);
    if (record_bytes != version.recordBytes()) {
        return diag.fail(.layer, "GRPH model record (byte offset {d}): record_bytes {d}, expected {d} in a version {d} file", .{
            grph_offset + 24, record_bytes, version.recordBytes(), @intFromEnum(version),
        });
    }
}

fn checkShapeLimits(shape: Shape, comptime what: []const u8, diag: *Diagnostic) Error!void {
    if (shape.h < 1 or shape.h > limits.dim_max or shape.w < 1 or shape.w > limits.dim_max or
        shape.c < 1 or shape.c > limits.channels_max or shape.valuesPadded() > limits.tensor_values_max)
    {
        return diag.fail(.limit, what ++ ": shape ({d}, {d}, {d}) outside the limits: height and width 1..{d}, channels 1..{d}, at most {d} values", .{
            shape.h, shape.w, shape.c, limits.dim_max, limits.channels_max, limits.tensor_values_max,
        });
    }
}

/// Output length of a convolution along one axis (TensorFlow 'same' / 'valid'); 0 if it does not fit.
pub fn convOutputSize(size: u32, kernel: u32, stride: u32, padding: model_zig.Padding) u32 {
    return switch (padding) {
        .same => (size + stride - 1) / stride,
        .valid => if (size >= kernel) (size - kernel) / stride + 1 else 0,
        .explicit => unreachable, // windowOutputSize
    };
}

/// Zero padding before the first row (or column) in 'same' mode: floor(total / 2).
pub fn samePaddingBefore(size: u32, kernel: u32, stride: u32) u32 {
    const out = (size + stride - 1) / stride;
    const needed = @as(i64, out - 1) * stride + kernel - size;
    return @intCast(@divFloor(@max(needed, 0), 2));
}

/// Zero padding after the last row (or column) in 'same' mode: the rest of the total.
pub fn samePaddingAfter(size: u32, kernel: u32, stride: u32) u32 {
    const out = (size + stride - 1) / stride;
    const needed: u32 = @intCast(@max(@as(i64, out - 1) * stride + kernel - size, 0));
    return needed - samePaddingBefore(size, kernel, stride);
}

/// One axis of a window geometry (docs/semantics.md, "Geometry"): OH = floor((H + before + after -
/// K) / S) + 1 when every window holds an in-bounds tap (before < K, (OH - 1) * S - before < H),
/// else null. u64 arithmetic: any u32 fields, no overflow.
pub fn windowOutputSize(size: u32, kernel: u32, stride: u32, before: u32, after: u32) ?u32 {
    std.debug.assert(stride >= 1 and kernel >= 1);
    const padded = @as(u64, size) + before + after;
    if (padded < kernel or before >= kernel) return null;
    const out = (padded - kernel) / stride + 1;
    if ((out - 1) * stride >= @as(u64, size) + before) return null; // the last window only pads
    if (out > limits.dim_max) return null;
    return @intCast(out);
}

fn enumFrom(comptime E: type, raw: u32) ?E {
    return std.enums.fromInt(E, raw);
}

/// Check the record's fields and shapes against the model input and earlier layers; return the
/// layer with geometry filled in and parameters still empty.
fn checkLayer(check: *const LayerCheck, model_input: Shape, input_bits: u32, layer_count: u32) Error!Layer {
    const r = &check.record;
    const names = check.sections.name.slice(check.file);
    if (r.name_bytes < 1 or r.name_bytes > limits.name_bytes_max or @as(u64, r.name_offset) + r.name_bytes > names.len) {
        return check.fail(.layer, "name [{d}, +{d}) is not 1..{d} bytes inside the {d}-byte NAME section", .{
            r.name_offset, r.name_bytes, limits.name_bytes_max, names.len,
        });
    }
    if (!std.unicode.utf8ValidateSlice(names[r.name_offset..][0..r.name_bytes])) {
        return check.fail(.layer, "name at NAME offset {d} is not valid UTF-8", .{r.name_offset});
    }
    if (reservedMustBeZero(check.file)) {
        const record_offset = recordOffset(check.file, check.sections.grph.offset, check.index);
        const reserved_ranges: []const [2]u64 = switch (r.version) {
            .v1 => &.{ .{ 104, 128 }, .{ 208, 256 } },
            .v2 => &.{.{ 300, 384 }},
        };
        for (reserved_ranges) |range| {
            for (check.file[limits.usizeFrom(record_offset + range[0])..limits.usizeFrom(record_offset + range[1])], limits.usizeFrom(range[0])..) |byte, field_offset| {
                if (byte != 0) return check.fail(.layer, "reserved byte {d} of the record is 0x{x:0>2}, must be zero in a file of minor version 0", .{ field_offset, byte });
            }
        }
    }
    const kind = enumFrom(Kind, r.kind) orelse
        return check.fail(.layer, "kind {d}, expected 1 input_conv2d, 2 conv2d, 3 depthwise2d, 4 separable2d, 5 dense, 6 add, 7 concat", .{r.kind});
    if (kind == .concat and r.version == .v1) {
        return check.fail(.layer, "kind 7 (concat) in a version 1 file, concat layers are new in version 2", .{});
    }
    const neuron = enumFrom(Neuron, r.neuron) orelse
        return check.fail(.layer, "neuron {d}, expected 0 none, 1 relu, 2 if, 3 lif", .{r.neuron});
    const pool = enumFrom(Pool, r.pool) orelse
        return check.fail(.layer, "pool {d}, expected 0 none, 1 max, 2 avg, 3 global_avg", .{r.pool});
    const padding = enumFrom(model_zig.Padding, r.padding) orelse
        return check.fail(.layer, "padding {d}, expected 0 valid, 1 same or 2 explicit", .{r.padding});
    if (padding == .explicit and r.version == .v1) {
        return check.fail(.layer, "padding 2 (explicit) in a version 1 file, explicit padding is new in version 2", .{});
    }

    var layer: Layer = std.mem.zeroInit(Layer, .{
        .kind = kind,
        .neuron = neuron,
        .pool = pool,
        .input_count = r.input_count,
        .inputs = r.inputs,
        .input = r.inShape(),
        .output = r.outShape(),
        .kernel_h = r.kernel_h,
        .kernel_w = r.kernel_w,
        .stride_h = r.stride_h,
        .stride_w = r.stride_w,
        .depth_multiplier = r.depth_multiplier,
        .activation_bits = r.activation_bits,
        .weight_bits = r.weight_bits,
        .mid_bits = r.mid_bits,
        .leak_shift = r.leak_shift,
        .weights = &.{},
        .pointwise = &.{},
        .depthwise_groups = &.{},
        .spike_rows = &.{},
        .bias = &.{},
        .out_multiplier = &.{},
        .out_shift = &.{},
        .relu_ceiling = &.{},
        .relu_scale = &.{},
        .threshold = &.{},
        .decay_multiplier = &.{},
        .mid_multiplier = &.{},
        .mid_shift = &.{},
        .input_multipliers = &.{},
        .pad_pixel = &.{},
        .out_zero_point = &.{},
        .pool_sign = &.{},
        .concat_sources = &.{},
        .row_taps = &.{},
        .column_taps = &.{},
    });
    try checkInputs(check, &layer, model_input, input_bits);
    try checkBits(check, &layer, layer_count);
    try checkDynamics(check, &layer);
    try checkGeometry(check, &layer, padding);
    try checkPooling(check, &layer);
    if (!layer.output.eql(r.outShape())) {
        return check.fail(.layer, "output shape ({d}, {d}, {d}) in the record, the geometry gives ({d}, {d}, {d})", .{
            r.out[0], r.out[1], r.out[2], layer.output.h, layer.output.w, layer.output.c,
        });
    }
    return layer;
}

fn checkInputs(check: *const LayerCheck, layer: *Layer, model_input: Shape, input_bits: u32) Error!void {
    const r = &check.record;
    const count_min: u32, const count_max: u32 = switch (layer.kind) {
        .add => .{ 2, limits.add_inputs_max },
        .concat => .{ 1, limits.concat_inputs_max },
        else => .{ 1, 1 },
    };
    if (r.input_count < count_min or r.input_count > count_max) {
        return check.fail(.layer, "input_count {d}, a {s} layer takes {d}..{d}", .{ r.input_count, @tagName(layer.kind), count_min, count_max });
    }
    try checkShapeLimits(layer.input, "layer input", check.diag);
    for (r.inputs, 0..) |producer, slot| {
        if (slot >= r.input_count) {
            if (producer != model_zig.input_model) {
                return check.fail(.layer, "unused inputs[{d}] is {d}, expected -1", .{ slot, producer });
            }
            continue;
        }
        if (producer < model_zig.input_model or producer >= @as(i64, check.index)) {
            return check.fail(.layer, "inputs[{d}] is {d}, expected -1 (the model input) or an earlier layer 0..{d}", .{
                slot, producer, @as(i64, check.index) - 1,
            });
        }
        var shape = model_input;
        var value_max: u32 = (@as(u32, 1) << @intCast(input_bits)) - 1;
        if (producer != model_zig.input_model) {
            const grph = check.sections.grph.slice(check.file);
            const source = Record.decode(grph, r.version, @intCast(producer));
            if (source.neuron == @intFromEnum(Neuron.none)) {
                return check.fail(.layer, "inputs[{d}] reads layer {d}, whose neuron is none (only the last layer may have none)", .{ slot, producer });
            }
            shape = source.outShape();
            value_max = source.outputMax();
        }
        // concat: inputs of equal height and width, the record's in_c is the first input's
        const shape_ok = if (layer.kind == .concat and slot > 0)
            shape.h == layer.input.h and shape.w == layer.input.w
        else
            shape.eql(layer.input);
        if (!shape_ok) {
            return check.fail(.layer, "input shape ({d}, {d}, {d}) in the record, inputs[{d}] (= {d}) produces ({d}, {d}, {d})", .{
                layer.input.h, layer.input.w, layer.input.c, slot, producer, shape.h, shape.w, shape.c,
            });
        }
        layer.input_max[slot] = value_max;
        layer.input_shapes[slot] = shape;
    }
}

fn checkBits(check: *const LayerCheck, layer: *const Layer, layer_count: u32) Error!void {
    const r = &check.record;
    const is_last = check.index + 1 == layer_count;
    if (layer.neuron == .none and !is_last) {
        return check.fail(.layer, "neuron none is only allowed on the last layer", .{});
    }
    const bits_ok = switch (layer.neuron) {
        .none => r.activation_bits == 32,
        .relu => r.activation_bits == 1 or r.activation_bits == 2 or r.activation_bits == 4 or r.activation_bits == 8,
        .integrate_fire, .leaky_integrate_fire => r.activation_bits == 1,
    };
    if (!bits_ok) {
        return check.fail(.layer, "activation_bits {d} with neuron {d}; expected relu 1/2/4/8, if/lif 1, none 32", .{
            r.activation_bits, r.neuron,
        });
    }
    const weight_bits_ok = if (hasWeights(layer.kind))
        r.weight_bits == 2 or r.weight_bits == 4 or r.weight_bits == 8
    else
        r.weight_bits == 0;
    if (!weight_bits_ok) {
        return check.fail(.layer, "weight_bits {d}, expected 2, 4 or 8 (0 for add and concat)", .{r.weight_bits});
    }
    const mid_bits_ok = if (layer.kind == .separable2d)
        r.mid_bits == 2 or r.mid_bits == 4 or r.mid_bits == 8
    else
        r.mid_bits == 0;
    if (!mid_bits_ok) {
        return check.fail(.layer, "mid_bits {d}, expected 2, 4 or 8 for separable2d, 0 otherwise", .{r.mid_bits});
    }
}

/// The if/lif membrane dynamics (docs/semantics.md, "Neuron stages"): a lif layer leaks by
/// leak_shift or decays by decay_multiplier / 2^decay_shift, exactly one of them; reset and
/// membrane floor for if/lif only. Sets them on the layer.
fn checkDynamics(check: *const LayerCheck, layer: *Layer) Error!void {
    const r = &check.record;
    const lif = layer.neuron == .leaky_integrate_fire;
    const spiking = layer.neuron.isSpiking();
    const decay_shift_max: u32 = if (lif) limits.decay_shift_max else 0;
    if (r.decay_shift > decay_shift_max) {
        return check.fail(.range, "decay_shift {d}, expected 0 (shift leak) or 1..{d} (decay) for lif, 0 otherwise", .{ r.decay_shift, limits.decay_shift_max });
    }
    const leak_ok = if (lif and r.decay_shift == 0)
        r.leak_shift >= 1 and r.leak_shift <= limits.leak_shift_max
    else
        r.leak_shift == 0;
    if (!leak_ok) {
        return check.fail(.range, "leak_shift {d}, expected 1..{d} for lif without a decay_shift, 0 otherwise (decay_shift {d})", .{ r.leak_shift, limits.leak_shift_max, r.decay_shift });
    }
    const reset = enumFrom(model_zig.Reset, r.reset) orelse
        return check.fail(.range, "reset {d}, expected 0 subtract, 1 zero or 2 none", .{r.reset});
    if (!spiking and reset != .subtract) {
        return check.fail(.range, "reset {d}, a layer with neuron {d} has no membrane to reset (0)", .{ r.reset, r.neuron });
    }
    const flags_max: u32 = if (spiking) 1 else 0; // bit 0: membrane floor
    if (r.neuron_flags > flags_max) {
        return check.fail(.range, "neuron_flags 0x{x}, expected {s}", .{ r.neuron_flags, if (spiking) "0 or 1 (bit 0: membrane floor)" else "0 for neuron relu/none" });
    }
    const has_floor = r.neuron_flags & 1 != 0;
    if (if (has_floor) r.membrane_floor > 0 else r.membrane_floor != 0) {
        return check.fail(.range, "membrane_floor {d}, expected <= 0 with neuron_flags bit 0 set, 0 without", .{r.membrane_floor});
    }
    layer.decay_shift = r.decay_shift;
    layer.reset = reset;
    layer.has_floor = has_floor;
    layer.membrane_floor = r.membrane_floor;
}

fn hasWeights(kind: Kind) bool {
    return kind != .add and kind != .concat;
}

fn checkGeometry(check: *const LayerCheck, layer: *Layer, padding: model_zig.Padding) Error!void {
    const r = &check.record;
    const in = layer.input;
    switch (layer.kind) {
        .dense, .add, .concat => {
            if (r.kernel_h != 1 or r.kernel_w != 1 or r.stride_h != 1 or r.stride_w != 1 or padding != .valid or
                !std.mem.allEqual(u32, &r.pads, 0) or r.depth_multiplier != 1)
            {
                return check.fail(.layer, "kernel {d}x{d} stride {d}x{d} padding {d} pads ({d}, {d}, {d}, {d}) depth_multiplier {d}, a {s} layer has kernel 1x1 stride 1x1 padding 0, no pads, depth_multiplier 1", .{
                    r.kernel_h, r.kernel_w, r.stride_h, r.stride_w, r.padding, r.pads[0], r.pads[1], r.pads[2], r.pads[3], r.depth_multiplier, @tagName(layer.kind),
                });
            }
            if (layer.kind == .dense and layer.pool != .none) {
                return check.fail(.layer, "pool {d}, a dense layer takes no pooling", .{r.pool});
            }
            layer.synaptic = switch (layer.kind) {
                .dense => .{ .h = 1, .w = 1, .c = r.out[2] },
                .concat => .{ .h = in.h, .w = in.w, .c = r.out[2] },
                else => in,
            };
        },
        .input_conv2d, .conv2d, .depthwise2d, .separable2d => {
            if (r.kernel_h < 1 or r.kernel_h > limits.kernel_max or r.kernel_w < 1 or r.kernel_w > limits.kernel_max) {
                return check.fail(.limit, "kernel {d}x{d}, expected 1..{d} each", .{ r.kernel_h, r.kernel_w, limits.kernel_max });
            }
            if (r.stride_h < 1 or r.stride_h > limits.stride_max or r.stride_w < 1 or r.stride_w > limits.stride_max) {
                return check.fail(.limit, "stride {d}x{d}, expected 1..{d} each", .{ r.stride_h, r.stride_w, limits.stride_max });
            }
            const depthwise = layer.kind == .depthwise2d or layer.kind == .separable2d;
            const multiplier_ok = if (depthwise) r.depth_multiplier >= 1 and r.depth_multiplier <= limits.depth_multiplier_max else r.depth_multiplier == 1;
            if (!multiplier_ok) {
                return check.fail(.limit, "depth_multiplier {d}, expected 1..{d} for depthwise2d and separable2d, 1 otherwise", .{ r.depth_multiplier, limits.depth_multiplier_max });
            }
            const pads = try resolvePads(check, padding);
            const oh = windowOutputSize(in.h, r.kernel_h, r.stride_h, pads[0], pads[1]);
            const ow = windowOutputSize(in.w, r.kernel_w, r.stride_w, pads[2], pads[3]);
            if (oh == null or ow == null) {
                return check.fail(.layer, "kernel {d}x{d} stride {d}x{d} pads ({d}, {d}, {d}, {d}) on the {d}x{d} input: some window holds no in-bounds tap (or none fits)", .{
                    r.kernel_h, r.kernel_w, r.stride_h, r.stride_w, pads[0], pads[1], pads[2], pads[3], in.h, in.w,
                });
            }
            const channels = switch (layer.kind) {
                .depthwise2d => in.c * r.depth_multiplier,
                else => r.out[2],
            };
            if (layer.kind == .depthwise2d and r.out[2] != channels) {
                return check.fail(.layer, "depthwise output channels {d}, expected the input's {d} x depth_multiplier {d}", .{ r.out[2], in.c, r.depth_multiplier });
            }
            if (depthwise and @as(u64, in.c) * r.depth_multiplier > limits.channels_max) {
                return check.fail(.limit, "depthwise channels {d} x {d} above {d}", .{ in.c, r.depth_multiplier, limits.channels_max });
            }
            layer.synaptic = .{ .h = oh.?, .w = ow.?, .c = channels };
            layer.pad_top = pads[0];
            layer.pad_bottom = pads[1];
            layer.pad_left = pads[2];
            layer.pad_right = pads[3];
        },
    }
    try checkShapeLimits(layer.synaptic, "layer potentials", check.diag);
    if (layer.kind == .dense and in.values() > limits.tensor_values_max) {
        return check.fail(.limit, "fan_in {d} above {d}", .{ in.values(), limits.tensor_values_max });
    }
}

/// The pads (top, bottom, left, right) of a spatial layer: its mode's (valid, same) or the record's
/// (explicit). A version-2 record stores the resolved pads of every mode; they must agree.
fn resolvePads(check: *const LayerCheck, padding: model_zig.Padding) Error![4]u32 {
    const r = &check.record;
    const in = check.record.inShape();
    const resolved: [4]u32 = switch (padding) {
        .valid => @splat(0),
        .same => .{
            samePaddingBefore(in.h, r.kernel_h, r.stride_h), samePaddingAfter(in.h, r.kernel_h, r.stride_h),
            samePaddingBefore(in.w, r.kernel_w, r.stride_w), samePaddingAfter(in.w, r.kernel_w, r.stride_w),
        },
        .explicit => return r.pads,
    };
    if (r.version == .v2 and !std.mem.eql(u32, &resolved, &r.pads)) {
        return check.fail(.layer, "pads ({d}, {d}, {d}, {d}) in the record, padding {s} gives ({d}, {d}, {d}, {d})", .{
            r.pads[0], r.pads[1], r.pads[2], r.pads[3], @tagName(padding), resolved[0], resolved[1], resolved[2], resolved[3],
        });
    }
    return resolved;
}

fn checkPooling(check: *const LayerCheck, layer: *Layer) Error!void {
    const r = &check.record;
    const synaptic = layer.synaptic;
    const flags_ok = if (layer.pool == .avg) r.pool_flags & ~@as(u32, 1) == 0 else r.pool_flags == 0;
    if (!flags_ok) {
        return check.fail(.layer, "pool_flags 0x{x}, expected bit 0 (count_include_pad) on avg pools only, other bits zero", .{r.pool_flags});
    }
    switch (layer.pool) {
        .none, .global_avg => {
            if (r.pool_h != 0 or r.pool_w != 0 or r.pool_stride_h != 0 or r.pool_stride_w != 0 or !std.mem.allEqual(u32, &r.pool_pads, 0)) {
                return check.fail(.layer, "pool {d}x{d} stride {d}x{d} pads ({d}, {d}, {d}, {d}), expected all 0 without a max/avg pool", .{
                    r.pool_h, r.pool_w, r.pool_stride_h, r.pool_stride_w, r.pool_pads[0], r.pool_pads[1], r.pool_pads[2], r.pool_pads[3],
                });
            }
            layer.output = if (layer.pool == .none) synaptic else .{ .h = 1, .w = 1, .c = synaptic.c };
        },
        .max, .avg => {
            if (r.pool_h < 1 or r.pool_h > limits.pool_max or r.pool_w < 1 or r.pool_w > limits.pool_max or
                r.pool_stride_h < 1 or r.pool_stride_h > limits.pool_max or r.pool_stride_w < 1 or r.pool_stride_w > limits.pool_max)
            {
                return check.fail(.limit, "pool {d}x{d} stride {d}x{d}, expected 1..{d} each", .{ r.pool_h, r.pool_w, r.pool_stride_h, r.pool_stride_w, limits.pool_max });
            }
            const pads = r.pool_pads;
            const oh = windowOutputSize(synaptic.h, r.pool_h, r.pool_stride_h, pads[0], pads[1]);
            const ow = windowOutputSize(synaptic.w, r.pool_w, r.pool_stride_w, pads[2], pads[3]);
            if (oh == null or ow == null) {
                return check.fail(.layer, "pool {d}x{d} stride {d}x{d} pads ({d}, {d}, {d}, {d}) on the {d}x{d} potentials: some window holds no in-bounds tap (or none fits)", .{
                    r.pool_h, r.pool_w, r.pool_stride_h, r.pool_stride_w, pads[0], pads[1], pads[2], pads[3], synaptic.h, synaptic.w,
                });
            }
            layer.pool_h = r.pool_h;
            layer.pool_w = r.pool_w;
            layer.pool_stride_h = r.pool_stride_h;
            layer.pool_stride_w = r.pool_stride_w;
            layer.pool_pad_top = pads[0];
            layer.pool_pad_bottom = pads[1];
            layer.pool_pad_left = pads[2];
            layer.pool_pad_right = pads[3];
            layer.count_include_pad = r.pool_flags & 1 != 0;
            layer.output = .{ .h = oh.?, .w = ow.?, .c = synaptic.c };
        },
    }
}

/// Element count of each tensor slot for this layer; 0 = the slot must be unused.
fn slotCount(layer: *const Layer, slot: Slot) u64 {
    const cin: u64 = layer.input.c;
    const cout: u64 = layer.synaptic.c;
    const taps = @as(u64, layer.kernel_h) * layer.kernel_w;
    const depthwise = layer.kind == .depthwise2d or layer.kind == .separable2d;
    const mid: u64 = if (depthwise) layer.depthwiseChannels() else 0;
    return switch (slot) {
        .weights => switch (layer.kind) {
            .input_conv2d, .conv2d => taps * cin * cout,
            .depthwise2d, .separable2d => taps * mid,
            .dense => layer.input.values() * cout,
            .add, .concat => 0,
        },
        .pointwise => if (layer.kind == .separable2d) mid * cout else 0,
        .bias => cout,
        .out_multiplier, .out_shift => if (layer.neuron == .relu) cout else 0,
        .threshold => if (layer.neuron.isSpiking()) cout else 0,
        .mid_multiplier, .mid_shift => if (layer.kind == .separable2d) mid else 0,
        .input_multipliers => switch (layer.kind) {
            .add => @as(u64, layer.input_count) * cout,
            .concat => cout,
            else => 0,
        },
        .pad_value => if (isSpatial(layer.kind)) cin else 0,
        .out_zero_point => if (layer.neuron == .relu) cout else 0,
        .pool_sign => if (layer.pool == .max) cout else 0,
        .sources => if (layer.kind == .concat) 2 * cout else 0,
        .decay_multiplier => if (layer.decay_shift != 0) cout else 0, // lif only (checkDynamics)
        .reserved_14, .reserved_15 => 0,
    };
}

/// Whether a file may leave a used slot empty ({0, 0}), which reads as its default: the version-2
/// tensors (pad values 0, zero points 0, pool signs +1, concat sources in input order,
/// add and concat biases 0), and every one of them in a version-1 file, which has none of them.
fn slotIsOptional(layer: *const Layer, slot: Slot) bool {
    return switch (slot) {
        .pad_value, .out_zero_point, .pool_sign, .sources => true,
        .bias => layer.kind == .add or layer.kind == .concat,
        else => false,
    };
}

fn slotIsPacked(slot: Slot) bool {
    return slot == .weights or slot == .pointwise;
}

fn checkTensors(check: *const LayerCheck, layer: *const Layer) Error!void {
    const r = &check.record;
    const tens_bytes = check.sections.tens.bytes;
    for (r.slots, 0..) |slot_range, slot_index| {
        const slot: Slot = @enumFromInt(slot_index);
        const count = slotCount(layer, slot);
        if (count > limits.weights_max) {
            return check.fail(.limit, "tensor slot {d} ({s}) has {d} elements, above {d}", .{ slot_index, @tagName(slot), count, limits.weights_max });
        }
        const expected_bytes = if (count == 0) 0 else if (slotIsPacked(slot)) (count * r.weight_bits + 7) / 8 else count * 4;
        const empty = slot_range.offset == 0 and slot_range.bytes == 0;
        if (count == 0) {
            if (!empty) {
                return check.fail(.tensor, "tensor slot {d} ({s}) is {{{d}, {d}}}, a {s} layer with this neuron and pooling does not use it ({{0, 0}})", .{
                    slot_index, @tagName(slot), slot_range.offset, slot_range.bytes, @tagName(layer.kind),
                });
            }
            continue;
        }
        if (r.version == .v1 and slot_index >= limits.tensor_slot_count_v1 - 1 and !empty) {
            return check.fail(.tensor, "tensor slot {d} is {{{d}, {d}}}, reserved ({{0, 0}}) in a version 1 file", .{ slot_index, slot_range.offset, slot_range.bytes });
        }
        if (empty and slotIsOptional(layer, slot)) continue;
        if (slot_range.bytes != expected_bytes) {
            return check.fail(.tensor, "tensor slot {d} ({s}) has {d} bytes, {d} elements need {d}", .{
                slot_index, @tagName(slot), slot_range.bytes, count, expected_bytes,
            });
        }
        if (slot_range.offset % limits.tensor_alignment != 0) {
            return check.fail(.tensor, "tensor slot {d} ({s}) offset {d} is not a multiple of {d}", .{
                slot_index, @tagName(slot), slot_range.offset, limits.tensor_alignment,
            });
        }
        if (slot_range.offset + slot_range.bytes > tens_bytes) {
            return check.fail(.tensor, "tensor slot {d} ({s}) [{d}, {d}) lies outside the {d}-byte TENS section", .{
                slot_index, @tagName(slot), slot_range.offset, slot_range.offset + slot_range.bytes, tens_bytes,
            });
        }
        if (slotIsPacked(slot)) try checkPackedTail(check, slot, count);
    }
    if (r.version == .v1 and layer.kind == .add and !(r.slots[@intFromEnum(Slot.bias)].offset == 0 and r.slots[@intFromEnum(Slot.bias)].bytes == 0)) {
        return check.fail(.tensor, "tensor slot 2 (bias) is used by an add layer of a version 1 file, where add has no bias ({{0, 0}})", .{});
    }
}

/// "Unused high bits of the last byte are zero" (docs/format.md, "Packing").
fn checkPackedTail(check: *const LayerCheck, slot: Slot, count: u64) Error!void {
    const used_bits = (count * check.record.weight_bits) % 8;
    if (used_bits == 0) return;
    const data = check.tensor(slot);
    const last = data[data.len - 1];
    if (last >> @intCast(used_bits) != 0) {
        return check.fail(.tensor, "tensor slot {d} ({s}): the unused high bits of its last byte (0x{x:0>2}) are not zero", .{
            @intFromEnum(slot), @tagName(slot), last,
        });
    }
}

fn checkI32Range(check: *const LayerCheck, slot: Slot, min: i64, max: i64) Error!void {
    const data = check.tensor(slot);
    var offset: u64 = 0;
    while (offset < data.len) : (offset += 4) {
        const value = readI32(data, offset);
        if (value < min or value > max) {
            return check.fail(.range, "{s}[{d}] = {d}, expected {d}..{d}", .{ @tagName(slot), offset / 4, value, min, max });
        }
    }
}

fn checkParameters(check: *const LayerCheck, layer: *const Layer) Error!void {
    const int32_max_signed: i64 = std.math.maxInt(i32);
    if (layer.neuron == .relu) {
        try checkI32Range(check, .out_multiplier, 0, int32_max_signed);
        try checkI32Range(check, .out_shift, 0, limits.shift_max);
        try checkI32Range(check, .out_zero_point, 0, layer.outputMax());
    }
    if (layer.neuron.isSpiking()) try checkI32Range(check, .threshold, 1, int32_max_signed);
    // a decay, not a growth: |v| never grows, so the membrane stays int32 (docs/semantics.md)
    if (layer.decay_shift != 0) try checkI32Range(check, .decay_multiplier, 0, @as(i64, 1) << @intCast(layer.decay_shift));
    if (layer.kind == .separable2d) {
        try checkI32Range(check, .mid_multiplier, 0, int32_max_signed);
        try checkI32Range(check, .mid_shift, 0, limits.shift_max);
    }
    if (isSpatial(layer.kind)) try checkI32Range(check, .pad_value, 0, layer.input_max[0]);
    if (layer.pool == .max) {
        const signs = check.tensor(.pool_sign);
        var offset: u64 = 0;
        while (offset < signs.len) : (offset += 4) {
            const sign = readI32(signs, offset);
            if (sign != 1 and sign != -1) return check.fail(.range, "pool_sign[{d}] = {d}, expected +1 (max) or -1 (min)", .{ offset / 4, sign });
        }
    }
    if (layer.kind == .concat) try checkConcatSources(check, layer);
    // add and concat: input_multipliers take any int32 sign (docs/semantics.md); the overflow bound covers them.
}

/// Every concat output channel names an input and one of its channels; without sources the inputs'
/// channels follow each other, which needs Cout = the sum of the inputs' channels.
fn checkConcatSources(check: *const LayerCheck, layer: *const Layer) Error!void {
    const sources = check.tensor(.sources);
    if (sources.len == 0) {
        var total: u64 = 0;
        for (layer.input_shapes[0..layer.input_count]) |shape| total += shape.c;
        if (total != layer.synaptic.c) {
            return check.fail(.layer, "concat without sources has {d} output channels, its inputs have {d} together", .{ layer.synaptic.c, total });
        }
        return;
    }
    var channel: u64 = 0;
    while (channel < layer.synaptic.c) : (channel += 1) {
        const input = readI32(sources, channel * 8);
        const input_channel = readI32(sources, channel * 8 + 4);
        if (input < 0 or input >= layer.input_count) {
            return check.fail(.range, "sources[{d}] = ({d}, {d}): input {d}, expected 0..{d}", .{ channel, input, input_channel, input, layer.input_count - 1 });
        }
        const channels = layer.input_shapes[@intCast(input)].c;
        if (input_channel < 0 or input_channel >= channels) {
            return check.fail(.range, "sources[{d}] = ({d}, {d}): channel {d}, input {d} has channels 0..{d}", .{ channel, input, input_channel, input_channel, input, channels - 1 });
        }
    }
}

/// The source (input, channel) of concat output channel j (the default order without sources).
fn concatSource(check: *const LayerCheck, layer: *const Layer, j: u64) model_zig.ConcatSource {
    const sources = check.tensor(.sources);
    if (sources.len != 0) {
        return .{ .input = @intCast(readI32(sources, j * 8)), .channel = @intCast(readI32(sources, j * 8 + 4)) };
    }
    var rest = j;
    for (layer.input_shapes[0..layer.input_count], 0..) |shape, input| {
        if (rest < shape.c) return .{ .input = @intCast(input), .channel = @intCast(rest) };
        rest -= shape.c;
    }
    unreachable; // checkConcatSources: Cout = the sum of the inputs' channels
}

/// An i32 tensor's element, or `default` where the file leaves the (optional) slot empty.
fn readI32Or(check: *const LayerCheck, slot: Slot, index: u64, default: i32) i32 {
    const data = check.tensor(slot);
    return if (data.len == 0) default else readI32(data, index * 4);
}

/// sum over rows of |W[row, column]| of a packed (rows, columns) matrix.
fn columnAbsSum(data: []const u8, bits: u32, rows: u64, columns: u64, column: u64) u128 {
    var sum: u128 = 0;
    var row: u64 = 0;
    while (row < rows) : (row += 1) sum += @abs(packedWeight(data, bits, row * columns + column));
    return sum;
}

fn poolFactor(layer: *const Layer) u64 {
    return switch (layer.pool) {
        .none, .max => 1,
        .avg => @as(u64, layer.pool_h) * layer.pool_w,
        .global_avg => layer.synaptic.pixels(),
    };
}

/// The int32 overflow bound of docs/semantics.md ("Checks at construction").
fn checkOverflowBound(check: *const LayerCheck, layer: *const Layer) Error!void {
    const cout: u64 = layer.synaptic.c;
    var channel: u64 = 0;
    while (channel < cout) : (channel += 1) {
        const bound = potentialBound(check, layer, channel);
        if (bound > int32_max) {
            return check.fail(.overflow, "output channel {d} can reach |potential| {d}, above 2^31 - 1 (int32 overflow bound)", .{ channel, bound });
        }
    }
    const bits = check.record.weight_bits;
    const a_max: u128 = layer.input_max[0];
    if (layer.kind == .separable2d) {
        const mid = layer.depthwiseChannels();
        channel = 0;
        while (channel < mid) : (channel += 1) {
            const abs_sum = columnAbsSum(check.tensor(.weights), bits, slotCount(layer, .weights) / mid, mid, channel);
            if (abs_sum * a_max > int32_max) {
                return check.fail(.overflow, "depthwise channel {d} can reach |potential| {d}, above 2^31 - 1 (int32 overflow bound)", .{ channel, abs_sum * a_max });
            }
        }
    }
}

/// The largest |potential| (after pooling) output channel `channel` can reach: (sum |W| x input
/// max + |bias|) x the pool's window for the synaptic kinds, the multiplied inputs' for add and concat.
fn potentialBound(check: *const LayerCheck, layer: *const Layer, channel: u64) u128 {
    const bits = check.record.weight_bits;
    const cout: u64 = layer.synaptic.c;
    const a_max: u128 = layer.input_max[0];
    const bias: u128 = @abs(readI32Or(check, .bias, channel, 0));
    return switch (layer.kind) {
        .input_conv2d, .conv2d, .dense, .depthwise2d => blk: {
            const rows = slotCount(layer, .weights) / cout;
            const abs_sum = columnAbsSum(check.tensor(.weights), bits, rows, cout, channel);
            break :blk (abs_sum * a_max + bias) * poolFactor(layer);
        },
        .separable2d => blk: {
            const mid_max: u128 = @as(u128, 1) << @intCast(layer.mid_bits - 1);
            const abs_sum = columnAbsSum(check.tensor(.pointwise), bits, layer.depthwiseChannels(), cout, channel);
            break :blk (abs_sum * mid_max + bias) * poolFactor(layer);
        },
        .add => blk: {
            var sum: u128 = 0;
            for (0..layer.input_count) |input| {
                const multiplier = readI32(check.tensor(.input_multipliers), (input * cout + channel) * 4);
                sum += @as(u128, @abs(multiplier)) * layer.input_max[input];
            }
            break :blk (sum + bias) * poolFactor(layer);
        },
        .concat => blk: {
            const source = concatSource(check, layer, channel);
            const multiplier: u128 = @abs(readI32Or(check, .input_multipliers, channel, 1));
            break :blk (multiplier * layer.input_max[source.input] + bias) * poolFactor(layer);
        },
    };
}

fn checkNamesUnique(file: []const u8, sections: *const Sections, layer_count: u32, diag: *Diagnostic) Error!void {
    const grph = sections.grph.slice(file);
    const names = sections.name.slice(file);
    var i: u32 = 0;
    while (i < layer_count) : (i += 1) {
        const a = Record.decode(grph, Version.of(file), i);
        var j: u32 = 0;
        while (j < i) : (j += 1) {
            const b = Record.decode(grph, Version.of(file), j);
            if (std.mem.eql(u8, names[a.name_offset..][0..a.name_bytes], names[b.name_offset..][0..b.name_bytes])) {
                return diag.fail(.layer, "GRPH layers {d} and {d} are both named '{s}', names are unique", .{
                    j, i, names[a.name_offset..][0..a.name_bytes],
                });
            }
        }
    }
}

// -- building the model in caller memory -----------------------------------------------------------

/// Bytes of one layer's unpacked parameters in the model memory (each tensor 64-byte aligned).
fn parameterBytes(layer: *const Layer, has_weights: bool) u64 {
    _ = has_weights;
    const sizes = parameterSizes(layer);
    var total: u64 = 0;
    for (sizes) |bytes| total += limits.alignUp(bytes, limits.buffer_alignment);
    if (layer.neuron == .relu) total += 2 * limits.alignUp(@as(u64, layer.synaptic.channelsPadded()) * 4, limits.buffer_alignment);
    if (layer.kind == .separable2d) total += 3 * limits.alignUp(@as(u64, layer.depthwiseChannelsPadded()) * 4, limits.buffer_alignment);
    if (usesDepthwiseGroups(layer)) total += limits.alignUp(depthwiseGroupBytes(layer), limits.buffer_alignment);
    if (layer.usesSpikeRows()) total += limits.alignUp(spikeRowBytes(layer), limits.buffer_alignment);
    if (isSpatial(layer.kind)) {
        total += limits.alignUp(@as(u64, layer.input.h) * @sizeOf(model_zig.TapRange), limits.buffer_alignment);
        total += limits.alignUp(@as(u64, layer.input.w) * @sizeOf(model_zig.TapRange), limits.buffer_alignment);
    }
    return total;
}

/// Bytes of each unpacked tensor, in Slot order (channel axes padded). An optional slot the file
/// leaves empty is unpacked all the same, holding its defaults.
fn parameterSizes(layer: *const Layer) [limits.tensor_slot_count]u64 {
    var sizes: [limits.tensor_slot_count]u64 = @splat(0);
    const cout_p: u64 = layer.synaptic.channelsPadded();
    const taps = @as(u64, layer.kernel_h) * layer.kernel_w;
    for (&sizes, 0..) |*size, slot_index| {
        const slot: Slot = @enumFromInt(slot_index);
        if (slotCount(layer, slot) == 0) continue;
        size.* = switch (slot) {
            .weights => switch (layer.kind) {
                .input_conv2d, .conv2d => if (layer.isNarrowConv())
                    @as(u64, layer.kernel_h) * layer.rowQuads() * limits.quad_channels * cout_p
                else
                    taps * quadChannels(layer) * cout_p,
                .depthwise2d, .separable2d => taps * layer.depthwiseChannelsPadded() * @sizeOf(i32), // sign-extended (Layer.depthwiseWeights)
                .dense => if (layer.packsNibbles())
                    layer.input.pixels() * quadChannels(layer) * layer.nibbleChannels() / 2
                else
                    layer.input.pixels() * quadChannels(layer) * cout_p,
                .add, .concat => unreachable,
            },
            .pointwise => @as(u64, midQuads(layer)) * limits.quad_channels * cout_p, // quad layout (Layer.pointwise)
            .bias, .out_multiplier, .out_shift, .threshold, .out_zero_point, .pool_sign, .decay_multiplier => cout_p * 4,
            .mid_multiplier, .mid_shift => @as(u64, layer.depthwiseChannelsPadded()) * 4,
            .input_multipliers => (if (layer.kind == .add) @as(u64, layer.input_count) else 1) * cout_p * 4,
            .pad_value => layer.frameChannels(), // one frame pixel (Layer.pad_pixel)
            .sources => @as(u64, layer.synaptic.c) * @sizeOf(model_zig.ConcatSource),
            .reserved_14, .reserved_15 => unreachable,
        };
    }
    return sizes;
}

/// Input channels rounded up to whole quads.
fn quadChannels(layer: *const Layer) u64 {
    return @as(u64, layer.input.channelQuads()) * limits.quad_channels;
}

/// Hands out 64-byte aligned pieces of the caller's model memory.
const Bump = struct {
    memory: []align(limits.buffer_alignment) u8,
    used: u64 = 0,

    fn take(bump: *Bump, comptime T: type, count: u64) []T {
        const bytes = count * @sizeOf(T);
        std.debug.assert(bump.used + bytes <= bump.memory.len);
        const piece = bump.memory[limits.usizeFrom(bump.used)..][0..limits.usizeFrom(bytes)];
        bump.used = limits.alignUp(bump.used + bytes, limits.buffer_alignment);
        return @as([*]T, @ptrCast(@alignCast(piece.ptr)))[0..limits.usizeFrom(count)];
    }
};

/// Validate `file` and build the model inside `memory` (see the file comment), with the fast arena plan.
pub fn load(file: []const u8, memory: []u8, diag: *Diagnostic) Error!*const Model {
    return loadPlanned(file, memory, .fast, diag);
}

/// load, keeping arena plan `kind` (planner.zig).
pub fn loadPlanned(file: []const u8, memory: []u8, kind: planner.Kind, diag: *Diagnostic) Error!*const Model {
    const validated = try validate(file, diag);
    if (validated.memory_bytes > std.math.maxInt(usize)) {
        return diag.fail(.limit, "model memory: this model needs {d} bytes, more than this target's address space", .{validated.memory_bytes});
    }
    if (memory.len < validated.memory_bytes) {
        return diag.fail(.argument, "model memory: {d} bytes given, this model needs {d} (esnn_model_memory_bytes)", .{
            memory.len, validated.memory_bytes,
        });
    }
    const start: usize = limits.usizeFrom(limits.alignUp(@intFromPtr(memory.ptr), limits.buffer_alignment) - @intFromPtr(memory.ptr));
    const aligned: []align(limits.buffer_alignment) u8 = @alignCast(memory[start..limits.usizeFrom(validated.memory_bytes)]);
    var bump: Bump = .{ .memory = aligned };
    const model = &bump.take(Model, 1)[0];
    const layers = bump.take(Layer, validated.layer_count);
    const grph = validated.sections.grph.slice(file);
    for (layers, 0..) |*layer, index| {
        var check: LayerCheck = .{
            .file = file,
            .sections = &validated.sections,
            .index = @intCast(index),
            .record = Record.decode(grph, Version.of(file), @intCast(index)),
            .diag = diag,
        };
        layer.* = checkLayer(&check, validated.input, validated.input_bits, validated.layer_count) catch unreachable;
        unpackParameters(&check, layer, &bump);
    }
    std.debug.assert(bump.used + start <= validated.memory_bytes);
    model.* = .{
        .input = validated.input,
        .input_bits = validated.input_bits,
        .layers = layers,
        .plan = .{},
    };
    planner.plan(model, layers, kind);
    if (model.arenaBytes() > std.math.maxInt(usize)) {
        return diag.fail(.limit, "arena: this model needs {d} bytes per inference context, more than this target's address space", .{model.arenaBytes()});
    }
    return model;
}

fn isSpatial(kind: Kind) bool {
    return switch (kind) {
        .input_conv2d, .conv2d, .depthwise2d, .separable2d => true,
        .dense, .add, .concat => false,
    };
}

fn fillTapRanges(layer: *Layer, bump: *Bump) void {
    const rows = bump.take(model_zig.TapRange, layer.input.h);
    for (rows, 0..) |*range, iy| range.* = vector.tapRange(@intCast(iy), layer.pad_top, layer.kernel_h, layer.stride_h, layer.synaptic.h);
    const columns = bump.take(model_zig.TapRange, layer.input.w);
    for (columns, 0..) |*range, ix| range.* = vector.tapRange(@intCast(ix), layer.pad_left, layer.kernel_w, layer.stride_w, layer.synaptic.w);
    layer.row_taps = rows;
    layer.column_taps = columns;
}

fn unpackParameters(check: *const LayerCheck, layer: *Layer, bump: *Bump) void {
    if (isSpatial(layer.kind)) fillTapRanges(layer, bump);
    const sizes = parameterSizes(layer);
    const bits = check.record.weight_bits;
    if (sizes[@intFromEnum(Slot.weights)] != 0) {
        const weights = bump.take(i8, sizes[@intFromEnum(Slot.weights)]);
        switch (layer.kind) {
            .depthwise2d, .separable2d => {
                const words: [*]i32 = @ptrCast(@alignCast(weights.ptr));
                unpackMatrix(i32, check.tensor(.weights), bits, layer.depthwiseChannels(), layer.depthwiseChannelsPadded(), words[0 .. weights.len / @sizeOf(i32)]);
            },
            .input_conv2d, .conv2d => if (layer.isNarrowConv())
                unpackRowQuadMatrix(check.tensor(.weights), bits, layer, weights)
            else
                unpackQuadMatrix(check.tensor(.weights), bits, layer, weights),
            .dense => if (layer.packsNibbles())
                unpackNibbleQuadMatrix(check.tensor(.weights), bits, layer, weights)
            else
                unpackQuadMatrix(check.tensor(.weights), bits, layer, weights),
            .add, .concat => unreachable,
        }
        layer.weights = weights;
    }
    if (sizes[@intFromEnum(Slot.pointwise)] != 0) {
        const pointwise = bump.take(i8, sizes[@intFromEnum(Slot.pointwise)]);
        unpackPointwiseQuads(check.tensor(.pointwise), bits, layer, pointwise);
        layer.pointwise = pointwise;
    }
    const cout = layer.synaptic.c;
    const mid: u64 = if (layer.isDepthwise()) layer.depthwiseChannels() else 0;
    layer.bias = copyVector(check, .bias, sizes, cout, 0, 0, bump);
    layer.out_multiplier = copyVector(check, .out_multiplier, sizes, cout, 0, 0, bump);
    layer.out_shift = copyVector(check, .out_shift, sizes, cout, 0, 0, bump);
    // Padding lanes never fire: their potential is always 0, below a threshold of 2^31 - 1.
    layer.threshold = copyVector(check, .threshold, sizes, cout, 0, std.math.maxInt(i32), bump);
    // (padding lanes decay to 0, where they stay)
    layer.decay_multiplier = copyVector(check, .decay_multiplier, sizes, cout, 0, 0, bump);
    layer.mid_multiplier = copyVector(check, .mid_multiplier, sizes, mid, 0, 0, bump);
    layer.mid_shift = copyVector(check, .mid_shift, sizes, mid, 0, 0, bump);
    layer.input_multipliers = copyVector(check, .input_multipliers, sizes, cout, 1, 0, bump);
    const zero_points = copyVector(check, .out_zero_point, sizes, cout, 0, 0, bump);
    if (!std.mem.allEqual(i32, zero_points, 0)) layer.out_zero_point = zero_points;
    const signs = copyVector(check, .pool_sign, sizes, cout, 1, 1, bump);
    if (!std.mem.allEqual(i32, signs, 1)) layer.pool_sign = signs;
    if (isSpatial(layer.kind)) fillPadPixel(check, layer, bump);
    if (layer.kind == .concat) fillConcatSources(check, layer, bump);
    if (layer.neuron == .relu) fillFloatRelu(layer, bump);
    if (layer.kind == .separable2d) {
        // (the tables' memory is taken on every target: parameterBytes)
        const floors = bump.take(i32, layer.depthwiseChannelsPadded());
        const ceilings = bump.take(i32, layer.depthwiseChannelsPadded());
        const scales = bump.take(f32, layer.depthwiseChannelsPadded());
        if (separable_kernel.float_mid) fillFloatMid(layer, floors, ceilings, scales);
    }
    if (usesDepthwiseGroups(layer)) fillDepthwiseGroups(layer, bump);
    if (layer.usesSpikeRows()) fillSpikeRows(check, layer, bump);
    if (layer.neuron == .integrate_fire or layer.neuron == .leaky_integrate_fire) layer.potential_max = potentialMax(check, layer);
}

/// The largest potentialBound over the output channels (validated within int32: checkOverflowBound).
fn potentialMax(check: *const LayerCheck, layer: *const Layer) u32 {
    var max: u128 = 0;
    for (0..layer.synaptic.c) |channel| max = @max(max, potentialBound(check, layer, channel));
    std.debug.assert(max <= int32_max);
    return @intCast(max);
}

/// Bytes of model.Layer.spike_rows: (taps or input pixels, Cin, Cout_p) i8.
fn spikeRowBytes(layer: *const Layer) u64 {
    const outer: u64 = if (layer.isConv()) @as(u64, layer.kernel_h) * layer.kernel_w else layer.input.pixels();
    return outer * layer.input.c * layer.synaptic.channelsPadded();
}

/// The weights as rows (model.Layer.spike_rows): out[(o * Cin + ci) * Cout_p + co] = W[o, ci, co],
/// and whether every channel's sum of |W| fits i16.
fn fillSpikeRows(check: *const LayerCheck, layer: *Layer, bump: *Bump) void {
    const rows = bump.take(i8, spikeRowBytes(layer));
    @memset(rows, 0);
    const Rows = struct {
        out: []i8,
        cin: u64,
        cout_padded: u64,
        fn put(r: @This(), o: u64, ci: u64, co: u64, weight: i8) void {
            r.out[limits.usizeFrom((o * r.cin + ci) * r.cout_padded + co)] = weight;
        }
    };
    const cout_padded: u64 = layer.synaptic.channelsPadded();
    const outer = rows.len / (layer.input.c * cout_padded);
    forEachWeight(check.tensor(.weights), check.record.weight_bits, layer, outer, Rows{ .out = rows, .cin = layer.input.c, .cout_padded = cout_padded });
    layer.spike_rows = rows;
    var fits = true;
    const stride = limits.usizeFrom(cout_padded);
    for (0..layer.synaptic.c) |co| {
        var sum: u64 = 0;
        for (0..rows.len / stride) |row| sum += @abs(rows[row * stride + co]);
        fits = fits and sum <= std.math.maxInt(i16);
    }
    layer.spike_sums_fit_i16 = fits;
}

/// The pad values as one pixel of the layer's frame (model.Layer.pad_pixel): input channel c at
/// byte c (a conv), at bytes c * M .. c * M + M - 1 (a depthwise stage: the frame holds input
/// channel o / M at channel o, kernels/frame.zig). Left empty when every pad value is 0 or the
/// layer has no padding (no tap is out of bounds).
fn fillPadPixel(check: *const LayerCheck, layer: *Layer, bump: *Bump) void {
    const pixel = bump.take(u8, layer.frameChannels());
    @memset(pixel, 0);
    if (check.tensor(.pad_value).len == 0) return;
    const multiplier: usize = if (layer.isDepthwise()) layer.depth_multiplier else 1;
    var nonzero = false;
    for (0..layer.input.c) |c| {
        const value: u8 = @intCast(readI32(check.tensor(.pad_value), c * 4)); // checkParameters: 0..input max
        nonzero = nonzero or value != 0;
        @memset(pixel[c * multiplier ..][0..multiplier], value);
    }
    const padded = layer.pad_top != 0 or layer.pad_bottom != 0 or layer.pad_left != 0 or layer.pad_right != 0;
    if (nonzero and padded) layer.pad_pixel = pixel;
}

fn fillConcatSources(check: *const LayerCheck, layer: *Layer, bump: *Bump) void {
    const sources = bump.take(model_zig.ConcatSource, layer.synaptic.c);
    for (sources, 0..) |*source, j| source.* = concatSource(check, layer, j);
    layer.concat_sources = sources;
}

/// The group layout serves the VNNI depthwise kernel only (kernels/depthwise2d.zig).
fn usesDepthwiseGroups(layer: *const Layer) bool {
    return vector.has_vnni512 and (layer.kind == .depthwise2d or layer.kind == .separable2d);
}

fn depthwiseGroupBytes(layer: *const Layer) u64 {
    return @as(u64, layer.kernel_h) * layer.kernel_w * layer.depthwiseGroupCount() * 4 * model_zig.depthwise_group_channels;
}

/// The depthwise weights in the group layout (model.Layer.depthwise_groups), from their i32 form.
fn fillDepthwiseGroups(layer: *Layer, bump: *Bump) void {
    const groups = bump.take(i8, depthwiseGroupBytes(layer));
    @memset(groups, 0);
    const weights = layer.depthwiseWeights();
    const channels_padded: usize = layer.depthwiseChannelsPadded();
    const group_channels = model_zig.depthwise_group_channels;
    const group_count: usize = layer.depthwiseGroupCount();
    const taps = @as(usize, layer.kernel_h) * layer.kernel_w;
    for (0..taps) |tap| for (0..group_count) |group| for (0..group_channels) |channel_in_group| {
        const lane = channel_in_group / 4;
        const k = channel_in_group % 4;
        const vector_start = ((tap * group_count + group) * 4 + k) * group_channels;
        groups[vector_start + 4 * lane + k] = @intCast(weights[tap * channels_padded + group * group_channels + channel_in_group]);
    };
    layer.depthwise_groups = groups;
}

/// The f32 form of a relu layer's requantization, when it is exact on every channel (padding
/// channels, m = 0, always give 0) and no zero point is added; otherwise the tables stay empty and
/// the i64 form runs.
fn fillFloatRelu(layer: *Layer, bump: *Bump) void {
    const channels = layer.synaptic.channelsPadded();
    const ceilings = bump.take(i32, channels);
    const scales = bump.take(f32, channels);
    if (layer.out_zero_point.len != 0) return;
    for (ceilings, scales, layer.out_multiplier, layer.out_shift) |*ceiling, *scale, multiplier, shift| {
        const form = neuron_kernel.floatRelu(multiplier, shift, layer.outputMax()) orelse return;
        ceiling.* = form.ceiling;
        scale.* = form.scale;
    }
    layer.relu_ceiling = ceilings;
    layer.relu_scale = scales;
}

/// The f32 form of a separable layer's requantization of Q into Mid, when it is exact on every mid
/// channel (padding channels, m = 0, always give Mid = 0); otherwise the tables stay empty and the
/// integer forms run.
fn fillFloatMid(layer: *Layer, floors: []i32, ceilings: []i32, scales: []f32) void {
    for (floors, ceilings, scales, layer.mid_multiplier, layer.mid_shift) |*floor, *ceiling, *scale, multiplier, shift| {
        const form = separable_kernel.floatMid(multiplier, shift, layer.mid_bits) orelse return;
        floor.* = form.floor;
        ceiling.* = form.ceiling;
        scale.* = form.scale;
    }
    layer.mid_floor = floors;
    layer.mid_ceiling = ceilings;
    layer.mid_scale = scales;
}

/// Unpack a packed (rows, columns) matrix into (rows, columns_padded) i8 or i32, padding with zeros.
fn unpackMatrix(comptime T: type, data: []const u8, bits: u32, columns: u64, columns_padded: u64, out: []T) void {
    std.debug.assert(out.len % columns_padded == 0);
    @memset(out, 0);
    const rows = out.len / columns_padded;
    var row: u64 = 0;
    while (row < rows) : (row += 1) {
        var column: u64 = 0;
        while (column < columns) : (column += 1) {
            out[limits.usizeFrom(row * columns_padded + column)] = packedWeight(data, bits, row * columns + column);
        }
    }
}

/// Channel quads of a separable layer's intermediate (Cmid = C * depth multiplier).
fn midQuads(layer: *const Layer) u32 {
    return (layer.depthwiseChannels() + limits.quad_channels - 1) / limits.quad_channels;
}

/// Unpack separable pointwise weights (Cmid, Cout) into the quad layout (Cmid_q, Cout_p, 4):
/// out[((m / 4) * Cout_p + co) * 4 + m % 4] = Pw[m, co] (kernels/separable2d.zig).
fn unpackPointwiseQuads(data: []const u8, bits: u32, layer: *const Layer, out: []i8) void {
    const mid: u64 = layer.depthwiseChannels();
    const cout: u64 = layer.synaptic.c;
    const cout_padded: u64 = layer.synaptic.channelsPadded();
    std.debug.assert(out.len == @as(u64, midQuads(layer)) * limits.quad_channels * cout_padded);
    @memset(out, 0);
    var m: u64 = 0;
    while (m < mid) : (m += 1) {
        var co: u64 = 0;
        while (co < cout) : (co += 1) {
            const target = ((m / limits.quad_channels) * cout_padded + co) * limits.quad_channels + m % limits.quad_channels;
            out[limits.usizeFrom(target)] = packedWeight(data, bits, m * cout + co);
        }
    }
}

/// Unpack conv (KH*KW, Cin, Cout) or dense (H*W, Cin, Cout) weights into the quad layout
/// (outer, Cin_q, Cout_p, 4): out[((o * Cin_q + ci / 4) * Cout_p + co) * 4 + ci % 4] = W[o, ci, co].
fn unpackQuadMatrix(data: []const u8, bits: u32, layer: *const Layer, out: []i8) void {
    const quads: u64 = layer.input.channelQuads();
    const cout_padded: u64 = layer.synaptic.channelsPadded();
    @memset(out, 0);
    const Quads = struct {
        out: []i8,
        quads: u64,
        cout_padded: u64,
        fn put(q: @This(), o: u64, ci: u64, co: u64, weight: i8) void {
            const target = ((o * q.quads + ci / limits.quad_channels) * q.cout_padded + co) * limits.quad_channels + ci % limits.quad_channels;
            q.out[limits.usizeFrom(target)] = weight;
        }
    };
    const outer = out.len / (quads * limits.quad_channels * cout_padded);
    forEachWeight(data, bits, layer, outer, Quads{ .out = out, .quads = quads, .cout_padded = cout_padded });
}

/// Unpack dense (H*W, Cin, Cout) weights of at most 4 bits into the quad layout with two channel
/// vectors per byte: the 64 bytes of (quad, vector pair p) hold in their low nibbles the quad-layout
/// bytes of channel vector 2p and in their high nibbles those of vector 2p + 1, each as w + 8.
fn unpackNibbleQuadMatrix(data: []const u8, bits: u32, layer: *const Layer, out_signed: []i8) void {
    const out: []u8 = @ptrCast(out_signed);
    const lanes: u64 = limits.channel_lanes;
    const Nibbles = struct {
        out: []u8,
        quads: u64,
        pairs: u64,
        fn put(n: @This(), o: u64, ci: u64, co: u64, weight: i8) void {
            const vector_index = co / limits.channel_lanes;
            const target = ((o * n.quads + ci / limits.quad_channels) * n.pairs + vector_index / 2) * pair_bytes +
                (co % limits.channel_lanes) * limits.quad_channels + ci % limits.quad_channels;
            const stored: u8 = @intCast(@as(i32, weight) + model_zig.nibble_offset);
            const shift: u3 = if (vector_index % 2 == 0) 0 else 4;
            const keep: u8 = if (shift == 0) 0xf0 else 0x0f;
            n.out[limits.usizeFrom(target)] = (n.out[limits.usizeFrom(target)] & keep) | (stored << shift);
        }
        const pair_bytes = limits.channel_lanes * limits.quad_channels; // 64: one vector of quad bytes
    };
    const quads: u64 = layer.input.channelQuads();
    const pairs: u64 = layer.nibbleChannels() / (2 * lanes);
    @memset(out, model_zig.nibble_offset * 0x11); // every weight 0, padding channels too
    const outer = out.len / (quads * pairs * Nibbles.pair_bytes);
    std.debug.assert(outer == layer.input.pixels());
    forEachWeight(data, bits, layer, outer, Nibbles{ .out = out, .quads = quads, .pairs = pairs });
}

/// layout.put(o, ci, co, W[o, ci, co]) for every weight of a conv (o = tap) or dense (o = input
/// pixel) layer's packed (outer, Cin, Cout) tensor.
fn forEachWeight(data: []const u8, bits: u32, layer: *const Layer, outer: u64, layout: anytype) void {
    const cin: u64 = layer.input.c;
    const cout: u64 = layer.synaptic.c;
    std.debug.assert(outer * cin * cout == slotCount(layer, .weights));
    var o: u64 = 0;
    while (o < outer) : (o += 1) {
        var ci: u64 = 0;
        while (ci < cin) : (ci += 1) {
            var co: u64 = 0;
            while (co < cout) : (co += 1) layout.put(o, ci, co, packedWeight(data, bits, (o * cin + ci) * cout + co));
        }
    }
}

/// Unpack narrow conv weights (KH, KW, Cin, Cout) into quads along each kernel row
/// (KH, row quads, Cout_p, 4): element (kw, ci) of row kh is f = kw * Cin + ci, lane f % 4 of quad f / 4.
fn unpackRowQuadMatrix(data: []const u8, bits: u32, layer: *const Layer, out: []i8) void {
    const cin: u64 = layer.input.c;
    const cout: u64 = layer.synaptic.c;
    const cout_padded: u64 = layer.synaptic.channelsPadded();
    const row_quads: u64 = layer.rowQuads();
    const row_values = @as(u64, layer.kernel_w) * cin;
    std.debug.assert(out.len == layer.kernel_h * row_quads * limits.quad_channels * cout_padded);
    @memset(out, 0);
    var kh: u64 = 0;
    while (kh < layer.kernel_h) : (kh += 1) {
        var f: u64 = 0;
        while (f < row_values) : (f += 1) {
            var co: u64 = 0;
            while (co < cout) : (co += 1) {
                const target = ((kh * row_quads + f / limits.quad_channels) * cout_padded + co) * limits.quad_channels + f % limits.quad_channels;
                out[limits.usizeFrom(target)] = packedWeight(data, bits, (kh * row_values + f) * cout + co);
            }
        }
    }
}

/// Copy an i32 tensor of (rows, columns) into (rows, columns padded): padding lanes `padding`,
/// every value `default` where the file leaves an optional slot empty; empty if the layer does not
/// use the slot.
fn copyVector(check: *const LayerCheck, slot: Slot, sizes: [limits.tensor_slot_count]u64, columns: u64, default: i32, padding: i32, bump: *Bump) []const i32 {
    const bytes = sizes[@intFromEnum(slot)];
    if (bytes == 0) return &.{};
    const out = bump.take(i32, bytes / 4);
    @memset(out, padding);
    const columns_padded: u64 = limits.paddedChannels(@intCast(columns));
    const data = check.tensor(slot);
    const rows = out.len / columns_padded;
    var row: u64 = 0;
    while (row < rows) : (row += 1) {
        var column: u64 = 0;
        while (column < columns) : (column += 1) {
            const value = if (data.len == 0) default else readI32(data, (row * columns + column) * 4);
            out[limits.usizeFrom(row * columns_padded + column)] = value;
        }
    }
    return out;
}

test "packed weights decode two's complement, low bits first" {
    // 4-bit: elements 0x7 (7) and 0x8 (-8) in one byte; 2-bit: 01 10 11 00 -> 1, -2, -1, 0
    try std.testing.expectEqual(@as(i8, 7), packedWeight(&.{0x87}, 4, 0));
    try std.testing.expectEqual(@as(i8, -8), packedWeight(&.{0x87}, 4, 1));
    const two_bit = [_]u8{0b00_11_10_01};
    try std.testing.expectEqual(@as(i8, 1), packedWeight(&two_bit, 2, 0));
    try std.testing.expectEqual(@as(i8, -2), packedWeight(&two_bit, 2, 1));
    try std.testing.expectEqual(@as(i8, -1), packedWeight(&two_bit, 2, 2));
    try std.testing.expectEqual(@as(i8, 0), packedWeight(&two_bit, 2, 3));
    try std.testing.expectEqual(@as(i8, -128), packedWeight(&.{0x80}, 8, 0));
}

test "same padding follows TensorFlow" {
    // H=5, K=3, s=2: OH=3, total=(3-1)*2+3-5=2 -> 1 before
    try std.testing.expectEqual(@as(u32, 3), convOutputSize(5, 3, 2, .same));
    try std.testing.expectEqual(@as(u32, 1), samePaddingBefore(5, 3, 2));
    // H=4, K=3, s=2: OH=2, total=(2-1)*2+3-4=1 -> 0 before, 1 after
    try std.testing.expectEqual(@as(u32, 0), samePaddingBefore(4, 3, 2));
    // H=4, K=1, s=4: OH=1, total=max(0+1-4,0)=0
    try std.testing.expectEqual(@as(u32, 0), samePaddingBefore(4, 1, 4));
    try std.testing.expectEqual(@as(u32, 1), convOutputSize(3, 3, 1, .valid));
    try std.testing.expectEqual(@as(u32, 0), convOutputSize(2, 3, 1, .valid));
}

test "window geometry: explicit pads, every window holding an in-bounds tap" {
    // PyTorch Conv2d(k=3, s=2, p=1) on 7: floor((7 + 2 - 3) / 2) + 1 = 4
    try std.testing.expectEqual(@as(?u32, 4), windowOutputSize(7, 3, 2, 1, 1));
    // ceil-mode-like extra bottom padding: (6 + 0 + 1 - 3) / 2 + 1 = 3, the last window starts at 4 < 6
    try std.testing.expectEqual(@as(?u32, 3), windowOutputSize(6, 3, 2, 0, 1));
    // a pad as large as the kernel leaves the first window all padding
    try std.testing.expectEqual(@as(?u32, null), windowOutputSize(5, 3, 1, 3, 0));
    // the last window only pads: (1 + 0 + 4 - 1) / 1 + 1 = 5 windows, window 4 starts at 4 >= 1
    try std.testing.expectEqual(@as(?u32, null), windowOutputSize(1, 1, 1, 0, 4));
    // but stride 4 skips over the padding: one window
    try std.testing.expectEqual(@as(?u32, 1), windowOutputSize(1, 1, 4, 0, 3));
    // the kernel does not fit at all
    try std.testing.expectEqual(@as(?u32, null), windowOutputSize(2, 5, 1, 1, 1));
    // any u32 fields: no overflow
    try std.testing.expectEqual(@as(?u32, null), windowOutputSize(4096, 15, 1, 14, std.math.maxInt(u32)));
}

test "same padding splits the total with the rest after" {
    // H=4, K=3, s=2: total 1 -> (0, 1); H=5, K=4, s=1: total 3 -> (1, 2)
    try std.testing.expectEqual(@as(u32, 1), samePaddingAfter(4, 3, 2));
    try std.testing.expectEqual(@as(u32, 1), samePaddingBefore(5, 4, 1));
    try std.testing.expectEqual(@as(u32, 2), samePaddingAfter(5, 4, 1));
    try std.testing.expectEqual(@as(u32, 0), samePaddingAfter(4, 1, 4));
}
