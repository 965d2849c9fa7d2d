"""Before/after of engine builds on the shipped IF model, in one process (issue 11's spiking target).

    python benchmarks/spiking_ab.py BEFORE.so AFTER.so [...] [--rounds 20]

Loads every given libedgesnn.so side by side (edgesnn.native.Library), checks that they return the
same output at every T, then times the shipped IF model (edgesnn/data/mnist_cnn_if.esnn) on 16 real
digits at T = 1, 4, 8, 16 and 32, the builds in turn within every round (so a change in machine load
falls on all): the fastest CPU thread time per sample over the rounds, T32/T1 and the time per added
timestep. Then the same model on all-zero digits (no spike at all: the fixed cost of a timestep).
Build a second engine with `python -m ziglang build shared -Doptimize=ReleaseFast -Dcpu=native
--prefix DIR` in a copy of native/.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

TIMESTEPS = (1, 4, 8, 16, 32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("libraries", nargs="+", type=Path, help="libedgesnn.so builds to compare")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    import edgesnn as es
    from edgesnn import native
    from edgesnn.datasets import mnist

    model = es.Model.load(Path(es.__file__).resolve().parent / "data" / "mnist_cnn_if.esnn")
    digits = np.ascontiguousarray(mnist()[2][:16, None])
    zeros = np.zeros_like(digits)
    names = [str(path.resolve()) for path in args.libraries]
    loaded = {name: native.native_model(model, library=native.Library(name)) for name in names}
    first = loaded[names[0]]
    for name, engine in loaded.items():
        for t in TIMESTEPS:
            if not (engine.run(digits, t)[0] == first.run(digits, t)[0]).all():
                raise SystemExit(f"{name}: output differs from {names[0]} at T = {t}")
    cases = [(digits, t) for t in TIMESTEPS] + [(zeros, 1), (zeros, 32)]
    best = {}
    load_start = os.getloadavg()
    for _ in range(args.rounds):
        for index, (x, t) in enumerate(cases):
            for name, engine in loaded.items():
                for _ in range(3):
                    start = time.thread_time()
                    engine.run(x, t)
                    seconds = (time.thread_time() - start) / len(x)
                    best[name, index] = min(best.get((name, index), float("inf")), seconds)
    print(f"load average {load_start[0]:.1f} / {load_start[1]:.1f} / {load_start[2]:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; fastest of {args.rounds} rounds, us per sample")
    for name in names:
        us = [1e6 * best[name, index] for index in range(len(cases))]
        digits_us, (zero_1, zero_32) = us[:len(TIMESTEPS)], us[len(TIMESTEPS):]
        print(f"{Path(name).parent.name}/{Path(name).name}: " + "  ".join(f"T{t} {u:.1f}" for t, u in zip(TIMESTEPS, digits_us))
              + f"  T32/T1 {digits_us[-1] / digits_us[0]:.2f}  per added step {(digits_us[-1] - digits_us[0]) / 31:.2f}"
              + f"  | no spikes: T1 {zero_1:.1f} per added step {(zero_32 - zero_1) / 31:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
