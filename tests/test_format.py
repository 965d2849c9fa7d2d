"""The .esnn file (docs/format.md): exact round trips, the packed layout, and a corpus of malformed files.

The layout constants and the little parser below are written from docs/format.md, not taken from
edgesnn/format.py, so these tests check the writer against the document as well as the reader.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import struct
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgesnn as es
from edgesnn import format as F
from edgesnn import layers as L

# -- the layout, from docs/format.md --------------------------------------------------------------

MAGIC = b"\x89ESN\r\n\x1a\n"
HEADER_FIELDS = {"magic": 0, "version_major": 8, "version_minor": 10, "header_bytes": 12, "file_bytes": 16,
                 "section_count": 24, "flags": 28, "body_crc32": 32, "header_crc32": 36, "reserved": 40}
MODEL_FIELDS = {"layer_count": 0, "input_h": 4, "input_w": 8, "input_c": 12, "input_bits": 16,
                "output_layer": 20, "record_bytes": 24, "reserved": 28}
LAYER_FIELDS = {"kind": 0, "neuron": 4, "name_offset": 8, "name_bytes": 12, "input_count": 16, "inputs": 20,
                "in_shape": 36, "out_shape": 48, "kernel_h": 60, "kernel_w": 64, "stride": 68, "padding": 72,
                "pool": 76, "pool_size": 80, "pool_stride": 84, "weight_bits": 88, "activation_bits": 92,
                "mid_bits": 96, "leak_shift": 100, "stride_w": 104, "pads": 108, "depth_multiplier": 124,
                "slots": 128, "pool_w": 256, "pool_stride_w": 260, "pool_pads": 264, "pool_flags": 280,
                "decay_shift": 284, "reset": 288, "neuron_flags": 292, "membrane_floor": 296, "reserved2": 300}
RECORD_BYTES = 384          # version 2; version 1 records are 256 bytes (slots 0..9, reserved 104..128, 208..256)
SLOTS = {"weights": 0, "pointwise": 1, "bias": 2, "out_multiplier": 3, "out_shift": 4, "threshold": 5,
         "mid_multiplier": 6, "mid_shift": 7, "input_multipliers": 8, "pad_value": 9, "out_zero_point": 10,
         "pool_sign": 11, "sources": 12, "decay_multiplier": 13}
KIND_CODE = {"input_conv2d": 1, "conv2d": 2, "depthwise2d": 3, "separable2d": 4, "dense": 5, "add": 6,
             "concat": 7}
NEURON_CODE = {"none": 0, "relu": 1, "if": 2, "lif": 3}


def u32(data: bytes, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]


def sections(data: bytes) -> dict[str, tuple[int, int]]:
    """tag -> (offset, bytes), parsed from the section table as the document describes it."""
    count = u32(data, 24)
    out = {}
    for i in range(count):
        tag, _flags, offset, length = struct.unpack_from("<4sIII", data, 64 + 16 * i)
        out[tag.decode("ascii")] = (offset, length)
    return out


def record_offset(data: bytes, index: int) -> int:
    """Byte offset of layer record `index` in the file."""
    return sections(data)["GRPH"][0] + 64 + RECORD_BYTES * index


def field(data: bytes, index: int, name: str, item: int = 0) -> int:
    """Byte offset of field `name` (element `item` of an array field) of layer record `index`."""
    return record_offset(data, index) + LAYER_FIELDS[name] + 4 * item


def slot_ref(data: bytes, index: int, slot: str) -> tuple[int, int]:
    """(offset in TENS, bytes) of a tensor slot of layer record `index`."""
    return struct.unpack_from("<II", data, field(data, index, "slots", 2 * SLOTS[slot]))


def fix_crcs(data: bytes) -> bytes:
    """Recompute both CRC-32s so that a deliberate change reaches the deeper checks."""
    out = bytearray(data)
    struct.pack_into("<I", out, 32, zlib.crc32(bytes(out[64:])))
    struct.pack_into("<I", out, 36, zlib.crc32(bytes(out[:36])))
    return bytes(out)


def patch(data: bytes, offset: int, fmt: str, *values, fix: bool = True) -> bytes:
    """`data` with struct `fmt` packed at `offset` (and CRCs fixed up unless fix=False)."""
    out = bytearray(data)
    struct.pack_into("<" + fmt, out, offset, *values)
    return fix_crcs(bytes(out)) if fix else bytes(out)


def assemble(parts: list[tuple[bytes, bytes]], version=(2, 0), offsets=None) -> bytes:
    """An .esnn file from (tag, payload) sections, laid out as the document says (a second, independent writer)."""
    table_end = 64 + 16 * len(parts)
    position, table, body_at = -(-table_end // 16) * 16, b"", []
    for i, (tag, payload) in enumerate(parts):
        offset = offsets[i] if offsets else position
        body_at.append(offset)
        table += struct.pack("<4sIII", tag, 0, offset, len(payload))
        position = -(-(offset + len(payload)) // 16) * 16
    file_bytes = max(o + len(p) for o, (_, p) in zip(body_at, parts))
    out = bytearray(file_bytes)
    out[64:table_end] = table
    for offset, (_, payload) in zip(body_at, parts):
        out[offset:offset + len(payload)] = payload
    struct.pack_into("<8sHHIQII", out, 0, MAGIC, version[0], version[1], 64, file_bytes, len(parts), 0)
    return fix_crcs(bytes(out))


def parts_of(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(tag.encode(), data[o:o + n]) for tag, (o, n) in sections(data).items()]


def unpack_by_hand(raw: bytes, bits: int, count: int) -> list[int]:
    """Element i in bits [(i*b) mod 8, +b) of byte floor(i*b/8), two's complement (the document's words)."""
    values = []
    for i in range(count):
        byte = raw[(i * bits) // 8]
        code = (byte >> ((i * bits) % 8)) & ((1 << bits) - 1)
        values.append(code - (1 << bits) if code >= 1 << (bits - 1) else code)
    return values


# -- models ---------------------------------------------------------------------------------------

def every_kind_model(weight_bits: int = 4, seed: int = 0, metadata=None) -> es.Model:
    """All seven kinds, all four neurons, every pool, strides 1 and 2 (and rectangular), every padding
    (same, valid, explicit), pad values, a depth multiplier, zero points, a min pool, a residual add
    with a bias, a concat with a source map and an average pool that excludes its padding."""
    rng = np.random.default_rng(seed)
    lo, hi = L.signed_range(weight_bits)

    def w(*shape):
        return rng.integers(lo, hi + 1, shape)

    return es.Model([
        L.InputConv2D(name="conv_in", weights=w(3, 3, 2, 4), bias=rng.integers(-40, 40, 4), weight_bits=weight_bits,
                      out_multiplier=rng.integers(1, 9, 4), out_shift=rng.integers(2, 6, 4), activation_bits=4,
                      pool="max", pool_size=2, pool_stride=2, pad_value=[3, 100], pool_sign=[1, -1, 1, 1]),
        L.Separable2D(name="sep", weights=w(3, 3, 8), pointwise=w(8, 6), bias=rng.integers(-9, 9, 6),
                      weight_bits=weight_bits, mid_bits=4, mid_multiplier=rng.integers(1, 4, 8),
                      mid_shift=rng.integers(0, 3, 8), depth_multiplier=2, neuron="lif",
                      threshold=rng.integers(1, 20, 6), leak_shift=3),
        L.Depthwise2D(name="dw", weights=w(3, 3, 6), bias=rng.integers(-5, 5, 6), weight_bits=weight_bits,
                      stride=2, padding="valid", neuron="if", threshold=rng.integers(1, 9, 6)),
        L.Conv2D(name="pw", weights=w(1, 1, 6, 6), weight_bits=weight_bits, out_multiplier=3, out_shift=1,
                 activation_bits=2, out_zero_point=[0, 1, 2, 3, 1, 0]),
        L.Add(name="residual", inputs=("dw", "pw"), input_multipliers=rng.integers(-3, 7, (2, 6)),
              bias=rng.integers(-4, 4, 6), out_multiplier=5, out_shift=3, activation_bits=1),
        L.Conv2D(name="avg", weights=w(2, 2, 6, 8), weight_bits=weight_bits, padding="same", pool="avg",
                 pool_size=2, pool_stride=1, out_multiplier=1, out_shift=4),
        L.Conv2D(name="explicit", weights=w(3, 2, 8, 8), weight_bits=weight_bits, stride=(2, 1),
                 padding=(1, 2, 0, 1), pad_value=rng.integers(0, 256, 8), pool="avg", pool_size=(2, 3),
                 pool_stride=(1, 2), pool_padding=(1, 0, 1, 1), out_multiplier=1, out_shift=5),
        L.Concat(name="cat", inputs=("explicit", "explicit"), sources=[(0, 7), (1, 0), (0, 1), (1, 5), (0, 3)],
                 input_multipliers=[1, -2, 3, 1, 2], bias=[0, 4, -3, 0, 1], out_multiplier=1, out_shift=1,
                 activation_bits=8, pool="max", pool_size=3, pool_stride=2, pool_padding=(1, 1, 1, 1)),
        L.Conv2D(name="gap", weights=w(1, 1, 5, 8), weight_bits=weight_bits, pool="global_avg", neuron="if",
                 threshold=100),
        L.Dense(name="classes", weights=w(8, 5), bias=rng.integers(-1000, 1000, 5), weight_bits=weight_bits,
                neuron="none"),
    ], input_shape=(18, 18, 2), input_bits=7, metadata=metadata)


def wide_model(weight_bits: int) -> es.Model:
    """Weights dominate: 3x3x32x64 conv + a 64-> 64 dense; for the packed-size assertions."""
    rng = np.random.default_rng(1)
    lo, hi = L.signed_range(weight_bits)
    return es.Model([
        L.InputConv2D(name="c", weights=rng.integers(lo, hi + 1, (3, 3, 32, 64)), weight_bits=weight_bits,
                      pool="global_avg", out_shift=12),
        L.Dense(name="d", weights=rng.integers(lo, hi + 1, (64, 64)), weight_bits=weight_bits, neuron="none"),
    ], input_shape=(4, 4, 32), input_bits=2)


def init_fields(layer) -> dict:
    return {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer) if f.init}


def assert_same_model(a: es.Model, b: es.Model) -> None:
    assert b.input_shape == a.input_shape and b.input_bits == a.input_bits
    assert b.metadata == a.metadata
    assert [type(layer) for layer in b.layers] == [type(layer) for layer in a.layers]
    for la, lb in zip(a.layers, b.layers):
        fa, fb = init_fields(la), init_fields(lb)
        assert fa.keys() == fb.keys()
        for key, va in fa.items():
            vb = fb[key]
            if isinstance(va, np.ndarray):
                assert isinstance(vb, np.ndarray) and vb.dtype == va.dtype, (la.name, key, vb)
                np.testing.assert_array_equal(vb, va, err_msg=f"{la.name}.{key}")
            else:
                assert vb == va, (la.name, key, va, vb)
        assert [tuple(s) for s in lb.input_shapes] == [tuple(s) for s in la.input_shapes]
        assert lb.output_shape == la.output_shape


def expect_error(data: bytes, section: str, offset: int | None, *words: str) -> es.FormatError:
    with pytest.raises(es.FormatError) as info:
        F.read_model(data)
    error = info.value
    assert error.section == section, str(error)
    if offset is not None:
        assert error.offset == offset, str(error)
    assert f"section {section}" in str(error) and f"byte offset {error.offset}" in str(error)
    for word in words:
        assert word.lower() in str(error).lower(), (word, str(error))
    return error


@pytest.fixture(scope="module")
def model4() -> es.Model:
    return every_kind_model(4, metadata={"labels": list("abcde")})


@pytest.fixture(scope="module")
def data4(model4) -> bytes:
    return model4.to_bytes()


# -- round trips ----------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_bits", [2, 4, 8])
def test_round_trip_every_kind_and_neuron(weight_bits):
    model = every_kind_model(weight_bits)
    assert {layer.kind for layer in model.layers} == set(L.KINDS)
    assert {layer.neuron for layer in model.layers} == set(L.NEURONS)
    data = F.write_model(model)
    loaded = F.read_model(data)
    assert_same_model(model, loaded)
    assert F.write_model(loaded) == data   # the writer is deterministic and loses nothing
    x = np.random.default_rng(2).integers(0, 128, (3, 18, 18, 2), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.forward(x, timesteps=3, device="reference"),
                                  model.forward(x, timesteps=3, device="reference"))


def test_the_file_follows_the_document(model4, data4):
    """Header, section table and records, read with the document's offsets only."""
    assert data4[:8] == MAGIC
    assert struct.unpack_from("<HHIQI", data4, 8) == (2, 0, 64, len(data4), 4)
    assert u32(data4, 32) == zlib.crc32(data4[64:]) and u32(data4, 36) == zlib.crc32(data4[:36])
    table = sections(data4)
    assert sorted(table) == ["GRPH", "META", "NAME", "TENS"]
    spans = sorted(table.values())
    assert spans[0][0] >= 64 + 16 * 4
    assert all(offset % 16 == 0 for offset, _ in spans)
    assert all(a[0] + a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    grph, grph_bytes = table["GRPH"]
    assert grph_bytes == 64 + RECORD_BYTES * len(model4.layers)
    assert struct.unpack_from("<7I", data4, grph) == (10, 18, 18, 2, 7, 9, RECORD_BYTES)
    names_at = table["NAME"][0]
    for i, layer in enumerate(model4.layers):
        at = record_offset(data4, i)
        kind, neuron, name_offset, name_bytes, input_count = struct.unpack_from("<5I", data4, at)
        assert (kind, neuron) == (KIND_CODE[layer.kind], NEURON_CODE[layer.neuron])
        assert data4[names_at + name_offset:names_at + name_offset + name_bytes].decode() == layer.name
        inputs = struct.unpack_from("<4i", data4, at + 20)
        expected_inputs = [-1 if n == "input" else [l.name for l in model4.layers].index(n) for n in layer.inputs]
        assert list(inputs) == expected_inputs + [-1] * (4 - input_count)
        assert struct.unpack_from("<3I", data4, at + 48) == layer.output_shape
        assert u32(data4, at + 92) == layer.output_bits
    assert json.loads(data4[table["META"][0]:sum(table["META"])]) == {"labels": list("abcde")}
    # a second writer, from the document, lays the same sections out byte for byte the same
    assert assemble(parts_of(data4)) == data4


@pytest.mark.parametrize("weight_bits", [2, 4, 8])
def test_packed_weights_decode_by_hand(weight_bits):
    model = every_kind_model(weight_bits, seed=weight_bits)
    data = model.to_bytes()
    tens = sections(data)["TENS"][0]
    for i, layer in enumerate(model.layers):
        for slot in ("weights", "pointwise"):
            if slot not in layer.param_arrays():
                continue
            offset, length = slot_ref(data, i, slot)
            expected = layer.param_arrays()[slot].reshape(-1)
            assert offset % 16 == 0 and length == -(-expected.size * weight_bits // 8)
            raw = data[tens + offset:tens + offset + length]
            assert unpack_by_hand(raw, weight_bits, expected.size) == expected.tolist()
        offset, length = slot_ref(data, i, "threshold") if layer.neuron in ("if", "lif") else (0, 0)
        if length:
            assert np.frombuffer(data[tens + offset:tens + offset + length], "<i4").tolist() == layer.threshold.tolist()


def test_packing_small_cases_by_hand():
    # 4 bits: 1 -> 0x1, -1 -> 0xF, -8 -> 0x8, 7 -> 0x7; first element in the low nibble
    assert F.pack_signed(np.array([1, -1, -8, 7]), 4) == bytes([0xF1, 0x78])
    # 2 bits: 1 -> 01, -1 -> 11, -2 -> 10, 0 -> 00 | 1 -> 01 (+ zero high bits)
    assert F.pack_signed(np.array([1, -1, -2, 0, 1]), 2) == bytes([0b00_10_11_01, 0b01])
    assert F.pack_signed(np.array([-128, 127, -1]), 8) == bytes([0x80, 0x7F, 0xFF])
    values, clean = F.unpack_signed(bytes([0b00_10_11_01, 0b01]), 2, 5)
    assert values.tolist() == [1, -1, -2, 0, 1] and values.dtype == np.int8 and clean
    assert not F.unpack_signed(bytes([0xF1, 0xF8]), 4, 3)[1]   # the unused high nibble is not zero


@given(bits=st.sampled_from([2, 4, 8]), data=st.data())
@settings(max_examples=60, deadline=None)
def test_packing_round_trips(bits, data):
    lo, hi = L.signed_range(bits)
    values = data.draw(st.lists(st.integers(lo, hi), max_size=70))
    raw = F.pack_signed(np.array(values, dtype=np.int64), bits)
    assert len(raw) == -(-len(values) * bits // 8)
    assert unpack_by_hand(raw, bits, len(values)) == values
    assert F.unpack_signed(raw, bits, len(values))[0].tolist() == values


def test_packed_sizes_halve_with_bits():
    sizes = {}
    for bits in (2, 4, 8):
        data = wide_model(bits).to_bytes()
        sizes[bits] = (sections(data)["TENS"][1], len(data),
                       slot_ref(data, 0, "weights")[1] + slot_ref(data, 1, "weights")[1])
    weights = 3 * 3 * 32 * 64 + 64 * 64
    assert [sizes[b][2] for b in (8, 4, 2)] == [weights, weights // 2, weights // 4]
    # TENS: packed weights + int32 bias/multiplier/shift (64 each, x3, two layers minus the dense's relu arrays)
    int32_bytes = 4 * (3 * 64 + 64)
    for bits in (2, 4, 8):
        assert sizes[bits][0] == weights * bits // 8 + int32_bytes
    assert sizes[4][0] / sizes[8][0] < 0.53 and sizes[2][0] / sizes[8][0] < 0.29
    assert sizes[4][1] / sizes[8][1] < 0.55


def test_metadata_round_trip():
    metadata = {"labels": ["zero", "eins", "два", "三"], "frontend": {"name": "image", "config": {"size": [28, 28]}},
                "output_scale": [0.5, 1e-7, 3.25, -2.0], "provenance": {
                    "source": "net.onnx", "converter": {"weight_bits": 4, "fold_bn": True, "skip": None},
                    "edgesnn_version": es.__version__}, "nested": [[1, [2, {"x": ""}]], {}]}
    model = every_kind_model(8, metadata=metadata)
    data = model.to_bytes()
    loaded = es.Model.from_bytes(data)
    assert loaded.metadata == metadata
    assert json.loads(data[sections(data)["META"][0]:sum(sections(data)["META"])].decode("utf-8")) == metadata


def test_metadata_numpy_values_become_json():
    model = every_kind_model(8, metadata={"output_scale": np.float32(0.25), "counts": np.arange(3)})
    assert F.read_model(model.to_bytes()).metadata == {"output_scale": 0.25, "counts": [0, 1, 2]}


@pytest.mark.parametrize("metadata, words", [
    ({"frontend": {"config": {"fn": print}}}, "metadata['frontend']['config']['fn']"),
    ({"labels": ["a", {1, 2}]}, "metadata['labels'][1]"),
    ({"provenance": {3: "x"}}, "key 3"),
    ({"output_scale": float("nan")}, "metadata['output_scale']"),
    ({"blob": b"raw"}, "metadata['blob']"),
])
def test_metadata_that_is_not_json_is_refused_naming_the_key(metadata, words):
    model = every_kind_model(8, metadata=metadata)
    with pytest.raises(es.FormatError) as info:
        model.to_bytes()
    assert words in str(info.value) and info.value.section == "META"


def test_save_and_load(tmp_path, model4):
    path = tmp_path / "m.esnn"
    model4.save(path)
    assert_same_model(model4, es.Model.load(path))
    F.save(model4, str(tmp_path / "n.esnn"))
    assert_same_model(model4, F.load(tmp_path / "n.esnn"))
    (tmp_path / "bad.esnn").write_bytes(path.read_bytes()[:-5])
    with pytest.raises(es.FormatError, match="bad.esnn: file truncated") as info:
        F.load(tmp_path / "bad.esnn")
    assert info.value.section == "header" and info.value.offset == 16


def test_bytes_like_inputs(data4):
    assert F.read_model(bytearray(data4)).layers[0].name == "conv_in"
    assert F.read_model(memoryview(data4)).layers[-1].name == "classes"
    with pytest.raises(TypeError, match="bytes of an .esnn file"):
        F.read_model("m.esnn")


def test_writer_refuses_a_name_too_long_for_the_file():
    model = es.Model([L.Dense(name="n" * 256, weights=np.ones((4, 2), int), neuron="none")], input_shape=(2, 2, 1))
    with pytest.raises(es.FormatError, match="256 UTF-8 bytes"):
        model.to_bytes()


@st.composite
def chain_models(draw):
    """Small random chains: random kinds, neurons, bit widths, pools, strides, paddings."""
    h, w, c = draw(st.integers(3, 8)), draw(st.integers(3, 8)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers, shape = [], (h, w, c)
    for i in range(draw(st.integers(1, 4))):
        kind = "input_conv2d" if i == 0 else draw(st.sampled_from(["conv2d", "depthwise2d", "separable2d"]))
        bits = draw(st.sampled_from(L.WEIGHT_BITS))
        lo, hi = L.signed_range(bits)
        k = draw(st.integers(1, min(3, shape[0], shape[1])))
        cout = draw(st.integers(1, 4)) if kind != "depthwise2d" else shape[2]
        neuron = draw(st.sampled_from(["relu", "if", "lif"]))
        common = dict(name=f"l{i}", weight_bits=bits, neuron=neuron, stride=draw(st.sampled_from([1, 2])),
                      padding=draw(st.sampled_from(["same", "valid"])), bias=rng.integers(-99, 99, cout))
        # only the fields this neuron uses: the file holds no others (they come back as the defaults)
        if neuron == "relu":
            common.update(activation_bits=draw(st.sampled_from(L.ACTIVATION_BITS)),
                          out_multiplier=rng.integers(0, 9, cout), out_shift=rng.integers(0, 9, cout))
        else:
            common.update(threshold=rng.integers(1, 500, cout))
        if neuron == "lif":
            common.update(leak_shift=draw(st.integers(1, 31)))
        if kind == "separable2d":
            layer = L.Separable2D(weights=rng.integers(lo, hi + 1, (k, k, shape[2])), mid_bits=draw(st.sampled_from([2, 4, 8])),
                                  pointwise=rng.integers(lo, hi + 1, (shape[2], cout)),
                                  mid_multiplier=rng.integers(0, 5, shape[2]), mid_shift=rng.integers(0, 5, shape[2]),
                                  **common)
        elif kind == "depthwise2d":
            layer = L.Depthwise2D(weights=rng.integers(lo, hi + 1, (k, k, shape[2])), **common)
        else:
            layer = L.LAYER_CLASSES[kind](weights=rng.integers(lo, hi + 1, (k, k, shape[2], cout)), **common)
        layers.append(layer)
        shape = es.Model(layers, input_shape=(h, w, c)).output_shape
        if min(shape[:2]) >= 2 and draw(st.booleans()):
            pool = draw(st.sampled_from(["max", "avg", "global_avg"]))
            window = dict(pool_size=2, pool_stride=draw(st.integers(1, 2))) if pool != "global_avg" else {}
            layers[-1] = layer.replace(pool=pool, **window)
            shape = es.Model(layers, input_shape=(h, w, c)).output_shape
    if draw(st.booleans()):
        layers.append(L.Dense(name="out", weights=rng.integers(-8, 8, (int(np.prod(shape)), 3)), weight_bits=4,
                              neuron="none"))
    metadata = draw(st.dictionaries(st.text(max_size=5), st.recursive(
        st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=8), max_size=3))
    return es.Model(layers, input_shape=(h, w, c), input_bits=draw(st.integers(1, 8)), metadata=metadata)


@given(chain_models())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_models_round_trip(model):
    """Every field a layer uses comes back exactly (a relu layer's threshold, say, is not in the file)."""
    data = model.to_bytes()
    loaded = F.read_model(data)
    assert_same_model(model, loaded)
    assert loaded.to_bytes() == data


# -- the malformed corpus: foreign, truncated, wrong version --------------------------------------

def foreign_files() -> dict[str, bytes]:
    import onnx
    from onnx import TensorProto, helper
    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (4, 4)).save(png, format="PNG")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model.json", "{}")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return {"PNG": png.getvalue(), "zip": archive.getvalue(),
            "protobuf": helper.make_model(graph).SerializeToString(),
            "JSON": b'{"layers": []}', "text": b"hello world, this is not a model\n" * 3}


def test_empty_bytes():
    expect_error(b"", "header", 0, "empty")


@pytest.mark.parametrize("what", ["PNG", "zip", "protobuf", "JSON", "text"])
def test_foreign_files_are_named(what):
    expect_error(foreign_files()[what], "header", 0, "not an .esnn file", what if what != "text" else "starts with")


def test_text_mode_mangled_file(data4):
    expect_error(data4.replace(b"\r\n", b"\n"), "header", 0, "text-mode")


def test_truncated_at_every_length(data4):
    for length in range(len(data4)):
        with pytest.raises(es.FormatError) as info:
            F.read_model(data4[:length])
        error = info.value
        assert error.section == "header" and error.offset is not None, (length, str(error))
        if length:
            assert "truncated" in str(error), (length, str(error))


def test_trailing_bytes(data4):
    expect_error(data4 + b"\0" * 16, "header", 16, "trailing bytes")


@pytest.mark.parametrize("major", [0, 3, 0xFFFF])
def test_other_major_versions_are_refused(data4, major):
    expect_error(patch(data4, 8, "H", major), "header", 8, f"version {major}.0 is not supported")


def test_a_higher_minor_version_with_an_unknown_section_loads(model4, data4):
    newer = assemble(parts_of(data4) + [(b"XTRA", b"future data")], version=(2, 3))
    assert_same_model(model4, F.read_model(newer))
    # the unknown section is skipped in a 1.0 file too
    assert_same_model(model4, F.read_model(assemble([(b"XTRA", b"\1" * 40)] + parts_of(data4))))


# -- every single-byte flip in the header and section table ---------------------------------------

def test_every_byte_flip_without_crc_fixup_is_caught(data4):
    table_end = 64 + 16 * 4
    for position in range(table_end):
        for mask in (0xFF, 0x01):
            corrupt = bytearray(data4)
            corrupt[position] ^= mask
            with pytest.raises(es.FormatError) as info:
                F.read_model(bytes(corrupt))
            message = str(info.value)
            if position < 8:
                assert "not an .esnn file" in message or "text-mode" in message
            elif position < 10:
                assert "version" in message
            elif position < 40:
                assert "header checksum" in message and info.value.offset == 36, (position, message)
            elif position < 64:
                assert "reserved" in message and info.value.offset == position, (position, message)
            else:
                assert "body checksum" in message and info.value.offset == 32, (position, message)


def test_every_byte_flip_with_crc_fixup_is_caught_or_harmless(model4, data4):
    """With the CRCs recomputed a flip reaches the deeper checks: it is refused, or it changed nothing that matters."""
    must_fail = set(range(0, 10)) | set(range(12, 32)) | set(range(40, 64))   # not minor or CRC fields
    for i in range(4):                       # tag, offset of every entry (flags too: zero in a 1.0 file)
        must_fail |= set(range(64 + 16 * i, 64 + 16 * i + 12))
    loaded_ok = []
    for position in range(64 + 16 * 4):
        for mask in (0xFF, 0x01, 0x10):
            corrupt = bytearray(data4)
            corrupt[position] ^= mask
            corrupt = fix_crcs(bytes(corrupt))
            try:
                loaded = F.read_model(corrupt)
            except es.FormatError as error:
                assert error.section in ("header", "section table", "GRPH", "TENS", "NAME", "META"), str(error)
                assert error.offset is not None and 0 <= error.offset <= len(corrupt), str(error)
                continue
            assert position not in must_fail, (position, mask)
            assert_same_model(model4, loaded)
            loaded_ok.append(position)
    # the minor version, the CRCs themselves and slack in section lengths are all that may pass
    section_lengths = {64 + 16 * i + 12 + k for i in range(4) for k in range(4)}
    assert set(loaded_ok) <= {10, 11} | set(range(32, 40)) | section_lengths, sorted(set(loaded_ok))


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_random_corruption_never_escapes_as_another_exception(data4, data):
    corrupt = bytearray(data4)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(corrupt) - 1))
        corrupt[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        corrupt = bytearray(fix_crcs(bytes(corrupt)))
    try:
        F.read_model(bytes(corrupt))
    except es.FormatError as error:
        assert error.section is not None and error.offset is not None


# -- section table --------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [0, 17])
def test_section_count_out_of_range(data4, count):
    expect_error(patch(data4, 24, "I", count), "header", 24, f"section_count is {count}")


def test_section_misaligned(data4):
    offset = sections(data4)["TENS"][0]
    expect_error(patch(data4, 64 + 16 * 1 + 8, "I", offset + 4), "section table", 64 + 16 + 8, "multiple of 16")


def test_section_past_the_end(data4):
    expect_error(patch(data4, 64 + 16 * 3 + 12, "I", 10_000), "section table", 64 + 16 * 3 + 12,
                 "section META", "past the end")


def test_sections_overlap(data4):
    grph = sections(data4)["GRPH"][0]
    expect_error(patch(data4, 64 + 16 * 2 + 8, "I", grph), "section table", 64 + 16 * 2 + 8, "NAME", "overlaps")


def test_section_inside_the_table(data4):
    expect_error(patch(data4, 64 + 8, "I", 64), "section table", 64 + 8, "inside the header or section table")


def test_duplicate_and_missing_tags(data4):
    expect_error(patch(data4, 64 + 16, "4s", b"GRPH"), "section table", 64 + 16, "appears twice")
    expect_error(patch(data4, 64 + 16, "4s", b"TENZ"), "section table", 64, "TENS missing")


# -- GRPH: the model record and the layer records --------------------------------------------------

@pytest.mark.parametrize("name, value, words", [
    ("layer_count", 0, "layer_count is 0"), ("layer_count", 257, "layer_count is 257"),
    ("layer_count", 7, "need exactly"), ("record_bytes", 128, "record_bytes is 128"),
    ("input_bits", 9, "input_bits is 9"), ("input_h", 0, "input_h is 0"),
    ("output_layer", 3, "output_layer is 3"), ("reserved", 1, "reserved"),
])
def test_model_record_fields(data4, name, value, words):
    grph = sections(data4)["GRPH"][0]
    offset = grph if name == "layer_count" and value == 7 else grph + MODEL_FIELDS[name]
    expect_error(patch(data4, grph + MODEL_FIELDS[name], "I", value), "GRPH", offset, words)


def test_wrong_input_shape_is_a_shape_mismatch(data4):
    grph = sections(data4)["GRPH"][0]
    # 14x14 -> 15x15: the first layer's stored input shape no longer agrees
    bad = patch(data4, grph + MODEL_FIELDS["input_h"], "II", 15, 15)
    expect_error(bad, "GRPH", field(data4, 0, "in_shape"), "layer record 0 ('conv_in')", "in_shape")


@pytest.mark.parametrize("index, name, value, words", [
    (0, "kind", 8, "unknown layer kind code 8"),
    (1, "neuron", 4, "unknown neuron code 4"),
    (2, "weight_bits", 3, "weight_bits is 3"),
    (9, "activation_bits", 8, "activation_bits is 8, must be 32"),
    (2, "activation_bits", 2, "activation_bits is 2, must be 1"),
    (0, "leak_shift", 2, "leak_shift is 2, must be 0"),
    (1, "leak_shift", 32, "leak_shift is 32"),
    (1, "mid_bits", 3, "mid_bits is 3"),
    (4, "weight_bits", 4, "weight_bits is 4, must be 0"),
    (9, "padding", 1, "padding is 1, must be 0"),
    (9, "kernel_h", 3, "kernel_h is 3, must be 1"),
    (4, "stride", 2, "stride is 2, must be 1"),
    (7, "stride_w", 2, "stride_w is 2, must be 1"),
    (0, "padding", 3, "padding is 3"),
    (0, "depth_multiplier", 2, "depth_multiplier is 2, must be 1"),
    (1, "depth_multiplier", 9, "depth_multiplier is 9"),
    (2, "pool_w", 2, "pool_w is 2, must be 0"),
    (0, "pool_flags", 1, "pool_flags is 0x1"),
    (5, "pool_flags", 2, "pool_flags is 0x2"),
    (0, "pool", 4, "pool is 4"),
    (2, "pool_size", 2, "pool_size is 2, must be 0"),
    (0, "kernel_w", 16, "kernel 3x16"),
    (4, "input_count", 1, "input_count is 1"),
    (0, "input_count", 2, "input_count is 2, must be 1"),
    (7, "input_count", 5, "input_count is 5, must be in 1..4"),
    (0, "reserved2", 1, "reserved"),
    (3, "reserved2", 1, "reserved"),
    (0, "decay_shift", 1, "decay_shift is 1, must be 0"),
    (0, "reset", 1, "reset is 1, must be 0"),
    (0, "neuron_flags", 1, "neuron_flags is 1, must be 0"),
    (0, "membrane_floor", 1, "membrane_floor is 1"),
])
def test_layer_record_fields(data4, index, name, value, words):
    bad = patch(data4, field(data4, index, name), "I", value)
    offset = field(data4, index, "kernel_h") if name == "kernel_w" else field(data4, index, name)
    error = expect_error(bad, "GRPH", offset, words)
    assert f"layer record {index}" in str(error)


@pytest.mark.parametrize("index, slot, value, words", [
    (1, 0, 1, "refers to layer 1"),       # a layer reading itself
    (2, 0, 5, "refers to layer 5"),       # reading a later layer
    (4, 1, -2, "refers to layer -2"),
    (0, 1, 0, "unused inputs entry 1 is 0"),
])
def test_inputs_must_refer_to_earlier_layers(data4, index, slot, value, words):
    bad = patch(data4, field(data4, index, "inputs", slot), "i", value)
    expect_error(bad, "GRPH", field(data4, index, "inputs", slot), f"layer record {index}", words)


def test_stored_shapes_must_agree_with_the_geometry(data4):
    # 'dw' is a 3x3 valid stride-2 depthwise on 9x9: 4x4 out. Claim 5x5.
    bad = patch(data4, field(data4, 2, "out_shape"), "II", 5, 5)
    expect_error(bad, "GRPH", field(data4, 2, "out_shape"), "layer record 2 ('dw')", "(5, 5, 6) differs from (4, 4, 6)")
    # claim a 5x4 input for 'pw' (its input 'dw' outputs 4x4)
    bad = patch(data4, field(data4, 3, "in_shape"), "I", 5)
    expect_error(bad, "GRPH", field(data4, 3, "in_shape"), "layer record 3 ('pw')", "in_shape (5, 4, 6)")
    # a depthwise layer has C * depth_multiplier output channels
    bad = patch(data4, field(data4, 2, "out_shape", 2), "I", 7)
    expect_error(bad, "GRPH", field(data4, 2, "out_shape", 2), "has 6 output channels for 6 input channels")
    # stored explicit pads that disagree with the layer's 'same' padding
    bad = patch(data4, field(data4, 5, "pads"), "I", 1)
    expect_error(bad, "GRPH", field(data4, 5, "pads"), "layer record 5 ('avg')", "pads (1, 1, 0, 1) differs")


def test_inconsistent_values_name_the_layer_record(data4):
    # 'dw' reads 'sep' (lif), reaching its 6 channels through a 3x3 valid depthwise.  Point 'dw' at the model
    # input (2 channels) instead: the stored shapes now disagree with the weights.
    bad = patch(data4, field(data4, 2, "inputs"), "i", -1)
    error = expect_error(bad, "GRPH", None, "layer record 2 ('dw')")
    assert error.offset in (record_offset(data4, 2), field(data4, 2, "in_shape"))


# -- tensor slots and values in TENS --------------------------------------------------------------

@pytest.mark.parametrize("slot, delta_offset, delta_bytes, words", [
    ("weights", 4, 0, "not a multiple of 16"),
    ("weights", 0, 1, "needs exactly"),
    ("bias", 0, -4, "needs exactly"),
    ("threshold", 10_000_000 * 16, 0, "outside TENS"),
])
def test_tensor_slots(data4, slot, delta_offset, delta_bytes, words):
    index = 2   # 'dw': weights, bias, threshold
    offset, length = slot_ref(data4, index, slot)
    at = field(data4, index, "slots", 2 * SLOTS[slot])
    bad = patch(data4, at, "II", offset + delta_offset, length + delta_bytes)
    expect_error(bad, "GRPH", at + 4 if "needs" in words else at, f"slot {SLOTS[slot]} ({slot})", words)


def test_unused_slot_must_be_empty(data4):
    at = field(data4, 2, "slots", 2 * SLOTS["pointwise"])
    expect_error(patch(data4, at, "II", 0, 16), "GRPH", at, "slot 1 (pointwise) is unused", "{0, 16}")
    at = field(data4, 2, "slots", 2 * 14)
    expect_error(patch(data4, at + 4, "I", 1), "GRPH", at, "slot 14 (reserved)")
    at = field(data4, 2, "slots", 2 * 13)                   # a lif layer's decay on an if layer
    expect_error(patch(data4, at + 4, "I", 1), "GRPH", at, "slot 13 (decay_multiplier) is unused")
    at = field(data4, 2, "slots", 2 * SLOTS["sources"])     # a concat's slot on a depthwise layer
    expect_error(patch(data4, at, "II", 0, 8), "GRPH", at, "slot 12 (sources) is unused")


def int32_slot(data: bytes, index: int, slot: str) -> int:
    return sections(data)["TENS"][0] + slot_ref(data, index, slot)[0]


@pytest.mark.parametrize("index, slot, value, words", [
    (2, "threshold", 0, "threshold must be >= 1"),
    (0, "out_shift", 63, "out_shift must be in [0, 62]"),
    (0, "out_multiplier", -1, "out_multiplier must be >= 0"),
    (1, "mid_shift", 63, "mid_shift in [0, 62]"),
    (9, "bias", 2**31 - 1, "beyond int32"),
    (0, "pad_value", 128, "pad_value must lie in [0, 127]"),
    (3, "out_zero_point", 4, "out_zero_point must be in [0, 3]"),
    (0, "pool_sign", 0, "pool_sign must be +1 or -1"),
    (7, "sources", 2, "names no channel"),
])
def test_values_out_of_range_are_format_errors_at_the_record(data4, index, slot, value, words):
    bad = patch(data4, int32_slot(data4, index, slot), "i", value)
    name = ["conv_in", "sep", "dw", "pw", "residual", "avg", "explicit", "cat", "gap", "classes"][index]
    expect_error(bad, "GRPH", record_offset(data4, index), f"layer record {index} ('{name}')", words)


def test_unused_bits_of_the_last_packed_byte(data4):
    # 'sep' pointwise: 4 x 6 = 24 four-bit weights fill 12 bytes exactly; 'dw' weights: 54 -> 27 bytes exactly;
    # 'residual' has none; 'classes' 8 x 5 = 40 -> 20 bytes. Use a 2-bit model with an odd count instead.
    model = es.Model([L.Dense(name="d", weights=np.ones((3, 1), int), weight_bits=2, neuron="none")],
                     input_shape=(1, 1, 3))
    data = model.to_bytes()
    at = sections(data)["TENS"][0] + slot_ref(data, 0, "weights")[0]
    assert data[at] == 0b00_01_01_01
    expect_error(patch(data, at, "B", 0b11_01_01_01), "TENS", at, "unused high bits")


# -- NAME and META --------------------------------------------------------------------------------

def test_names(data4):
    expect_error(patch(data4, field(data4, 3, "name_bytes"), "I", 0), "GRPH", field(data4, 3, "name_bytes"),
                 "name_bytes is 0")
    expect_error(patch(data4, field(data4, 3, "name_offset"), "I", 10_000), "GRPH", field(data4, 3, "name_offset"),
                 "outside NAME")
    # point 'pw' at the name of 'dw' (its first two bytes: "dw")
    dw_name = struct.unpack_from("<I", data4, field(data4, 2, "name_offset"))[0]
    bad = patch(data4, field(data4, 3, "name_offset"), "I", dw_name)
    expect_error(bad, "NAME", sections(data4)["NAME"][0] + dw_name, "'dw'", "already used by layer record 2")
    names_at = sections(data4)["NAME"][0]
    bad = patch(data4, names_at + dw_name, "B", 0xFF)
    expect_error(bad, "NAME", names_at + dw_name, "not valid UTF-8")


@pytest.mark.parametrize("meta, words, position", [
    (b'{"labels": [1, 2', "not valid JSON", 16),
    (b'[1, 2, 3]', "must be a JSON object", 0),
    (b'{"x": NaN}', "not valid JSON", 0),
    (b'{"x": "\xff"}', "not valid UTF-8", 7),
    (b'', "not valid JSON", 0),
    (b'[' * 100_000, "not valid JSON", None),
])
def test_bad_metadata(data4, meta, words, position):
    parts = [(tag, payload if tag != b"META" else meta) for tag, payload in parts_of(data4)]
    bad = assemble(parts)
    meta_at = sections(bad)["META"][0]
    expect_error(bad, "META", None if position is None else meta_at + position, words)


# -- the corpus on disk (shared with the native loader's tests) -----------------------------------

CORPUS = pathlib.Path(__file__).parent / "data" / "malformed"


@pytest.mark.parametrize("name", sorted(json.loads((CORPUS / "MANIFEST.json").read_text())))
def test_malformed_corpus_on_disk(name):
    case = json.loads((CORPUS / "MANIFEST.json").read_text())[name]
    data = (CORPUS / name).read_bytes()
    if case["section"] is None:
        assert F.read_model(data).to_bytes() == data
    else:
        expect_error(data, case["section"], case["offset"], case["message"])


# -- files written by edgesnn 0.1 (format 1.0) ----------------------------------------------------

V1 = pathlib.Path(__file__).resolve().parent / "data" / "v1"


@pytest.mark.parametrize("name, key, timesteps", [("every_kind_v1", "x", 3), ("mnist_cnn_4bit_v1", "x_mnist", 1)])
def test_version_1_files_load_and_compute_what_0_1_computed(name, key, timesteps):
    """tests/data/v1/: files written by edgesnn 0.1, and the reference potentials 0.1 computed from them."""
    data = (V1 / f"{name}.esnn").read_bytes()
    assert struct.unpack_from("<HH", data, 8) == (1, 0) and u32(data, sections(data)["GRPH"][0] + 24) == 256
    model = F.read_model(data)
    expected = np.load(V1 / "expected_0.1.npz")
    out = model.forward(expected[key], timesteps=timesteps, device="reference")
    np.testing.assert_array_equal(out, expected[name if name != "every_kind_v1" else "every_kind_t3"])
    rewritten = F.write_model(model)                     # re-saved as 2.0: the same model
    assert struct.unpack_from("<HH", rewritten, 8) == (2, 0)
    assert_same_model(model, F.read_model(rewritten))
