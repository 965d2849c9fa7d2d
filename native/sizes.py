"""Build the engine for the host, aarch64-linux-musl and a Cortex-M4 and print the library sizes.

    python native/sizes.py [--markdown] [--native-dir DIR]

For each library: the file's bytes and what a program would carry: code (executable sections),
read-only data and writable data (.data + .bss), summed over the ELF objects inside (the
archive's index and names are not code). Release builds are stripped (native/build.zig).

The last row is what a Cortex-M4 firmware links of the archive: examples/c/bare_metal.c with the
shipped MNIST model, built by examples/c/build_cortex_m4.sh (ReleaseSmall, --gc-sections), its
sections less the model file (read-only data) and the caller's static arrays (writable data), which
are the application's, not the engine's; the footnote says those.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

NATIVE = Path(__file__).resolve().parent
ROOT = NATIVE.parent
M4_SCRIPT = ROOT / "examples" / "c" / "build_cortex_m4.sh"
FIRMWARE_MODEL = ROOT / "edgesnn" / "data" / "mnist_cnn_4bit.esnn"   # input (28, 28, 1)
FIRMWARE_INPUT_BYTES = 28 * 28
# bare_metal.c's static arrays, enough for that model (it runs: "class 6" on a blank frame under qemu-arm)
FIRMWARE_FLAGS = ["-DESNN_MODEL_BYTES=131072", "-DESNN_ARENA_BYTES=131072", "-fno-strip"]
# the application's symbols in the firmware: the model file in flash, the caller-owned memory
APPLICATION_RODATA = ("esnn_model_file", "esnn_input_frame")
APPLICATION_DATA = ("model_memory", "arena", "potentials")

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHT_SYMTAB, SHT_NOBITS = 2, 8

# (label, zig build step, -Dtarget, -Dcpu, -Doptimize, the file it installs)
BUILDS = [
    ("host x86_64 .so", "install", "native", None, "ReleaseFast", "lib/libedgesnn.so"),
    ("host x86_64 .a", "static", "native", None, "ReleaseFast", "lib/libedgesnn.a"),
    ("aarch64-linux-musl .a", "static", "aarch64-linux-musl", None, "ReleaseFast", "lib/libedgesnn.a"),
    ("Cortex-M4 .a (thumb, eabihf)", "static", "thumb-freestanding-eabihf", "cortex_m4", "ReleaseSmall",
     "lib/libedgesnn.a"),
]


def elf_section_bytes(data: bytes) -> dict[str, int]:
    """Bytes of the allocated sections of one ELF file: code, read-only data, writable data."""
    if data[:4] != b"\x7fELF":
        return {"code": 0, "rodata": 0, "data": 0}
    is_64 = data[4] == 2
    if is_64:
        shoff, = struct.unpack_from("<Q", data, 40)
        shentsize, shnum = struct.unpack_from("<HH", data, 58)
        entry = "<IIQQQQIIQQ"
    else:
        shoff, = struct.unpack_from("<I", data, 32)
        shentsize, shnum = struct.unpack_from("<HH", data, 46)
        entry = "<IIIIIIIIII"
    sizes = {"code": 0, "rodata": 0, "data": 0}
    for index in range(shnum):
        _, kind, flags, _, _, size, *_ = struct.unpack_from(entry, data, shoff + index * shentsize)
        if not flags & SHF_ALLOC:
            continue
        if flags & SHF_EXECINSTR:
            sizes["code"] += size
        elif flags & SHF_WRITE or kind == SHT_NOBITS:
            sizes["data"] += size
        else:
            sizes["rodata"] += size
    return sizes


def elf_symbols(data: bytes) -> tuple[list[tuple], list[tuple[str, int, int, int]]]:
    """The section headers of an ELF file and (name, value, size, section index) of every symbol of its
    symbol tables (32- or 64-bit, little-endian)."""
    is_64 = data[4] == 2
    if is_64:
        shoff, = struct.unpack_from("<Q", data, 40)
        shentsize, shnum = struct.unpack_from("<HH", data, 58)
        section_entry, symbol_entry, symbol_bytes = "<IIQQQQIIQQ", "<IBBHQQ", 24
    else:
        shoff, = struct.unpack_from("<I", data, 32)
        shentsize, shnum = struct.unpack_from("<HH", data, 46)
        section_entry, symbol_entry, symbol_bytes = "<IIIIIIIIII", "<IIIBBH", 16
    sections = [struct.unpack_from(section_entry, data, shoff + i * shentsize) for i in range(shnum)]
    symbols = []
    for section in sections:
        if section[1] != SHT_SYMTAB:
            continue
        offset, length, strings_offset = section[4], section[5], sections[section[6]][4]
        for at in range(offset, offset + length, symbol_bytes):
            fields = struct.unpack_from(symbol_entry, data, at)
            if is_64:
                name_offset, _, _, index, value, size = fields
            else:
                name_offset, value, size, _, _, index = fields
            end = data.index(b"\0", strings_offset + name_offset)
            symbols.append((data[strings_offset + name_offset:end].decode(), value, size, index))
    return sections, symbols


def elf_symbol_bytes(data: bytes, name: str, size: int) -> bytes | None:
    """The `size` bytes a defined symbol `name` points at in one ELF object file, or None."""
    if data[:4] != b"\x7fELF":
        return None
    sections, symbols = elf_symbols(data)
    for symbol, value, _, index in symbols:
        if symbol != name or index == 0 or index >= len(sections):
            continue
        target = sections[index]
        if target[1] == SHT_NOBITS:
            return None
        return data[target[4] + value:target[4] + value + size]
    return None


def elf_symbol_sizes(data: bytes, names) -> dict[str, int]:
    """st_size of each named symbol of an ELF file's symbol table (names not there are left out)."""
    wanted = set(names)
    return {name: size for name, _, size, _ in elf_symbols(data)[1] if name in wanted}


