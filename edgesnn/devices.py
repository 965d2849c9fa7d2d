"""Where a Model runs. A device says what it can run (`check`), runs a model and reports statistics.

Devices are found by name through the plugin registry (`es.device("cpu")`); the built-ins are
`cpu` (the native engine, edgesnn/native.py) and `reference` (numpy, this file).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .statistics import Statistics, format_table


@dataclass
class LayerPlacement:
    """How one layer maps onto a device."""

    name: str
    kind: str
    supported: bool
    where: str = ""          # e.g. "cpu", "npu core 0"
    reason: str = ""         # why it is not supported


@dataclass
class MappingReport:
    """What `Device.check(model)` answers: does it fit, how much memory, what is unsupported."""

    device: str
    fits: bool
    arena_bytes: int = 0     # working memory one inference context needs
    program_bytes: int = 0   # the loaded model (weights and records)
    arena_bytes_max: int | None = None
    program_bytes_max: int | None = None
    unsupported: list[str] = field(default_factory=list)  # human-readable reasons
    layers: list[LayerPlacement] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.fits

    def __str__(self) -> str:
        head = (f"device {self.device!r}: {'fits' if self.fits else 'does NOT fit'}; "
                f"arena {self.arena_bytes:,} B, program {self.program_bytes:,} B")
        rows = [(p.name, p.kind, "yes" if p.supported else "no", p.where or p.reason) for p in self.layers]
        body = format_table(("layer", "kind", "supported", "placement"), rows) if rows else ""
        problems = "".join(f"\n  - {u}" for u in self.unsupported)
        return head + ("\n" + body if body else "") + problems


class Device:
    """Base class of devices. Subclasses set `name` and implement `run`; `check` may be refined."""

    name = "device"

    def check(self, model) -> MappingReport:
        """Report whether `model` fits this device; the base class accepts everything."""
        layers = [LayerPlacement(l.name, l.kind, True, self.name) for l in model.layers]
        return MappingReport(device=self.name, fits=True, program_bytes=model.packed_bytes, layers=layers)

    def run(self, model, x5: np.ndarray) -> tuple[np.ndarray, Statistics]:
        """Run a validated uint8 input (N, T, H, W, C); return (int32 potentials (N, OH, OW, OC), Statistics)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class ReferenceDevice(Device):
    """The numpy reference engine: the executable spec (slow and exact)."""

    name = "reference"

    def run(self, model, x5):
        from . import reference

        return reference.run(model, x5)
