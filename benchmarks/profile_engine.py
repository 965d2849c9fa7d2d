"""Where the native engine spends its time: `perf` samples of one run, per kernel function.

    python benchmarks/profile_engine.py MODEL.esnn [--input x.npy] [--seconds 4]
    python benchmarks/profile_engine.py --sweep 0.9 [--pattern pixels]   # engine.py's sweep conv at 90 %
    python benchmarks/profile_engine.py edgesnn/data/mnist_cnn_if.esnn --mnist --timesteps 32   # a spiking run

Builds a copy of native/ with symbols (ReleaseFast, -Dcpu=native, -Dstrip=false) in a temporary
folder (a copy, so a concurrent reinstall cannot change the library under the run), runs batches of 100 through that build (edgesnn.native.NativeModel via EDGESNN_NATIVE_LIB)
under `perf record`, and resolves every sample's inlined call chain with addr2line. Each sample is
charged to the innermost engine function (Zig std helpers such as math.clamp are charged to their
caller) and to the stage that called it (conv2d.run, neuron.run, engine.loadFrame, ...).
Needs Linux `perf` and binutils `addr2line`. Without --input or --mnist (real digits from
edgesnn.datasets.mnist) the model gets uniform uint8 noise. --timesteps T presents each input for T
timesteps (a spiking model's run).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# frames that dispatch rather than compute: the stage is the frame called by one of these
DISPATCH_FRAMES = ("engine.runLayer", "engine.synapticStage", "engine.runSample", "engine.runBatch",
                   "exports.esnn_run_batch")


def build_with_symbols(native_source: Path, folder: Path) -> Path:
    """A ReleaseFast build of a copy of `native_source` that keeps its symbols and DWARF; returns the .so."""
    source = folder / "native"
    shutil.copytree(native_source, source, ignore=shutil.ignore_patterns(".zig-cache", "zig-out"))
    subprocess.run([sys.executable, "-m", "ziglang", "build", "-Doptimize=ReleaseFast", "-Dcpu=native", "-Dstrip=false",
                    "--prefix", str(folder / "out")], cwd=source, check=True)
    return folder / "out" / "lib" / "libedgesnn.so"


def workload(args) -> None:
    """Run the model (or the sweep conv) for `args.seconds` seconds; executed under perf."""
    from edgesnn import native

    if args.sweep is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import engine

        model, x = engine.sweep_model_and_input(args.sweep, args.pattern)
    else:
        import edgesnn as es

        model = es.Model.load(args.model)
        if args.input:
            x = np.load(args.input)[:100]
        elif args.mnist:
            from edgesnn.datasets import mnist

            x = mnist()[2][:100]
        else:
            x = np.random.default_rng(0).integers(0, 1 << model.input_bits, (100, *model.input_shape), dtype=np.uint8)
    loaded = native.native_model(model)
    x5 = np.ascontiguousarray(x[:, None])
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        loaded.run(x5, args.timesteps)
        runs += 1
    per_sample_us = 1e6 * (time.perf_counter() - start) / (runs * len(x))
    print(f"{runs} batches of {len(x)}: {per_sample_us:.1f} us/sample (perf running)")


def symbol_addresses(library: Path) -> dict[str, int]:
    output = subprocess.run(["nm", "--defined-only", str(library)], capture_output=True, text=True, check=True).stdout
    addresses = {}
    for line in output.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3:
            addresses[parts[2]] = int(parts[0], 16)
    return addresses


def sampled_addresses(perf_data: Path, library: Path) -> collections.Counter:
    """Library addresses of the samples (symbol + offset, so independent of where it was mapped)."""
    symbols = symbol_addresses(library)
    output = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "ip,sym,symoff,dso"], capture_output=True,
                            text=True, check=True).stdout
    counts: collections.Counter = collections.Counter()
    other = 0
    for line in output.splitlines():
        match = re.match(r"\s*[0-9a-f]+ (\S+)\+0x([0-9a-f]+) \((.*)\)", line)
        if match and Path(match.group(3)).name == library.name and match.group(1) in symbols:
            counts[symbols[match.group(1)] + int(match.group(2), 16)] += 1
        elif line.strip():
            other += 1
    counts[None] = other
    return counts


def inline_chains(library: Path, addresses: list[int]) -> dict[int, list[str]]:
    """Function names from innermost to outermost for each address (addr2line -i)."""
    output = subprocess.run(["addr2line", "-f", "-i", "-a", "-e", str(library), *[hex(a) for a in addresses]],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    chains: dict[int, list[str]] = {}
    current = None
    for index, line in enumerate(output):
        if line.startswith("0x") and (index == 0 or not output[index - 1].startswith("0x")):
            current = int(line, 16)
            chains[current] = []
        elif current is not None and not line.startswith("/") and ":" not in line:
            chains[current].append(line)
    return chains


def charge(chain: list[str]) -> tuple[str, str]:
    """(stage, function): the frame under the dispatchers, and the innermost non-std engine function."""
    engine_frames = [f for f in chain if f.startswith(("kernels.", "engine.", "exports.", "loader.", "planner."))]
    function = engine_frames[0] if engine_frames else (chain[0] if chain else "?")
    stage = function
    for inner, outer in zip(chain, chain[1:]):
        if outer in DISPATCH_FRAMES and inner not in DISPATCH_FRAMES:
            stage = inner
            break
    return stage, function


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="an .esnn file")
    parser.add_argument("--input", help="a .npy of uint8 model inputs (N, H, W, C); the first 100 are used")
    parser.add_argument("--mnist", action="store_true", help="real MNIST test digits as the input")
    parser.add_argument("--timesteps", type=int, default=1, help="timesteps per sample (default 1)")
    parser.add_argument("--sweep", type=float, metavar="SPARSITY", help="profile engine.py's sweep conv instead")
    parser.add_argument("--pattern", choices=("values", "pixels"), default="values",
                        help="--sweep zeros: independent values, or whole pixels")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--native", type=Path, default=ROOT / "native",
                        help="the engine source to build (default: this checkout's native/)")
    parser.add_argument("--library", type=Path, help="profile this prebuilt libedgesnn.so (built with symbols) "
                                                      "instead of building --native")
    parser.add_argument("--workload", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        workload(args)
        return 0
    if args.model is None and args.sweep is None:
        parser.error("give an .esnn MODEL or --sweep SPARSITY")
    for tool in ("perf", "addr2line", "nm"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (Linux perf and binutils are needed)")
    with tempfile.TemporaryDirectory(prefix="edgesnn-profile-") as tmp:
        folder = Path(tmp)
        library = args.library.resolve() if args.library else build_with_symbols(args.native, folder)
        perf_data = folder / "perf.data"
        command = [sys.executable, __file__, "--workload", "--seconds", str(args.seconds), "--timesteps",
                   str(args.timesteps)] + (["--mnist"] if args.mnist else [])
        command += ["--sweep", str(args.sweep), "--pattern", args.pattern] if args.sweep is not None else [args.model]
        command += ["--input", args.input] if args.input else []
        recorded = subprocess.run(["perf", "record", "-q", "-o", str(perf_data), "--", *command], check=True,
                                  env={**os.environ, "EDGESNN_NATIVE_LIB": str(library)}, capture_output=True,
                                  text=True)
        print(recorded.stdout.strip())
        per_sample_us = float(re.search(r"([0-9.]+) us/sample", recorded.stdout).group(1))
        counts = sampled_addresses(perf_data, library)
        outside = counts.pop(None)
        chains = inline_chains(library, list(counts))
        by_function: collections.Counter = collections.Counter()
        for address, count in counts.items():
            by_function[charge(chains.get(address, []))] += count
    total = sum(counts.values()) + outside
    print(f"\n{total:,} samples; outside the engine (Python, numpy, kernel): {100 * outside / total:.1f} %\n")
    print(f"{'share':>6}  {'us/sample':>9}  {'stage':<34} function")
    for (stage, function), count in by_function.most_common(20):
        share = count / total
        print(f"{100 * share:5.1f}%  {share * per_sample_us:9.1f}  {stage:<34} {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
