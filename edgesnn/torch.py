"""Torch layers whose integer form edgesnn runs exactly: the spiking neural unit (SNU).

    from edgesnn.torch import SNU, to_model
    net = torch.nn.Sequential(SNU(784, 128, decay=0.8), SNU(128, 128, decay=0.8), SNU(128, 10, decay=0.8))
    spikes = net(x)                  # x (N, T, 784) spike trains -> (N, T, 10) spikes; train with any optimizer
    model = to_model(net)            # the integer Model (lif, decay, reset to zero, floor 0), 8-bit weights
    model.predict(x5)                # x5 (N, T, 1, 1, 784) uint8: the class with the most output spikes

**The SNU** (Wozniak et al., Nature Machine Intelligence 2020; IBM neuroaikit's ``SNU`` layer), per
output neuron and timestep, with ``g = ReLU``::

    s_t = g(W x_t + b + l * s_{t-1} * (1 - y_{t-1}))
    y_t = step(s_t - threshold)                        (1 where s_t >= threshold)

``l`` is the decay (0.8 by default).  ``forward`` computes exactly that, in the module's dtype; its
backward pass uses a fast-sigmoid surrogate for the derivative of ``step`` (``1 / (1 + 10 |s - threshold|)^2``),
so a network of SNUs trains by backpropagation through time.

**Its integer form** (docs/semantics.md, the ``lif`` neuron with a decay, ``reset="zero"`` and
``membrane_floor=0``) is the same recursion on an integer grid: per output channel the scale
``s_c = max |W_c| / (2^(b-1) - 1)``, weights ``round(W / s_c)``, bias ``round(b / s_c)``, threshold
``ceil(threshold / s_c)``, decay ``round(l * 2^16) / 2^16`` and the decayed membrane rounded half up each
step.  ``SNU(..., integer=True)`` — or ``forward_integer`` — runs that integer recursion in float64
(exact: every value is an integer below 2^53), so its spikes are the converted model's spikes, bit
for bit; the float forward differs from it only by the rounding of the weights and of the membrane.
"""

from __future__ import annotations

import numpy as np
import torch

WEIGHT_BITS = 8
DECAY_SHIFT = 16
_INT32_MAX = 2**31 - 1


