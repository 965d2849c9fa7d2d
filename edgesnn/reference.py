"""The numpy reference engine: the executable form of docs/semantics.md.

Readable first, vectorized over the batch second. Every other engine must match it bit for bit,
potentials and statistics both. Integer arithmetic is int64; convolutions and dense layers use a
float64 matrix product, which is exact because every partial sum is an integer below 2**53
(the model's int32 overflow check bounds them by 2**31).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .layers import INT32_MAX, INT32_MIN
from .statistics import LayerStatistics, Statistics

# How many float64 im2col values one batch chunk may hold (bounds memory to about 512 MB).
IM2COL_VALUES_MAX = 64 * 1024 * 1024


def run(model, x5: np.ndarray, capture: dict | None = None, trace: dict | None = None,
        early_exit: int | None = None) -> tuple[np.ndarray, Statistics]:
    """Run `model` on uint8 input `x5` of shape (N, T, H, W, C); return (int32 potentials, Statistics).

    With a dict `capture`, also store every layer's output summed over the timesteps, int64
    (N, OH, OW, C) by layer name (spike counts for if/lif layers), for fidelity checks.
    With a dict `trace`, also store the output after every timestep (docs/semantics.md, "Over time and
    early exit"): trace["outputs"] int32 (N, T, OH, OW, C) and trace["timesteps_used"] int64 (N,).
    `early_exit` (an int >= 1): a sample stops after the first timestep at which its largest output
    value leads the second largest by at least this margin.
    """
    n, t = x5.shape[:2]
    stats = Statistics(samples=n, timesteps=t, device="reference",
                       layers=[LayerStatistics(name=l.name, kind=l.kind) for l in model.layers])
    chunk = _batch_chunk(model)
    parts = [] if capture is not None else None
    outputs, traces, used = [], [], []
    for i in range(0, n, chunk):
        sums = {} if capture is not None else None
        steps = {} if trace is not None or early_exit is not None else None
        outputs.append(_run_chunk(model, x5[i:i + chunk], stats, sums, steps, early_exit))
        if parts is not None:
            parts.append(sums)
        if steps is not None:
            traces.append(steps["outputs"])
            used.append(steps["timesteps_used"])
    if capture is not None:
        for layer in model.layers:
            capture[layer.name] = np.concatenate([part[layer.name] for part in parts])
    if trace is not None:
        trace["outputs"], trace["timesteps_used"] = np.concatenate(traces), np.concatenate(used)
    return np.concatenate(outputs, axis=0), stats


def leads_by(total: np.ndarray, margin: int) -> np.ndarray:
    """Whether each sample's largest output value leads its second largest by at least `margin` (N,)."""
    flat = total.reshape(total.shape[0], -1)
    if flat.shape[1] < 2:
        return np.zeros(flat.shape[0], bool)   # nothing to lead: the run goes on
    top = np.sort(flat, axis=1)[:, -2:].astype(np.int64)
    return top[:, 1] - top[:, 0] >= margin


def _batch_chunk(model) -> int:
    per_sample = 1
    for layer in model.layers:
        if layer.kind in ("conv2d", "input_conv2d", "depthwise2d", "separable2d"):
            kh, kw = layer.weights.shape[:2]
            oh, ow = layer._pre_pool
            per_sample = max(per_sample, oh * ow * kh * kw * layer.input_shapes[0][2] * 2)
    return max(1, IM2COL_VALUES_MAX // per_sample)


def _run_chunk(model, x5: np.ndarray, stats: Statistics, sums: dict | None = None, steps: dict | None = None,
               early_exit: int | None = None) -> np.ndarray:
    n, timesteps = x5.shape[:2]
    state: dict[str, np.ndarray] = {}   # if/lif membrane potentials (N, OH, OW, C) int64, per layer
    last = model.layers[-1]
    total = np.zeros((n, *last.output_shape), dtype=np.int64)  # the model output, summed over timesteps
    running = np.arange(n)   # the samples still running (early exit drops the others from the batch)
    result = np.zeros((n, *last.output_shape), dtype=np.int32)
    if steps is not None:
        steps["outputs"] = np.zeros((n, timesteps, *last.output_shape), np.int32)
        steps["timesteps_used"] = np.full(n, timesteps, np.int64)
    for t in range(timesteps):
        acts: dict[str, np.ndarray] = {"input": x5[:, t].astype(np.int64)}
        for layer, layer_stats in zip(model.layers, stats.layers):
            inputs = [acts[name] for name in layer.inputs]
            potentials, synaptic_ops = SYNAPTIC[layer.kind](layer, inputs)
            potentials = _pool(layer, potentials)
            out = _neuron(layer, potentials, state)
            acts[layer.name] = out
            if sums is not None:
                if layer.name not in sums:
                    sums[layer.name] = np.zeros((n, *out.shape[1:]), np.int64)
                sums[layer.name][running] += out
            layer_stats.input_events += sum(int(np.count_nonzero(a)) for a in inputs)
            layer_stats.input_size += sum(a.size for a in inputs)
            layer_stats.output_events += int(np.count_nonzero(out))
            layer_stats.output_size += out.size
            layer_stats.synaptic_ops += synaptic_ops
        if last.neuron == "none":
            total = np.clip(total + acts[last.name], INT32_MIN, INT32_MAX)
        else:
            total += acts[last.name]
        result[running] = np.clip(total, INT32_MIN, INT32_MAX)
        if steps is not None:
            steps["outputs"][running, t:] = result[running, None]   # a stopped sample's rows repeat its output
        if early_exit is not None and t + 1 < timesteps:
            done = leads_by(total, early_exit)
            if done.any():
                if steps is not None:
                    steps["timesteps_used"][running[done]] = t + 1
                keep = ~done
                running = running[keep]
                if running.size == 0:
                    break
                x5, total = x5[keep], total[keep]
                state = {name: v[keep] for name, v in state.items()}
    return result


# -- synaptic stages: (layer, [inputs (N, H, W, C) int64]) -> (potentials (N, OH, OW, C) int64, synaptic ops) --

def _padded(a: np.ndarray, pads, values) -> np.ndarray:
    """`a` (N, H, W, C) framed by `pads` (top, bottom, left, right) holding `values[c]` per channel."""
    top, bottom, left, right = pads
    if not any(pads):
        return a
    n, h, w, c = a.shape
    out = np.empty((n, h + top + bottom, w + left + right, c), a.dtype)
    out[...] = np.asarray(values, a.dtype)
    out[:, top:top + h, left:left + w] = a
    return out


def _window_view(a: np.ndarray, size, strides) -> np.ndarray:
    """(N, OH, OW, C, KH, KW) view of the windows of an already padded `a`."""
    win = sliding_window_view(a, tuple(size), axis=(1, 2))
    return win[:, ::strides[0], ::strides[1]]


def _windows(layer, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """im2col view (N, OH, OW, KH, KW, C) of the input `a` (N, H, W, C) padded with the pad values, and
    the (OH, OW, KH, KW) mask of in-bounds taps."""
    kh, kw = layer.weights.shape[:2]
    win = _window_view(_padded(a, layer.pads, layer.pad_value), (kh, kw), layer.stride)
    inside = _window_view(_padded(np.ones((1, *a.shape[1:3], 1), np.int64), layer.pads, [0]), (kh, kw), layer.stride)
    return win.transpose(0, 1, 2, 4, 5, 3), inside[0, :, :, 0]


def _tap_events(win: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Non-zero in-bounds taps (N, OH, OW, KH, KW, C) (padding taps are no events, whatever they read)."""
    return (win != 0) & inside[None, :, :, :, :, None].astype(bool)


def _conv2d(layer, inputs):
    win, inside = _windows(layer, inputs[0])
    n, oh, ow = win.shape[:3]
    cols = win.reshape(n * oh * ow, -1)
    cout = layer.weights.shape[-1]
    weights = layer.weights.reshape(-1, cout).astype(np.float64)
    acc = (cols.astype(np.float64) @ weights).astype(np.int64)
    potentials = acc.reshape(n, oh, ow, cout) + layer.bias
    return potentials, int(np.count_nonzero(_tap_events(win, inside))) * cout


def _depthwise_sum(layer, a):
    win, inside = _windows(layer, a)  # (N, OH, OW, KH, KW, C)
    m = layer.depth_multiplier
    win_out = np.repeat(win, m, axis=-1) if m > 1 else win   # output channel o reads input channel o // m
    acc = np.einsum("nyxhwc,hwc->nyxc", win_out, layer.weights.astype(np.int64))
    return acc, int(np.count_nonzero(_tap_events(win, inside))) * m


def _depthwise2d(layer, inputs):
    acc, ops = _depthwise_sum(layer, inputs[0])
    return acc + layer.bias, ops


def _separable2d(layer, inputs):
    dw, dw_ops = _depthwise_sum(layer, inputs[0])
    lo, hi = -(1 << (layer.mid_bits - 1)), (1 << (layer.mid_bits - 1)) - 1
    mid = np.clip(requantize(dw, layer.mid_multiplier, layer.mid_shift), lo, hi)
    cout = layer.pointwise.shape[1]
    acc = (mid.astype(np.float64) @ layer.pointwise.astype(np.float64)).astype(np.int64)
    return acc + layer.bias, dw_ops + int(np.count_nonzero(mid)) * cout


def _dense(layer, inputs):
    flat = inputs[0].reshape(inputs[0].shape[0], -1)
    cout = layer.weights.shape[1]
    acc = (flat.astype(np.float64) @ layer.weights.astype(np.float64)).astype(np.int64)
    potentials = (acc + layer.bias).reshape(-1, 1, 1, cout)
    return potentials, int(np.count_nonzero(flat)) * cout


def _add(layer, inputs):
    m = layer.input_multipliers.astype(np.int64)
    potentials = sum(a * m[i] for i, a in enumerate(inputs)) + layer.bias
    return potentials, sum(int(np.count_nonzero(a)) for a in inputs)


def _concat(layer, inputs):
    src = layer.source_map
    gathered = np.stack([inputs[i][..., c] for i, c in src], axis=-1)   # (N, H, W, Cout)
    potentials = gathered * layer.input_multipliers.astype(np.int64) + layer.bias
    return potentials, int(np.count_nonzero(gathered))


SYNAPTIC = {"input_conv2d": _conv2d, "conv2d": _conv2d, "depthwise2d": _depthwise2d,
            "separable2d": _separable2d, "dense": _dense, "add": _add, "concat": _concat}


# -- pooling and neuron stages ------------------------------------------------------------------

def requantize(p: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(p * m + 2**(s-1)) >> s, round half up, in int64; per channel (last axis)."""
    m = multiplier.astype(np.int64)
    s = shift.astype(np.int64)
    rounding = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return (p * m + rounding) >> s


def _pool(layer, p: np.ndarray) -> np.ndarray:
    if layer.pool is None:
        return p
    if layer.pool == "global_avg":
        return p.sum(axis=(1, 2), keepdims=True)
    size, stride, pads = layer.pool_size, layer.pool_stride, layer.pool_pads
    inside = _window_view(_padded(np.ones((1, *p.shape[1:3], 1), np.int64), pads, [0]), size, stride)
    inside = inside[0, :, :, 0].astype(bool)                        # (OH, OW, PH, PW) in-bounds taps
    if layer.pool == "max":
        sign = layer.pool_sign.astype(np.int64)
        low = np.iinfo(np.int64).min
        win = _window_view(_padded(p * sign, pads, [low]), size, stride)   # padded taps never win
        return win.max(axis=(-2, -1)) * sign
    sums = _window_view(_padded(p, pads, [0]), size, stride).sum(axis=(-2, -1))
    if layer.pool_count_include_pad or not any(pads):
        return sums
    area = size[0] * size[1]
    count = inside.sum(axis=(-2, -1))[None, :, :, None].astype(np.int64)   # in-bounds taps per window
    scaled = (2 * sums * area + count) // (2 * count)                       # sums * area / count, half up
    return np.where(count == area, sums, scaled)


def _neuron(layer, p: np.ndarray, state: dict) -> np.ndarray:
    if layer.neuron == "none":
        return p
    if layer.neuron == "relu":
        q = requantize(p, layer.out_multiplier, layer.out_shift) + layer.out_zero_point.astype(np.int64)
        return np.clip(q, 0, (1 << layer.activation_bits) - 1)
    v = state.get(layer.name)
    if v is None:
        v = np.zeros_like(p)
    if layer.neuron == "lif" and layer.decay_multiplier is not None:   # decay, rounded half up
        v = requantize(v, layer.decay_multiplier, np.full_like(layer.decay_multiplier, layer.decay_shift))
    elif layer.neuron == "lif":                                         # leak as a shift
        v = v - (v >> layer.leak_shift)
    v = np.clip(v + p, INT32_MIN, INT32_MAX)
    if layer.membrane_floor is not None:
        v = np.maximum(v, layer.membrane_floor)
    threshold = layer.threshold.astype(np.int64)
    spikes = v >= threshold
    if layer.reset == "subtract":
        v = v - spikes * threshold
    elif layer.reset == "zero":
        v = np.where(spikes, 0, v)
    state[layer.name] = v
    return spikes.astype(np.int64)
