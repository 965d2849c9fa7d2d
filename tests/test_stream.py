"""Streaming inference (native/src/stream.zig through edgesnn.native.NativeStream and
Pipeline.stream's StreamSession): a DS-CNN of the shipped shape made valid along time, converted from
torch at 4/4 and 8/8 bits, streamed frame by frame equals the offline run on every window, for any
hop and any push size; a model that pads along time is refused with the reason and the session runs
whole windows instead; both session modes give the same scores and detections. (Random models of
every streamable kind, against the reference on both builds: tests/test_native_bitexact.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import edgesnn as es
from edgesnn import reference
from edgesnn.layers import Conv2D, Dense, InputConv2D
from edgesnn.pipeline import StreamSession

torch = pytest.importorskip("torch")
native = pytest.importorskip("edgesnn.native")
nn = torch.nn

LABELS = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def dscnn(time_pad: bool, channels: int = 24, seed: int = 0):
    """examples/kws/train.py's DS-CNN (stem 10x4 stride 2, four depthwise-separable 3x3 blocks, the
    last pooling before its ReLU, dense), padded along time as shipped or valid along time."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, channels, (10, 4), stride=(2, 2), padding=(5 if time_pad else 0, 1), bias=False),
              nn.BatchNorm2d(channels), nn.ReLU()]
    for block in range(4):
        layers += [nn.Conv2d(channels, channels, 3, padding=(1 if time_pad else 0, 1), groups=channels, bias=False),
                   nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False),
                   nn.BatchNorm2d(channels)]
        layers += [nn.ReLU()] if block < 3 else [nn.AdaptiveAvgPool2d(1), nn.ReLU()]
    layers += [nn.Flatten(), nn.Linear(channels, len(LABELS))]
    net = nn.Sequential(*layers)
    # batch-norm statistics measured on feature-like inputs (as training leaves them), so that every
    # layer's activations stay spread out and the output follows the window
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None                      # a plain average over the batches below
    rng = np.random.default_rng(seed)
    net.train()
    with torch.no_grad():
        for _ in range(4):
            batch = np.stack([mfcc_like(rng, 49) for _ in range(32)]).transpose(0, 3, 1, 2) / 255.0
            net(torch.as_tensor(batch, dtype=torch.float32))
    return net.eval()


