"""edgesnn-tinynpu: an example device plugin for an (imaginary) spiking NPU.

A device plugin is a `edgesnn.Device` subclass and one hook that registers it:

- `info()` says what the hardware is and what it can run; the base class's `check` turns those
  limits into the mapping report (fits or not, memory, a verdict per layer with its reason);
- `memory_figures(model)` says how much memory the model needs on it (here: the NPU's own rule);
- `load(model)` prepares a program (here: the model itself), `run(program, x5, timesteps)` runs it,
  `close()` lets go of the hardware.
"""

from __future__ import annotations

import numpy as np

import edgesnn as es

SRAM_BYTES = 64 * 1024      # activations and membrane state
FLASH_BYTES = 256 * 1024    # the model


class TinyNpu(es.Device):
    """TinyNPU (example plugin): 4-bit weights, 1/4-bit activations, 64 KB SRAM, 256 KB flash."""

    name = "tinynpu"
    repeats_dense_input = False   # capabilities are declared, like this, never probed

    def __init__(self, port: str = "/dev/tinynpu0"):
        self.port = port          # a real plugin would open it in load(), not here

    def info(self) -> es.DeviceInfo:
        return es.DeviceInfo(name=self.name, architecture="tinynpu-v1", engine_version="tinynpu firmware 1.2",
                             arena_bytes_max=SRAM_BYTES, program_bytes_max=FLASH_BYTES, layers_max=16,
                             channels_max=64, layer_kinds=("input_conv2d", "conv2d", "depthwise2d", "dense"),
                             weight_bits=(4,), activation_bits=(1, 4), extra={"port": self.port})

    def memory_figures(self, model) -> tuple[int, int]:
        """(program bytes, arena bytes) on the NPU: packed weights in flash; every layer's output in SRAM."""
        arena = sum(int(np.prod(layer.output_shape)) * (4 if layer.neuron in ("if", "lif", "none") else 1)
                    for layer in model.layers)
        return model.packed_bytes, arena

    def load(self, model):
        report = self.check(model)
        if not report.fits:
            raise es.DeviceError(f"tinynpu cannot run this model: {report.reason}")
        return model

    def run(self, program, x5, timesteps=None):
        # a real plugin sends `program` and `x5` to the hardware; the example simulates it exactly
        return es.device("reference").run(program, x5, timesteps)


@es.hookimpl
def edgesnn_register_devices(register):
    register("tinynpu", TinyNpu)
