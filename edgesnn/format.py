"""The .esnn file: `write_model(model) -> bytes` and `read_model(data) -> Model`, as docs/format.md lays it out.

This module and native/src/loader.zig are the only places that know the byte layout.  The writer is
deterministic (the same model always gives the same bytes).  The reader checks everything the
format's "What a reader checks" lists before it builds the Model, and raises `FormatError` naming
the section and the byte offset (from the start of the file) of what is wrong.

    data = write_model(model)          # bytes
    model = read_model(data)           # Model, or FormatError
    save(model, "m.esnn"); model = load("m.esnn")
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from . import layers as L
from .errors import FormatError, ModelError

# -- named constants of docs/format.md ------------------------------------------------------------

MAGIC = b"\x89ESN\r\n\x1a\n"
VERSION_MAJOR = 2                    # what the writer writes
VERSION_MINOR = 0
READ_MAJORS = (1, 2)                 # what the reader reads (1.0: edgesnn 0.1's files)
HEADER_BYTES = 64
SECTION_ENTRY_BYTES = 16
SECTION_COUNT_MAX = 16
SECTION_ALIGN_BYTES = 16
TENSOR_ALIGN_BYTES = 16
MODEL_RECORD_BYTES = 64
LAYER_RECORD_BYTES = 384             # version 2; version 1 records are 256 bytes
LAYER_RECORD_V1_BYTES = 256
LAYER_COUNT_MAX = 256
NAME_BYTES_MAX = 255
U32_MAX = 2**32 - 1
REQUIRED_TAGS = ("GRPH", "TENS", "NAME", "META")

KIND_CODES = {"input_conv2d": 1, "conv2d": 2, "depthwise2d": 3, "separable2d": 4, "dense": 5, "add": 6,
              "concat": 7}
KIND_CODES_V1 = {k: v for k, v in KIND_CODES.items() if v <= 6}
NEURON_CODES = {"none": 0, "relu": 1, "if": 2, "lif": 3}
PADDING_CODES = {"valid": 0, "same": 1, "explicit": 2}
POOL_FLAG_COUNT_INCLUDE_PAD = 1
POOL_CODES = {None: 0, "max": 1, "avg": 2, "global_avg": 3}
INPUT_INDEX = -1                     # `inputs` entry meaning the model input
INPUT_NAME = "input"                 # the name by which layers refer to the model input (see model.py)

# Tensor slots of a layer record, in slot order (slots 14..15 are reserved; version 1 has slots 0..9).
SLOT_NAMES = ("weights", "pointwise", "bias", "out_multiplier", "out_shift", "threshold",
              "mid_multiplier", "mid_shift", "input_multipliers", "pad_value", "out_zero_point", "pool_sign",
              "sources", "decay_multiplier")
RESET_CODES = {"subtract": 0, "zero": 1, "none": 2}
NEURON_FLAG_FLOOR = 1                # neuron_flags bit 0: membrane_floor holds the if/lif membrane floor
SLOT_COUNT = 16
SLOT_COUNT_V1 = 10
PACKED_SLOTS = ("weights", "pointwise")   # packed signed `weight_bits`; every other slot is int32

# Well-known file signatures, to say what a foreign file is.
FOREIGN_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras .h5 model?)"),
    (b"PK\x03\x04", "a zip archive (a .keras, .npz or PyTorch .pt file?)"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x7fELF", "an ELF executable"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"\x80", "a Python pickle"),
    (b"\x08", "a protobuf message (an ONNX model?)"),
    (b"RIFF", "a RIFF file (a .wav?)"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"{", "JSON text"),
)


# -- fixed-size records ---------------------------------------------------------------------------

class _Record:
    """A fixed-size little-endian record: named fields, their byte offsets, pack and unpack.

    `fields` is a list of (name, struct code, count); a count > 1 of a number code is a tuple field,
    an "s" code is a bytes field of `count` bytes (reserved space).
    """

    def __init__(self, fields: list[tuple[str, str, int]]):
        self.fields = fields
        self.offsets: dict[str, int] = {}
        position = 0
        for name, code, count in fields:
            self.offsets[name] = position
            position += struct.calcsize(f"<{count}{code}")
        self.size = position
        self._struct = struct.Struct("<" + "".join(f"{count}{code}" for _, code, count in fields))

    def unpack(self, buf, offset: int) -> dict:
        flat = self._struct.unpack_from(buf, offset)
        values, i = {}, 0
        for name, code, count in self.fields:
            if code == "s" or count == 1:
                values[name], i = flat[i], i + 1
            else:
                values[name], i = tuple(flat[i:i + count]), i + count
        return values

    def pack(self, values: dict) -> bytes:
        flat = []
        for name, code, count in self.fields:
            if code == "s":
                flat.append(values.get(name, b""))
            elif count == 1:
                flat.append(values[name])
            else:
                flat.extend(values[name])
        return self._struct.pack(*flat)


HEADER = _Record([("magic", "s", 8), ("version_major", "H", 1), ("version_minor", "H", 1),
                  ("header_bytes", "I", 1), ("file_bytes", "Q", 1), ("section_count", "I", 1),
                  ("flags", "I", 1), ("body_crc32", "I", 1), ("header_crc32", "I", 1),
                  ("reserved", "s", 24)])
SECTION_ENTRY = _Record([("tag", "s", 4), ("flags", "I", 1), ("offset", "I", 1), ("bytes", "I", 1)])
MODEL_RECORD = _Record([("layer_count", "I", 1), ("input_h", "I", 1), ("input_w", "I", 1), ("input_c", "I", 1),
                        ("input_bits", "I", 1), ("output_layer", "I", 1), ("record_bytes", "I", 1),
                        ("reserved", "s", 36)])
_LAYER_HEAD = [("kind", "I", 1), ("neuron", "I", 1), ("name_offset", "I", 1), ("name_bytes", "I", 1),
               ("input_count", "I", 1), ("inputs", "i", 4), ("in_shape", "I", 3), ("out_shape", "I", 3),
               ("kernel_h", "I", 1), ("kernel_w", "I", 1), ("stride", "I", 1), ("padding", "I", 1),
               ("pool", "I", 1), ("pool_size", "I", 1), ("pool_stride", "I", 1), ("weight_bits", "I", 1),
               ("activation_bits", "I", 1), ("mid_bits", "I", 1), ("leak_shift", "I", 1)]
# stride, pool_size and pool_stride are the height axis; version 2 adds the width axis and paddings
LAYER_RECORD = _Record(_LAYER_HEAD + [
    ("stride_w", "I", 1), ("pads", "I", 4), ("depth_multiplier", "I", 1), ("slots", "I", 2 * SLOT_COUNT),
    ("pool_w", "I", 1), ("pool_stride_w", "I", 1), ("pool_pads", "I", 4), ("pool_flags", "I", 1),
    ("decay_shift", "I", 1), ("reset", "I", 1), ("neuron_flags", "I", 1), ("membrane_floor", "i", 1),
    ("reserved2", "s", 84)])
LAYER_RECORD_V1 = _Record(_LAYER_HEAD + [("reserved0", "s", 24), ("slots", "I", 2 * SLOT_COUNT_V1),
                                         ("reserved1", "s", 48)])
HEADER_CRC_BYTES = HEADER.offsets["header_crc32"]   # the header CRC covers bytes [0, 36)
assert HEADER.size == HEADER_BYTES and SECTION_ENTRY.size == SECTION_ENTRY_BYTES
assert MODEL_RECORD.size == MODEL_RECORD_BYTES and LAYER_RECORD.size == LAYER_RECORD_BYTES
assert LAYER_RECORD_V1.size == LAYER_RECORD_V1_BYTES and LAYER_RECORD_V1.offsets["slots"] == 128
assert LAYER_RECORD.offsets["slots"] == 128 and LAYER_RECORD.offsets["leak_shift"] == 100
assert LAYER_RECORD.offsets["pool_w"] == 256 and LAYER_RECORD.offsets["pool_flags"] == 280
assert LAYER_RECORD.offsets["decay_shift"] == 284 and LAYER_RECORD.offsets["reserved2"] == 300


def used_slots(kind: str, neuron: str) -> tuple[str, ...]:
    """The tensor slots a layer of `kind` with `neuron` must have (fixed by the format), in slot order."""
    slots = {"add": ("input_multipliers",), "concat": ("input_multipliers",),
             "separable2d": ("weights", "pointwise", "bias", "mid_multiplier", "mid_shift")}.get(
        kind, ("weights", "bias"))
    if neuron == "relu":
        slots += ("out_multiplier", "out_shift")
    elif neuron in ("if", "lif"):
        slots += ("threshold",)
    return tuple(sorted(slots, key=SLOT_NAMES.index))


def optional_slots(kind: str, neuron: str, pool) -> tuple[str, ...]:
    """The version-2 slots a layer may leave empty ({0, 0}: the default), in slot order."""
    slots = ()
    if kind in ("add", "concat"):
        slots += ("bias",)
    if kind in ("input_conv2d", "conv2d", "depthwise2d", "separable2d"):
        slots += ("pad_value",)
    if neuron == "relu":
        slots += ("out_zero_point",)
    if pool == "max":
        slots += ("pool_sign",)
    if kind == "concat":
        slots += ("sources",)
    if neuron == "lif":
        slots += ("decay_multiplier",)   # present exactly when the record's decay_shift is non-zero
    return tuple(sorted(slots, key=SLOT_NAMES.index))


def _align(position: int, alignment: int) -> int:
    return -(-position // alignment) * alignment


# -- packing of signed weights --------------------------------------------------------------------

def pack_signed(values: np.ndarray, bits: int) -> bytes:
    """Pack signed integers of `bits` (2, 4, 8) two's complement, first element in the low bits."""
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    lo, hi = L.signed_range(bits)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"values out of the signed {bits}-bit range [{lo}, {hi}]: min {flat.min()}, max {flat.max()}")
    per_byte = 8 // bits
    codes = (flat & ((1 << bits) - 1)).astype(np.uint8)
    codes = np.concatenate([codes, np.zeros((-codes.size) % per_byte, np.uint8)])
    shifts = (np.arange(per_byte) * bits).astype(np.uint8)
    packed = np.bitwise_or.reduce(codes.reshape(-1, per_byte) << shifts, axis=1)
    return packed.astype(np.uint8).tobytes()


