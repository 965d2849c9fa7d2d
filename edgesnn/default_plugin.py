"""The core's own plugin: registers the built-in devices through the same hook a third party uses.

``reference`` (numpy, the executable spec) and the target profiles (``cortex-m4`` ...) are always there; ``cpu`` (the native Zig engine) only
when ``edgesnn.native`` imports and its shared library loads, so a checkout without a built engine
still works with the reference device.  The contract with edgesnn/native.py: importing it raises
ImportError or OSError when the library is missing or does not load on this machine.
"""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def edgesnn_register_devices(register):
    from .devices import PROFILES, ReferenceDevice, profile_factory

    register("reference", ReferenceDevice)
    for name in PROFILES:   # cortex-m4, cortex-m7, aarch64-linux: fit checks before flashing
        register(name, profile_factory(name))
    cpu_device = _native_cpu_device()
    if cpu_device is not None:
        register("cpu", cpu_device)


def _native_cpu_device():
    """edgesnn.native.CpuDevice if the native library can be loaded, else None."""
    try:
        from .native import CpuDevice
    except (ImportError, OSError):  # no built library, or one that does not load on this machine
        return None
    return CpuDevice