class _Step(torch.autograd.Function):
    """step(x) = [x >= 0], with the fast-sigmoid surrogate gradient 1 / (1 + 10 |x|)^2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (1 + 10 * x.abs()) ** 2


class SNU(torch.nn.Module):
    """A layer of spiking neural units: (N, T, in_features) -> (N, T, out_features) spikes (module docstring).

    decay: ``l`` in [0, 1]; threshold: the firing threshold (> 0); bias: whether ``W x + b`` has a b;
    weight_bits: the integer form's weight bits (``to_model``, ``forward_integer``); integer: ``forward`` runs
    the integer form (for checking a conversion; no gradient).
    """

    def __init__(self, in_features: int, out_features: int, decay: float = 0.8, threshold: float = 1.0,
                 bias: bool = True, weight_bits: int = WEIGHT_BITS, integer: bool = False):
        super().__init__()
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"SNU: decay must be in [0, 1] (a decay, not a growth), got {decay!r}")
        if not float(threshold) > 0:
            raise ValueError(f"SNU: threshold must be > 0, got {threshold!r}")
        if weight_bits not in (2, 4, 8):
            raise ValueError(f"SNU: weight_bits must be 2, 4 or 8, got {weight_bits!r}")
        self.linear = torch.nn.Linear(in_features, out_features, bias=bias)
        self.decay, self.threshold = float(decay), float(threshold)
        self.weight_bits, self.integer = int(weight_bits), bool(integer)

    def extra_repr(self) -> str:
        return (f"{self.linear.in_features}, {self.linear.out_features}, decay={self.decay}, "
                f"threshold={self.threshold}, weight_bits={self.weight_bits}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.integer:
            return self.forward_integer(x)
        if x.dim() != 3 or x.shape[-1] != self.linear.in_features:
            raise ValueError(f"SNU: input must be (N, T, {self.linear.in_features}), got {tuple(x.shape)}")
        drive = self.linear(x)                        # W x_t + b for every t at once: (N, T, out)
        s = torch.zeros_like(drive[:, 0])
        y = torch.zeros_like(s)
        out = []
        for t in range(x.shape[1]):
            s = torch.relu(drive[:, t] + self.decay * s * (1 - y))
            y = _Step.apply(s - self.threshold)
            out.append(y)
        return torch.stack(out, dim=1)

    # -- the integer form ---------------------------------------------------------------------
    def integer_parameters(self) -> dict:
        """The integer layer's parameters (numpy int64): weights (in, out), bias, threshold, decay_multiplier."""
        weight = self.linear.weight.detach().double().cpu().numpy()          # (out, in)
        bias = (self.linear.bias.detach().double().cpu().numpy() if self.linear.bias is not None
                else np.zeros(weight.shape[0]))
        qmax = 2 ** (self.weight_bits - 1) - 1
        peak = np.abs(weight).max(axis=1)
        scale = np.where(peak > 0, peak / qmax, 1.0)
        wq = np.clip(np.round(weight / scale[:, None]), -qmax - 1, qmax).astype(np.int64)
        bq = np.round(bias / scale).astype(np.int64)
        threshold = np.clip(np.ceil(self.threshold / scale), 1, _INT32_MAX).astype(np.int64)
        multiplier = np.full(weight.shape[0], round(self.decay * 2**DECAY_SHIFT), np.int64)
        return {"weights": wq.T.copy(), "bias": bq, "threshold": threshold, "decay_multiplier": multiplier,
                "scale": scale}

    def forward_integer(self, x: torch.Tensor) -> torch.Tensor:
        """The converted layer's recursion (docs/semantics.md, lif with decay, reset to zero, floor 0) on
        integer-valued spikes `x` (N, T, in): exactly the engine's spikes, in x's dtype."""
        p = self.integer_parameters()
        xs = x.detach().double().cpu().numpy()
        if not np.all(xs == np.round(xs)):
            raise ValueError("SNU.forward_integer: the input must hold integers (spikes)")
        drive = xs @ p["weights"].astype(np.float64) + p["bias"]             # (N, T, out), exact integers
        v = np.zeros(drive[:, 0].shape)
        out = np.zeros(drive.shape)
        for t in range(xs.shape[1]):
            v = np.floor((v * p["decay_multiplier"] + 2.0 ** (DECAY_SHIFT - 1)) / 2.0**DECAY_SHIFT)
            v = np.maximum(np.clip(v + drive[:, t], -_INT32_MAX - 1, _INT32_MAX), 0)
            fired = v >= p["threshold"]
            v = np.where(fired, 0.0, v)
            out[:, t] = fired
        return torch.tensor(out, dtype=x.dtype if x.dtype.is_floating_point else torch.float32)

    def to_layer(self, name: str):
        """This layer as an integer ``edgesnn.layers.Dense`` (lif, decay, reset to zero, floor 0)."""
        from . import layers as L

        p = self.integer_parameters()
        return L.Dense(name=name, weights=p["weights"], bias=p["bias"], weight_bits=self.weight_bits, neuron="lif",
                       threshold=p["threshold"], decay_multiplier=p["decay_multiplier"], decay_shift=DECAY_SHIFT,
                       reset="zero", membrane_floor=0)


def to_model(net: torch.nn.Module, *, labels=None, timesteps: int | None = None):
    """The integer Model of a network of SNU layers in sequence (an ``nn.Sequential`` of SNUs, or one SNU).

    Its input is one spike vector per timestep, shape (1, 1, in_features), 1-bit; its output the spike
    counts of the last layer (the class with the most spikes wins, as the seed's average spike rate).
    """
    from .model import Model

    snus = [m for m in net.modules() if isinstance(m, SNU)]
    if not snus:
        raise ValueError("to_model: the network holds no SNU layer")
    others = [type(m).__name__ for m in net.modules()
              if m is not net and not isinstance(m, (SNU, torch.nn.Linear)) and any(True for _ in m.parameters(False))]
    if others or not (isinstance(net, (SNU, torch.nn.Sequential))):
        raise ValueError(f"to_model: maps an SNU or an nn.Sequential of SNUs; {type(net).__name__} holds "
                         f"{others or 'other modules'}")
    for a, b in zip(snus, snus[1:]):
        if a.linear.out_features != b.linear.in_features:
            raise ValueError(f"to_model: an SNU of {a.linear.out_features} outputs feeds one of "
                             f"{b.linear.in_features} inputs")
    layers = [snu.to_layer(f"snu{i}") for i, snu in enumerate(snus)]
    metadata = {"source": "edgesnn.torch.SNU"}
    if timesteps:
        metadata["timesteps"] = int(timesteps)
    if labels is not None:
        metadata["labels"] = list(labels)
    return Model(layers, input_shape=(1, 1, snus[0].linear.in_features), input_bits=1, metadata=metadata)


__all__ = ["SNU", "to_model"]
