"""Streaming inference (native/src/stream.zig through edgesnn.native.NativeStream and
Pipeline.stream's StreamSession): a DS-CNN of the shipped shape made valid along time, converted from
torch at 4/4 and 8/8 bits, streamed frame by frame equals the offline run on every window, for any
hop and any push size; the same DS-CNN padded along time (its edge rows recomputed per window) too;
what cannot stream is refused with the reason and the session runs whole windows instead; both session
modes give the same scores and detections. (Random models of
every streamable kind, against the reference on both builds: tests/test_native_bitexact.py.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import reference
from edgesnn.layers import Conv2D, Dense, InputConv2D
from edgesnn.pipeline import StreamSession

torch = pytest.importorskip("torch")
native = pytest.importorskip("edgesnn.native")

_spec = importlib.util.spec_from_file_location("kws_stream", Path(__file__).resolve().parent.parent / "benchmarks"
                                               / "kws_stream.py")
kws_stream = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kws_stream)
dscnn, mfcc_like = kws_stream.dscnn, kws_stream.mfcc_like      # the benchmark's DS-CNN made valid in time

LABELS = kws_stream.LABELS


def convert(net, bits: int) -> es.Model:
    return kws_stream.convert_dscnn(net, bits)


@pytest.fixture(scope="module", params=[4, 8], ids=["4-4", "8-8"])
def valid_model(request):
    return convert(dscnn(time_pad=False, channels=24), request.param)


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


@pytest.fixture(scope="module", params=[4, 8], ids=["4-4", "8-8"])
def padded_model(request):
    return convert(dscnn(time_pad=True, channels=24, seed=2), request.param)


def test_time_padded_dscnn_streams_bit_exact_at_any_hop(padded_model):
    """The DS-CNN padded along time (the stem pads 5 rows, each depthwise 1): per window the executor
    recomputes only the rows the padding reaches and takes the others from the rows kept; every window
    equals the offline run, at any hop and push size."""
    assert padded_model.layers[0].padding[0] == 5
    rng = np.random.default_rng(6)
    frames = mfcc_like(rng, 120)
    frames[30:50] = 0
    loaded = native.native_model(padded_model)
    for hop in (1, 2, 3, 4, 7, 49, 51):
        stream = native.NativeStream(loaded, hop)
        outputs = push_in_pieces(stream, frames, rng)
        starts = list(range(0, frames.shape[0] - 49 + 1, hop))
        windows = np.stack([frames[t:t + 49] for t in starts])
        np.testing.assert_array_equal(outputs, padded_model.forward(windows, device="cpu"), err_msg=f"hop {hop}")
        assert len(np.unique(outputs.reshape(len(starts), -1), axis=0)) > len(starts) // 2
        stream.reset()
        np.testing.assert_array_equal(stream.push(frames[:49]), outputs[:1])
    expected, _ = reference.run(padded_model, windows[[0, -1]][:, None])
    np.testing.assert_array_equal(outputs[[0, -1]], expected)
    pipe = es.Pipeline(es.frontend("kws"), padded_model, labels=LABELS)
    assert StreamSession(pipe, pipe.detector_settings(hop_s=0.02)).mode == "stream"


def test_other_devices_run_whole_windows_and_say_why():
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
    with pytest.raises(ValueError, match=r"hop_frames 2097152, expected 1\.\.1048576"):
        native.NativeStream(loaded, 1 << 21)
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


def test_the_shipped_pipeline_streams_and_finds_what_whole_windows_find():
    """Pipeline.stream runs the shipped 4-bit KWS pipeline (padded along time: edge rows recomputed per
    window) on the streaming executor; on the shipped demo recording every window's scores equal the
    whole-window run's."""
    import soundfile

    data = Path(es.__file__).resolve().parent / "data"
    pipe = es.Pipeline.load(data / "kws_dscnn_4bit.esnn")
    audio, rate = soundfile.read(data / "kws_demo.wav", dtype="float32")
    assert rate == pipe.frontend.sample_rate
    chunks = [audio[i:i + 320] for i in range(0, audio.size, 320)]   # 20 ms, as a microphone gives it
    settings = pipe.detector_settings()
    results = {}
    for mode in ("stream", "window"):
        session = StreamSession(pipe, settings, mode=mode)
        results[mode] = [(time_s, session.scores(output)) for chunk in chunks
                         for output, time_s in session.outputs(session.frames(chunk))]
    assert StreamSession(pipe, settings).mode == "stream", StreamSession(pipe, settings).note
    assert len(results["stream"]) > 200   # the 12 s recording at the shipped detector hop
    for (t_stream, s_stream), (t_window, s_window) in zip(results["stream"], results["window"], strict=True):
        assert t_stream == t_window
        np.testing.assert_array_equal(s_stream, s_window)
    labels = {d.label for d in pipe.stream(chunks)}
    assert len(labels) >= 3, labels   # the demo says six keywords; the shipped detector finds most of them