def firmware_sizes(native_dir: Path, scratch: Path, cpu: str = "cortex_m4") -> dict[str, int] | str:
    """What bare_metal.c links of the engine on a Cortex-M4 (see the module doc; `cpu`: another Thumb-2
    core, e.g. cortex_m7), or the build's error. edgesnn/devices.py's profiles store code + rodata as
    the engine's flash and data as its RAM (tests/test_devices_profiles.py compares)."""
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "input.u8").write_bytes(bytes(FIRMWARE_INPUT_BYTES))
    # the script runs `python`: this interpreter (it has ziglang)
    shim = scratch / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "python").unlink(missing_ok=True)
    (shim / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}", "OPTIMIZE": "ReleaseSmall",
           "EDGESNN_NATIVE_DIR": str(native_dir), "CPU": cpu}
    command = ["bash", str(M4_SCRIPT), str(FIRMWARE_MODEL), str(scratch / "input.u8"), str(scratch / "out"), *FIRMWARE_FLAGS]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        return (errors or result.stderr.strip().splitlines() or ["unknown error"])[0]
    data = (scratch / "out" / "bare_metal").read_bytes()
    sizes = elf_section_bytes(data)
    symbols = elf_symbol_sizes(data, APPLICATION_RODATA + APPLICATION_DATA)
    missing = sorted(set(APPLICATION_RODATA + APPLICATION_DATA) - set(symbols))
    if missing:
        return f"no symbol {', '.join(missing)} in the firmware (built without -fno-strip?)"
    model = sum(symbols.get(name, 0) for name in APPLICATION_RODATA)
    arrays = sum(symbols.get(name, 0) for name in APPLICATION_DATA)
    return {"file": None, "code": sizes["code"], "rodata": sizes["rodata"] - model, "data": sizes["data"] - arrays,
            "model": model, "arrays": arrays}