def packed_bytes(count: int, bits: int) -> int:
    """Bytes that `count` packed `bits`-bit values take."""
    return (count * bits + 7) // 8


def unpack_signed(raw: bytes, bits: int, count: int) -> tuple[np.ndarray, bool]:
    """Unpack `count` signed `bits`-bit values -> (int8 array, whether the unused tail bits are all zero)."""
    per_byte = 8 // bits
    shifts = (np.arange(per_byte) * bits).astype(np.uint8)
    data = np.frombuffer(raw, dtype=np.uint8)
    codes = ((data[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)
    tail_clean = not codes[count:].any()
    codes = codes[:count].astype(np.int16)
    values = np.where(codes >= (1 << (bits - 1)), codes - (1 << bits), codes).astype(np.int8)
    return values, tail_clean


# -- writing --------------------------------------------------------------------------------------

def write_model(model) -> bytes:
    """The .esnn bytes of a checked Model (docs/format.md, version 1.0)."""
    names_blob, name_refs = _pack_names(model.layers)
    tens_blob, slot_refs = _pack_tensors(model.layers)
    sections = [("GRPH", _pack_graph(model, name_refs, slot_refs)), ("TENS", tens_blob),
                ("NAME", names_blob), ("META", _pack_meta(model.metadata))]
    table_end = HEADER_BYTES + SECTION_ENTRY_BYTES * len(sections)
    offsets, position = [], _align(table_end, SECTION_ALIGN_BYTES)
    for _, blob in sections:
        offsets.append(position)
        position = _align(position + len(blob), SECTION_ALIGN_BYTES)
    file_bytes = offsets[-1] + len(sections[-1][1])
    if file_bytes > U32_MAX:
        raise FormatError(f"the model needs {file_bytes:,} bytes; an .esnn 1.0 file holds at most {U32_MAX:,}")
    out = bytearray(file_bytes)
    for i, ((tag, blob), offset) in enumerate(zip(sections, offsets)):
        entry = SECTION_ENTRY.pack({"tag": tag.encode("ascii"), "flags": 0, "offset": offset, "bytes": len(blob)})
        out[HEADER_BYTES + i * SECTION_ENTRY_BYTES:HEADER_BYTES + (i + 1) * SECTION_ENTRY_BYTES] = entry
        out[offset:offset + len(blob)] = blob
    header = {"magic": MAGIC, "version_major": VERSION_MAJOR, "version_minor": VERSION_MINOR,
              "header_bytes": HEADER_BYTES, "file_bytes": file_bytes, "section_count": len(sections),
              "flags": 0, "body_crc32": zlib.crc32(out[HEADER_BYTES:]), "header_crc32": 0}
    out[:HEADER_BYTES] = HEADER.pack(header)
    header["header_crc32"] = zlib.crc32(out[:HEADER_CRC_BYTES])
    out[:HEADER_BYTES] = HEADER.pack(header)
    return bytes(out)


def _pack_names(layers) -> tuple[bytes, list[tuple[int, int]]]:
    blob, refs = bytearray(), []
    for layer in layers:
        encoded = layer.name.encode("utf-8")
        if not 1 <= len(encoded) <= NAME_BYTES_MAX:
            raise FormatError(f"layer name {layer.name!r} is {len(encoded)} UTF-8 bytes; an .esnn file "
                              f"holds names of 1..{NAME_BYTES_MAX} bytes", section="NAME")
        refs.append((len(blob), len(encoded)))
        blob += encoded
    return bytes(blob), refs


def _tensor_bytes(layer, slot: str, array: np.ndarray) -> bytes:
    if slot in PACKED_SLOTS:
        return pack_signed(array, layer.weight_bits)
    return np.ascontiguousarray(array, dtype="<i4").tobytes()


def _pack_tensors(layers) -> tuple[bytes, list[list[tuple[int, int]]]]:
    """TENS: every used slot of every layer, each 16-byte aligned; returns the blob and (offset, bytes) per slot."""
    blob, refs = bytearray(), []
    for layer in layers:
        arrays = layer.param_arrays()
        required = used_slots(layer.kind, layer.neuron)
        allowed = set(required) | set(optional_slots(layer.kind, layer.neuron, layer.pool))
        if not set(required) <= set(arrays) <= allowed:
            raise FormatError(f"layer {layer.name!r}: its tensors {sorted(arrays)} are not the slots the format "
                              f"fixes for a {layer.kind}/{layer.neuron} layer ({list(required)}, optional "
                              f"{sorted(allowed - set(required))})", section="TENS")
        slots = sorted(arrays, key=SLOT_NAMES.index)
        layer_refs = [(0, 0)] * SLOT_COUNT
        for slot in slots:
            data = _tensor_bytes(layer, slot, arrays[slot])
            blob += bytes(_align(len(blob), TENSOR_ALIGN_BYTES) - len(blob))
            layer_refs[SLOT_NAMES.index(slot)] = (len(blob), len(data))
            blob += data
        refs.append(layer_refs)
    return bytes(blob), refs


def _pack_graph(model, name_refs, slot_refs) -> bytes:
    if not 1 <= len(model.layers) <= LAYER_COUNT_MAX:
        raise FormatError(f"the model has {len(model.layers)} layers; an .esnn file holds 1..{LAYER_COUNT_MAX}",
                          section="GRPH")
    if max(model.input_shape) > U32_MAX:
        raise FormatError(f"input_shape {model.input_shape} does not fit u32 fields", section="GRPH")
    h, w, c = model.input_shape
    blob = bytearray(MODEL_RECORD.pack({
        "layer_count": len(model.layers), "input_h": h, "input_w": w, "input_c": c,
        "input_bits": model.input_bits, "output_layer": len(model.layers) - 1, "record_bytes": LAYER_RECORD_BYTES}))
    index_of = {layer.name: i for i, layer in enumerate(model.layers)}
    for layer, name_ref, layer_slots in zip(model.layers, name_refs, slot_refs):
        blob += LAYER_RECORD.pack(_layer_fields(layer, index_of, name_ref, layer_slots))
    return bytes(blob)


def _layer_fields(layer, index_of: dict, name_ref, layer_slots) -> dict:
    if layer.kind not in KIND_CODES:
        raise FormatError(f"layer {layer.name!r}: kind {layer.kind!r} has no code in an .esnn "
                          f"{VERSION_MAJOR}.{VERSION_MINOR} file (known: {', '.join(KIND_CODES)})", section="GRPH")
    spatial = layer.kind in SPATIAL_KINDS
    inputs = [INPUT_INDEX if name == INPUT_NAME else index_of[name] for name in layer.inputs]
    has_window = layer.pool in ("max", "avg")
    stride = layer.stride if spatial else (1, 1)
    padding = layer.padding if spatial else "valid"
    return {
        "kind": KIND_CODES[layer.kind], "neuron": NEURON_CODES[layer.neuron],
        "name_offset": name_ref[0], "name_bytes": name_ref[1],
        "input_count": len(inputs), "inputs": inputs + [INPUT_INDEX] * (4 - len(inputs)),
        "in_shape": layer.input_shapes[0], "out_shape": layer.output_shape,
        "kernel_h": layer.weights.shape[0] if spatial else 1, "kernel_w": layer.weights.shape[1] if spatial else 1,
        "stride": stride[0], "stride_w": stride[1],
        "padding": PADDING_CODES[padding if isinstance(padding, str) else "explicit"],
        "pads": layer.pads if spatial else (0, 0, 0, 0),
        "depth_multiplier": getattr(layer, "depth_multiplier", 1),
        "pool": POOL_CODES[layer.pool],
        "pool_size": layer.pool_size[0] if has_window else 0, "pool_w": layer.pool_size[1] if has_window else 0,
        "pool_stride": layer.pool_stride[0] if has_window else 0,
        "pool_stride_w": layer.pool_stride[1] if has_window else 0,
        "pool_pads": layer.pool_pads if has_window else (0, 0, 0, 0),
        "pool_flags": POOL_FLAG_COUNT_INCLUDE_PAD if layer.pool == "avg" and layer.pool_count_include_pad else 0,
        "weight_bits": getattr(layer, "weight_bits", 0), "activation_bits": layer.output_bits,
        "mid_bits": layer.mid_bits if layer.kind == "separable2d" else 0,
        "leak_shift": layer.leak_shift if layer.neuron == "lif" else 0,
        "decay_shift": layer.decay_shift, "reset": RESET_CODES[layer.reset],
        "neuron_flags": 0 if layer.membrane_floor is None else NEURON_FLAG_FLOOR,
        "membrane_floor": layer.membrane_floor or 0,
        "slots": [v for ref in layer_slots for v in ref],
    }


SPATIAL_KINDS = ("input_conv2d", "conv2d", "depthwise2d", "separable2d")
WEIGHTLESS_KINDS = ("add", "concat")


def _pack_meta(metadata: dict) -> bytes:
    ready = _json_ready(metadata, "metadata")
    return json.dumps(ready, ensure_ascii=False, allow_nan=False, sort_keys=False).encode("utf-8")


def _json_ready(value, path: str):
    """A JSON-native copy of `value` (numpy scalars and arrays become numbers and lists); FormatError naming
    the key otherwise. The one rule for META in both directions: the writer packs only what this accepts,
    and the reader refuses what it would not accept (strings must be encodable as UTF-8, so no lone
    surrogates; numbers must be finite, so no NaN, no infinity and no 1e999)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise FormatError(f"{path} holds the lone surrogate {value[exc.start]!r} at character {exc.start}, "
                              f"which is not text (UTF-8 cannot encode it); metadata strings must be valid "
                              f"Unicode", section="META") from None
        return value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FormatError(f"{path} is {value!r}; metadata must be JSON, which has no NaN or infinity",
                              section="META")
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return _json_ready(value.item(), path)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return _json_ready(value.tolist(), path)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError(f"{path} has the key {key!r} of type {type(key).__name__}; metadata keys must "
                                  f"be strings (JSON objects have string keys)", section="META")
            out[_json_ready(key, f"{path} key {key!r}")] = _json_ready(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_json_ready(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise FormatError(f"{path} is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON; "
                      f"metadata may hold dicts with string keys, lists, strings, numbers, booleans and None",
                      section="META")


# -- reading --------------------------------------------------------------------------------------

def read_model(data) -> "Model":  # noqa: F821 (Model is imported lazily: model.py imports this module)
    """The Model in .esnn bytes; FormatError naming the section and byte offset if anything is wrong."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"read_model takes the bytes of an .esnn file, got {type(data).__name__}; "
                        f"use edgesnn.format.load(path) for a file")
    return _Reader(data).read()


@dataclass
class _Section:
    tag: str
    offset: int
    bytes: int
    entry_offset: int   # where its section-table entry is

    @property
    def end(self) -> int:
        return self.offset + self.bytes


class _Reader:
    """One pass over an .esnn byte string: header, section table, GRPH, NAME, TENS, META, then the Model."""

    def __init__(self, data: bytes):
        self.data = data
        self.strict_reserved = True   # reserved bytes must be zero in a x.0 file; later minors may use them
        self.version = (VERSION_MAJOR, VERSION_MINOR)
        self.record = LAYER_RECORD    # the layer record layout of the file's major version

    def fail(self, message: str, section: str, offset: int) -> NoReturn:
        raise FormatError(message, section=section, offset=offset)

    def expect_zero(self, raw: bytes, section: str, offset: int, what: str) -> None:
        if self.strict_reserved and any(raw):
            first = next(i for i, b in enumerate(raw) if b)
            self.fail(f"{what} must be zero in a version {self.version[0]}.{self.version[1]} file, found "
                      f"0x{raw[first]:02x}", section, offset + first)

    def read(self):
        header = self.read_header()
        sections = self.read_section_table(header)
        graph = sections["GRPH"]
        model_record = self.read_model_record(graph)
        records = [self.read_layer_record(graph, i) for i in range(model_record["layer_count"])]
        names = self.read_names(sections["NAME"], records)
        metadata = self.read_meta(sections["META"])
        self.check_records(records, names)
        layer_objects = [self.build_layer(record, names, sections["TENS"]) for record in records]
        return self.build_model(model_record, records, layer_objects, metadata)

    # -- header and section table ----------------------------------------------------------------
    def read_header(self) -> dict:
        data = self.data
        if not data:
            self.fail("empty: an .esnn file starts with a 64-byte header, got 0 bytes", "header", 0)
        if data[:len(MAGIC)] != MAGIC:
            self.fail(_describe_foreign(data), "header", 0)
        if len(data) < HEADER_BYTES:
            self.fail(f"truncated: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header", "header", len(data))
        header = HEADER.unpack(data, 0)
        if header["version_major"] not in READ_MAJORS:
            self.fail(f"file format version {header['version_major']}.{header['version_minor']} is not supported; "
                      f"this edgesnn reads versions {' and '.join(f'{v}.x' for v in READ_MAJORS)} (upgrade "
                      f"edgesnn, or re-save the model)", "header", HEADER.offsets["version_major"])
        self.strict_reserved = header["version_minor"] == 0
        self.version = (header["version_major"], header["version_minor"])
        self.record = LAYER_RECORD if self.version[0] == 2 else LAYER_RECORD_V1
        crc = zlib.crc32(data[:HEADER_CRC_BYTES])
        if crc != header["header_crc32"]:
            self.fail(f"header checksum mismatch: stored CRC-32 0x{header['header_crc32']:08x}, computed 0x{crc:08x} "
                      f"over bytes [0, {HEADER_CRC_BYTES}) (the header is corrupted)",
                      "header", HEADER.offsets["header_crc32"])
        if header["header_bytes"] != HEADER_BYTES:
            self.fail(f"header_bytes is {header['header_bytes']}, must be {HEADER_BYTES}",
                      "header", HEADER.offsets["header_bytes"])
        if header["file_bytes"] != len(data):
            problem = "truncated" if header["file_bytes"] > len(data) else "has trailing bytes"
            self.fail(f"file {problem}: the header says {header['file_bytes']} bytes, got {len(data)}",
                      "header", HEADER.offsets["file_bytes"])
        crc = zlib.crc32(data[HEADER_BYTES:])
        if crc != header["body_crc32"]:
            self.fail(f"body checksum mismatch: stored CRC-32 0x{header['body_crc32']:08x}, computed 0x{crc:08x} "
                      f"over bytes [{HEADER_BYTES}, {len(data)}) (the file is corrupted)",
                      "header", HEADER.offsets["body_crc32"])
        self.expect_zero(header["flags"].to_bytes(4, "little"), "header", HEADER.offsets["flags"], "header flags")
        self.expect_zero(header["reserved"], "header", HEADER.offsets["reserved"], "header reserved bytes")
        return header

    def read_section_table(self, header: dict) -> dict[str, _Section]:
        count = header["section_count"]
        if not 1 <= count <= SECTION_COUNT_MAX:
            self.fail(f"section_count is {count}, must be in 1..{SECTION_COUNT_MAX}",
                      "header", HEADER.offsets["section_count"])
        table_end = HEADER_BYTES + count * SECTION_ENTRY_BYTES
        if table_end > len(self.data):
            self.fail(f"the section table of {count} entries ends at byte {table_end}, past the end of the "
                      f"{len(self.data)}-byte file", "section table", HEADER_BYTES)
        found: dict[str, _Section] = {}
        placed: list[_Section] = []
        for i in range(count):
            entry_offset = HEADER_BYTES + i * SECTION_ENTRY_BYTES
            section = self.read_section_entry(entry_offset, table_end)
            self.check_no_overlap(section, placed)
            placed.append(section)
            if section.tag in REQUIRED_TAGS:
                if section.tag in found:
                    self.fail(f"section {section.tag} appears twice in the section table (entries at bytes "
                              f"{found[section.tag].entry_offset} and {entry_offset}); it must appear once",
                              "section table", entry_offset)
                found[section.tag] = section
        missing = [tag for tag in REQUIRED_TAGS if tag not in found]
        if missing:
            self.fail(f"required section(s) {', '.join(missing)} missing from the section table "
                      f"(found {[s.tag for s in placed]}; required {list(REQUIRED_TAGS)})", "section table", HEADER_BYTES)
        return found

    def read_section_entry(self, entry_offset: int, table_end: int) -> _Section:
        entry = SECTION_ENTRY.unpack(self.data, entry_offset)
        raw_tag = entry["tag"]
        tag = raw_tag.decode("ascii", errors="replace") if all(0x20 <= b < 0x7F for b in raw_tag) else repr(raw_tag)
        section = _Section(tag, entry["offset"], entry["bytes"], entry_offset)
        self.expect_zero(entry["flags"].to_bytes(4, "little"), "section table",
                         entry_offset + SECTION_ENTRY.offsets["flags"], f"flags of section {tag}")
        where = entry_offset + SECTION_ENTRY.offsets["offset"]
        if section.offset % SECTION_ALIGN_BYTES:
            self.fail(f"section {tag} starts at byte {section.offset}, not a multiple of {SECTION_ALIGN_BYTES}",
                      "section table", where)
        if section.offset < table_end:
            self.fail(f"section {tag} starts at byte {section.offset}, inside the header or section table "
                      f"(which end at byte {table_end})", "section table", where)
        if section.end > len(self.data):
            self.fail(f"section {tag} [{section.offset}, {section.end}) runs past the end of the "
                      f"{len(self.data)}-byte file", "section table", entry_offset + SECTION_ENTRY.offsets["bytes"])
        return section

    def check_no_overlap(self, section: _Section, placed: list[_Section]) -> None:
        for other in placed:
            if section.offset < other.end and other.offset < section.end:
                self.fail(f"section {section.tag} [{section.offset}, {section.end}) overlaps section {other.tag} "
                          f"[{other.offset}, {other.end})", "section table",
                          section.entry_offset + SECTION_ENTRY.offsets["offset"])

    # -- GRPH ------------------------------------------------------------------------------------
    def read_model_record(self, graph: _Section) -> dict:
        if graph.bytes < MODEL_RECORD_BYTES:
            self.fail(f"GRPH is {graph.bytes} bytes, shorter than its {MODEL_RECORD_BYTES}-byte model record",
                      "GRPH", graph.offset)
        record = MODEL_RECORD.unpack(self.data, graph.offset)
        at = {name: graph.offset + off for name, off in MODEL_RECORD.offsets.items()}
        if record["record_bytes"] != self.record.size:
            self.fail(f"record_bytes is {record['record_bytes']}, must be {self.record.size} in a version "
                      f"{self.version[0]} file", "GRPH", at["record_bytes"])
        count = record["layer_count"]
        if not 1 <= count <= LAYER_COUNT_MAX:
            self.fail(f"layer_count is {count}, must be in 1..{LAYER_COUNT_MAX}", "GRPH", at["layer_count"])
        expected = MODEL_RECORD_BYTES + count * self.record.size
        if graph.bytes != expected:
            self.fail(f"GRPH is {graph.bytes} bytes; {count} layers need exactly {expected} "
                      f"({MODEL_RECORD_BYTES} + {count} x {self.record.size})", "GRPH", graph.offset)
        for field in ("input_h", "input_w", "input_c"):
            if record[field] < 1:
                self.fail(f"{field} is {record[field]}, must be >= 1", "GRPH", at[field])
        if not 1 <= record["input_bits"] <= 8:
            self.fail(f"input_bits is {record['input_bits']}, must be in 1..8", "GRPH", at["input_bits"])
        if record["output_layer"] != count - 1:
            self.fail(f"output_layer is {record['output_layer']}, must be the last layer, {count - 1}",
                      "GRPH", at["output_layer"])
        self.expect_zero(record["reserved"], "GRPH", at["reserved"], "model record reserved bytes")
        return record

    def read_layer_record(self, graph: _Section, index: int) -> dict:
        offset = graph.offset + MODEL_RECORD_BYTES + index * self.record.size
        record = self.record.unpack(self.data, offset)
        record["index"], record["offset"] = index, offset
        if self.record is LAYER_RECORD_V1:   # the version-2 fields a version-1 record implies
            window = record["pool"] in (POOL_CODES["max"], POOL_CODES["avg"])
            record.update(stride_w=record["stride"], pads=None, depth_multiplier=1, pool_flags=0,
                          decay_shift=0, reset=0, neuron_flags=0, membrane_floor=0,
                          pool_w=record["pool_size"] if window else 0,
                          pool_stride_w=record["pool_stride"] if window else 0, pool_pads=(0, 0, 0, 0),
                          slots=record["slots"] + (0,) * (2 * (SLOT_COUNT - SLOT_COUNT_V1)))
        return record

    def field_at(self, record: dict, field: str, item: int = 0) -> int:
        """Absolute byte offset of `field` (element `item` of a tuple field) in a layer record."""
        offsets = self.record.offsets
        return record["offset"] + (offsets[field] + 4 * item if field in offsets else 0)

    def read_names(self, names: _Section, records: list[dict]) -> list[str]:
        result, seen = [], {}
        for record in records:
            where = f"layer record {record['index']}"
            start, length = record["name_offset"], record["name_bytes"]
            if not 1 <= length <= NAME_BYTES_MAX:
                self.fail(f"{where}: name_bytes is {length}, must be in 1..{NAME_BYTES_MAX}",
                          "GRPH", self.field_at(record, "name_bytes"))
            if start + length > names.bytes:
                self.fail(f"{where}: name [{start}, {start + length}) lies outside NAME ({names.bytes} bytes)",
                          "GRPH", self.field_at(record, "name_offset"))
            raw = self.data[names.offset + start:names.offset + start + length]
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.fail(f"{where}: name {raw!r} is not valid UTF-8 ({exc.reason})", "NAME",
                          names.offset + start + exc.start)
            if name == INPUT_NAME or name in seen:
                other = "the model input's name" if name == INPUT_NAME else f"already used by layer record {seen[name]}"
                self.fail(f"{where}: name {name!r} is {other}; names are unique", "NAME", names.offset + start)
            seen[name] = record["index"]
            result.append(name)
        return result

    def read_meta(self, meta: _Section) -> dict:
        raw = self.data[meta.offset:meta.end]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(f"metadata is not valid UTF-8 ({exc.reason})", "META", meta.offset + exc.start)
        try:
            value = json.loads(text, parse_constant=_reject_json_constant)
        except json.JSONDecodeError as exc:
            self.fail(f"metadata is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                      "META", meta.offset + len(text[:exc.pos].encode("utf-8")))
        except (ValueError, RecursionError) as exc:
            self.fail(f"metadata is not valid JSON: {exc}", "META", meta.offset)
        if not isinstance(value, dict):
            self.fail(f"metadata must be a JSON object, got a JSON {type(value).__name__}", "META", meta.offset)
        try:
            return _json_ready(value, "metadata")   # what the writer would refuse, the reader refuses too
        except FormatError as exc:
            self.fail(str(exc).removesuffix(" (section META)"), "META", meta.offset)
        except RecursionError:
            self.fail("metadata is nested too deeply", "META", meta.offset)

    # -- layer records against each other --------------------------------------------------------
    def check_records(self, records: list[dict], names: list[str]) -> None:
        """Check each layer record's codes, bit widths and inputs (shapes are checked against the Model)."""
        for record, name in zip(records, names):
            record["name"] = name
            self.check_codes(record)
            self.check_inputs(record)

    def describe(self, record: dict) -> str:
        return f"layer record {record['index']} ({record['name']!r})"

    def check_codes(self, record: dict) -> None:
        what = self.describe(record)
        kinds = KIND_CODES if self.version[0] == 2 else KIND_CODES_V1
        kind = _decode(kinds, record["kind"])
        if kind is None:
            self.fail(f"{what}: unknown layer kind code {record['kind']} (known in version {self.version[0]}: "
                      f"{', '.join(f'{v} {k}' for k, v in kinds.items())})", "GRPH", self.field_at(record, "kind"))
        neuron = _decode(NEURON_CODES, record["neuron"])
        if neuron is None:
            self.fail(f"{what}: unknown neuron code {record['neuron']} (known: "
                      f"{', '.join(f'{v} {k}' for k, v in NEURON_CODES.items())})", "GRPH",
                      self.field_at(record, "neuron"))
        record["kind_name"], record["neuron_name"] = kind, neuron
        spatial = kind in SPATIAL_KINDS
        paddings = tuple(PADDING_CODES.values()) if self.version[0] == 2 else (0, 1)
        expected = {"activation_bits": {"relu": L.ACTIVATION_BITS, "if": (1,), "lif": (1,), "none": (32,)}[neuron],
                    "weight_bits": (0,) if kind in WEIGHTLESS_KINDS else L.WEIGHT_BITS,
                    "mid_bits": (2, 4, 8) if kind == "separable2d" else (0,),
                    "leak_shift": (tuple(range(1, L.LEAK_SHIFT_MAX + 1)) if neuron == "lif" and not record["decay_shift"]
                                   else (0,)),
                    "decay_shift": tuple(range(0, L.DECAY_SHIFT_MAX + 1)) if neuron == "lif" else (0,),
                    "reset": tuple(RESET_CODES.values()) if neuron in ("if", "lif") else (0,),
                    "neuron_flags": (0, NEURON_FLAG_FLOOR) if neuron in ("if", "lif") else (0,),
                    "pool": (0,) if kind == "dense" else tuple(POOL_CODES.values()),
                    "padding": paddings if spatial else (0,),
                    "depth_multiplier": (tuple(range(1, L.DEPTH_MULTIPLIER_MAX + 1))
                                         if kind in ("depthwise2d", "separable2d") else (1,))}
        if not spatial:
            expected.update(kernel_h=(1,), kernel_w=(1,), stride=(1,), stride_w=(1,))
        for field, allowed in expected.items():
            if record[field] not in allowed:
                self.fail(f"{what}: {field} is {record[field]}, must be {_one_of(allowed)} for a {kind} layer "
                          f"with neuron {neuron}", "GRPH", self.field_at(record, field))
        if not spatial and any(record["pads"] or ()):
            self.fail(f"{what}: pads are {record['pads']}, must be zero for a {kind} layer", "GRPH",
                      self.field_at(record, "pads"))
        if spatial and not (1 <= record["kernel_h"] <= L.KERNEL_MAX and 1 <= record["kernel_w"] <= L.KERNEL_MAX):
            self.fail(f"{what}: kernel {record['kernel_h']}x{record['kernel_w']} outside 1..{L.KERNEL_MAX}",
                      "GRPH", self.field_at(record, "kernel_h"))
        pool = _decode(POOL_CODES, record["pool"])
        if pool not in ("max", "avg"):
            for field in ("pool_size", "pool_stride", "pool_w", "pool_stride_w"):
                if record[field] != 0:
                    self.fail(f"{what}: {field} is {record[field]}, must be 0 without a max/avg pool",
                              "GRPH", self.field_at(record, field))
            if any(record["pool_pads"]):
                self.fail(f"{what}: pool_pads are {record['pool_pads']}, must be zero without a max/avg pool",
                          "GRPH", self.field_at(record, "pool_pads"))
        allowed_flags = POOL_FLAG_COUNT_INCLUDE_PAD if pool == "avg" else 0
        if record["pool_flags"] & ~allowed_flags:
            self.fail(f"{what}: pool_flags is 0x{record['pool_flags']:x}; only bit 0 (count_include_pad) of an avg "
                      f"pool may be set", "GRPH", self.field_at(record, "pool_flags"))
        record["pool_name"] = pool
        floor = record["membrane_floor"]
        if not (floor <= 0 if record["neuron_flags"] & NEURON_FLAG_FLOOR else floor == 0):
            self.fail(f"{what}: membrane_floor is {floor}, must be <= 0 with neuron_flags bit 0 and 0 without",
                      "GRPH", self.field_at(record, "membrane_floor"))
        in_c, out_c = record["in_shape"][2], record["out_shape"][2]
        kept = {"depthwise2d": in_c * record["depth_multiplier"], "add": in_c}
        if kind in kept and out_c != kept[kind]:
            self.fail(f"{what}: a {kind} layer has {kept[kind]} output channels for {in_c} input channels "
                      f"(depth multiplier {record['depth_multiplier']}), but stores {out_c}", "GRPH",
                      self.field_at(record, "out_shape", 2))
        for reserved in ("reserved0", "reserved1", "reserved2"):
            if reserved in record:
                self.expect_zero(record[reserved], "GRPH", self.field_at(record, reserved), f"{what}: reserved bytes")

    def check_inputs(self, record: dict) -> None:
        what, index = self.describe(record), record["index"]
        count = record["input_count"]
        allowed = {"add": range(2, L.ADD_INPUTS_MAX + 1),
                   "concat": range(1, L.CONCAT_INPUTS_MAX + 1)}.get(record["kind_name"], range(1, 2))
        if count not in allowed:
            self.fail(f"{what}: input_count is {count}, must be {_one_of(tuple(allowed))} for a "
                      f"{record['kind_name']} layer", "GRPH", self.field_at(record, "input_count"))
        for slot, source in enumerate(record["inputs"]):
            where = self.field_at(record, "inputs", slot)
            if slot >= count:
                if source != INPUT_INDEX:
                    self.fail(f"{what}: unused inputs entry {slot} is {source}, must be {INPUT_INDEX}", "GRPH", where)
            elif not INPUT_INDEX <= source < index:
                self.fail(f"{what}: input {slot} refers to layer {source}; a layer reads the model input "
                          f"({INPUT_INDEX}) or an earlier layer (0..{index - 1})", "GRPH", where)

    # -- tensors and the Model -------------------------------------------------------------------
    def tensor_shapes(self, record: dict) -> tuple[dict[str, tuple], set[str]]:
        """Shapes of the slots this layer may have, and which of them are required."""
        kind, neuron = record["kind_name"], record["neuron_name"]
        kh, kw = record["kernel_h"], record["kernel_w"]
        in_h, in_w, cin = record["in_shape"]
        cout = record["out_shape"][2]
        cmid = cin * record["depth_multiplier"]
        shapes = {"input_conv2d": {"weights": (kh, kw, cin, cout), "bias": (cout,)},
                  "conv2d": {"weights": (kh, kw, cin, cout), "bias": (cout,)},
                  "depthwise2d": {"weights": (kh, kw, cmid), "bias": (cmid,)},
                  "separable2d": {"weights": (kh, kw, cmid), "pointwise": (cmid, cout), "bias": (cout,),
                                  "mid_multiplier": (cmid,), "mid_shift": (cmid,)},
                  "dense": {"weights": (in_h * in_w * cin, cout), "bias": (cout,)},
                  "add": {"input_multipliers": (record["input_count"], cin)},
                  "concat": {"input_multipliers": (cout,)}}[kind]
        if neuron == "relu":
            shapes.update(out_multiplier=(cout,), out_shift=(cout,))
        elif neuron in ("if", "lif"):
            shapes.update(threshold=(cout,))
        if record["decay_shift"]:
            shapes.update(decay_multiplier=(cout,))
        required = set(shapes)
        if self.version[0] == 2:
            optional = {"bias": (cout,), "pad_value": (cin,), "out_zero_point": (cout,), "pool_sign": (cout,),
                        "sources": (cout, 2)}
            for slot in optional_slots(kind, neuron, record["pool_name"]):
                if slot in optional:
                    shapes[slot] = optional[slot]
        return shapes, required

    def read_tensors(self, record: dict, tens: _Section) -> dict[str, np.ndarray]:
        what = self.describe(record)
        shapes, required = self.tensor_shapes(record)
        arrays = {}
        for slot_index in range(SLOT_COUNT if self.version[0] == 2 else SLOT_COUNT_V1):
            offset, length = record["slots"][2 * slot_index:2 * slot_index + 2]
            where = self.field_at(record, "slots", 2 * slot_index)
            slot = SLOT_NAMES[slot_index] if slot_index < len(SLOT_NAMES) else "reserved"
            if slot not in shapes or (slot not in required and (offset, length) == (0, 0)):
                if (offset, length) != (0, 0):
                    self.fail(f"{what}: tensor slot {slot_index} ({slot}) is unused by a {record['kind_name']}/"
                              f"{record['neuron_name']} layer and must be {{0, 0}}, got {{{offset}, {length}}}",
                              "GRPH", where)
                continue
            shape = shapes[slot]
            count = math.prod(shape)
            bits = record["weight_bits"] if slot in PACKED_SLOTS else 32
            needed = packed_bytes(count, bits)
            element = f"{bits}-bit packed" if slot in PACKED_SLOTS else "int32"
            if length != needed:
                self.fail(f"{what}: tensor slot {slot_index} ({slot}) is {length} bytes; shape {shape} of "
                          f"{element} values needs exactly {needed}", "GRPH", where + 4)
            if offset % TENSOR_ALIGN_BYTES:
                self.fail(f"{what}: tensor slot {slot_index} ({slot}) starts at TENS+{offset}, not a multiple "
                          f"of {TENSOR_ALIGN_BYTES}", "GRPH", where)
            if offset + length > tens.bytes:
                self.fail(f"{what}: tensor slot {slot_index} ({slot}) [{offset}, {offset + length}) lies outside "
                          f"TENS ({tens.bytes} bytes)", "GRPH", where)
            raw = self.data[tens.offset + offset:tens.offset + offset + length]
            if slot in PACKED_SLOTS:
                values, tail_clean = unpack_signed(raw, bits, count)
                if not tail_clean:
                    self.fail(f"{what}: {slot}: unused high bits of the last packed byte must be zero",
                              "TENS", tens.offset + offset + length - 1)
                arrays[slot] = values.reshape(shape)
            else:
                arrays[slot] = np.frombuffer(raw, dtype="<i4").astype(np.int32).reshape(shape)
        return arrays

    def build_layer(self, record: dict, names: list[str], tens: _Section):
        arrays = self.read_tensors(record, tens)
        kind, neuron, pool = record["kind_name"], record["neuron_name"], record["pool_name"]
        inputs = tuple(INPUT_NAME if i == INPUT_INDEX else names[i] for i in record["inputs"][:record["input_count"]])
        fields = dict(name=record["name"], inputs=inputs, neuron=neuron, pool=pool, **arrays)
        if neuron == "relu":
            fields["activation_bits"] = record["activation_bits"]
        if neuron == "lif":
            fields.update(leak_shift=record["leak_shift"], decay_shift=record["decay_shift"])
        if neuron in ("if", "lif"):
            fields["reset"] = _decode(RESET_CODES, record["reset"])
            if record["neuron_flags"] & NEURON_FLAG_FLOOR:
                fields["membrane_floor"] = record["membrane_floor"]
        if pool in ("max", "avg"):
            fields.update(pool_size=(record["pool_size"], record["pool_w"]),
                          pool_stride=(record["pool_stride"], record["pool_stride_w"]),
                          pool_padding=tuple(record["pool_pads"]),
                          pool_count_include_pad=bool(record["pool_flags"] & POOL_FLAG_COUNT_INCLUDE_PAD))
        if kind in SPATIAL_KINDS:
            mode = _decode(PADDING_CODES, record["padding"])
            fields.update(stride=(record["stride"], record["stride_w"]),
                          padding=tuple(record["pads"]) if mode == "explicit" else mode)
        if kind in ("depthwise2d", "separable2d"):
            fields["depth_multiplier"] = record["depth_multiplier"]
        if kind not in WEIGHTLESS_KINDS:
            fields["weight_bits"] = record["weight_bits"]
        if kind == "separable2d":
            fields["mid_bits"] = record["mid_bits"]
        return L.LAYER_CLASSES[kind](**fields)

    def build_model(self, model_record: dict, records: list[dict], layer_objects: list, metadata: dict):
        from .model import Model

        input_shape = (model_record["input_h"], model_record["input_w"], model_record["input_c"])
        try:
            model = Model(layers=layer_objects, input_shape=input_shape, input_bits=model_record["input_bits"],
                          metadata=metadata)
        except ModelError as exc:
            record = _record_named_in(str(exc), records)
            if record is None:
                self.fail(f"the model is inconsistent: {exc}", "GRPH", records[0]["offset"] - MODEL_RECORD_BYTES)
            self.fail(f"{self.describe(record)} is inconsistent: {exc}", "GRPH", record["offset"])
        for layer, record in zip(model.layers, records):
            if record["pads"] is not None and layer.kind in SPATIAL_KINDS:
                self.check_stored_shape(record, "pads", layer.pads, f"the pads of its {layer.padding!r} padding")
            self.check_stored_shape(record, "in_shape", layer.input_shapes[0], "the output shape of its first input")
            self.check_stored_shape(record, "out_shape", layer.output_shape,
                                    "the shape recomputed from its input and geometry")
        return model

    def check_stored_shape(self, record: dict, field: str, actual: tuple, what: str) -> None:
        stored = tuple(record[field])
        if stored != tuple(actual):
            self.fail(f"{self.describe(record)}: stored {field} {stored} differs from {tuple(actual)}, {what}",
                      "GRPH", self.field_at(record, field))


def _decode(codes: dict, value: int):
    """The name of a code (None when unknown; None is also POOL_CODES' name for 0, which callers handle)."""
    for name, code in codes.items():
        if code == value:
            return name
    return None


def _one_of(allowed: tuple) -> str:
    if len(allowed) == 1:
        return str(allowed[0])
    if allowed == tuple(range(allowed[0], allowed[-1] + 1)) and len(allowed) > 3:
        return f"in {allowed[0]}..{allowed[-1]}"
    return "one of " + ", ".join(map(str, allowed))


def _record_named_in(message: str, records: list[dict]) -> dict | None:
    """The layer record whose name a ModelError message quotes (the longest match wins)."""
    named = [r for r in records if f"{r['name']!r}" in message]
    return max(named, key=lambda r: len(r["name"]), default=None)


def _reject_json_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _describe_foreign(data: bytes) -> str:
    expected = f"an .esnn file starts with {MAGIC!r}"
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        return f"truncated: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header"
    if data.startswith(b"\x89ESN\n\x1a\n"):
        return (f"the magic's \\r\\n became \\n: the file was mangled by a text-mode transfer; "
                f"copy it in binary mode ({expected})")
    for signature, what in FOREIGN_SIGNATURES:
        if data.startswith(signature):
            return f"not an .esnn file: it looks like {what} (starts with {data[:8]!r}); {expected}"
    return f"not an .esnn file: it starts with {data[:8]!r}; {expected}"


# -- files ----------------------------------------------------------------------------------------

def save(model, path: str | os.PathLike) -> None:
    """Write `model` to `path` as an .esnn file (through a temporary file, so a failed write leaves no half file)."""
    data = write_model(model)
    path = os.fspath(path)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load(path: str | os.PathLike):
    """The Model in the .esnn file at `path`; FormatError (naming the file, section and offset) if malformed."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return read_model(data)
    except FormatError as exc:
        error = FormatError(f"{os.fspath(path)}: {exc}")
        error.section, error.offset = exc.section, exc.offset
        raise error from None


__all__ = ["write_model", "read_model", "save", "load", "MAGIC", "VERSION_MAJOR", "VERSION_MINOR"]
