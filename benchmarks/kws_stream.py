"""Real-time factor of the streaming keyword-spotting path, whole and per part, against onnxruntime.

    python benchmarks/kws_stream.py                     # the shipped 4-bit pipeline, 60 s of audio, 20 ms hop
    python benchmarks/kws_stream.py --seconds 600 --hop-s 0.04 --json out.json
    python benchmarks/kws_stream.py --model kws.esnn --onnx kws.onnx   # any kws pipeline file and its float model
    python benchmarks/kws_stream.py --padded-random-model   # the DS-CNN padded in time (train.py --time-padding same)

The audio (the shipped demo recording, looped) is pushed in hop-sized chunks, as a microphone
would give it. The loop is Pipeline.stream's own (edgesnn.pipeline.StreamSession), timed part by
part: features (the incremental MFCC frontend, only the new frames, quantized), inference (the
model's output for every window the frames complete) and smoothing (the softmax and the detector).
Inference runs three ways in the same loop, everything else identical:

- edgesnn stream: the native engine's streaming executor (docs/c-api.md "Streaming"), which
  computes only the rows of each layer the new frame completes (a model padded along time also
  the rows of each window that reach the padding; a model that cannot stream is reported, with
  the engine's reason);
- edgesnn window: the last 1 s of frames copied into the model input and the whole window run;
- onnxruntime window: the same float model (--onnx) in onnxruntime (one thread) on each window.

The process is pinned to one core and the times are CPU time (time.process_time), so other load
on a shared machine does not count directly (it still slows the caches: compare the ratios of one
run); wall time is printed too. Real-time factor = seconds of compute / seconds of audio, of the
whole loop run without part timers (a timer read is a system call of a few microseconds); the
parts come from a second run with a timer around each.

Detection latency: on the demo recording (its words and times in kws_demo.json), the time from
each keyword's end to its detection, in stream time (plus the compute of one hop, which the RTF
bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import edgesnn as es
from edgesnn.pipeline import StreamSession

DATA = Path(es.__file__).resolve().parent / "data"


LABELS = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def mfcc_like(rng, frames: int) -> np.ndarray:
    """uint8 (frames, 10, 1) that changes along time as speech features do: each coefficient a slow
    random walk, loud and quiet stretches (global pooling of i.i.d. noise would give every window the
    same output)."""
    walk = np.cumsum(rng.normal(0.0, 12.0, (frames, 10)), axis=0)
    loudness = np.repeat(rng.uniform(0.2, 1.0, frames // 8 + 1), 8)[:frames, None]
    return np.clip(128 + (walk - walk.mean(axis=0)) * loudness, 0, 255).astype(np.uint8)[:, :, None]


def dscnn(time_pad: bool, channels: int = 64, seed: int = 0):
    """examples/kws/train.py's DS-CNN (stem 10x4 stride 2, four depthwise-separable 3x3 blocks, the
    last pooling before its ReLU, dense), padded along time as shipped or valid along time."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
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


def convert_dscnn(net, bits: int) -> es.Model:
    """The torch DS-CNN at bits/bits, calibrated on feature-like frames, labelled as the shipped one."""
    rng = np.random.default_rng(0)
    calibration = np.stack([mfcc_like(rng, 49) for _ in range(48)])
    return es.convert(net, samples=calibration, input_scaling=(255.0, 0.0), weight_bits=bits, activation_bits=bits,
                      labels=LABELS)


def random_pipeline(folder: Path, time_pad: bool = False) -> tuple[Path, Path]:
    """(pipeline .esnn, float .onnx) of the shipped DS-CNN shape, valid along time or padded
    (`train.py --time-padding same`), random weights, 4/4 bits, with the default kws frontend: what
    the streaming path costs for that shape (speed does not need accuracy)."""
    import torch

    net = dscnn(time_pad=time_pad)
    pipe = es.Pipeline(es.frontend("kws"), convert_dscnn(net, 4), labels=LABELS)
    name = "padded" if time_pad else "valid"
    model_path, onnx_path = folder / f"kws_dscnn_{name}_random_4bit.esnn", folder / f"kws_dscnn_{name}_random.onnx"
    pipe.save(model_path)
    torch.onnx.export(net, torch.zeros(1, 1, 49, 10), str(onnx_path), input_names=["mfcc"], output_names=["logits"],
                      dynamo=False)
    return model_path, onnx_path


