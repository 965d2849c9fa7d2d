"""Regenerate the malformed .esnn corpus in this folder and its MANIFEST.json.

    python tests/data/malformed/make_corpus.py

Every reader (edgesnn/format.py, native/src/loader.zig) must refuse each file here except
`valid.esnn`, which must load.  MANIFEST.json gives, per file, what the Python reader reports:
the section, the byte offset and a phrase of the message.  `python_only` marks files only the
Python reader can refuse (the native loader never parses the JSON in META).  Offsets of value
errors found while rebuilding the Model (`threshold_zero`, `overflow`) are the layer record's.
"""

from __future__ import annotations

import json
import pathlib
import struct
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from test_format import (  # noqa: E402  (the layout helpers are written from docs/format.md)
    assemble, every_kind_model, field, foreign_files, parts_of, patch, record_offset, sections, slot_ref,
)


def corpus() -> dict[str, dict]:
    """name -> {"data": bytes, "section", "offset", "message", "python_only"}; section None for the valid file."""
    valid = every_kind_model(4, metadata={"labels": list("abcde")}).to_bytes()
    table = sections(valid)
    tens, names = table["TENS"][0], table["NAME"][0]
    cases = {"valid": (valid, None, None, "")}

    def add(name, data, section, offset, message, python_only=False):
        cases[name] = (data, section, offset, message, python_only)

    foreign = foreign_files()
    add("empty", b"", "header", 0, "empty")
    add("foreign_png", foreign["PNG"], "header", 0, "not an .esnn file")
    add("foreign_zip", foreign["zip"], "header", 0, "not an .esnn file")
    add("foreign_onnx", foreign["protobuf"], "header", 0, "not an .esnn file")
    add("text_mode_mangled", valid.replace(b"\r\n", b"\n"), "header", 0, "text-mode")
    add("truncated_in_header", valid[:40], "header", 40, "truncated")
    add("truncated_in_body", valid[:len(valid) // 2], "header", 16, "truncated")
    add("trailing_bytes", valid + bytes(16), "header", 16, "trailing bytes")
    add("version_3", patch(valid, 8, "H", 3), "header", 8, "version 3.0 is not supported")
    add("header_crc", patch(valid, 24, "I", 5, fix=False), "header", 36, "header checksum")
    add("body_crc", patch(valid, valid.index(b"conv_in"), "B", ord("C"), fix=False), "header", 32, "body checksum")
    add("header_reserved", patch(valid, 50, "B", 1), "header", 50, "reserved")
    add("section_count_0", patch(valid, 24, "I", 0), "header", 24, "section_count is 0")
    add("section_misaligned", patch(valid, 64 + 16 + 8, "I", tens + 8), "section table", 88, "multiple of 16")
    add("section_overlap", patch(valid, 64 + 32 + 8, "I", table["GRPH"][0]), "section table", 104, "overlaps")
    add("section_past_end", patch(valid, 64 + 48 + 12, "I", 1 << 20), "section table", 124, "past the end")
    add("section_in_table", patch(valid, 64 + 8, "I", 64), "section table", 72, "inside the header")
    add("section_missing", patch(valid, 64 + 16, "4s", b"TENZ"), "section table", 64, "TENS missing")
    add("section_twice", patch(valid, 64 + 16, "4s", b"GRPH"), "section table", 80, "appears twice")
    grph = table["GRPH"][0]
    add("layer_count_0", patch(valid, grph, "I", 0), "GRPH", grph, "layer_count is 0")
    add("grph_length", patch(valid, grph, "I", 7), "GRPH", grph, "need exactly")
    add("input_bits_9", patch(valid, grph + 16, "I", 9), "GRPH", grph + 16, "input_bits is 9")
    add("kind_unknown", patch(valid, field(valid, 0, "kind"), "I", 8), "GRPH", field(valid, 0, "kind"),
        "unknown layer kind code 8")
    add("neuron_unknown", patch(valid, field(valid, 1, "neuron"), "I", 9), "GRPH", field(valid, 1, "neuron"),
        "unknown neuron code 9")
    add("input_forward", patch(valid, field(valid, 2, "inputs"), "i", 5), "GRPH", field(valid, 2, "inputs"),
        "refers to layer 5")
    add("input_self", patch(valid, field(valid, 3, "inputs"), "i", 3), "GRPH", field(valid, 3, "inputs"),
        "refers to layer 3")
    add("in_shape_mismatch", patch(valid, field(valid, 3, "in_shape"), "I", 5), "GRPH",
        field(valid, 3, "in_shape"), "in_shape (5, 4, 6)")
    add("out_shape_mismatch", patch(valid, field(valid, 2, "out_shape"), "II", 5, 5), "GRPH",
        field(valid, 2, "out_shape"), "differs from (4, 4, 6)")
    add("weight_bits_3", patch(valid, field(valid, 2, "weight_bits"), "I", 3), "GRPH",
        field(valid, 2, "weight_bits"), "weight_bits is 3")
    add("leak_shift_32", patch(valid, field(valid, 1, "leak_shift"), "I", 32), "GRPH",
        field(valid, 1, "leak_shift"), "leak_shift is 32")
    at = field(valid, 2, "slots", 0)
    offset, length = slot_ref(valid, 2, "weights")
    add("slot_misaligned", patch(valid, at, "I", offset + 4), "GRPH", at, "not a multiple of 16")
    add("slot_length", patch(valid, at + 4, "I", length + 1), "GRPH", at + 4, "needs exactly")
    add("slot_outside_tens", patch(valid, at, "I", 1 << 24), "GRPH", at, "outside TENS")
    at = field(valid, 2, "slots", 2)
    add("unused_slot", patch(valid, at, "II", 0, 16), "GRPH", at, "is unused")
    threshold_at = tens + slot_ref(valid, 2, "threshold")[0]
    add("threshold_zero", patch(valid, threshold_at, "i", 0), "GRPH", record_offset(valid, 2), "threshold")
    bias_at = tens + slot_ref(valid, 7, "bias")[0]
    add("overflow", patch(valid, bias_at, "i", 2**31 - 1), "GRPH", record_offset(valid, 7), "beyond int32")
    name_at = names + struct.unpack_from("<I", valid, field(valid, 2, "name_offset"))[0]
    add("name_not_utf8", patch(valid, name_at, "B", 0xFF), "NAME", name_at, "not valid UTF-8")
    add("name_outside", patch(valid, field(valid, 3, "name_offset"), "I", 1000), "GRPH",
        field(valid, 3, "name_offset"), "outside NAME")
    v2_cases(valid, tens, add)
    v1_cases(add)
    meta = [(tag, payload if tag != b"META" else b'{"labels": [') for tag, payload in parts_of(valid)]
    bad_meta = assemble(meta)
    add("meta_not_json", bad_meta, "META", sections(bad_meta)["META"][0] + 12, "not valid JSON", python_only=True)
    return {name: dict(zip(("data", "section", "offset", "message", "python_only"), case + (False,) * (5 - len(case))))
            for name, case in cases.items()}


def v2_cases(valid: bytes, tens: int, add) -> None:
    """The fields and tensors new in version 2 (every_kind_model's layers: 0 conv_in, 1 sep, 2 dw, 3 pw,
    4 residual, 5 avg, 6 explicit, 7 cat, 8 gap, 9 classes)."""
    def tensor_at(index, slot, item=0):
        return tens + slot_ref(valid, index, slot)[0] + 4 * item

    add("pad_value_above_input_max", patch(valid, tensor_at(0, "pad_value", 1), "i", 128), "GRPH",
        record_offset(valid, 0), "pad_value")
    add("zero_point_above_max", patch(valid, tensor_at(3, "out_zero_point", 2), "i", 4), "GRPH",
        record_offset(valid, 3), "out_zero_point")
    add("pool_sign_zero", patch(valid, tensor_at(0, "pool_sign", 1), "i", 0), "GRPH", record_offset(valid, 0),
        "pool_sign")
    add("depth_multiplier_9", patch(valid, field(valid, 1, "depth_multiplier"), "I", 9), "GRPH",
        field(valid, 1, "depth_multiplier"), "depth_multiplier is 9")
    add("stride_w_0", patch(valid, field(valid, 2, "stride_w"), "I", 0), "GRPH", record_offset(valid, 2), "stride")
    add("pads_window_without_tap", patch(valid, field(valid, 6, "pads"), "I", 3), "GRPH", record_offset(valid, 6),
        "explicit")
    add("pads_disagree_with_same", patch(valid, field(valid, 5, "pads", 1), "I", 2), "GRPH", field(valid, 5, "pads"),
        "pads")
    add("pool_pads_window_without_tap", patch(valid, field(valid, 7, "pool_pads", 0), "I", 3), "GRPH",
        record_offset(valid, 7), "cat")
    add("pool_flags_on_max", patch(valid, field(valid, 7, "pool_flags"), "I", 1), "GRPH",
        field(valid, 7, "pool_flags"), "pool_flags")
    add("concat_source_input", patch(valid, tensor_at(7, "sources", 0), "i", 2), "GRPH", record_offset(valid, 7),
        "sources")
    add("concat_source_channel", patch(valid, tensor_at(7, "sources", 1), "i", 8), "GRPH", record_offset(valid, 7),
        "sources")
    add("record_reserved_v2", patch(valid, field(valid, 4, "reserved2"), "B", 1), "GRPH",
        field(valid, 4, "reserved2"), "reserved")
    at = field(valid, 4, "slots", 2 * 13)
    add("slot_13_used", patch(valid, at, "II", 0, 16), "GRPH", at, "is unused")
    # the if/lif dynamics at 284..300 (layer 1 sep is a lif with a shift leak, 2 dw an if, 3 pw a relu)
    no_leak = patch(valid, field(valid, 1, "leak_shift"), "I", 0)   # a decay replaces the shift leak
    add("decay_shift_31", patch(no_leak, field(valid, 1, "decay_shift"), "I", 31), "GRPH",
        field(valid, 1, "decay_shift"), "decay_shift is 31")
    add("decay_shift_on_if", patch(valid, field(valid, 2, "decay_shift"), "I", 2), "GRPH",
        field(valid, 2, "decay_shift"), "decay_shift is 2")
    add("reset_3", patch(valid, field(valid, 2, "reset"), "I", 3), "GRPH", field(valid, 2, "reset"), "reset is 3")
    add("reset_on_relu", patch(valid, field(valid, 3, "reset"), "I", 1), "GRPH", field(valid, 3, "reset"),
        "reset is 1")
    add("neuron_flags_2", patch(valid, field(valid, 2, "neuron_flags"), "I", 2), "GRPH",
        field(valid, 2, "neuron_flags"), "neuron_flags is 2")
    add("membrane_floor_without_flag", patch(valid, field(valid, 2, "membrane_floor"), "i", -3), "GRPH",
        field(valid, 2, "membrane_floor"), "membrane_floor is -3")


def v1_cases(add) -> None:
    """Version-1 files (256-byte records, written by edgesnn 0.1) with what version 1 cannot hold."""
    valid = (HERE.parent / "v1" / "every_kind_v1.esnn").read_bytes()
    grph = sections(valid)["GRPH"][0]

    def at(index, offset):
        return grph + 64 + 256 * index + offset

    add("v1_kind_concat", patch(valid, at(3, 0), "I", 7), "GRPH", at(3, 0), "unknown layer kind code 7")
    add("v1_padding_explicit", patch(valid, at(0, 72), "I", 2), "GRPH", at(0, 72), "padding is 2")
    add("v1_record_bytes_384", patch(valid, grph + 24, "I", 384), "GRPH", grph + 24, "record_bytes is 384")
    add("v1_reserved_slot_9", patch(valid, at(1, 128 + 8 * 9), "II", 0, 16), "GRPH", at(1, 128 + 8 * 9), "unused")
    add("v1_reserved_104", patch(valid, at(2, 104), "B", 1), "GRPH", at(2, 104), "reserved")


def main() -> None:
    for old in HERE.glob("*.esnn"):
        old.unlink()
    manifest = {}
    for name, case in corpus().items():
        (HERE / f"{name}.esnn").write_bytes(case.pop("data"))
        manifest[f"{name}.esnn"] = case
    (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(manifest)} files to {HERE}")


if __name__ == "__main__":
    main()