def record_bytes(path: Path) -> tuple[int, int]:
    """A build's {Model, Layer} record sizes: its esnn_record_bytes symbol (native/src/exports.zig), read
    from the library file, so a cross build needs no device to say them."""
    data = path.read_bytes()
    members = list(archive_members(data)) if data[:8] == b"!<arch>\n" else [data]
    for member in members:
        found = elf_symbol_bytes(member, "esnn_record_bytes", 8)
        if found is not None:
            model, layer = struct.unpack("<II", found)
            return model, layer
    raise ValueError(f"{path}: no esnn_record_bytes symbol (an engine older than its export?)")


def archive_members(data: bytes):
    """The member files of a System V / GNU `ar` archive."""
    assert data[:8] == b"!<arch>\n", "not an ar archive"
    at = 8
    while at + 60 <= len(data):
        size = int(data[at + 48:at + 58].decode().strip())
        yield data[at + 60:at + 60 + size]
        at += 60 + size + (size & 1)


def library_sizes(path: Path) -> dict[str, int]:
    data = path.read_bytes()
    members = list(archive_members(data)) if data[:8] == b"!<arch>\n" else [data]
    totals = {"file": len(data), "code": 0, "rodata": 0, "data": 0}
    for member in members:
        for key, value in elf_section_bytes(member).items():
            totals[key] += value
    return totals


def build(native_dir: Path, step: str, target: str, cpu: str | None, optimize: str, prefix: Path) -> str | None:
    """Build into `prefix`; return None, or the first compiler error when the build fails."""
    command = [sys.executable, "-m", "ziglang", "build", step, f"-Dtarget={target}", f"-Doptimize={optimize}",
               "--prefix", str(prefix)]
    if cpu:
        command.append(f"-Dcpu={cpu}")
    result = subprocess.run(command, cwd=native_dir, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    return (errors or result.stderr.strip().splitlines() or ["unknown error"])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (README)")
    parser.add_argument("--native-dir", type=Path, default=NATIVE, help="the engine tree to build (default: native/)")
    args = parser.parse_args()
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="edgesnn-sizes-") as scratch:
        for index, (label, step, target, cpu, optimize, installed) in enumerate(BUILDS):
            prefix = Path(scratch) / str(index)
            error = build(args.native_dir, step, target, cpu, optimize, prefix)
            failed = failed or error is not None
            rows.append((label, optimize, error or library_sizes(prefix / installed)))
        firmware = firmware_sizes(args.native_dir, Path(scratch) / "firmware")
        failed = failed or isinstance(firmware, str)
        rows.append(("Cortex-M4 firmware links (bare_metal.c)", "ReleaseSmall", firmware))
    if args.markdown:
        print("| library | build | file bytes | code | read-only data | writable data |")
        print("|---|---|---:|---:|---:|---:|")
    else:
        print(f"{'library':40} {'build':12} {'file':>9} {'code':>9} {'rodata':>9} {'data':>9}")
    for label, optimize, s in rows:
        if isinstance(s, str):
            print(f"| {label} | {optimize} | build failed: {s} |||||" if args.markdown else
                  f"{label:40} {optimize:12} build failed: {s}")
        elif args.markdown:
            file = "-" if s["file"] is None else f"{s['file']:,}"   # a firmware's ELF file is not what it carries
            print(f"| {label} | {optimize} | {file} | {s['code']:,} | {s['rodata']:,} | {s['data']:,} |")
        else:
            file = "-" if s["file"] is None else str(s["file"])
            print(f"{label:40} {optimize:12} {file:>9} {s['code']:9} {s['rodata']:9} {s['data']:9}")
    if not isinstance(firmware, str):
        print(f"\nfirmware: read-only data excludes the model file in flash "
              f"({firmware['model']:,} B, {FIRMWARE_MODEL.name} and its input frame), writable data excludes "
              f"bare_metal.c's static model memory, arena and output ({firmware['arrays']:,} B)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
