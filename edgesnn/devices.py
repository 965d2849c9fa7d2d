"""Where a Model runs: the one device API (docs/plugins.md, "Devices").

A device says what it is (`info`), whether a model fits (`check` -> MappingReport), loads a model
(`load` -> a program), runs it (`run` -> potentials and Statistics) and lets go (`close`)::

    import edgesnn as es
    device = es.device("cortex-m4")          # a profile: checks fit before anything is flashed
    print(device.check(model))               # fits or not, arena / program bytes, per-layer verdicts
    board = es.device("remote", command=["edgesnn-runner"])
    potentials = model.forward(x, device=board)

Devices are found by name through the plugin registry; `resolve_device` (used by Model.forward,
summary and check) turns a name into one shared instance per registration, cached here and
nowhere else. Built in: `cpu` (the native engine, edgesnn/native.py), `reference` (numpy, below),
the profiles (`cortex-m4`, `cortex-m7`, `aarch64-linux`: fit checks with the C library's own
sizing), and the `remote` plugin (plugins/edgesnn_remote) that drives a device runner.

Optional capabilities are declared on `Device` (class attributes, documented there), never probed
with getattr: a third party's device uses them the same way the built-ins do.
"""

from __future__ import annotations

import sys
import threading
import types
from dataclasses import dataclass, field

import numpy as np

from . import plugins as _plugins   # the registry (it imports nothing of this module)
from .errors import DeviceError
from .statistics import Statistics, format_table

