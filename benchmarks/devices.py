"""Runs per second over the device-runner link, beside the in-process cpu device.

    python benchmarks/devices.py             # MNIST and KWS models, stdio and TCP, native and qemu
    python benchmarks/devices.py --quick     # fewer calls
    python benchmarks/devices.py --json out.json --markdown out.md

Models: the shipped MNIST CNN (edgesnn/data/mnist_cnn_4bit.esnn, real digits as input) and a
KWS-shaped DS-CNN (49x10x1 MFCC -> conv 10x4/2 (64) -> 4 separable 3x3 blocks -> global average ->
dense 12, 4-bit, random weights, sparse random input). Devices: `cpu` (the engine in this process),
`remote` over stdio and over TCP to the runner built for this machine, and `remote` over stdio to
the aarch64-linux-musl runner under qemu-aarch64 (emulated: a correctness path, not a speed one).

Per case: batch-1 latency (median of N calls of model.forward), runs/s (1 / that), the runner's own
engine time per run (STATS run_ns_total, the mean over the same calls), the link's overhead per
batch-1 run as the remote latency minus that engine time (what model.forward's Python, framing,
CRCs, the pipe or socket and the two wake-ups cost on top of the engine), and the ratio to the
in-process cpu device and the difference to it (the same forward and the same engine build without
the link: the link alone). Target: < 50 us on loopback. A third model, "echo" (one 4-value dense
layer, the engine's work ~0), shows the link alone. Machine load shows in every column: rounds are
interleaved and the median kept; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
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


def latencies_s(model, x, device, calls: int) -> list[float]:
    for _ in range(3):
        model.forward(x, device=device)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        model.forward(x, device=device)
        times.append(time.perf_counter() - started)
    return times


def engine_ns(device) -> int:
    return device.stats()["run_ns_total"]


def measure(model, x, device, calls: int) -> dict:
    remote = hasattr(device, "stats")
    before = engine_ns(device) if remote else 0
    times = latencies_s(model, x, device, calls)
    row = {"latency_us": statistics.median(times) * 1e6, "runs_per_s": 1 / statistics.median(times)}
    if remote:
        row["engine_us"] = (engine_ns(device) - before) / 1e3 / (calls + 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    calls = 200 if args.quick else 2000
    qemu_calls = 20 if args.quick else 100

    from edgesnn_remote import RemoteDevice

    mnist = es.Model.load(ROOT / "edgesnn" / "data" / "mnist_cnn_4bit.esnn")
    rng = np.random.default_rng(0)
    x_kws = rng.integers(0, 256, (1, 49, 10, 1)).astype(np.uint8)
    x_kws[rng.random(x_kws.shape) < 0.5] = 0
    echo = es.Model([L.Dense(name="d", weights=np.ones((4, 2), int), weight_bits=4, neuron="none")],
                    input_shape=(1, 1, 4))
    cases = {"mnist": (mnist, _mnist_input(mnist)), "kws": (kws_model(), x_kws),
             "echo": (echo, np.ones((1, 1, 1, 4), np.uint8))}

    with tempfile.TemporaryDirectory() as work:
        host_runner = build_runner("native", Path(work) / "host")
        devices = {"cpu (in process)": ("cpu", calls),
                   "remote stdio": (RemoteDevice([host_runner]), calls),
                   "remote tcp (loopback)": (RemoteDevice([host_runner], listen=True), calls)}
        qemu = shutil.which("qemu-aarch64")
        if qemu:
            arm_runner = build_runner("aarch64-linux-musl", Path(work) / "aarch64")
            devices["remote stdio, aarch64 under qemu"] = (RemoteDevice([qemu, arm_runner], timeout_s=60), qemu_calls)
        results = {}
        rounds = 1 if args.quick else 3
        for model_name, (model, x) in cases.items():
            expected = model.forward(x, device="cpu")
            for device_name, (device, _) in devices.items():
                np.testing.assert_array_equal(model.forward(x, device=device), expected)
            samples: dict = {}
            for _ in range(rounds):   # interleaved, so load changes fall on every device
                for device_name, (device, n) in devices.items():
                    samples.setdefault(device_name, []).append(measure(model, x, device, n // rounds))
            for device_name, rows in samples.items():
                row = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
                results[(model_name, device_name)] = row
            cpu_latency = results[(model_name, "cpu (in process)")]["latency_us"]
            for device_name in devices:
                row = results[(model_name, device_name)]
                row["ratio_to_cpu"] = row["latency_us"] / cpu_latency
                if "engine_us" in row:
                    row["link_overhead_us"] = row["latency_us"] - row["engine_us"]
                    row["over_cpu_us"] = row["latency_us"] - cpu_latency
                print(model_name, device_name, {k: round(v, 1) for k, v in row.items()}, flush=True)
        for device, _ in devices.values():
            if not isinstance(device, str):
                device.close()

    table = markdown(results) + f"\nload average: {' '.join(f'{v:.2f}' for v in __import__('os').getloadavg())}\n"
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
