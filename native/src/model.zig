//! The loaded, immutable model: what the loader builds and the kernels read.
//! All slices point into the model memory the caller gave to the loader (see loader.zig).

const std = @import("std");
const limits = @import("limits.zig");
pub const TapRange = @import("kernels/vector.zig").TapRange;

pub const Kind = enum(u32) {
    input_conv2d = 1,
    conv2d = 2,
    depthwise2d = 3,
    separable2d = 4,
    dense = 5,
    add = 6,
    concat = 7,
};

comptime {
    // the kinds INFO and the limits name (limits.layer_kinds_mask) are these, numbered 1..count
    std.debug.assert(std.enums.values(Kind).len == limits.layer_kind_count);
    for (std.enums.values(Kind)) |kind| std.debug.assert(@intFromEnum(kind) >= 1 and @intFromEnum(kind) <= limits.layer_kind_count);
}

pub const Neuron = enum(u32) {
    none = 0,
    relu = 1,
    integrate_fire = 2,
    leaky_integrate_fire = 3,

    pub fn isSpiking(neuron: Neuron) bool {
        return neuron == .integrate_fire or neuron == .leaky_integrate_fire;
    }
};

pub const Padding = enum(u32) { valid = 0, same = 1, explicit = 2 };

/// What a spike does to an if/lif membrane (docs/semantics.md, "Neuron stages"); the record's codes.
pub const Reset = enum(u32) { subtract = 0, zero = 1, none = 2 };

pub const Pool = enum(u32) { none = 0, max = 1, avg = 2, global_avg = 3 };

/// An activation or potential tensor shape, HWC. `channels_padded` is the channel stride of its
/// buffers in the arena (a multiple of limits.channel_lanes; the padding lanes are always zero).
pub const Shape = struct {
    h: u32,
    w: u32,
    c: u32,

    pub fn pixels(shape: Shape) u64 {
        return @as(u64, shape.h) * shape.w;
    }

    pub fn values(shape: Shape) u64 {
        return shape.pixels() * shape.c;
    }

    pub fn channelsPadded(shape: Shape) u32 {
        return limits.paddedChannels(shape.c);
    }

    /// Values of the padded buffer: H * W * channelsPadded.
    pub fn valuesPadded(shape: Shape) u64 {
        return shape.pixels() * shape.channelsPadded();
    }

    /// Channel groups of limits.quad_channels (the unit of the u8 x i8 dot-product kernels).
    pub fn channelQuads(shape: Shape) u32 {
        return (shape.c + limits.quad_channels - 1) / limits.quad_channels;
    }

    pub fn eql(a: Shape, b: Shape) bool {
        return a.h == b.h and a.w == b.w and a.c == b.c;
    }
};

/// Where a layer reads from: the model input or an earlier layer.
pub const input_model: i32 = -1;