class Timer:
    def __init__(self):
        self.cpu_s = 0.0

    def __enter__(self):
        self._start = time.process_time()

    def __exit__(self, *exc):
        self.cpu_s += time.process_time() - self._start


PARTS = ("features", "inference", "smoothing")


def session_for(pipe, settings, mode, forward=None, scores=None) -> StreamSession:
    """Pipeline.stream's StreamSession in `mode`; ``forward(input uint8 (1, 49, 10, 1)) -> output`` and
    ``scores(output) -> (C,)`` replace the session's own when given."""
    session = StreamSession(pipe, settings, mode=mode)
    if forward is not None:
        session.forward = forward
    if scores is not None:
        session.scores = scores
    return session


def run_whole(pipe, chunks, settings, mode, forward=None, scores=None) -> float:
    """CPU seconds of the same loop without the part timers (a timer read costs ~3 us here: six per hop
    would add ~15 us to every hop)."""
    session = session_for(pipe, settings, mode, forward, scores)
    frames_of, outputs_of, scores_of, update = session.frames, session.outputs, session.scores, session.detector.update
    start = time.process_time()
    for chunk in chunks:
        for output, time_s in outputs_of(frames_of(chunk)):
            update(time_s, scores_of(output))
    return time.process_time() - start


def run_loop(pipe, chunks, settings, mode, forward=None, scores=None) -> tuple[dict, list]:
    """The loop with a timer per part (see session_for)."""
    session = session_for(pipe, settings, mode, forward, scores)
    parts = {name: Timer() for name in PARTS}
    features, inference, smoothing = parts.values()
    update = session.detector.update
    detections = []
    for chunk in chunks:
        with features:
            frames = session.frames(chunk)
        with inference:
            outputs = session.outputs(frames)
        with smoothing:
            for output, time_s in outputs:
                detection = update(time_s, session.scores(output))
                if detection is not None:
                    detections.append(detection)
    return {name: t.cpu_s for name, t in parts.items()}, detections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DATA / "kws_dscnn_4bit.esnn")
    parser.add_argument("--onnx", type=Path, default=DATA / "kws_dscnn.onnx")
    parser.add_argument("--audio", type=Path, default=DATA / "kws_demo.wav")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio to stream (the recording looped)")
    parser.add_argument("--hop-s", type=float, default=0.02)
    parser.add_argument("--core", type=int, default=None, help="pin to this core (default: the first allowed)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--valid-random-model", action="store_true",
                        help="instead of --model/--onnx: the shipped DS-CNN shape made valid along time, random "
                             "weights, 4/4 bits (built with torch into a temporary folder), which streams")
    parser.add_argument("--padded-random-model", action="store_true",
                        help="the same, padded along time as train.py --time-padding same makes it (the streaming "
                             "executor recomputes the rows of each window that reach the padding)")
    args = parser.parse_args(argv)
    if args.valid_random_model or args.padded_random_model:
        import tempfile

        args.model, args.onnx = random_pipeline(Path(tempfile.mkdtemp(prefix="kws-stream-")),
                                                time_pad=args.padded_random_model)
    if hasattr(os, "sched_setaffinity"):
        core = args.core if args.core is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    import onnxruntime as ort

    pipe = es.Pipeline.load(args.model, device=args.device)
    settings = pipe.detector_settings(hop_s=args.hop_s)
    fe = pipe.frontend
    hop_frames = max(1, round(settings.hop_s / fe.hop_s))
    recording = fe.load(args.audio)
    total = round(args.seconds * fe.sample_rate)
    audio = np.tile(recording, -(-total // len(recording)))[:total]
    step = hop_frames * fe.hop_samples
    chunks = [audio[i:i + step] for i in range(0, len(audio), step)]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])

    def onnx_forward(window):   # (1, 49, 10, 1) uint8 -> logits (1, C), the float model on NCHW in [0, 1]
        return session.run(None, {input_name: (window.transpose(0, 3, 1, 2) / np.float32(255.0)).astype(np.float32)})[0]

    def softmax(logits):
        e = np.exp(logits - logits.max())
        return e / e.sum()

    input_name = session.get_inputs()[0].name
    streams, note = StreamSession(pipe, settings).mode == "stream", None
    if not streams:
        note = StreamSession(pipe, settings).note
    loops = {"edgesnn stream": ("stream", None, None), "edgesnn window": ("window", None, None),
             "onnxruntime window": ("window", onnx_forward, softmax)}
    if not streams:
        del loops["edgesnn stream"]
    results = {"hop_frames": hop_frames, "streams": streams, "not_streaming_because": note}
    for name, (mode, forward, scores) in loops.items():
        run_loop(pipe, chunks[:100], settings, mode, forward, scores)      # warm up
        parts, detections = run_loop(pipe, chunks, settings, mode, forward, scores)
        wall = time.perf_counter()
        whole = run_whole(pipe, chunks, settings, mode, forward, scores)
        wall = time.perf_counter() - wall
        results[name] = {"parts_cpu_s": parts, "total_cpu_s": whole, "wall_s": wall,
                         "rtf": whole / args.seconds,
                         "rtf_parts": {k: v / args.seconds for k, v in parts.items()},
                         "us_per_hop": whole / len(chunks) * 1e6,
                         "detections": len(detections)}
    wall = time.perf_counter()
    cpu = time.process_time()
    via_pipeline = list(pipe.stream(chunks, hop_s=settings.hop_s))   # untimed parts: what users get
    results["Pipeline.stream"] = {"rtf": (time.process_time() - cpu) / args.seconds,
                                  "wall_s": time.perf_counter() - wall, "detections": len(via_pipeline)}
    results["load_average"] = os.getloadavg()

    truth_path = args.audio.with_suffix(".json")
    latencies = []
    if truth_path.exists():
        said = json.loads(truth_path.read_text())
        found = list(pipe.stream(args.audio))
        for word in said:
            hits = [d for d in found if d.label == word["word"] and -0.5 <= d.time_s - word["end_s"] <= 1.0]
            if hits:
                latencies.append(hits[0].time_s - word["end_s"])
        results["latency"] = {"keywords": sum(1 for w in said if w["word"] in pipe.labels), "detected": len(latencies),
                              "median_s": float(np.median(latencies)) if latencies else None,
                              "max_s": float(np.max(latencies)) if latencies else None}

    print(f"streaming KWS ({args.model.name}), {args.seconds:g} s of audio in {settings.hop_s * 1000:g} ms hops, "
          f"one core, CPU time; load average {results['load_average'][0]:.1f}")
    if note:
        print(f"edgesnn stream: not run, the model does not stream: {note}")
    onnx_rtf = results["onnxruntime window"]["rtf"]
    print("RTF: the whole loop untimed; the parts: a second run with a timer around each (timer reads included)")
    print(f"{'loop':<20} {'RTF':>8} " + " ".join(f"{k:>10}" for k in PARTS) + "   us/hop  vs onnxruntime  wall s")
    for name in loops:
        r = results[name]
        print(f"{name:<20} {r['rtf']:>8.4f} " + " ".join(f"{v:>10.4f}" for v in r["rtf_parts"].values())
              + f"   {r['us_per_hop']:6.0f}  {r['rtf'] / onnx_rtf:>13.2f}x  {r['wall_s']:.1f}")
    print(f"Pipeline.stream (edgesnn, as users call it, {StreamSession(pipe, settings).mode} mode): "
          f"RTF {results['Pipeline.stream']['rtf']:.4f}")
    if "latency" in results:
        lat = results["latency"]
        median = "-" if lat["median_s"] is None else f"{lat['median_s'] * 1000:.0f} ms"
        print(f"detection latency on {args.audio.name}: {lat['detected']}/{lat['keywords']} keywords, median {median}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