def mfcc_like(rng, frames: int) -> np.ndarray:
    """uint8 (frames, 10, 1) that changes along time as speech features do: each coefficient a slow
    random walk, loud and quiet stretches (global pooling of i.i.d. noise would give every window the
    same output)."""
    walk = np.cumsum(rng.normal(0.0, 12.0, (frames, 10)), axis=0)
    loudness = np.repeat(rng.uniform(0.2, 1.0, frames // 8 + 1), 8)[:frames, None]
    return np.clip(128 + (walk - walk.mean(axis=0)) * loudness, 0, 255).astype(np.uint8)[:, :, None]


def convert(net, bits: int) -> es.Model:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    calibration = np.stack([mfcc_like(rng, 49) for _ in range(48)])
    return es.convert(net, samples=calibration, input_scaling=(255.0, 0.0), weight_bits=bits, activation_bits=bits,
                      labels=LABELS)


@pytest.fixture(scope="module", params=[4, 8], ids=["4-4", "8-8"])
def valid_model(request):
    return convert(dscnn(time_pad=False), request.param)


def push_in_pieces(stream, frames, rng) -> np.ndarray:
    outputs, pushed = [], 0
    while pushed < frames.shape[0]:
        piece = int(rng.integers(1, 9))
        outputs.append(stream.push(frames[pushed:pushed + piece]).copy())
        pushed += piece
    return np.concatenate(outputs)


def test_valid_dscnn_streams_bit_exact_at_any_hop(valid_model):
    kinds = [layer.kind for layer in valid_model.layers]
    assert kinds[0] == "input_conv2d" and "depthwise2d" in kinds and kinds[-1] == "dense"
    rng = np.random.default_rng(1)
    frames = mfcc_like(rng, 130)
    frames[40:60] = 0                                    # silence: sparse rows on the way
    loaded = native.native_model(valid_model)
    for hop in (1, 2, 3, 5, 49, 60):
        stream = native.NativeStream(loaded, hop)
        outputs = push_in_pieces(stream, frames, rng)
        starts = list(range(0, frames.shape[0] - 49 + 1, hop))
        windows = np.stack([frames[t:t + 49] for t in starts])
        np.testing.assert_array_equal(outputs, valid_model.forward(windows, device="cpu"), err_msg=f"hop {hop}")
        distinct = len(np.unique(outputs.reshape(len(starts), -1), axis=0))
        assert distinct > len(starts) // 2, "the windows' outputs barely differ: a weak check"
    some = windows[[0, len(starts) // 2, -1]]
    expected, _ = reference.run(valid_model, some[:, None])   # and the executable spec itself
    np.testing.assert_array_equal(outputs[[0, len(starts) // 2, -1]], expected)


def test_time_padded_model_is_refused_and_the_session_runs_whole_windows():
    padded = convert(dscnn(time_pad=True, channels=8), 4)
    with pytest.raises(es.ModelError, match=r"layer 0 \(input_conv2d\) pads along time \(rows: top 5, bottom 5\)"):
        native.NativeStream(native.native_model(padded), 1)
    pipe = es.Pipeline(es.frontend("kws"), padded, labels=LABELS)
    session = StreamSession(pipe, pipe.detector_settings(hop_s=0.02))
    assert session.mode == "window" and "pads along time" in session.note
    with pytest.raises(es.ModelError, match="cannot stream.*pads along time"):
        StreamSession(pipe, pipe.detector_settings(), mode="stream")
    on_reference = es.Pipeline(es.frontend("kws"), convert(dscnn(time_pad=False, channels=8), 4), labels=LABELS,
                               device="reference")
    session = StreamSession(on_reference, on_reference.detector_settings())
    assert session.mode == "window" and "'reference'" in session.note


def test_what_does_not_stream_says_why():
    """Branch-free models the executor cannot run row by row: the first layer dense, a max pool inside
    the window, a last convolution whose rows nothing reduces."""
    rng = np.random.default_rng(2)

    def conv(name, **fields):
        return Conv2D(name=name, weights=rng.integers(-8, 8, (3, 1, 1 if name == "c0" else 4, 4)), weight_bits=4,
                      padding="valid", **fields)

    cases = [
        ([Dense(name="d", weights=rng.integers(-8, 8, (12 * 3, 2)), neuron="none")], "layer 0 is dense"),
        ([conv("c0", pool="max", pool_size=(2, 1)), Dense(name="d", weights=rng.integers(-8, 8, (5 * 3 * 4, 2)),
                                                          neuron="none")], r"layer 0 pools \(max\)"),
        ([conv("c0", neuron="none")], "neither pools globally nor feeds a dense layer"),
    ]
    for layers, reason in cases:
        model = es.Model(layers=layers, input_shape=(12, 3, 1))
        with pytest.raises(es.ModelError, match=reason):
            native.NativeStream(native.native_model(model), 1)


def test_bad_pushes_get_clear_errors():
    rng = np.random.default_rng(3)
    model = es.Model(layers=[InputConv2D(name="c", weights=rng.integers(-8, 8, (2, 3, 2, 4)), weight_bits=4,
                                         padding=(0, 0, 1, 1), pool="global_avg", neuron="none")],
                     input_shape=(6, 5, 2), input_bits=4)
    loaded = native.native_model(model)
    with pytest.raises(ValueError, match="hop_frames"):
        native.NativeStream(loaded, 0)
    stream = native.NativeStream(loaded, 2)
    with pytest.raises(ValueError, match=r"\(k, 5, 2\)"):
        stream.push(np.zeros((3, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        stream.push(np.zeros((3, 5, 2), np.float32))
    frames = rng.integers(0, 16, (9, 5, 2)).astype(np.uint8)
    frames[7, 3, 1] = 16
    with pytest.raises(ValueError, match=r"frame 7 \(pushed frame 7\) column 3 channel 1 is 16, above 2\^input_bits - 1 = 15"):
        stream.push(frames)
    assert stream.push(frames[:7]).shape == (1, 1, 1, 4)   # the refused push changed nothing
    assert stream.push(np.zeros((0, 5, 2), np.uint8)).shape == (0, 1, 1, 4)


def test_pipeline_stream_modes_give_the_same_scores_and_detections():
    model = convert(dscnn(time_pad=False, channels=8, seed=4), 4)
    pipe = es.Pipeline(es.frontend("kws"), model, labels=LABELS)
    rng = np.random.default_rng(5)
    audio = np.zeros(4 * 16000, np.float32)
    for start in (0.5, 2.2):
        at = int(start * 16000)
        audio[at:at + 8000] = 0.3 * rng.standard_normal(8000) * np.hanning(8000)
    chunks = [audio[i:i + 777] for i in range(0, audio.size, 777)]
    settings = pipe.detector_settings(hop_s=0.04, window_s=0.0, min_count=1, threshold=0.0, suppression_s=0.0,
                                      ignore=[])
    results = {}
    for mode in ("stream", "window"):
        session = StreamSession(pipe, settings, mode=mode)
        assert session.mode == mode
        results[mode] = [(time_s, session.scores(output)) for chunk in chunks
                         for output, time_s in session.outputs(session.frames(chunk))]
    assert len(results["stream"]) == 1 + (1 + (audio.size - 480) // 320 - 49) // 2
    for (t_stream, s_stream), (t_window, s_window) in zip(results["stream"], results["window"], strict=True):
        assert t_stream == t_window
        np.testing.assert_array_equal(s_stream, s_window)
    assert StreamSession(pipe, settings).mode == "stream"     # what Pipeline.stream uses
    detections = list(pipe.stream(chunks, hop_s=0.04, window_s=0.0, min_count=1, threshold=0.0,
                                  suppression_s=0.0, ignore=[]))
    assert len(detections) == len(results["stream"])
    assert [d.score for d in detections] == [float(s.max()) for _, s in results["window"]]
