"""Runs per second over the device-runner link, beside the in-process cpu device, in one run.

    python benchmarks/devices.py             # MNIST, KWS and echo models, stdio and TCP, native and qemu
    python benchmarks/devices.py --quick     # fewer calls
    python benchmarks/devices.py --json out.json --markdown out.md

Models: the shipped MNIST CNN (edgesnn/data/mnist_cnn_4bit.esnn, real digits as input) and a
KWS-shaped DS-CNN (49x10x1 MFCC -> conv 10x4/2 (64) -> 4 separable 3x3 blocks -> global average ->
dense 12, 4-bit, random weights, sparse random input), and "echo" (one 4-value dense layer, the
engine's work ~0: the link alone). Devices: `cpu` (the engine in this process), `remote` over stdio
and over TCP to the runner built for this machine, and `remote` over stdio to the
aarch64-linux-musl runner under qemu-aarch64 (emulated: a correctness path, not a speed one).

The comparison is interleaved in one run: the devices take turns in short blocks of calls (an
untimed warm-up call, then 10 timed ones), round after round, so a change of machine
load falls on every device alike; each device's figure is the median over all its timed calls. Per
case: batch-1 latency (that median), runs/s (1 / it), the ratio to in-process cpu, the runner's own
engine time per run (STATS run_ns_total over the same calls, a mean), "link overhead" (the remote
latency minus that engine time: model.forward's Python, framing, CRCs, the pipe or socket and the
two process switches) and "over cpu" (the remote latency minus the in-process cpu latency of the
same rounds: the same forward and engine build without the link, i.e. what the link costs a user).
Target: over cpu < 50 us at batch 1 on loopback. The load average is printed with the table
(the machine is shared: every figure moves with it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edgesnn as es
from edgesnn import layers as L

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"


def kws_model(seed: int = 0) -> es.Model:
    rng = np.random.default_rng(seed)
    w = lambda low, high, shape: rng.integers(low, high + 1, shape)  # noqa: E731
    layers = [L.InputConv2D(name="conv", weights=w(-8, 7, (10, 4, 1, 64)), weight_bits=4, stride=2,
                            bias=w(-50, 50, 64), out_multiplier=np.ones(64, int), out_shift=9, activation_bits=4)]
    for block in range(4):
        layers.append(L.Separable2D(name=f"sep{block}", weights=w(-8, 7, (3, 3, 64)), pointwise=w(-8, 7, (64, 64)),
                                    weight_bits=4, mid_multiplier=np.ones(64, int), mid_shift=3, mid_bits=8,
                                    out_multiplier=np.ones(64, int), out_shift=9, activation_bits=4))
    layers.append(L.Dense(name="fc", weights=w(-8, 7, (25 * 5 * 64, 12)), weight_bits=4, neuron="none"))
    return es.Model(layers, input_shape=(49, 10, 1), input_bits=8)


def build_runner(target: str, prefix: Path) -> Path:
    subprocess.run([sys.executable, "-m", "ziglang", "build", "runner", "-Doptimize=ReleaseFast", f"-Dtarget={target}",
                    "--prefix", str(prefix)], cwd=NATIVE, check=True)
    return prefix / "bin" / "edgesnn-runner"


def interleaved(model, x, devices: dict, rounds: int, block: int) -> dict:
    """{device name: [seconds per timed call]}, the devices taking turns in blocks of `block` calls
    (the first of each block untimed: it pays for the switch from the other device) for `rounds`
    rounds; a device given with a stride k takes part in every k-th round only (qemu: slow)."""
    times = {name: [] for name in devices}
    clock = time.perf_counter
    for round_ in range(rounds):
        for name, (device, stride) in devices.items():
            if round_ % stride:
                continue
            model.forward(x, device=device)
            timed = times[name]
            for _ in range(block):
                started = clock()
                model.forward(x, device=device)
                timed.append(clock() - started)
    return times


def engine_ns(device) -> int:
    return device.stats()["run_ns_total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    rounds, block = (40, 10) if args.quick else (200, 10)

    from edgesnn_remote import RemoteDevice

    mnist = es.Model.load(ROOT / "edgesnn" / "data" / "mnist_cnn_4bit.esnn")
    rng = np.random.default_rng(0)
    x_kws = rng.integers(0, 256, (1, 49, 10, 1)).astype(np.uint8)
    x_kws[rng.random(x_kws.shape) < 0.5] = 0
    echo = es.Model([L.Dense(name="d", weights=np.ones((4, 2), int), weight_bits=4, neuron="none")],
                    input_shape=(1, 1, 4))
    cases = {"mnist": (mnist, _mnist_input(mnist)), "kws": (kws_model(), x_kws),
             "echo": (echo, np.ones((1, 1, 1, 4), np.uint8))}
    cpu = "cpu (in process)"

    with tempfile.TemporaryDirectory() as work:
        host_runner = build_runner("native", Path(work) / "host")
        devices = {cpu: ("cpu", 1),
                   "remote stdio": (RemoteDevice([host_runner]), 1),
                   "remote tcp (loopback)": (RemoteDevice([host_runner], listen=True), 1)}
        qemu = shutil.which("qemu-aarch64")
        if qemu:
            arm_runner = build_runner("aarch64-linux-musl", Path(work) / "aarch64")
            devices["remote stdio, aarch64 under qemu"] = (RemoteDevice([qemu, arm_runner], timeout_s=60), 10)
        results = {}
        for model_name, (model, x) in cases.items():
            expected = model.forward(x, device="cpu")
            for device_name, (device, _) in devices.items():
                np.testing.assert_array_equal(model.forward(x, device=device), expected)
            remote = {name: device for name, (device, _) in devices.items() if not isinstance(device, str)}
            before = {name: (engine_ns(device), device.stats()["runs"]) for name, device in remote.items()}
            times = interleaved(model, x, devices, rounds, block)
            cpu_latency = statistics.median(times[cpu]) * 1e6
            for device_name, timed in times.items():
                latency = statistics.median(timed) * 1e6
                row = {"latency_us": latency, "runs_per_s": 1e6 / latency, "ratio_to_cpu": latency / cpu_latency,
                       "calls": len(timed)}
                if device_name in remote:
                    ns, runs = before[device_name]
                    device = remote[device_name]
                    row["engine_us"] = (engine_ns(device) - ns) / 1e3 / (device.stats()["runs"] - runs)
                    row["link_overhead_us"] = latency - row["engine_us"]
                    row["over_cpu_us"] = latency - cpu_latency
                results[(model_name, device_name)] = row
                print(model_name, device_name, {k: round(v, 1) for k, v in row.items()}, flush=True)
        for device, _ in devices.values():
            if not isinstance(device, str):
                device.close()

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    target = "; ".join(f"{m} {d.split(' ')[1]} {results[(m, d)]['over_cpu_us']:.1f} us"
                       for m in ("mnist", "kws") for d in ("remote stdio", "remote tcp (loopback)"))
    table = markdown(results) + (f"\nload average: {load}; over cpu at batch 1 (target < 50 us on loopback): "
                                 f"{target}\n")
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({f"{m} / {d}": r for (m, d), r in results.items()}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table)


def _mnist_input(model) -> np.ndarray:
    try:
        from edgesnn import datasets

        images = datasets.mnist()[2]   # the test digits
        image = np.asarray(images[:1])
        return image.reshape(1, *model.input_shape).astype(np.uint8)
    except Exception:   # the digits are a nicety; the timing does not depend on them much
        return np.random.default_rng(1).integers(0, 256, (1, *model.input_shape)).astype(np.uint8)


def markdown(results: dict) -> str:
    lines = ["| model | device | batch-1 latency | x cpu | runs/s | engine in runner | link overhead | over cpu |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (model, device), row in results.items():
        engine = f"{row['engine_us']:.1f} us" if "engine_us" in row else ""
        overhead = f"{row['link_overhead_us']:.1f} us" if "link_overhead_us" in row else ""
        over = f"{row['over_cpu_us']:.1f} us" if "over_cpu_us" in row else ""
        lines.append(f"| {model} | {device} | {row['latency_us']:.1f} us | {row['ratio_to_cpu']:.2f} | "
                     f"{row['runs_per_s']:,.0f} | {engine} | {overhead} | {over} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