pub const Layer = struct {
    kind: Kind,
    neuron: Neuron,
    pool: Pool,
    input_count: u32,
    inputs: [limits.inputs_max]i32,
    /// Largest value each input can take (2^bits - 1 of its producer).
    input_max: [limits.inputs_max]u32,
    /// Shape of each input (concat inputs differ in channels; every other kind's are all `input`).
    input_shapes: [limits.inputs_max]Shape,

    input: Shape, // shape of the first input
    synaptic: Shape, // potentials before pooling
    output: Shape, // after pooling

    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_top: u32,
    pad_bottom: u32,
    pad_left: u32,
    pad_right: u32,
    /// depthwise stages: output channel o reads input channel o / depth_multiplier (1 otherwise).
    depth_multiplier: u32,
    // max / avg pooling windows (0 without one): size, strides and padding (padded taps never read)
    pool_h: u32,
    pool_w: u32,
    pool_stride_h: u32,
    pool_stride_w: u32,
    pool_pad_top: u32,
    pool_pad_bottom: u32,
    pool_pad_left: u32,
    pool_pad_right: u32,
    /// avg pools: the window sum is taken as is also where padded taps were left out.
    count_include_pad: bool,
    activation_bits: u32,
    weight_bits: u32, // 2, 4 or 8 (0 for add)
    mid_bits: u32,
    leak_shift: u32, // lif with a shift leak: 1..leak_shift_max (0 otherwise)
    /// lif with a multiplicative decay v = (v * decay_multiplier[c] + 2^(s-1)) >> s: s in
    /// 1..decay_shift_max (0 otherwise; then decay_multiplier is empty).
    decay_shift: u32,
    reset: Reset, // if/lif (subtract otherwise)
    /// if/lif: v = max(v, membrane_floor) after integrating (membrane_floor <= 0), when has_floor.
    has_floor: bool,
    membrane_floor: i32,
    /// if/lif: the largest |potential| any channel's integration adds (the loader's overflow
    /// bound): a membrane, every step of which moves it by at most this much and never away from
    /// 0 otherwise, stays within timesteps x potential_max (kernels/neuron.zig's wrapping add).
    potential_max: u32 = 0,

    // Parameters, unpacked, channel axes padded with zeros to channelsPadded:
    // conv (KH*KW, Cin_q, Cout_p, 4); dense (H*W, Cin_q, Cout_p, 4) with Cin_q = channelQuads of the
    // input: 4 consecutive input channels interleaved per output channel (see kernels/vector.zig);
    // depthwise / separable (KH, KW, Cin_p)
    weights: []const i8,
    pointwise: []const i8, // separable (Cmid_q, Cout_p, 4): quad layout over the intermediate channels
    /// depthwise stages: the weights again as (taps, C_p / 64, 4, 64) i8, for each tap and group of
    /// 64 channels four vectors, vector k holding w[64g + 4c + k] in byte k of dword lane c (its
    /// other bytes 0): one vpdpbusd of vector k with the group's 64 input bytes as they lie adds
    /// channel 4c + k's product into lane c (kernels/depthwise2d.zig, no widening of the inputs).
    depthwise_groups: []const i8,
    /// conv (non-narrow) and dense layers whose input is binary (input max 1: spikes): the weights
    /// again as rows, (taps or input pixels, Cin, Cout_p) i8, so that each input event adds its
    /// contiguous row W[o, ci, :] (kernels/spikes.zig). Empty for other layers (usesSpikeRows).
    spike_rows: []const i8,
    /// Whether every output channel's sum of |W| over spike_rows fits i16 (with the bias added
    /// after): the spike scatter may then accumulate in i16 (kernels/spikes.zig).
    spike_sums_fit_i16: bool,
    bias: []const i32, // (Cout_p)
    out_multiplier: []const i32, // relu (Cout_p)
    out_shift: []const i32, // relu (Cout_p)
    /// relu in f32 where that is exact for every potential (kernels/neuron.zig floatRelu): per channel
    /// the potential at which the output saturates, and m / 2^s. Empty: the i64 form runs.
    relu_ceiling: []const i32, // (Cout_p)
    relu_scale: []const f32, // (Cout_p)
    threshold: []const i32, // if/lif (Cout_p)
    decay_multiplier: []const i32, // lif with decay_shift > 0 (Cout_p; padding lanes 0), else empty
    mid_multiplier: []const i32, // separable (Cmid_p), Cmid = C * depth_multiplier
    mid_shift: []const i32, // separable (Cmid_p)
    /// separable: Mid + 128 in f32 where that is exact for every Q (kernels/separable2d.zig floatMid):
    /// per mid channel Q clamped to [mid_floor, mid_ceiling], then trunc(Q * mid_scale + 128.5).
    /// Empty: the integer forms run.
    mid_floor: []const i32 = &.{}, // (Cmid_p)
    mid_ceiling: []const i32 = &.{}, // (Cmid_p)
    mid_scale: []const f32 = &.{}, // (Cmid_p)
    input_multipliers: []const i32, // add (input_count, C_p); concat (Cout_p)
    /// conv and depthwise stages: the value an out-of-bounds tap reads, per input channel, laid out
    /// as one pixel of the frame (frameChannels bytes); empty when every pad value is 0 or there is
    /// no padding (the frame's border then stays as zeroed at context init).
    pad_pixel: []const u8, // (frameChannels)
    /// relu: added after the requantization, before the clamp; empty when all are 0.
    out_zero_point: []const i32, // (Cout_p)
    /// max pool: -1 turns a channel's max into a min; empty when all are +1.
    pool_sign: []const i32, // (Cout_p)
    /// concat: the input and channel each output channel reads.
    concat_sources: []const ConcatSource, // (Cout)
    // Spatial kinds: for each input row / column, the output pixels and taps it reaches.
    row_taps: []const TapRange, // (input.h)
    column_taps: []const TapRange, // (input.w)

    // Arena plan (byte offsets from the aligned arena start), set by planner.zig:
    activation_offset: u64, // u8 (out.h, out.w, Cout_p); unused for neuron none
    state_offset: u64, // i32 (out.h, out.w, Cout_p); if/lif only
    /// i32 (synaptic.h, synaptic.w, Cout_p): for a layer that reads only the model input, its
    /// potentials of timestep 0, reused at later timesteps when the same input frame repeats.
    /// 0 = the layer reads other layers.
    static_offset: u64,

    /// u8 (frameHeight, frameWidth, frameChannels) + 4: the padded input of a conv (usesFrame).
    frame_offset: u64,
    // Scratch of this layer's own stages (planner.zig shares them by lifetime): i32 potentials
    // (synaptic, padded), i32 pooled (output, padded), Event / Quad list or a kernel's scratch
    // (planner.eventsMax entries). 0 where the layer has none.
    potentials_offset: u64 = 0,
    pooled_offset: u64 = 0,
    events_offset: u64 = 0,

    /// Whether every sum of two u8 x i8 products of this layer's synaptic stage fits i16
    /// (2 * input max * |w| max <= 2^15 - 1; pad values lie within the input's range), so that
    /// kernels may use the non-widening dot product (kernels/vector.zig Dots.pairs_fit_i16).
    pub fn dotPairsFitI16(layer: *const Layer) bool {
        if (layer.weight_bits == 0) return false;
        const weight_max = @as(u64, 1) << @intCast(layer.weight_bits - 1); // |-2^(b-1)|
        return 2 * @as(u64, layer.input_max[0]) * weight_max <= std.math.maxInt(i16);
    }

    /// Whether the layer keeps spike_rows: a conv2d on at least a quad of channels or a dense layer,
    /// reading one input whose values are 0 or 1 (spikes, 1-bit activations or a 1-bit model input).
    pub fn usesSpikeRows(layer: *const Layer) bool {
        const kind_fits = (layer.isConv() and !layer.isNarrowConv()) or layer.kind == .dense;
        return kind_fits and layer.input_count == 1 and layer.input_max[0] == 1 and layer.weight_bits != 0;
    }

    /// A dense layer with weights of at most 4 bits keeps them two per byte in the model memory
    /// (loader.zig unpackNibbleQuadMatrix): half the bytes each sample streams through the cache.
    pub fn packsNibbles(layer: *const Layer) bool {
        return layer.kind == .dense and layer.weight_bits != 0 and layer.weight_bits <= 4;
    }

    /// Output channels of the nibble layout: a byte holds the weights of two channel vectors, so
    /// Cout_p rounded up to a pair of vectors.
    pub fn nibbleChannels(layer: *const Layer) u32 {
        const pair = 2 * limits.channel_lanes;
        return (layer.synaptic.channelsPadded() + pair - 1) / pair * pair;
    }

    /// Output channels of a depthwise stage: C * depth_multiplier (the synaptic channels of
    /// depthwise2d, the intermediate of separable2d).
    pub fn depthwiseChannels(layer: *const Layer) u32 {
        std.debug.assert(layer.isDepthwise());
        return layer.input.c * layer.depth_multiplier;
    }

    pub fn depthwiseChannelsPadded(layer: *const Layer) u32 {
        return limits.paddedChannels(layer.depthwiseChannels());
    }

    pub fn isConv(layer: *const Layer) bool {
        return layer.kind == .conv2d or layer.kind == .input_conv2d;
    }

    /// conv2d / input_conv2d with fewer input channels than a quad (a grey or RGB image, a
    /// spectrogram): quads run along the kernel row (kw, ci) instead of the channels, so no lane of a
    /// quad is wasted (loader.zig unpackRowQuadMatrix); it always runs the dense kernel.
    pub fn isNarrowConv(layer: *const Layer) bool {
        return layer.isConv() and layer.input.c < limits.quad_channels;
    }

    /// Bytes per pixel in the frame: Cin for a narrow conv, else the channel quads' bytes (Cin
    /// rounded up to 4), so that one kernel row of a window is KW * frameChannels consecutive bytes.
    pub fn frameChannels(layer: *const Layer) u32 {
        // whole vectors per tap, input channel o / M at channel o (kernels/frame.zig)
        if (layer.isDepthwise()) return layer.depthwiseChannelsPadded();
        if (layer.isNarrowConv()) return layer.input.c;
        return layer.input.channelQuads() * limits.quad_channels;
    }

    /// Quads along one kernel row of a window: ceil(KW * frameChannels / 4) (= KW * Cin_q for a
    /// wide conv, where the row layout of the weights is their (tap, quad) layout).
    pub fn rowQuads(layer: *const Layer) u32 {
        return (layer.kernel_w * layer.frameChannels() + limits.quad_channels - 1) / limits.quad_channels;
    }

    /// Rows of the padded input of a conv: every row a tap can reach.
    pub fn frameHeight(layer: *const Layer) u32 {
        return @max(layer.input.h + layer.pad_top, (layer.synaptic.h - 1) * layer.stride_h + layer.kernel_h);
    }

    /// Columns of the padded input of a conv.
    pub fn frameWidth(layer: *const Layer) u32 {
        return @max(layer.input.w + layer.pad_left, (layer.synaptic.w - 1) * layer.stride_w + layer.kernel_w);
    }

    /// Bytes of the padded input, with room for the last quad's read past the last column.
    pub fn frameBytes(layer: *const Layer) u64 {
        return @as(u64, layer.frameHeight()) * layer.frameWidth() * layer.frameChannels() + limits.quad_channels;
    }

    /// A conv whose frame would be its input buffer unchanged (no padding, no unused border, channels
    /// already whole vectors, e.g. a 1x1 conv on 64 channels, no depth multiplier) reads the input
    /// directly.
    pub fn readsInputDirectly(layer: *const Layer) bool {
        return layer.pad_top == 0 and layer.pad_left == 0 and layer.depth_multiplier == 1 and layer.frameHeight() == layer.input.h and
            layer.frameWidth() == layer.input.w and layer.frameChannels() == layer.input.channelsPadded();
    }

    /// Whether the output-stationary kernel (dense conv, depthwise gather) needs a padded copy
    /// of the input in the arena (kernels/frame.zig; separable2d fills a ring of its rows instead).
    pub fn usesFrame(layer: *const Layer) bool {
        return (layer.isConv() or layer.kind == .depthwise2d) and !layer.readsInputDirectly();
    }

    /// depthwise2d, and the depthwise stage of separable2d.
    pub fn isDepthwise(layer: *const Layer) bool {
        return layer.kind == .depthwise2d or layer.kind == .separable2d;
    }

    /// A depthwise stage's weights (taps, C_p), kept as sign-extended i32 (loader.zig): the
    /// multiply-add takes them without a widening step per use (kernels/vector.zig multiplyAddWide).
    pub fn depthwiseWeights(layer: *const Layer) []const i32 {
        std.debug.assert(layer.isDepthwise());
        const words: [*]const i32 = @ptrCast(@alignCast(layer.weights.ptr));
        return words[0 .. layer.weights.len / @sizeOf(i32)];
    }

    /// Whole groups of 64 channels of a depthwise stage (depthwise_groups).
    pub fn depthwiseGroupCount(layer: *const Layer) u32 {
        return layer.depthwiseChannelsPadded() / depthwise_group_channels;
    }

    /// visitor.visit(output_pixel, tap) for every (output pixel, kernel tap) through which input
    /// pixel (iy, ix) reaches the output (padding taps left out; row_taps / column_taps): the walk
    /// of the scatter kernels (kernels/conv2d.zig, kernels/depthwise2d.zig).
    pub inline fn forEachReach(layer: *const Layer, iy: u32, ix: u32, visitor: anytype) void {
        const rows = layer.row_taps[iy];
        const columns = layer.column_taps[ix];
        for (0..rows.count) |row_step| {
            const oy = rows.output_first - row_step;
            const kh = rows.kernel_first + row_step * layer.stride_h;
            for (0..columns.count) |column_step| {
                const ox = columns.output_first - column_step;
                const kw = columns.kernel_first + column_step * layer.stride_w;
                visitor.visit(@as(usize, oy) * layer.synaptic.w + ox, @as(usize, kh) * layer.kernel_w + kw);
            }
        }
    }

    /// Whether an out-of-bounds tap reads a non-zero pad value: the scatter kernels, which leave
    /// padding taps out, must not run then.
    pub fn padsNonZero(layer: *const Layer) bool {
        return layer.pad_pixel.len != 0;
    }

    pub fn readsOnlyModelInput(layer: *const Layer) bool {
        for (layer.inputs[0..layer.input_count]) |producer| {
            if (producer != input_model) return false;
        }
        return true;
    }

    pub fn outputMax(layer: *const Layer) u32 {
        std.debug.assert(layer.neuron != .none);
        return (@as(u32, 1) << @intCast(layer.activation_bits)) - 1;
    }
};

