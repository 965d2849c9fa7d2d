"""Accuracy against the average timesteps used, with an early exit, on the shipped spiking MNIST model.

    python examples/mnist/early_exit.py [--device cpu] [--timesteps 32] [--margins 500,1000,...]

The shipped IF network (edgesnn/data/mnist_cnn_if.esnn, converted by convert_mnist.py) runs the
1,000 held-out digits for up to T timesteps; with `early_exit=margin` a digit stops once its leading
class's summed potential leads the second by the margin (docs/semantics.md, "Over time and early
exit"). Per margin: accuracy, the average timesteps a digit ran (the latency a user pays) and the
synaptic operations per digit (the engine's work, independent of the machine's load), beside the
full run. Prints a markdown table (the README's).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

import edgesnn as es
from edgesnn.datasets import mnist

MODEL = pathlib.Path(es.__file__).parent / "data" / "mnist_cnn_if.esnn"
MARGINS = (25, 50, 100, 200, 500, 1000, 2000, 4000, 8000)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu (default when built) or reference")
    parser.add_argument("--timesteps", type=int, default=32, help="the most timesteps a digit runs (default 32)")
    parser.add_argument("--margins", default=",".join(map(str, MARGINS)),
                        help="comma-separated margins, in the output layer's potential units")
    args = parser.parse_args(argv)
    model = es.Model.load(MODEL)
    _, _, x_test, y_test = mnist()
    scale = model.metadata["output_scale"][0]

    rows = []
    for margin in [None, *(int(m) for m in args.margins.split(","))]:
        start = time.perf_counter()
        predicted = model.predict(x_test, timesteps=args.timesteps, device=args.device, early_exit=margin)
        seconds = time.perf_counter() - start
        stats = model.statistics
        rows.append((margin, float(np.mean(predicted == y_test)), stats.mean_timesteps,
                     stats.synaptic_ops / stats.samples, seconds))

    full_ops = rows[0][3]
    print(f"shipped spiking MNIST (IF, up to T = {args.timesteps}), 1,000 held-out digits, device "
          f"{model.statistics.device!r}")
    print("| early exit margin | accuracy | timesteps used (mean) | synaptic ops per digit | run time |")
    print("|---|---|---|---|---|")
    for margin, accuracy, steps, ops, seconds in rows:
        name = "none (full run)" if margin is None else f"{margin:,} (lead {margin * scale:.2f} in logits x timesteps)"
        print(f"| {name} | {accuracy:.4f} | {steps:.2f} | {ops:,.0f} ({ops / full_ops:.0%}) | {seconds:.2f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
