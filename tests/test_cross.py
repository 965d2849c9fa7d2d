"""Cross-builds of the engine with the pinned Zig (ReleaseSafe):

- aarch64-linux-musl: libedgesnn.a and examples/c/classify.c as one static binary, run under
  qemu-aarch64 and compared with the reference (skipped when qemu-aarch64 is missing; Debian's
  qemu-user, installed by scripts/install-system-deps.sh, provides it);
- Cortex-M4 (thumb-freestanding-eabihf, cortex_m4): libedgesnn.a linked into a freestanding
  program (examples/c/bare_metal.c) without libc; run under qemu-arm when present, also with a
  model larger than a 32-bit address space, which must be refused, not crash.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import layers as L
from test_c_embedding import (  # noqa: F401  (same_tree_library is a fixture used here)
    ROOT, build_example, check_against_reference, models, parse_output, same_tree_library,
)

M4_SCRIPT = ROOT / "examples" / "c" / "build_cortex_m4.sh"
EM_ARM, EM_AARCH64 = 40, 183
PT_INTERP = 3
EF_ARM_ABI_FLOAT_HARD = 0x400
# qemu-arm 7.2's user mode asserts when started with -cpu cortex-m4 (page_set_flags); the Cortex-A7
# executes the same Thumb-2 + VFPv4 code, so it runs the cortex_m4 build here.
QEMU_ARM_CPU = "cortex-a7"
M4_MODEL_BYTES, M4_ARENA_BYTES = 1 << 20, 256 * 1024  # bare_metal.c's static arrays in these tests


def elf_header(path: Path) -> dict:
    """Class, machine, flags and program header types of an ELF file (little-endian)."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    is_64 = data[4] == 2
    machine = struct.unpack_from("<H", data, 18)[0]
    if is_64:
        flags, = struct.unpack_from("<I", data, 48)
        phoff, = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
    else:
        flags, = struct.unpack_from("<I", data, 36)
        phoff, = struct.unpack_from("<I", data, 28)
        phentsize, phnum = struct.unpack_from("<HH", data, 42)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return {"bits": 64 if is_64 else 32, "machine": machine, "flags": flags, "segment_types": types}


@pytest.fixture(scope="module")
def aarch64_classify(tmp_path_factory) -> Path:
    return build_example("aarch64-linux-musl", tmp_path_factory.mktemp("c-aarch64"))


def test_aarch64_musl_binary_is_static(aarch64_classify):
    header = elf_header(aarch64_classify)
    assert (header["bits"], header["machine"]) == (64, EM_AARCH64)
    assert PT_INTERP not in header["segment_types"], "a musl build must not need a dynamic loader"


def test_aarch64_musl_binary_matches_the_reference_under_qemu(aarch64_classify, tmp_path):
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        pytest.skip("qemu-aarch64 is not installed (Debian: apt-get install qemu-user; "
                    "scripts/install-system-deps.sh does this in CI)")
    check_against_reference([qemu, str(aarch64_classify)], tmp_path, samples=2)


