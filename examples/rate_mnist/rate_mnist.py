"""Rate-coded spiking MNIST, neuroaikit-style: accuracy against the number of timesteps T.

    python examples/rate_mnist/rate_mnist.py                         # T = 1, 2, 4, 8, 16, 32 on 200 digits
    python examples/rate_mnist/rate_mnist.py --count 1000 --mode poisson --plot raster.png

Each pixel becomes a spike train (neuroaikit's ``transform_rate(x / 255, Ns=T, max_rate_spikes=T)``):
a white pixel fires at every step, a grey one at about half of them. The example CNN
(edgesnn/data/mnist_cnn.onnx, trained by examples/mnist/train.py) is converted with integrate-and-fire neurons and a 1-bit input
(a spike is 1.0 to the float network), calibrated on single spike frames of training digits. Its
neurons need a few steps to reach their thresholds, so accuracy climbs with T while the work
(synaptic operations, shown per image) grows with it: the accuracy/latency trade of spiking networks.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

import edgesnn as es
from edgesnn.datasets import mnist

HERE = pathlib.Path(__file__).resolve().parent
ONNX_MODEL = pathlib.Path(es.__file__).resolve().parent / "data" / "mnist_cnn.onnx"   # examples/mnist/train.py
LABELS = [str(digit) for digit in range(10)]
CALIBRATION_DIGITS = 200


def spiking_model(x_train: np.ndarray) -> es.Model:
    """The example CNN with IF neurons, fed 1-bit spike frames (calibrated on Poisson frames)."""
    poisson = es.frontend("rate", timesteps=8, mode="poisson", seed=0)
    step = max(1, len(x_train) // CALIBRATION_DIGITS)
    frames = np.concatenate([poisson(image)[:2] for image in x_train[::step]])   # (2 * digits, 28, 28, 1) of 0/1
    return es.convert(ONNX_MODEL, samples=frames, input_bits=1, input_scaling=(1.0, 0.0),
                      neuron="if", labels=LABELS, progress=False)


def evaluate(model: es.Model, images: np.ndarray, labels: np.ndarray, timesteps: int, max_spikes: int | None,
             mode: str, device):
    """Accuracy, seconds per image and synaptic operations per image through a rate-coded Pipeline."""
    max_spikes = timesteps if max_spikes is None else min(max_spikes, timesteps)
    frontend = es.frontend("rate", timesteps=timesteps, max_spikes=max_spikes, mode=mode, seed=1)
    pipe = es.Pipeline(frontend, model, device=device)
    start = time.perf_counter()
    predictions = pipe.batch(list(images))
    elapsed_s = time.perf_counter() - start
    accuracy = float(np.mean([p.index for p in predictions] == labels))
    return accuracy, elapsed_s / len(images), model.statistics.synaptic_ops / len(images)


def plot_raster(image: np.ndarray, timesteps: int, mode: str, path: pathlib.Path) -> None:
    """A spike raster of one digit's input: one row per pixel (only pixels that fire), one column per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spikes = es.frontend("rate", timesteps=timesteps, mode=mode, seed=1)(image).reshape(timesteps, -1)
    firing = np.flatnonzero(spikes.any(axis=0))
    steps, rows = np.nonzero(spikes[:, firing])
    fig, (ax_image, ax_raster) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 3]})
    ax_image.imshow(image[:, :, 0], cmap="gray")
    ax_image.set_title("input digit")
    ax_image.axis("off")
    ax_raster.scatter(steps, rows, s=2, marker="|", color="black")
    ax_raster.set_xlabel("timestep")
    ax_raster.set_ylabel(f"firing pixel ({len(firing)} of {spikes.shape[1]})")
    ax_raster.set_title(f"{mode} rate code, T={timesteps}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="held-out digits to classify at each T")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--max-spikes", type=int, default=None,
                        help="spikes of a white pixel (neuroaikit's max_rate_spikes; default T, capped at T)")
    parser.add_argument("--mode", choices=("deterministic", "poisson"), default="deterministic")
    parser.add_argument("--device", default=None, help="cpu, reference, ... (default: cpu when built)")
    parser.add_argument("--plot", type=pathlib.Path, default=None, help="write a spike raster of one input digit")
    args = parser.parse_args(argv)

    x_train, _, x_test, y_test = mnist()
    index = np.linspace(0, len(x_test) - 1, args.count).round().astype(int)
    images, labels = x_test[index], y_test[index]
    model = spiking_model(x_train)
    print(model)
    print(f"{'T':>4}  {'accuracy':>8}  {'ms/image':>8}  {'synaptic ops/image':>18}")
    for timesteps in args.timesteps:
        accuracy, seconds, synaptic_ops = evaluate(model, images, labels, timesteps, args.max_spikes,
                                                       args.mode, args.device)
        print(f"{timesteps:>4}  {accuracy:>8.3f}  {seconds * 1000:>8.2f}  {synaptic_ops:>18,.0f}")
    if args.plot is not None:
        plot_raster(images[0], max(args.timesteps), args.mode, args.plot)
        print(f"wrote a spike raster to {args.plot}")


if __name__ == "__main__":
    main()