/// The channel of one input that a concat output channel reads.
pub const ConcatSource = extern struct {
    input: u32, // 0 .. input_count - 1
    channel: u32, // 0 .. that input's channels - 1
};

/// Byte offsets of the buffers kept for a whole context, and the totals, set by planner.zig.
pub const ArenaPlan = struct {
    kind: PlanKind = .fast, // the plan whose offsets the layers hold
    input_offset: u64 = 0, // u8 (H, W, C_p): the model input of the current timestep
    output_offset: u64 = 0, // i32 (OH, OW, C_p): the last layer's output summed over timesteps
    static_ops_offset: u64 = 0, // u64 (layers): synaptic ops of each layer's static potentials
    shared_offset: u64 = 0, // where the buffers shared by lifetime start (planner.zig), up to used_bytes
    used_bytes: u64 = 0, // from the aligned arena start, the context included
    fast_bytes: u64 = 0, // used_bytes of each plan (planner.zig)
    lean_bytes: u64 = 0,
};

pub const Model = struct {
    magic: u32 = model_magic,
    input: Shape,
    input_bits: u32,
    layers: []const Layer,
    plan: ArenaPlan,

    pub fn outputLayer(model: *const Model) *const Layer {
        return &model.layers[model.layers.len - 1];
    }

    pub fn inputMax(model: *const Model) u32 {
        return (@as(u32, 1) << @intCast(model.input_bits)) - 1;
    }

    /// Bytes the caller must give esnn_context_init: the plan plus slack to align the pointer.
    pub fn arenaBytes(model: *const Model) u64 {
        return model.plan.used_bytes + limits.buffer_alignment - 1;
    }

    /// arenaBytes of either plan (the loader computes both).
    pub fn planArenaBytes(model: *const Model, kind: PlanKind) u64 {
        const used = if (kind == .fast) model.plan.fast_bytes else model.plan.lean_bytes;
        return used + limits.buffer_alignment - 1;
    }
};

