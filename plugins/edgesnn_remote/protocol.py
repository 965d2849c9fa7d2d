"""The host side of the device-runner link protocol (docs/protocol.md): frames, checksums, payloads.

Pure functions over bytes; the transports (transport.py) move them and the device (device.py)
drives the requests. The runner's side is native/runner/protocol.zig and session.zig.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = 0x504E5345               # b"ESNP" as it appears on the link
VERSION = 2   # 2: RUN_TRACE / TRACE
HEADER = struct.Struct("<IHHIIII")   # magic, version, type, sequence, length, payload_crc, header_crc
HEADER_BYTES = HEADER.size           # 24

HELLO, LOAD, RUN, STATS, RESET, RUN_TRACE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
INFO, LOADED, RESULT, STATS_REPLY, OK, TRACE, ERROR = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0xFF
REPLY_OF = {HELLO: INFO, LOAD: LOADED, RUN: RESULT, STATS: STATS_REPLY, RESET: OK, RUN_TRACE: TRACE}
TYPE_NAMES = {HELLO: "HELLO", LOAD: "LOAD", RUN: "RUN", STATS: "STATS", RESET: "RESET", RUN_TRACE: "RUN_TRACE",
              INFO: "INFO", LOADED: "LOADED", RESULT: "RESULT", STATS_REPLY: "STATS", OK: "OK", TRACE: "TRACE",
              ERROR: "ERROR"}

# error codes of an ERROR reply (docs/protocol.md)
ERROR_CODES = {1: "header", 2: "version", 3: "oversized", 4: "checksum", 5: "sequence", 6: "truncated",
               7: "unknown_type", 8: "state", 9: "payload", 10: "fit", 11: "engine"}
FIT = 10
STATUS_INPUT = 12    # ESNN_ERROR_INPUT (native/include/edgesnn.h): an engine ERROR "engine status 12 (...)"

RUN_REQUEST = struct.Struct("<IIII")         # batch, input_timesteps, timesteps, flags (RUN_TRACE: margin)
LOADED_REPLY = struct.Struct("<QQI4I3I")     # program_bytes, arena_bytes, layers, H W C bits, OH OW OC
INFO_FIXED = struct.Struct("<HHIQIIIIIII")   # version, reserved, abi, memory, frame bytes, layers, channels,
#                                              timesteps, kinds mask, weight bits mask, activation bits mask
STATS_REPLY_FIELDS = ("frames_received", "frames_rejected", "loads", "runs", "errors_sent", "bytes_received",
                      "bytes_sent", "run_ns_total")
# bit k - 1 of INFO's kinds mask is the file format's kind k (native/src/limits.zig layer_kinds_mask)
LAYER_KIND_BITS = ("input_conv2d", "conv2d", "depthwise2d", "separable2d", "dense", "add", "concat")


class ProtocolError(Exception):
    """A frame that breaks the protocol (bad magic, checksum, version, length, sequence)."""


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


_HEAD20 = struct.Struct("<IHHIII")
_U32 = struct.Struct("<I")


def encode(kind: int, sequence: int, payload=b"", *, version: int = VERSION) -> bytes:
    """One frame: header then payload."""
    head = _HEAD20.pack(MAGIC, version, kind, sequence & 0xFFFFFFFF, len(payload), zlib.crc32(payload))
    return head + _U32.pack(zlib.crc32(head)) + payload


def parse_header(data: bytes, payload_bytes_max: int) -> tuple[int, int, int, int]:
    """(type, sequence, length, payload_crc) of a checked 24-byte header; ProtocolError says what is wrong."""
    magic, version, kind, sequence, length, payload_crc, header_crc = HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic 0x{magic:08x} (expected 0x{MAGIC:08x}, b'ESNP'): not a runner frame")
    if zlib.crc32(data[:20]) != header_crc:
        raise ProtocolError("header CRC-32 mismatch: the reply header was corrupted on the link")
    if version != VERSION:
        raise ProtocolError(f"the device speaks protocol version {version}; this host speaks {VERSION}")
    if length > payload_bytes_max:
        raise ProtocolError(f"reply payload of {length:,} bytes exceeds the limit of {payload_bytes_max:,} bytes")
    return kind, sequence, length, payload_crc


@dataclass(frozen=True)
class Header:
    version: int
    kind: int
    sequence: int
    length: int
    payload_crc: int


def decode_header(data: bytes, payload_bytes_max: int) -> Header:
    """Check and parse a 24-byte header into a Header; ProtocolError says what is wrong."""
    if len(data) != HEADER_BYTES:
        raise ProtocolError(f"truncated header: {len(data)} of {HEADER_BYTES} bytes")
    kind, sequence, length, payload_crc = parse_header(data, payload_bytes_max)
    return Header(VERSION, kind, sequence, length, payload_crc)


def check_payload(header: Header, payload: bytes) -> None:
    if crc32(payload) != header.payload_crc:
        raise ProtocolError(f"payload CRC-32 mismatch ({len(payload):,} bytes of "
                            f"{TYPE_NAMES.get(header.kind, hex(header.kind))}): corrupted on the link")


def decode_error(payload: bytes) -> tuple[str, int, str]:
    """(code name, request type, message) of an ERROR payload."""
    if len(payload) < 8:
        raise ProtocolError(f"ERROR payload of {len(payload)} bytes, at least 8 expected")
    code, request = struct.unpack_from("<II", payload)
    return ERROR_CODES.get(code, f"code {code}"), request, payload[8:].decode("utf-8", "replace")


def decode_info(payload: bytes) -> dict:
    if len(payload) < INFO_FIXED.size + 64:
        raise ProtocolError(f"INFO payload of {len(payload)} bytes, {INFO_FIXED.size + 64} expected")
    (version, _, abi, memory, frame_bytes, layers, channels, timesteps, kinds, weight_bits,
     activation_bits) = INFO_FIXED.unpack_from(payload)
    text = lambda raw: raw.split(b"\0", 1)[0].decode("ascii", "replace")  # noqa: E731
    return {"protocol_version": version, "abi_version": abi, "memory_bytes": memory, "frame_bytes_max": frame_bytes,
            "layers_max": layers, "channels_max": channels, "timesteps_max": timesteps,
            "layer_kinds": tuple(k for i, k in enumerate(LAYER_KIND_BITS) if kinds >> i & 1),
            "weight_bits": tuple(b for b in range(1, 9) if weight_bits >> b & 1),
            "activation_bits": tuple(b for b in range(1, 9) if activation_bits >> b & 1),
            "architecture": text(payload[44:76]), "engine_version": text(payload[76:108])}


def decode_loaded(payload: bytes) -> dict:
    if len(payload) != LOADED_REPLY.size:
        raise ProtocolError(f"LOADED payload of {len(payload)} bytes, {LOADED_REPLY.size} expected")
    program, arena, layers, h, w, c, bits, oh, ow, oc = LOADED_REPLY.unpack(payload)
    return {"program_bytes": program, "arena_bytes": arena, "layer_count": layers, "input_shape": (h, w, c),
            "input_bits": bits, "output_shape": (oh, ow, oc)}


def decode_stats(payload: bytes) -> dict:
    if len(payload) != 8 * len(STATS_REPLY_FIELDS):
        raise ProtocolError(f"STATS payload of {len(payload)} bytes, {8 * len(STATS_REPLY_FIELDS)} expected")
    return dict(zip(STATS_REPLY_FIELDS, struct.unpack(f"<{len(STATS_REPLY_FIELDS)}Q", payload)))