def build_cortex_m4(model, frame: np.ndarray, timesteps: int, out: Path) -> Path:
    model.save(out / "model.esnn")
    (out / "input.u8").write_bytes(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    env = {**os.environ, "OPTIMIZE": "ReleaseSafe"}
    result = subprocess.run(["bash", str(M4_SCRIPT), str(out / "model.esnn"), str(out / "input.u8"), str(out / "build"),
                             f"-DESNN_TIMESTEPS={timesteps}", f"-DESNN_MODEL_BYTES={M4_MODEL_BYTES}",
                             f"-DESNN_ARENA_BYTES={M4_ARENA_BYTES}"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"Cortex-M4 build failed:\n{result.stdout}\n{result.stderr}"
    return out / "build" / "bare_metal"


@pytest.fixture(scope="module")
def cortex_m4_case(tmp_path_factory):
    """The every-kind model with a sparse input at T = 3, built for the Cortex-M4."""
    model = models()["every_kind"]
    rng = np.random.default_rng(4)
    x = rng.integers(0, 1 << model.input_bits, (1, *model.input_shape)).astype(np.uint8)
    x[rng.random(x.shape) < 0.5] = 0
    binary = build_cortex_m4(model, x[0], 3, tmp_path_factory.mktemp("cortex-m4"))
    return model, x, 3, binary


def test_cortex_m4_library_links_without_libc(cortex_m4_case):
    """The link itself is the check: a freestanding target has no libc, so any malloc, printf or
    memcpy from one would be an undefined symbol. Zig adds only its compiler-rt."""
    *_, binary = cortex_m4_case
    header = elf_header(binary)
    assert (header["bits"], header["machine"]) == (32, EM_ARM)
    assert header["flags"] & EF_ARM_ABI_FLOAT_HARD, "expected the hard-float EABI (eabihf)"
    assert PT_INTERP not in header["segment_types"]
    library = binary.parent / "lib" / "libedgesnn.a"
    assert library.read_bytes()[:8] == b"!<arch>\n"


def test_cortex_m4_firmware_links_only_what_it_calls(cortex_m4_case):
    """The library has a section per function (native/build.zig) and the firmware links with
    --gc-sections (build_cortex_m4.sh), so bare_metal.c, which never calls the stream API, carries
    less code than the archive holds; with one .text section for the whole archive it carried all of
    it plus compiler-rt and its own."""
    *_, binary = cortex_m4_case
    import sys
    sys.path.insert(0, str(ROOT / "native"))
    try:
        import sizes
    finally:
        sys.path.remove(str(ROOT / "native"))
    firmware = sizes.elf_section_bytes(binary.read_bytes())["code"]
    library = sizes.library_sizes(binary.parent / "lib" / "libedgesnn.a")["code"]
    assert firmware < library, f"firmware code {firmware} B, library code {library} B: nothing was left out"


def test_cortex_m4_build_runs_and_matches_the_reference(cortex_m4_case):
    qemu = shutil.which("qemu-arm")
    if qemu is None:
        pytest.skip("qemu-arm is not installed (Debian: apt-get install qemu-user)")
    model, x, timesteps, binary = cortex_m4_case
    result = subprocess.run([qemu, "-cpu", QEMU_ARM_CPU, str(binary)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    got_class, got_potentials = parse_output(result.stdout)
    expected = model.forward(x, timesteps=timesteps, device="reference")
    np.testing.assert_array_equal(got_potentials, expected.reshape(-1))
    assert got_class == model.predict(x, timesteps=timesteps, device="reference")[0]


def address_space_model() -> es.Model:
    """A valid 7 KB file whose context needs about 4.9 GiB of arena: 15 spiking 1x1 convs on
    (2048, 2048, 16), each with 64 MiB of activations and 256 MiB of membrane state."""
    ones = np.ones((1, 1, 16, 16), int)
    spiking = {"weight_bits": 2, "neuron": "lif", "threshold": 1, "leak_shift": 1}
    layers = [L.InputConv2D(name="c0", weights=ones, **spiking)]
    layers += [L.Conv2D(name=f"c{i}", weights=ones, **spiking) for i in range(1, 14)]
    layers.append(L.Conv2D(name="out", weights=np.ones((1, 1, 16, 2), int), weight_bits=2, neuron="none",
                           pool="global_avg"))
    return es.Model(layers, input_shape=(2048, 2048, 16), input_bits=1)


def test_32bit_build_refuses_a_model_larger_than_its_address_space(same_tree_library, tmp_path):
    """On a 32-bit target the sizes the engine reports must fit size_t: a model needing more arena
    than the address space is refused with ESNN_ERROR_LIMIT, not a panic (or, without safety
    checks, a truncated size). The same Cortex-M4 library, with this model linked in."""
    model = address_space_model()
    from edgesnn import native

    loaded = native.NativeModel(model.to_bytes(), same_tree_library)
    assert loaded.arena_bytes > 2**32  # the 64-bit engine takes it
    assert loaded.memory_bytes <= M4_MODEL_BYTES  # so a refusal can only come from the engine
    binary = build_cortex_m4(model, np.zeros(1, np.uint8), 1, tmp_path)
    qemu = shutil.which("qemu-arm")
    if qemu is None:
        pytest.skip("qemu-arm is not installed (Debian: apt-get install qemu-user)")
    result = subprocess.run([qemu, "-cpu", QEMU_ARM_CPU, str(binary)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (1, f"error: status {header_status('ESNN_ERROR_LIMIT')}\n"), \
        f"status {result.returncode}: {result.stdout}{result.stderr}"


def header_status(name: str) -> int:
    """A status code as native/include/edgesnn.h defines it."""
    header = (ROOT / "native" / "include" / "edgesnn.h").read_text()
    return int(re.search(rf"\b{name} = (\d+)", header)[1])


# -- the profiles' record sizes: what a 32-bit build's model memory differs by ------------------------------


@pytest.mark.parametrize("profile", ["cortex-m4", "cortex-m7", "aarch64-linux"])
def test_profile_record_bytes_are_the_cross_build_s_own(profile, tmp_path):
    """edgesnn/devices.py's record sizes per profile equal the esnn_record_bytes symbol of a fresh cross
    build of the library for that target (native/sizes.py reads it from the file), so the profile's
    program figure (esnn_model_memory_bytes_for) is the target's exact model memory."""
    import sys

    sys.path.insert(0, str(ROOT / "native"))
    try:
        import sizes
    finally:
        sys.path.remove(str(ROOT / "native"))
    target, *cpu = es.devices.PROFILES[profile].zig_target.split()
    prefix = tmp_path / "build"
    error = sizes.build(ROOT / "native", "static", target, cpu[0].split("=")[1] if cpu else None, "ReleaseSmall", prefix)
    assert error is None, error
    assert sizes.record_bytes(prefix / "lib" / "libedgesnn.a") == es.devices.PROFILES[profile].record_bytes


def test_sizes_firmware_row_is_the_engine_s_part_of_a_firmware(tmp_path):
    """native/sizes.py's "firmware links" row: bare_metal.c with the shipped model built for the Cortex-M4
    (ReleaseSmall, as the profile test above), its sections less exactly the model file and input frame
    (read-only) and bare_metal.c's static arrays (writable); the engine's code is less than the archive's."""
    import sys
    sys.path.insert(0, str(ROOT / "native"))
    try:
        import sizes
    finally:
        sys.path.remove(str(ROOT / "native"))
    firmware = sizes.firmware_sizes(ROOT / "native", tmp_path)
    assert not isinstance(firmware, str), firmware
    assert firmware["model"] == sizes.FIRMWARE_MODEL.stat().st_size + sizes.FIRMWARE_INPUT_BYTES
    arrays = [int(flag.split("=")[1]) for flag in sizes.FIRMWARE_FLAGS if flag.startswith("-DESNN_")]
    assert firmware["arrays"] == sum(arrays) + 64 * 4   # + the int32 output array (ESNN_OUTPUT_VALUES_MAX)
    library = sizes.library_sizes(tmp_path / "out" / "lib" / "libedgesnn.a")
    assert 0 < firmware["code"] < library["code"]
    assert 0 <= firmware["rodata"] and 0 <= firmware["data"]


def test_arm32_linux_build_loads_with_the_memory_the_32bit_figure_says(tmp_path):
    """The C library's own number on a 32-bit build that runs here (arm-linux-musleabihf under
    qemu-arm: classify.c prints esnn_model_memory_bytes) equals the host's esnn_model_memory_bytes_for
    with that build's record sizes."""
    qemu = shutil.which("qemu-arm")
    if qemu is None:
        pytest.skip("qemu-arm is not installed (Debian: apt-get install qemu-user)")
    import sys

    from edgesnn import native

    sys.path.insert(0, str(ROOT / "native"))
    try:
        import sizes
    finally:
        sys.path.remove(str(ROOT / "native"))
    binary = build_example("arm-linux-musleabihf", tmp_path / "arm")
    records = sizes.record_bytes(binary.parent / "lib" / "libedgesnn.a")
    assert records == es.devices.PROFILES["cortex-m4"].record_bytes   # the same 32-bit AAPCS layout
    for name, model in models().items():
        model.save(tmp_path / f"{name}.esnn")
        (tmp_path / "x.u8").write_bytes(np.zeros(model.input_shape, np.uint8).tobytes())
        result = subprocess.run([qemu, str(binary), str(tmp_path / f"{name}.esnn"), str(tmp_path / "x.u8"), "1"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        reported = int(re.search(r"memory_bytes (\d+)", result.stdout)[1])
        assert reported == native.LIBRARY.memory_bytes_for(model.to_bytes(), records), name