/// Offset of the nibble weight layout (Layer.packsNibbles): a stored nibble is w + 8 (0..15 for 2-
/// and 4-bit weights); the kernel subtracts 8 x the sum of the input values once (kernels/dense.zig).
pub const nibble_offset = 8;

/// Channels of one group of the depthwise_groups layout: one 64-byte vector of u8 inputs.
pub const depthwise_group_channels = 4 * limits.channel_lanes;

/// The two arena plans (planner.zig; esnn.h ESNN_PLAN_FAST / ESNN_PLAN_LEAN).
pub const PlanKind = enum(u32) { fast = 0, lean = 1 };

pub const model_magic: u32 = 0x4e53_4531; // "1ESN"

/// One non-zero value found by a kernel: its index along the axis the kernel scatters over.
pub const Event = extern struct {
    index: u32,
    value: i32,
};

/// Four consecutive input channels of one pixel, at least one non-zero: `index` is the channel
/// group, `values` the four u8 activations (lowest channel in the low byte).
pub const Quad = extern struct {
    index: u32,
    values: u32,
};

comptime {
    std.debug.assert(@sizeOf(Quad) == @sizeOf(Event)); // they share the arena's events buffer
}

/// Per-layer statistics of a run (docs/semantics.md, "Events and statistics").
/// Layout shared with the C header (esnn_layer_stats).
pub const LayerStats = extern struct {
    input_events: u64 = 0,
    input_size: u64 = 0,
    output_events: u64 = 0,
    output_size: u64 = 0,
    synaptic_ops: u64 = 0,
};