# every layer kind and bit width the integer contract has (docs/semantics.md; one home: edgesnn.layers)
from .layers import ACTIVATION_BITS, WEIGHT_BITS  # noqa: E402
from .layers import KINDS as LAYER_KINDS  # noqa: E402


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is and what it can run (`Device.info()`). A limit of None means "no limit"."""

    name: str
    architecture: str = "host"              # e.g. "x86_64", "aarch64-linux", "thumbv7em (Cortex-M4)"
    engine_version: str = ""                # the engine (or firmware) that runs the model
    arena_bytes_max: int | None = None      # working memory for one inference context (SRAM)
    program_bytes_max: int | None = None    # memory for the loaded model (esnn_model_memory_bytes)
    memory_bytes: int | None = None         # total memory budget, when arena and program share it (SRAM)
    file_bytes_max: int | None = None       # room for the .esnn file itself (a firmware's flash, less the engine)
    layers_max: int | None = None
    channels_max: int | None = None
    layer_kinds: tuple[str, ...] = LAYER_KINDS
    weight_bits: tuple[int, ...] = WEIGHT_BITS
    activation_bits: tuple[int, ...] = ACTIVATION_BITS
    neurons: tuple[str, ...] = ("relu", "if", "lif", "none")
    extra: dict = field(default_factory=dict)   # anything else a device wants to show

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class LayerPlacement:
    """How one layer maps onto a device: its verdict and, when refused, why."""

    name: str
    kind: str
    supported: bool
    where: str = ""          # e.g. "cpu", "npu core 0"
    reason: str = ""         # why it is not supported, e.g. "8-bit activations unsupported on this device"


@dataclass
class MappingReport:
    """What `Device.check(model)` answers: does it fit, how much memory, what is unsupported.

    `unsupported` lists every problem at once, each naming its layer (or the memory that overflows).
    """

    device: str
    fits: bool
    arena_bytes: int = 0     # working memory one inference context needs (esnn_model_arena_bytes)
    program_bytes: int = 0   # the loaded model (esnn_model_memory_bytes)
    arena_bytes_max: int | None = None
    program_bytes_max: int | None = None
    memory_bytes_max: int | None = None   # the budget program + arena share, when the device has one
    file_bytes: int = 0                   # the .esnn file (counted when the device stores it: file_bytes_max)
    file_bytes_max: int | None = None
    unsupported: list[str] = field(default_factory=list)  # human-readable reasons, every one
    layers: list[LayerPlacement] = field(default_factory=list)
    arena_plan: str = ""     # the native arena plan the arena figure is for ("fast", "lean"), when one is
    arena_plans: dict = field(default_factory=dict)   # every native plan's arena bytes, {"fast": .., "lean": ..}

    def __bool__(self) -> bool:
        return self.fits

    @property
    def reason(self) -> str:
        """Every problem on one line ("" when it fits): what a runner sends back when it refuses."""
        return "; ".join(self.unsupported)

    def _plans(self) -> str:
        if not self.arena_plan:
            return ""
        others = "".join(f"; {name} plan {bytes_:,} B" for name, bytes_ in self.arena_plans.items()
                         if name != self.arena_plan)
        return f" ({self.arena_plan} plan{others})"

    def headline(self) -> str:
        """One line: the verdict and every memory figure against its limit (what `__str__` starts with and
        Model.summary ends with)."""
        def of(used: int, most: int | None) -> str:
            return f"{used:,} B" + ("" if most is None else f" of {most:,} B")

        line = (f"device {self.device!r}: {'fits' if self.fits else 'does NOT fit'}; "
                f"arena {of(self.arena_bytes, self.arena_bytes_max)}{self._plans()}, "
                f"program {of(self.program_bytes, self.program_bytes_max)}")
        if self.memory_bytes_max is not None:
            line += (f"; program + arena {self.program_bytes + self.arena_bytes:,} B of "
                     f"{self.memory_bytes_max:,} B memory")
        if self.file_bytes_max is not None:
            line += f"; model file {of(self.file_bytes, self.file_bytes_max)}"
        return line

    def __str__(self) -> str:
        head = self.headline()
        rows = [(p.name, p.kind, "yes" if p.supported else "no", p.where if p.supported else p.reason)
                for p in self.layers]
        body = format_table(("layer", "kind", "fits", "placement / reason"), rows) if rows else ""
        problems = "".join(f"\n  - {u}" for u in self.unsupported)
        return head + ("\n" + body if body else "") + problems


class Device:
    """Base class of every device; subclass it and register the class (docs/plugins.md, "Devices").

    Implement `run`; refine `info` (your limits: `check` reads them) and, when loading costs
    something (a transfer, a compile), `load`. Everything else has a working default.

    Optional capabilities, declared here so a subclass switches them on by setting them:

    - ``checks_input_range`` (bool): the device itself refuses input values above
      2^input_bits - 1 with a ValueError, so Model.forward does not scan uint8 input for them.
    - ``returns_counts`` (bool): the device implements `run_counts`, returning the engine's raw
      counts (uint64 (layers, 5) in edgesnn.statistics.COUNT_FIELDS order) instead of a Statistics;
      Model.forward then builds Statistics only when `model.statistics` is read.
    - ``repeats_dense_input`` (bool): `run` accepts x5 with T = 1 and timesteps > 1 (the same
      frame at every timestep) without being given T copies.
    - ``runs_over_time`` (bool): the device implements `run_over_time` (the output after every
      timestep and the early exit of docs/semantics.md, "Over time and early exit"), which
      Model.forward(..., per_timestep=True or early_exit=margin) needs.
    """

    name = "device"
    checks_input_range: bool = False
    returns_counts: bool = False
    repeats_dense_input: bool = False
    runs_over_time: bool = False

    # -- what it is ------------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        """Name, architecture, engine version, memory and limits; the base class claims no limits."""
        return DeviceInfo(name=self.name)

    def check(self, model) -> MappingReport:
        """Whether `model` fits: memory (from `memory_figures`) against `info()`'s maxima and every layer
        against its kinds, bit widths, neurons and channel limit; every problem is reported."""
        return check_against(self.info(), model, self.memory_figures(model))

    def memory_figures(self, model) -> tuple[int, int]:
        """(program_bytes, arena_bytes) this device needs for `model`. Default: the native engine's own
        sizing (the C library's loader and planner), or (packed bytes, 0) without a native build."""
        return native_memory_figures(model)

    # -- running ---------------------------------------------------------------------------------
    def load(self, model):
        """Prepare `model` to run here and return the program `run` takes. Default: the Model itself."""
        return model

    def program_of(self, model):
        """The program of `model` on this device: loaded once, kept in model.device_cache."""
        program = model.device_cache.get(self)
        if program is None:
            program = model.device_cache.setdefault(self, self.load(model))
        return program

    def run(self, program, x5: np.ndarray, timesteps: int | None = None) -> tuple[np.ndarray, Statistics]:
        """Run a checked uint8 input (N, T, H, W, C) for `timesteps` (default T) timesteps; return
        (int32 potentials (N, OH, OW, OC), Statistics). `program` is what `load` returned (a Model
        is accepted too and loaded through `program_of`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement Device.run")

    def run_counts(self, program, x5: np.ndarray, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``returns_counts`` fast path: (potentials, uint64 counts (layers, 5))."""
        raise NotImplementedError(f"{type(self).__name__} declares no returns_counts capability")

    def run_over_time(self, model, x5: np.ndarray, timesteps: int,
                      early_exit: int | None = None) -> tuple[np.ndarray, np.ndarray, Statistics]:
        """The ``runs_over_time`` capability: `run` of the Model `model` (its program through
        `program_of`), keeping the output after every timestep.

        Returns (int32 outputs (N, T, OH, OW, OC): row t is the output of timesteps 0..t; int (N,)
        timesteps each sample ran; Statistics over those timesteps). `early_exit` (an int >= 1): a
        sample stops after the first timestep at which its largest output value leads the second
        largest by at least this margin; its later rows repeat its output."""
        raise NotImplementedError(f"{type(self).__name__} declares no runs_over_time capability")

    def close(self) -> None:
        """Release what the device holds (a link, a process, loaded programs). Default: nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __hash__(self) -> int:  # device instances key Model.device_cache by identity
        return id(self)

    def __eq__(self, other) -> bool:
        return self is other

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def check_against(info: DeviceInfo, model, figures: tuple[int, int]) -> MappingReport:
    """The MappingReport of `model` on a device described by `info`, with (program, arena) bytes."""
    program_bytes, arena_bytes = figures
    problems: list[str] = []
    layers: list[LayerPlacement] = []
    if info.layers_max is not None and len(model.layers) > info.layers_max:
        problems.append(f"the model has {len(model.layers)} layers, this device runs at most {info.layers_max}")
    for layer in model.layers:
        reasons = _layer_problems(info, layer)
        layers.append(LayerPlacement(layer.name, layer.kind, not reasons, info.name if not reasons else "",
                                     "; ".join(reasons)))
        problems += [f"{layer.name}: {reason}" for reason in reasons]
    memory = (("program", program_bytes, info.program_bytes_max), ("arena", arena_bytes, info.arena_bytes_max))
    for what, used, most in memory:
        if most is not None and used > most:
            problems.append(f"{what} memory: the model needs {used:,} B, this device has {most:,} B "
                            f"({used - most:,} B too many)")
    total = program_bytes + arena_bytes
    if info.memory_bytes is not None and total > info.memory_bytes:
        problems.append(f"memory: program {program_bytes:,} B + arena {arena_bytes:,} B = {total:,} B, this "
                        f"device has {info.memory_bytes:,} B ({total - info.memory_bytes:,} B too many)")
    file_bytes = 0
    if info.file_bytes_max is not None:
        file_bytes = len(model.source_bytes) if model.source_bytes is not None else len(model.to_bytes())
        if file_bytes > info.file_bytes_max:
            problems.append(f"model file: {file_bytes:,} B, this device has room for {info.file_bytes_max:,} B "
                            f"({file_bytes - info.file_bytes_max:,} B too many)")
    return MappingReport(device=info.name, fits=not problems, arena_bytes=arena_bytes, program_bytes=program_bytes,
                         arena_bytes_max=info.arena_bytes_max, program_bytes_max=info.program_bytes_max,
                         memory_bytes_max=info.memory_bytes, file_bytes=file_bytes,
                         file_bytes_max=info.file_bytes_max, unsupported=problems, layers=layers)


def _layer_problems(info: DeviceInfo, layer) -> list[str]:
    reasons = []
    if layer.kind not in info.layer_kinds:
        reasons.append(f"{layer.kind} layers unsupported on this device (it runs {', '.join(info.layer_kinds)})")
    weight_bits = getattr(layer, "weight_bits", None)
    if weight_bits is not None and weight_bits not in info.weight_bits:
        reasons.append(f"{weight_bits}-bit weights unsupported on this device "
                       f"(it takes {', '.join(map(str, info.weight_bits))})")
    if layer.neuron != "none" and layer.output_bits not in info.activation_bits:
        reasons.append(f"{layer.output_bits}-bit activations unsupported on this device "
                       f"(it takes {', '.join(map(str, info.activation_bits))})")
    if layer.neuron not in info.neurons:
        reasons.append(f"{layer.neuron} neurons unsupported on this device (it has {', '.join(info.neurons)})")
    if info.channels_max is not None:
        channels = max(layer.output_shape[-1], *(shape[-1] for shape in layer.input_shapes))
        if channels > info.channels_max:
            reasons.append(f"{channels} channels, this device takes at most {info.channels_max}")
    return reasons


def with_plans(report: MappingReport, model, plan: str) -> MappingReport:
    """`report` with the native arena plans' figures (the plan its arena is for, and every plan's)."""
    try:
        from .native import native_model
    except (ImportError, OSError):
        return report
    if report.arena_bytes and not any(layer.has_dynamics for layer in model.layers):
        report.arena_plan = plan
        report.arena_plans = dict(native_model(model, plan=plan).plan_arena_bytes)
    return report


def native_memory_figures(model, plan: str = "fast", record_bytes: tuple[int, int] | None = None) -> tuple[int, int]:
    """(program_bytes, arena_bytes) from the native library's loader and planner (esnn_model_memory_bytes,
    esnn_model_arena_bytes of arena plan `plan`): the numbers a C application allocates. `record_bytes`:
    the target's {Model, Layer} record sizes (a 32-bit build's esnn_record_bytes; default this build's),
    for its exact model memory (esnn_model_memory_bytes_for). Without a native build: (packed bytes, 0)."""
    try:
        from .native import native_model
    except (ImportError, OSError):
        return model.packed_bytes, 0
    loaded = native_model(model, plan=plan)
    program_bytes = loaded.memory_bytes
    if record_bytes is not None and record_bytes != loaded.library.record_bytes:
        data = model.source_bytes if model.source_bytes is not None else model.to_bytes()
        program_bytes = loaded.library.memory_bytes_for(data, record_bytes)
    return program_bytes, loaded.arena_bytes


class ReferenceDevice(Device):
    """The numpy reference engine: the executable spec (slow and exact)."""

    name = "reference"
    repeats_dense_input = True
    runs_over_time = True

    def info(self) -> DeviceInfo:
        from . import __version__

        return DeviceInfo(name=self.name, architecture="numpy", engine_version=f"edgesnn {__version__} reference")

    def run(self, program, x5, timesteps=None):
        from . import reference

        if timesteps is not None and x5.shape[1] != timesteps:   # a dense frame shown at every timestep
            x5 = np.broadcast_to(x5, (x5.shape[0], timesteps, *x5.shape[2:]))
        return reference.run(program, x5)   # the program is the Model (Device.load)

    def run_over_time(self, model, x5, timesteps, early_exit=None):
        from . import reference

        if x5.shape[1] != timesteps:
            x5 = np.broadcast_to(x5, (x5.shape[0], timesteps, *x5.shape[2:]))
        trace: dict = {}
        _, stats = reference.run(model, x5, trace=trace, early_exit=early_exit)
        return trace["outputs"], trace["timesteps_used"], stats


# -- profiles: the targets users flash -------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A named target with real limits; `check` uses the C library's own sizing (same loader, same planner).

    Where a model lives on the target (docs/c-api.md, "Memory ownership"): the loaded model
    (esnn_model_memory_bytes: the file's weights copied and unpacked, written at load) and the arena
    are RAM, so the two share `memory_bytes` (a microcontroller's SRAM; the runner's --memory on a
    board); the .esnn file itself sits in flash beside the firmware (examples/c/bare_metal.c links it
    as a const array), so it gets `flash_bytes` less the engine's own part of the firmware image,
    `engine_flash_bytes` (its code and read-only data as a firmware links them: native/sizes.py's
    "firmware links" row, measured, and checked against a fresh build by
    tests/test_devices_profiles.py); the engine's writable data in a firmware, `engine_ram_bytes`, is
    taken from the RAM. Not counted: the application's own code, data and stack.

    Both memory figures are exact for the target: the arena is the same on every target (fixed-size
    records, one planner; `plan` is the arena plan its C application loads with,
    esnn_model_load_plan), and the model memory differs only by the size of its Model and Layer
    records, which hold pointers: `record_bytes` is the target build's esnn_record_bytes (read from
    the cross-built library by native/sizes.py --records; tests/test_cross.py checks them against
    fresh cross builds).
    """

    name: str
    architecture: str
    description: str
    memory_bytes: int                 # RAM for the loaded model and its arena together
    flash_bytes: int | None = None    # flash for the firmware image: the engine and the model file
    engine_flash_bytes: int = 0       # the engine's code + read-only data in a firmware (native/sizes.py)
    engine_ram_bytes: int = 0         # the engine's writable data in a firmware (.data + .bss; native/sizes.py)
    zig_target: str = ""        # how the engine is cross-built for it (native/build.zig -Dtarget / -Dcpu)
    plan: str = "fast"          # the arena plan (edgesnn.native.PLANS): "lean" on microcontrollers
    record_bytes: tuple[int, int] | None = None   # {Model, Layer} bytes on the target; None: this build's

    @property
    def model_memory_bytes_max(self) -> int:
        """RAM left for the loaded model and its arena once the engine's own data is placed."""
        return self.memory_bytes - self.engine_ram_bytes

    @property
    def file_bytes_max(self) -> int | None:
        """Flash left for the .esnn file once the engine's code and read-only data are placed."""
        return None if self.flash_bytes is None else self.flash_bytes - self.engine_flash_bytes


