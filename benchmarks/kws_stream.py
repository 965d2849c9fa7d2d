"""Real-time factor of the streaming keyword-spotting path, whole and per part, against onnxruntime.

    python benchmarks/kws_stream.py                     # the shipped 4-bit pipeline, 60 s of audio, 20 ms hop
    python benchmarks/kws_stream.py --seconds 600 --hop-s 0.04 --json out.json

The audio (the shipped demo recording, looped) is pushed in hop-sized chunks, as a microphone
would give it. The loop is Pipeline.stream's own (edgesnn.pipeline.StreamSession), timed part by
part: the incremental MFCC frontend (only the new frames), the window (the ring of the last 1 s of
frames copied into the one model input), inference (one native call, and the softmax) and the
detector. The same loop runs twice: with the integer
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
from edgesnn.pipeline import StreamSession

DATA = Path(es.__file__).resolve().parent / "data"


class Timer:
    def __init__(self):
        self.cpu_s = 0.0

    def __enter__(self):
        self._start = time.process_time()

    def __exit__(self, *exc):
        self.cpu_s += time.process_time() - self._start


def run_loop(pipe, chunks, settings, infer=None) -> tuple[dict, list]:
    """Pipeline.stream's loop (its StreamSession) with a timer per part; ``infer(input uint8 (1, 49, 10, 1))
    -> scores (C,)`` replaces the session's own inference when given."""
    session = StreamSession(pipe, settings)
    if infer is not None:
        session.infer = infer
    parts = {name: Timer() for name in ("frontend", "window", "inference", "detector")}
    frontend, window, inference, detector = parts.values()
    update = session.detector.update
    detections = []
    for chunk in chunks:
        with frontend:
            frames = session.frames(chunk)
        windows = session.windows(frames)
        while True:
            with window:
                item = next(windows, None)
            if item is None:
                break
            with inference:
                scores = session.infer(item[0])
            with detector:
                detection = update(item[1], scores)
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

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])

    def onnx_infer(window):   # (1, 49, 10, 1) uint8 -> NCHW float in [0, 1]
        logits = session.run(None, {"mfcc": (window.transpose(0, 3, 1, 2) / np.float32(255.0)).astype(np.float32)})[0]
        e = np.exp(logits[0] - logits[0].max())
        return e / e.sum()

    results = {}
    for name, infer in (("edgesnn", None), ("onnxruntime", onnx_infer)):
        run_loop(pipe, chunks[:100], settings, infer)      # warm up
        wall = time.perf_counter()
        parts, detections = run_loop(pipe, chunks, settings, infer)
        wall = time.perf_counter() - wall
        results[name] = {"parts_cpu_s": parts, "total_cpu_s": sum(parts.values()), "wall_s": wall,
                         "rtf": sum(parts.values()) / args.seconds,
                         "rtf_parts": {k: v / args.seconds for k, v in parts.items()},
                         "detections": len(detections)}
    wall = time.perf_counter()
    cpu = time.process_time()
    via_pipeline = list(pipe.stream(chunks, hop_s=settings.hop_s))   # untimed parts: what users get
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
