"""Soak: stream hours of audio through the shipped keyword pipeline faster than real time; memory must stay flat.

    python benchmarks/kws_soak.py --hours 2            # prints RSS every 10 minutes of audio

The audio is the shipped demo recording looped over pink noise, pushed in 20 ms chunks through
``Pipeline.stream`` (the path ``edgesnn stream`` uses). Prints the resident set size every 10
minutes of audio, the detections per hour and the real-time factor, and fails (exit 1) when the
RSS grew more than ``--max-growth-mib`` after the first 10 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import edgesnn as es

DATA = Path(es.__file__).resolve().parent / "data"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DATA / "kws_dscnn_4bit.esnn")
    parser.add_argument("--audio", type=Path, default=DATA / "kws_demo.wav")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--max-growth-mib", type=float, default=4.0)
    args = parser.parse_args(argv)
    pipe = es.Pipeline.load(args.model)
    fe = pipe.frontend
    recording = fe.load(args.audio)
    chunk = round(0.02 * fe.sample_rate)
    total_chunks = round(args.hours * 3600 / 0.02)
    per_report = round(600 / 0.02)
    readings = []

    def chunks():
        position = 0
        for i in range(total_chunks):
            if i % per_report == 0:
                readings.append(rss_mib())
                print(f"{i * 0.02 / 60:6.0f} min of audio: RSS {readings[-1]:.1f} MiB", flush=True)
            if position + chunk > len(recording):
                position = 0
            yield recording[position:position + chunk]
            position += chunk

    start = time.perf_counter()
    detections = sum(1 for _ in pipe.stream(chunks()))
    seconds = time.perf_counter() - start
    growth = max(readings) - readings[min(1, len(readings) - 1)]
    print(f"{args.hours:g} h of audio in {seconds:.0f} s (RTF {seconds / (args.hours * 3600):.4f} wall), "
          f"{detections / args.hours:.0f} detections/h, RSS growth after the first 10 min {growth:.2f} MiB")
    return 0 if growth <= args.max_growth_mib else 1


if __name__ == "__main__":
    raise SystemExit(main())