# The engine's part of a firmware for each core: code + read-only data in flash, writable data in RAM, as
# examples/c/bare_metal.c links them (native/sizes.py, "firmware links"; CPU=cortex_m7 for the M7), at
# the tree of 2026-12-02; tests/test_devices_profiles.py builds them again and compares.
ENGINE_FLASH_M4, ENGINE_RAM_M4 = 199_580, 0
ENGINE_FLASH_M7, ENGINE_RAM_M7 = 200_162, 0

PROFILES = {
    profile.name: profile for profile in (
        Profile("cortex-m4", "thumbv7em-none-eabihf (Cortex-M4F)",
                "Cortex-M4 microcontroller: 256 KB SRAM for the loaded model and its arena, 1 MB flash for "
                "the firmware (the engine's code, then the model file)",
                memory_bytes=256 * 1024, flash_bytes=1024 * 1024,
                engine_flash_bytes=ENGINE_FLASH_M4, engine_ram_bytes=ENGINE_RAM_M4,
                zig_target="thumb-freestanding-eabihf -Dcpu=cortex_m4", plan="lean", record_bytes=(96, 480)),
        Profile("cortex-m7", "thumbv7em-none-eabihf (Cortex-M7)",
                "Cortex-M7 microcontroller: 512 KB SRAM for the loaded model and its arena, 2 MB flash for "
                "the firmware (the engine's code, then the model file)",
                memory_bytes=512 * 1024, flash_bytes=2 * 1024 * 1024,
                engine_flash_bytes=ENGINE_FLASH_M7, engine_ram_bytes=ENGINE_RAM_M7,
                zig_target="thumb-freestanding-eabihf -Dcpu=cortex_m7", plan="lean", record_bytes=(96, 480)),
        Profile("aarch64-linux", "aarch64-linux-musl",
                "aarch64 Linux board (the device runner, static musl): 64 MB for the loaded model and its arena "
                "(the runner's --memory); the file arrives over the link",
                memory_bytes=64 * 1024 * 1024, zig_target="aarch64-linux-musl", record_bytes=(104, 664)),
    )
}


