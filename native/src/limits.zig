//! Every named limit of the native engine, in one place. The Python side names the same numbers in
//! edgesnn/layers.py (docs/semantics.md is the contract); `limits_consistent` below asserts at
//! compile time how they relate.

const std = @import("std");

// -- the .esnn file (docs/format.md) ---------------------------------------------------------------
pub const header_bytes = 64;
pub const section_entry_bytes = 16;
pub const section_count_max = 16;
pub const section_alignment = 16;
pub const tensor_alignment = 16;
pub const model_record_bytes = 64;
/// Layer records of a version-2 file; version-1 files have 256-byte records with 10 tensor slots
/// (read as the equivalent version-2 layers, docs/format.md).
pub const layer_record_bytes = 384;
pub const layer_record_bytes_v1 = 256;
pub const tensor_slot_count = 16;
pub const tensor_slot_count_v1 = 10;
pub const version_major = 2;
/// The oldest major version this reader still reads.
pub const version_major_min = 1;

// -- the graph ---------------------------------------------------------------------------------------
pub const layers_max = 256;
pub const name_bytes_max = 255;
pub const add_inputs_max = 4; // add: 2..add_inputs_max inputs
pub const concat_inputs_max = 4; // concat: 1..concat_inputs_max inputs
/// Inputs of any layer (the record's inputs[] array).
pub const inputs_max = 4;
pub const kernel_max = 15; // kernel height and width, 1..kernel_max
pub const stride_max = 4; // convolution stride along each axis, 1..stride_max
pub const pool_max = 8; // pool window height and width and pool strides, 1..pool_max
pub const depth_multiplier_max = 8; // depthwise channel multiplier, 1..depth_multiplier_max
pub const shift_max = 62; // requantization right shift, 0..shift_max
pub const leak_shift_max = 31; // lif leak, 1..leak_shift_max
pub const decay_shift_max = 30; // lif decay (v * m + 2^(s-1)) >> s, s in 1..decay_shift_max
pub const input_bits_max = 8;

/// Height and width of any tensor, 1..dim_max.
pub const dim_max = 4096;
/// Channels of any tensor, 1..channels_max.
pub const channels_max = 8192;
/// Values in one activation tensor (H * W * C), also a dense layer's fan_in.
pub const tensor_values_max = 1 << 26;
/// Weights of one layer (one weight tensor).
pub const weights_max = 1 << 28;

/// Layer kinds as a bit mask, bit k - 1 for kind k of the file format (model.zig Kind: input_conv2d 1,
/// conv2d 2, depthwise2d 3, separable2d 4, dense 5, add 6, concat 7; docs/protocol.md INFO).
pub const layer_kind_count = 7;
pub const layer_kinds_mask = (1 << layer_kind_count) - 1;
/// Weight and activation bit widths as masks, bit b for b bits (docs/semantics.md).
pub const weight_bits_mask = (1 << 2) | (1 << 4) | (1 << 8);
pub const activation_bits_mask = (1 << 1) | (1 << 2) | (1 << 4) | (1 << 8);

// -- a run -------------------------------------------------------------------------------------------
pub const timesteps_max = 1 << 20;
pub const batch_max = 1 << 24;

// -- memory layout -----------------------------------------------------------------------------------
/// Channels of every buffer are padded to a multiple of this many lanes; kernels work on
/// `@Vector(channel_lanes, i32)` and never need a scalar tail.
pub const channel_lanes = 16;
/// Input channels per group of the u8 x i8 dot-product kernels (conv2d, dense).
pub const quad_channels = 4;
/// Whether the kernels instantiate a variant per compile-time shape (output-channel vectors of a
/// register block, events or quads per unrolled step): only on 64-bit targets, whose vector
/// registers hold such blocks (x86-64, aarch64 NEON). On a 32-bit microcontroller (Cortex-M: no
/// vector unit, a 16-lane vector is 16 scalar registers or a stack slot) every variant is kilobytes
/// of scalarized code for no speed: one generic loop per kernel there. Not yet read by the kernels
/// (their per-shape switches in spikes.zig, conv2d_dense.zig, separable2d.zig are to test it; with
/// them, a Cortex-M4 firmware's code measured 165 KB instead of 393 KB, README "Embedding").
pub const kernel_variants = @sizeOf(usize) == 8;
/// Output-channel vectors of one register block: 4 where kernel_variants, else 1.
pub const block_chunks_max = if (kernel_variants) 4 else 1;
/// Every buffer in the model memory and the arena starts on this boundary.
pub const buffer_alignment = 64;
/// Bytes of the message buffer kept in a context for the last run error.
pub const message_bytes_max = 256;

comptime {
    std.debug.assert(channel_lanes * @sizeOf(i32) == buffer_alignment);
    std.debug.assert(buffer_alignment % tensor_alignment == 0);
    std.debug.assert(std.math.isPowerOfTwo(buffer_alignment));
    std.debug.assert(channels_max % channel_lanes == 0);
    std.debug.assert(channel_lanes % quad_channels == 0); // a pixel's padded channels hold whole quads
    // H * W * C with every factor at its limit fits u64, so size arithmetic cannot overflow
    // before it is compared with tensor_values_max.
    std.debug.assert(@as(u128, dim_max) * dim_max * channels_max < std.math.maxInt(u64));
    std.debug.assert(@as(u128, tensor_values_max) * channels_max < std.math.maxInt(u64));
    // |P * multiplier| < 2^62 and the rounding term 2^(shift-1) <= 2^61: the int64 requant fits.
    std.debug.assert(shift_max <= 62);
    std.debug.assert(leak_shift_max <= 31);
    // |v| < 2^31 and the decay multiplier <= 2^decay_shift <= 2^30: v * m + 2^(s-1) fits int64.
    std.debug.assert(decay_shift_max <= 30);
    std.debug.assert(add_inputs_max <= inputs_max and concat_inputs_max <= inputs_max);
    std.debug.assert(layer_record_bytes_v1 < layer_record_bytes);
    std.debug.assert(tensor_slot_count_v1 <= tensor_slot_count);
    // the version-2 slots fill bytes 128..256 of the record; a version-1 record's end at 208
    std.debug.assert(128 + 8 * tensor_slot_count == layer_record_bytes_v1);
    std.debug.assert(128 + 8 * tensor_slot_count_v1 == 208);
    std.debug.assert(version_major_min <= version_major);
    // a depthwise layer's output channels C * M stay inside the channel limit's arithmetic
    std.debug.assert(@as(u64, channels_max) * depth_multiplier_max < std.math.maxInt(u32));
}

/// A byte offset or count as an index. Sizes are computed in u64; the loader refuses (status
/// limit) a model whose memory or arena does not fit usize, so on 32-bit targets every offset
/// that reaches an index fits.
pub fn usizeFrom(value: u64) usize {
    return @intCast(value);
}

/// Round `value` up to a multiple of `alignment` (a power of two).
pub fn alignUp(value: u64, alignment: u64) u64 {
    std.debug.assert(std.math.isPowerOfTwo(alignment));
    return (value + alignment - 1) & ~(alignment - 1);
}

/// Channels padded to whole vectors.
pub fn paddedChannels(channels: u32) u32 {
    return @intCast(alignUp(channels, channel_lanes));
}
