"""Real-time factor of the streaming keyword-spotting path, whole and per part, against onnxruntime.

    python benchmarks/kws_stream.py                     # the shipped 4-bit pipeline, 60 s of audio, 20 ms hop
    python benchmarks/kws_stream.py --seconds 600 --hop-s 0.04 --json out.json

The audio (the shipped demo recording, looped) is pushed in hop-sized chunks, as a microphone
would give it. Each hop: the streaming MFCC frontend, the window (the last 1 s of frames),
inference, the scores (softmax) and the detector. The same loop runs twice: with the integer
model on edgesnn's engine, and with the same float model (edgesnn/data/kws_dscnn.onnx) in
onnxruntime (one thread), everything else identical. The process is pinned to one core and the
times are CPU time (time.process_time), so other load on a shared machine does not count; wall
time is printed too. Real-time factor = seconds of compute / seconds of audio.

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
from edgesnn.detector import Detector

DATA = Path(es.__file__).resolve().parent / "data"


class Timer:
    def __init__(self):
        self.cpu_s = 0.0

    def __enter__(self):
        self._start = time.process_time()

    def __exit__(self, *exc):
        self.cpu_s += time.process_time() - self._start


def run_loop(pipe, chunks, hop_frames: int, settings, infer) -> tuple[dict, list]:
    """The streaming path with a timer per part; ``infer(window uint8 (49, 10, 1)) -> scores (C,)``."""
    fe = pipe.frontend
    window_frames = fe.output_shape[0]
    parts = {name: Timer() for name in ("frontend", "window", "inference", "detector")}
    stream = fe.stream()
    ring = np.zeros((2 * window_frames, fe.output_shape[1]), dtype=np.uint8)
    detector = Detector.from_settings(pipe.labels, settings)
    detections = []
    for chunk in chunks:
        first = stream.frames_emitted
        with parts["frontend"]:
            frames = fe.quantize(stream.push(chunk))
        for offset, frame in enumerate(frames):
            index = first + offset
            with parts["window"]:
                slot = index % window_frames
                ring[slot] = frame
                ring[slot + window_frames] = frame
                due = index + 1 >= window_frames and (index + 1 - window_frames) % hop_frames == 0
                if due:
                    window = ring[slot + 1:slot + 1 + window_frames, :, None].copy()
                    end_s = (index * fe.hop_samples + fe.frame_samples) / fe.sample_rate
            if not due:
                continue
            with parts["inference"]:
                scores = infer(window)
            with parts["detector"]:
                detection = detector.update(end_s, scores)
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
    args = parser.parse_args(argv)
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

    def edgesnn_infer(window):
        return pipe.classifier.scores(pipe.model.forward(window[None], device=args.device))[0]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])

    def onnx_infer(window):
        logits = session.run(None, {"mfcc": (window.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)})[0]
        e = np.exp(logits[0] - logits[0].max())
        return e / e.sum()

    results = {}
    for name, infer in (("edgesnn", edgesnn_infer), ("onnxruntime", onnx_infer)):
        run_loop(pipe, chunks[:100], hop_frames, settings, infer)      # warm up
        wall = time.perf_counter()
        parts, detections = run_loop(pipe, chunks, hop_frames, settings, infer)
        wall = time.perf_counter() - wall
        results[name] = {"parts_cpu_s": parts, "total_cpu_s": sum(parts.values()), "wall_s": wall,
                         "rtf": sum(parts.values()) / args.seconds,
                         "rtf_parts": {k: v / args.seconds for k, v in parts.items()},
                         "detections": len(detections)}
    wall = time.perf_counter()
    cpu = time.process_time()
    via_pipeline = list(pipe.stream(chunks, hop_s=settings.hop_s))
    results["Pipeline.stream"] = {"rtf": (time.process_time() - cpu) / args.seconds,
                                  "wall_s": time.perf_counter() - wall, "detections": len(via_pipeline)}

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

    print(f"streaming KWS, {args.seconds:g} s of audio in {settings.hop_s * 1000:g} ms hops, one core, CPU time")
    print(f"{'engine':<12} {'RTF':>8} " + " ".join(f"{k:>10}" for k in results["edgesnn"]["rtf_parts"]) + "   wall s")
    for name in ("edgesnn", "onnxruntime"):
        r = results[name]
        print(f"{name:<12} {r['rtf']:>8.4f} " + " ".join(f"{v:>10.4f}" for v in r["rtf_parts"].values())
              + f"   {r['wall_s']:.1f}")
    print(f"Pipeline.stream (edgesnn, as users call it): RTF {results['Pipeline.stream']['rtf']:.4f}")
    if "latency" in results:
        lat = results["latency"]
        median = "-" if lat["median_s"] is None else f"{lat['median_s'] * 1000:.0f} ms"
        print(f"detection latency on {args.audio.name}: {lat['detected']}/{lat['keywords']} keywords, median {median}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
