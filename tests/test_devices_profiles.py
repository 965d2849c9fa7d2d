"""The target profiles (edgesnn/devices.py PROFILES): fit verdicts at the edge, with the C library's figures.

Where a model lives on a microcontroller (docs/c-api.md "Memory ownership"): the loaded model
(esnn_model_memory_bytes: the weights copied and unpacked at load) and the arena are RAM and share
the SRAM; the .esnn file sits in flash beside the engine's code. So each memory that can overflow
gets a family of models one step either side of the profile's limit:

- the SRAM by the arena: large activations, few weights;
- the SRAM by the loaded model: many weights, a small arena;
- the flash by the model file: a small model whose file carries a long metadata record, with the
  engine's own code and read-only data taken from the flash first.

The one that fits is reported with the C library's figures (the lean plan microcontrollers load with,
the target's record sizes), the other names the memory that overflows with its exact need; under
qemu-arm the Cortex-M4 build of the C library (bare_metal.c) runs the fitting models with exactly
the program and arena bytes `check` reports and refuses one byte less. The engine's part of a
firmware that the profiles subtract equals a fresh build's (native/sizes.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import layers as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_c_embedding import ROOT, parse_output, spiking_mnist_like  # noqa: E402

pytest.importorskip("edgesnn.native")
MICROCONTROLLERS = ["cortex-m4", "cortex-m7"]


def sizes_module():
    sys.path.insert(0, str(ROOT / "native"))
    try:
        import sizes
    finally:
        sys.path.remove(str(ROOT / "native"))
    return sizes


def arena_model(side: int) -> es.Model:
    """Large activations, few weights: a 3x3 conv to 16 channels at side x side, then a 3x3 conv to 2
    channels and a global average (144 + 288 weights whatever the side)."""
    rng = np.random.default_rng(0)
    return es.Model([
        L.InputConv2D(name="wide", weights=rng.integers(-8, 8, (3, 3, 1, 16)), weight_bits=4,
                      out_multiplier=np.ones(16, int), out_shift=4, activation_bits=4),
        L.Conv2D(name="head", weights=rng.integers(-2, 2, (3, 3, 16, 2)), weight_bits=2, neuron="none",
                 pool="global_avg"),
    ], input_shape=(side, side, 1))


def program_model(units: int) -> es.Model:
    """Many weights, a small arena: one dense layer of 8192 x `units` 8-bit weights on an 8192-value input
    (at most 64 outputs: bare_metal.c's output array)."""
    rng = np.random.default_rng(units)
    return es.Model([L.Dense(name="fc", weights=rng.integers(-128, 128, (8192, units)), weight_bits=8,
                             neuron="none")], input_shape=(1, 1, 8192))


def file_model(padding: int) -> es.Model:
    """A tiny model whose file carries `padding` bytes of metadata (a long provenance note): its loaded
    memory stays small, its file grows byte by byte."""
    return es.Model([L.Dense(name="fc", weights=np.ones((4, 2), int), weight_bits=4, neuron="none")],
                    input_shape=(1, 1, 4), metadata={"notes": "x" * padding})


def edge(build, low: int, high: int, profile: str) -> int:
    """The largest argument in [low, high) whose model fits `profile` (the one after it does not)."""
    assert build(low).check(profile).fits and not build(high).check(profile).fits
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if build(middle).check(profile).fits else (low, middle)
    return low


def c_library_figures(model, profile) -> tuple[int, int]:
    """(program, arena) bytes from the native library's loader and planner for the profile's target."""
    limits = es.devices.PROFILES[profile]
    return es.devices.native_memory_figures(model, plan=limits.plan, record_bytes=limits.record_bytes)


@pytest.mark.parametrize("profile", MICROCONTROLLERS)
def test_an_arena_that_just_does_not_fit_the_sram_is_named_with_its_bytes(profile):
    limits = es.devices.PROFILES[profile]
    side = edge(arena_model, 8, 200, profile)
    fits, over = arena_model(side).check(profile), arena_model(side + 1).check(profile)
    for model, report in ((arena_model(side), fits), (arena_model(side + 1), over)):
        assert (report.program_bytes, report.arena_bytes) == c_library_figures(model, profile)
        assert report.arena_plan == "lean" and report.memory_bytes_max == limits.memory_bytes - limits.engine_ram_bytes
    assert fits.program_bytes + fits.arena_bytes <= fits.memory_bytes_max < over.program_bytes + over.arena_bytes
    # the arena grew, the loaded model hardly (its per-row geometry): it is the arena that overflows
    assert over.arena_bytes - fits.arena_bytes > 10 * (over.program_bytes - fits.program_bytes)
    assert over.arena_bytes > 20 * over.program_bytes
    total = over.program_bytes + over.arena_bytes
    assert over.unsupported == [
        f"memory: program {over.program_bytes:,} B + arena {over.arena_bytes:,} B = {total:,} B, this device has "
        f"{over.memory_bytes_max:,} B ({total - over.memory_bytes_max:,} B too many)"]
    assert all(layer.supported for layer in over.layers)   # every layer runs there: only the memory does not fit
    assert "does NOT fit" in arena_model(side + 1).summary(print_fn=None, device=profile)
    assert "fits" in arena_model(side).summary(print_fn=None, device=profile).splitlines()[-1]


@pytest.mark.parametrize("profile", MICROCONTROLLERS)
def test_a_loaded_model_that_just_does_not_fit_the_sram_is_named_with_its_bytes(profile):
    units = edge(program_model, 1, 64, profile)
    fits, over = program_model(units).check(profile), program_model(units + 1).check(profile)
    for model, report in ((program_model(units), fits), (program_model(units + 1), over)):
        assert (report.program_bytes, report.arena_bytes) == c_library_figures(model, profile)
    assert fits.program_bytes + fits.arena_bytes <= fits.memory_bytes_max < over.program_bytes + over.arena_bytes
    assert over.program_bytes > 8 * over.arena_bytes    # the weights fill the SRAM, not the arena
    assert over.program_bytes - fits.program_bytes >= 8192   # one more output unit: 8192 more weight bytes
    total = over.program_bytes + over.arena_bytes
    assert over.reason == (f"memory: program {over.program_bytes:,} B + arena {over.arena_bytes:,} B = {total:,} B, "
                           f"this device has {over.memory_bytes_max:,} B ({total - over.memory_bytes_max:,} B too many)")
    # the file is in flash with room to spare: the SRAM binds first, as it does for any ordinary model
    assert over.file_bytes < over.file_bytes_max


@pytest.mark.parametrize("profile", MICROCONTROLLERS)
def test_a_model_file_that_just_does_not_fit_the_flash_left_by_the_engine(profile):
    limits = es.devices.PROFILES[profile]
    room = limits.flash_bytes - limits.engine_flash_bytes
    assert 0 < limits.engine_flash_bytes < limits.flash_bytes // 2
    padding = edge(file_model, 0, limits.flash_bytes, profile)
    fits, over = file_model(padding).check(profile), file_model(padding + 1).check(profile)
    assert fits.file_bytes == len(file_model(padding).to_bytes()) <= room == fits.file_bytes_max
    assert over.file_bytes == len(file_model(padding + 1).to_bytes()) > room
    assert over.unsupported == [f"model file: {over.file_bytes:,} B, this device has room for {room:,} B "
                                f"({over.file_bytes - room:,} B too many)"]
    assert over.program_bytes + over.arena_bytes < 4096   # the loaded model is small: only the file overflows
    assert f"model file {over.file_bytes:,} B of {room:,} B" in str(over)


def test_the_board_profile_has_one_budget_and_no_flash():
    report = arena_model(64).check("aarch64-linux")
    assert report.fits and report.memory_bytes_max == 64 * 1024 * 1024 and report.file_bytes_max is None
    assert report.arena_plan == "fast"
    assert (report.program_bytes, report.arena_bytes) == c_library_figures(arena_model(64), "aarch64-linux")


@pytest.mark.parametrize("profile", MICROCONTROLLERS)
def test_profile_engine_bytes_are_what_a_firmware_links(profile, tmp_path):
    """The engine's flash and RAM the profile subtracts are native/sizes.py's "firmware links" figures of
    a fresh build of bare_metal.c for that core (ReleaseSmall, --gc-sections): code + read-only data
    (less the model file) in flash, writable data (less bare_metal.c's own arrays) in RAM. Measured
    on this tree they are equal; the check allows the engine to shrink a little, never to grow."""
    limits = es.devices.PROFILES[profile]
    cpu = limits.zig_target.split("-Dcpu=")[1]
    firmware = sizes_module().firmware_sizes(ROOT / "native", tmp_path, cpu)
    assert not isinstance(firmware, str), firmware
    flash, ram = firmware["code"] + firmware["rodata"], firmware["data"]
    # never less than the build (the profile would promise flash that is not there), and not stale: an
    # engine that shrank by more than 4 KB leaves the profile refusing files that fit
    update = (f"this tree's {cpu} firmware links {flash:,} B of engine code + read-only data and {ram:,} B of "
              f"writable data: set ENGINE_FLASH / ENGINE_RAM in edgesnn/devices.py (and README 'Devices')")
    assert limits.engine_flash_bytes - 4096 <= flash <= limits.engine_flash_bytes, update
    assert ram == limits.engine_ram_bytes, update


# -- the Cortex-M4 C library's own numbers, under qemu-arm ----------------------------------------------


def arena_edge_model() -> es.Model:
    return arena_model(edge(arena_model, 8, 200, "cortex-m4"))


def program_edge_model() -> es.Model:
    return program_model(edge(program_model, 1, 64, "cortex-m4"))


@pytest.mark.parametrize("build", [spiking_mnist_like, arena_edge_model, program_edge_model],
                         ids=["spiking_mnist_like", "arena_just_fits", "program_just_fits"])
def test_cortex_m4_profile_figures_are_the_cortex_m4_c_library_figures(build, tmp_path):
    """The Cortex-M4 build of the C library (bare_metal.c: static arrays of ESNN_MODEL_BYTES for the
    model and ESNN_ARENA_BYTES for the lean-plan arena) runs the model with exactly the program and
    arena bytes `check("cortex-m4")` reports, and refuses it with one byte less of either; the models
    that just fit the SRAM are among them."""
    qemu = shutil.which("qemu-arm")
    if qemu is None:
        pytest.skip("qemu-arm is not installed (scripts/install-system-deps.sh installs qemu-user)")
    from test_cross import M4_SCRIPT, QEMU_ARM_CPU, header_status

    model = build()
    report = model.check("cortex-m4")
    assert report.fits
    model.save(tmp_path / "model.esnn")
    rng = np.random.default_rng(16)
    x = rng.integers(0, 1 << model.input_bits, (1, *model.input_shape)).astype(np.uint8)
    x[rng.random(x.shape) < 0.5] = 0
    (tmp_path / "input.u8").write_bytes(x[0].tobytes())
    # the 64-bit host's own figures are larger: the Cortex-M figure is the target's, not an upper bound
    assert report.program_bytes < es.devices.native_memory_figures(model)[0]
    assert report.arena_plan == "lean" and report.arena_bytes <= report.arena_plans["fast"]
    results = {}
    exact = (report.program_bytes, report.arena_bytes)
    for program, arena in (exact, (report.program_bytes - 1, report.arena_bytes),
                           (report.program_bytes, report.arena_bytes - 1)):
        out = tmp_path / f"memory-{program}-{arena}"
        made = subprocess.run(["bash", str(M4_SCRIPT), str(tmp_path / "model.esnn"), str(tmp_path / "input.u8"),
                               str(out), "-DESNN_TIMESTEPS=1", f"-DESNN_MODEL_BYTES={program}",
                               f"-DESNN_ARENA_BYTES={arena}"], capture_output=True, text=True,
                              env={**os.environ, "OPTIMIZE": "ReleaseSafe"}, timeout=900)
        assert made.returncode == 0, made.stderr
        results[program, arena] = subprocess.run([qemu, "-cpu", QEMU_ARM_CPU, str(out / "bare_metal")],
                                                 capture_output=True, text=True, timeout=300)
    assert results[exact].returncode == 0, results[exact].stdout
    expected = model.forward(x, device="reference")
    np.testing.assert_array_equal(parse_output(results[exact].stdout)[1], expected.reshape(-1))
    for less in results:
        if less != exact:
            assert results[less].stdout == f"error: status {header_status('ESNN_ERROR_LIMIT')}\n", less