class ProfileDevice(Device):
    """A target profile (Cortex-M4, Cortex-M7, an aarch64 Linux board): answers `check` before anything is
    flashed; it runs nothing (run on the board itself with the `remote` device)."""

    def __init__(self, profile: str | Profile):
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.name = self.profile.name

    def info(self) -> DeviceInfo:
        from . import __version__

        profile = self.profile
        return DeviceInfo(name=self.name, architecture=profile.architecture,
                          engine_version=f"edgesnn {__version__} native",
                          memory_bytes=profile.model_memory_bytes_max, file_bytes_max=profile.file_bytes_max,
                          layers_max=256, channels_max=8192,   # native/src/limits.zig
                          extra={"description": profile.description, "zig_target": profile.zig_target,
                                 "flash_bytes": profile.flash_bytes, "engine_flash_bytes": profile.engine_flash_bytes,
                                 "ram_bytes": profile.memory_bytes, "engine_ram_bytes": profile.engine_ram_bytes})

    def memory_figures(self, model) -> tuple[int, int]:
        return native_memory_figures(model, self.profile.plan, self.profile.record_bytes)

    def check(self, model) -> MappingReport:
        return with_plans(super().check(model), model, self.profile.plan)

    def run(self, program, x5, timesteps=None):
        raise DeviceError(f"device {self.name!r} is a target profile: it checks whether a model fits but runs "
                          f"nothing; run on the board with es.device('remote', ...) or in process with 'cpu'")


