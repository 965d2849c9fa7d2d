"""Per-layer statistics of a run: events, sparsity and synaptic operations (docs/semantics.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The counts of one LayerStatistics, in the order of the native engine's esnn_layer_stats fields
# (a run's counts array is (layers, 5) in this order).
COUNT_FIELDS = ("input_events", "input_size", "output_events", "output_size", "synaptic_ops")


@dataclass
class LayerStatistics:
    """Totals over all samples and timesteps of the last run, for one layer."""

    name: str
    kind: str
    input_events: int = 0
    input_size: int = 0
    output_events: int = 0
    output_size: int = 0
    synaptic_ops: int = 0

    @property
    def sparsity(self) -> float:
        """Fraction of output values that are zero (no event)."""
        return 1.0 - self.output_events / self.output_size if self.output_size else 0.0

    @property
    def input_sparsity(self) -> float:
        return 1.0 - self.input_events / self.input_size if self.input_size else 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "input_events": self.input_events,
                "input_size": self.input_size, "output_events": self.output_events,
                "output_size": self.output_size, "sparsity": self.sparsity,
                "input_sparsity": self.input_sparsity, "synaptic_ops": self.synaptic_ops}


@dataclass
class Statistics:
    """Statistics of one run: `samples` x `timesteps`, one LayerStatistics per layer in model order."""

    samples: int
    timesteps: int
    device: str
    layers: list[LayerStatistics] = field(default_factory=list)
    # with an early exit (Model.forward(..., early_exit=margin)): the timesteps each sample ran, int (N,);
    # the counts above are over those timesteps only. None: every sample ran `timesteps`.
    timesteps_used: object = None

    @property
    def mean_timesteps(self) -> float:
        """The average timesteps a sample ran (the latency an early exit saves)."""
        return float(self.timesteps) if self.timesteps_used is None else float(sum(self.timesteps_used)) / max(self.samples, 1)

    @classmethod
    def from_counts(cls, layers, counts, samples: int, timesteps: int, device: str) -> "Statistics":
        """Statistics from a run's counts: `counts` (len(layers), 5) in COUNT_FIELDS order, `layers` the
        model's layers (their names and kinds), in model order."""
        return cls(samples=samples, timesteps=timesteps, device=device,
                   layers=[LayerStatistics(layer.name, layer.kind, *row) for layer, row in zip(layers, counts.tolist())])

    def __getitem__(self, name: str) -> LayerStatistics:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r} in statistics; layers: {[s.name for s in self.layers]}")

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def synaptic_ops(self) -> int:
        return sum(s.synaptic_ops for s in self.layers)

    @property
    def events(self) -> int:
        """Total output events of all layers."""
        return sum(s.output_events for s in self.layers)

    def as_dicts(self) -> list[dict]:
        return [s.as_dict() for s in self.layers]

    def table(self) -> str:
        """A fixed-width table: per layer, events and sparsity in and out, synaptic ops per sample."""
        per = max(self.samples, 1)
        header = ("layer", "kind", "in events/sample", "in sparsity", "out events/sample", "out sparsity",
                  "synops/sample")
        rows = [(s.name, s.kind, f"{s.input_events / per:,.1f}", f"{s.input_sparsity:.3f}",
                 f"{s.output_events / per:,.1f}", f"{s.sparsity:.3f}", f"{s.synaptic_ops / per:,.0f}")
                for s in self.layers]
        rows.append(("total", "", "", "", f"{self.events / per:,.1f}", "", f"{self.synaptic_ops / per:,.0f}"))
        title = f"Statistics: {self.samples} samples x {self.timesteps} timesteps on device {self.device!r}"
        if self.timesteps_used is not None:
            title += f" (early exit: {self.mean_timesteps:.2f} timesteps per sample on average)"
        return title + "\n" + format_table(header, rows)

    def __str__(self) -> str:
        return self.table()

    def __eq__(self, other) -> bool:
        """Equal when every count matches (the device name does not matter)."""
        if not isinstance(other, Statistics):
            return NotImplemented
        return (self.samples, self.timesteps, self.layers) == (other.samples, other.timesteps, other.layers)


def format_table(header: tuple, rows: list[tuple]) -> str:
    """Left-aligned first columns, right-aligned numbers; a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row):
        cells = []
        for i, cell in enumerate(row):
            text = str(cell)
            cells.append(text.ljust(widths[i]) if i < 2 else text.rjust(widths[i]))
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