def profile_factory(name: str):
    """A device factory for the profile `name` (what the default plugin registers)."""
    def factory():
        return ProfileDevice(name)            # a profile takes no options: they are the profile's limits
    factory.__doc__ = PROFILES[name].description
    return factory


# -- resolving: one place, one cache ----------------------------------------------------------------

_instances: dict[tuple, Device] = {}     # (name, factory) -> the shared instance; re-registration gets a new one
_instances_lock = threading.Lock()
_resolved: dict = {}                     # None or a name -> (plugin state, instance): the per-call fast path


def default_device_name() -> str:
    """'cpu' when the native engine loads, else 'reference'."""
    return "cpu" if "cpu" in _plugins.devices() else "reference"


def resolve_device(device=None) -> Device:
    """A Device from a name, a Device, or None (the default device): one shared instance per registration.

    `es.device(name, **options)` builds a new, unshared one (options make it a different device).
    Model.forward calls this on every run: a Device is returned as it is, a name seen before under the
    same plugin state is one dict lookup.
    """
    if device is None or type(device) is str:
        cached = _resolved.get(device)
        if cached is not None and cached[0] is _plugins.state_token():
            return cached[1]
    elif isinstance(device, Device):
        return device
    elif not isinstance(device, str):
        raise TypeError(f"device must be a name or an edgesnn Device, got {type(device).__name__}")
    name = default_device_name() if device is None else device
    factory = _plugins.get_device(name)
    token = _plugins.state_token()   # taken after the lookup, which loads the plugins on first use
    with _instances_lock:
        key = (name, factory)
        instance = _instances.get(key)
        if instance is None:
            instance = factory()
            if not isinstance(instance, Device):
                raise DeviceError(f"device {name!r}: its factory returned {type(instance).__name__}, not an "
                                  f"edgesnn.Device (subclass edgesnn.Device; docs/plugins.md)")
            _instances[key] = instance
        _resolved[device] = (token, instance)
        return instance


__all__ = ["Device", "DeviceInfo", "MappingReport", "LayerPlacement", "ReferenceDevice", "Profile", "PROFILES",
           "ProfileDevice", "check_against", "native_memory_figures", "resolve_device", "default_device_name",
           "DeviceError", "LAYER_KINDS", "WEIGHT_BITS", "ACTIVATION_BITS"]


# `es.devices()` lists the registered device names and `edgesnn.devices` is this module: one name
# for both, so `import edgesnn.devices as d; d.Device` and `es.devices()` both work (a function
# bound as the package attribute would shadow the module).
class _DevicesModule(types.ModuleType):
    def __call__(self) -> list[str]:
        """Names of the registered devices, sorted (edgesnn.plugins.devices)."""
        return _plugins.devices()


sys.modules[__name__].__class__ = _DevicesModule
