"""The if/lif membrane dynamics of docs/semantics.md ("Neuron stages"), worked by hand over several timesteps.

Each case is one dense layer with weight 1 on a single 8-bit input, so the potential of timestep t is
P_t = x_t + bias: the membrane trace below is arithmetic a reader can redo on paper.
"""

import numpy as np
import pytest

import edgesnn as es
from edgesnn import layers as L
from edgesnn import reference


def single_neuron(**neuron) -> es.Model:
    fields = dict(neuron="lif", threshold=10, bias=0)
    fields.update(neuron)
    return es.Model([L.Dense(name="n", weights=np.ones((1, 1), int), **fields)], input_shape=(1, 1, 1))


def trace(model: es.Model, potentials) -> tuple[list[int], list[int]]:
    """(membrane after each timestep, spikes of each timestep) for the potentials P_t."""
    layer, state, v, spikes = model.layers[0], {}, [], []
    for p in potentials:
        out = reference._neuron(layer, np.array([[[[p]]]], np.int64), state)
        v.append(int(state["n"][0, 0, 0, 0]))
        spikes.append(int(out[0, 0, 0, 0]))
    return v, spikes


def spike_train(model: es.Model, xs, device="reference") -> list[int]:
    """Spikes per timestep from the model's output, by running 1, 2, .. T timesteps (counts differ by the spike)."""
    x5 = np.asarray(xs, np.uint8).reshape(1, -1, 1, 1, 1)
    counts = [int(model.forward(x5[:, :t], device=device)[0, 0, 0, 0]) for t in range(1, len(xs) + 1)]
    return [b - a for a, b in zip([0] + counts, counts)]


def test_decay_multiplier_rounds_half_up_and_subtracts_at_threshold():
    # decay 3/4: v = (3 v + 2) >> 2 before integrating 4 each step; threshold 10
    # t0: 0 -> 0 + 4 = 4 | t1: (12+2)>>2 = 3 -> 7 | t2: 23>>2 = 5 -> 9 | t3: 29>>2 = 7 -> 11 spike -> 1
    # t4: 5>>2 = 1 -> 5 | t5: 17>>2 = 4 -> 8 | t6: 26>>2 = 6 -> 10 spike -> 0 | t7: 0 -> 4
    model = single_neuron(decay_multiplier=3, decay_shift=2)
    assert trace(model, [4] * 8) == ([4, 7, 9, 1, 5, 8, 0, 4], [0, 0, 0, 1, 0, 0, 1, 0])
    assert spike_train(model, [4] * 8) == [0, 0, 0, 1, 0, 0, 1, 0]


def test_reset_to_zero_drops_the_residue():
    # as above until t3 (11: spike, v = 0), then 4 | 7 | 9 | 11 spike -> 0
    model = single_neuron(decay_multiplier=3, decay_shift=2, reset="zero")
    assert trace(model, [4] * 8) == ([4, 7, 9, 0, 4, 7, 9, 0], [0, 0, 0, 1, 0, 0, 0, 1])


def test_no_reset_fires_while_above_threshold():
    # if (no leak), threshold 10, +4 each step: 4, 8, 12 spike, 16 spike, 20 spike (v keeps growing)
    model = single_neuron(neuron="if", reset="none")
    assert trace(model, [4] * 5) == ([4, 8, 12, 16, 20], [0, 0, 1, 1, 1])
    assert spike_train(model, [4] * 5) == [0, 0, 1, 1, 1]


def test_membrane_floor_clips_below():
    # P = x - 8: -8, -8, 12, -8. With floor 0 (SNU's ReLU): 0, 0, 12 spike -> 2, max(2 - 8, 0) = 0.
    # Without a floor: -8, -16, -4, -12 and no spike.
    floored = single_neuron(neuron="if", bias=-8, membrane_floor=0)
    assert trace(floored, [-8, -8, 12, -8]) == ([0, 0, 2, 0], [0, 0, 1, 0])
    assert spike_train(floored, [0, 0, 20, 0]) == [0, 0, 1, 0]
    plain = single_neuron(neuron="if", bias=-8)
    assert trace(plain, [-8, -8, 12, -8]) == ([-8, -16, -4, -12], [0, 0, 0, 0])


def test_decay_of_negative_membranes_rounds_towards_plus_infinity():
    # decay 1/2: (v + 1) >> 1. -3 -> -1 (-1.5 rounds up), -1 -> 0 (-0.5 rounds up), 3 -> 2 (1.5 up)
    model = single_neuron(decay_multiplier=1, decay_shift=1, threshold=100)
    assert trace(model, [-3, 0, 0, 3, 0]) == ([-3, -1, 0, 3, 2], [0] * 5)


def test_snu_reset_to_zero_with_floor_and_decay_per_channel():
    # two channels: decay 4/5 ~ 0.8 as 205/256 and 1/2 as 128/256; floor 0, reset to zero, threshold 10, 6.
    # ch0: 6 | (6*205+128)>>8 = 5 -> 11 spike -> 0 | 6 | 11 spike
    # ch1: 6 spike -> 0 | 6 spike -> 0 | ...
    model = es.Model([L.Dense(name="n", weights=np.ones((1, 2), int), bias=0, neuron="lif", threshold=[10, 6],
                              decay_multiplier=[205, 128], decay_shift=8, reset="zero", membrane_floor=0)],
                     input_shape=(1, 1, 1))
    x5 = np.full((1, 4, 1, 1, 1), 6, np.uint8)
    np.testing.assert_array_equal(model.forward(x5, device="reference")[0, 0, 0], [2, 4])


def test_shift_leak_unchanged():
    # lif leak_shift 2: v - (v >> 2). 4 | 4 - 1 + 4 = 7 | 7 - 1 + 4 = 10 spike -> 0 | 4
    model = single_neuron(leak_shift=2)
    assert trace(model, [4] * 4) == ([4, 7, 0, 4], [0, 0, 1, 0])


def test_dynamics_survive_save_and_load(tmp_path):
    model = single_neuron(decay_multiplier=3, decay_shift=2, reset="zero", membrane_floor=-5)
    model.save(tmp_path / "m.esnn")
    loaded = es.Model.load(tmp_path / "m.esnn")
    layer = loaded.layers[0]
    assert (layer.decay_shift, layer.reset, layer.membrane_floor, layer.leak_shift) == (2, "zero", -5, 0)
    np.testing.assert_array_equal(layer.decay_multiplier, [3])
    assert spike_train(loaded, [4] * 8) == [0, 0, 0, 1, 0, 0, 0, 1]


def test_files_without_the_new_fields_keep_their_bytes():
    from edgesnn import format as F

    data = F.write_model(single_neuron(leak_shift=3))
    table = {data[64 + 16 * i:68 + 16 * i]: int.from_bytes(data[72 + 16 * i:76 + 16 * i], "little") for i in range(4)}
    record = data[table[b"GRPH"] + F.MODEL_RECORD_BYTES:][:F.LAYER_RECORD_BYTES]
    assert not any(record[284:]) and not any(record[128 + 8 * 13:128 + 8 * 14])   # dynamics fields, slot 13
    loaded = F.read_model(data)
    assert not loaded.layers[0].has_dynamics and loaded.layers[0].leak_shift == 3
    assert F.write_model(loaded) == data


@pytest.mark.parametrize("fields, words", [
    (dict(neuron="if", decay_multiplier=3, decay_shift=2), "lif neurons only"),
    (dict(leak_shift=2, decay_multiplier=3, decay_shift=2), "not both"),
    (dict(decay_multiplier=5, decay_shift=2), "a decay, not a growth"),
    (dict(decay_multiplier=1, decay_shift=31), "decay_shift must be in [1, 30]"),
    (dict(leak_shift=2, decay_shift=2), "without a decay_multiplier"),
    (dict(leak_shift=2, reset="hold"), "reset must be one of"),
    (dict(leak_shift=2, membrane_floor=1), "membrane_floor must be"),
    (dict(neuron="relu", reset="zero"), "if/lif neurons only"),
])
def test_dynamics_are_checked(fields, words):
    with pytest.raises(es.ModelError) as info:
        single_neuron(**fields)
    assert words in str(info.value)


@pytest.mark.parametrize("dynamics, potentials", [
    (dict(decay_multiplier=3, decay_shift=2), [4] * 8),
    (dict(decay_multiplier=3, decay_shift=2, reset="zero"), [4] * 8),
    (dict(neuron="if", reset="none"), [4] * 5),
    (dict(neuron="if", bias=-8, membrane_floor=0), [0, 0, 20, 0]),
    (dict(decay_multiplier=1, decay_shift=1, threshold=100, bias=-3), [0, 3, 3, 6, 3]),
    (dict(leak_shift=2, reset="zero", membrane_floor=-5, bias=-4), [0, 9, 9, 0, 0, 20, 2]),
])
def test_native_engine_runs_the_hand_worked_dynamics(dynamics, potentials):
    """The cases above on the native engine: the same spikes per timestep (the randomized bit-exact
    search over decays, resets and floors is tests/test_native_bitexact.py)."""
    pytest.importorskip("edgesnn.native")
    model = single_neuron(**dynamics)
    assert spike_train(model, potentials, device="cpu") == spike_train(model, potentials)
    assert es.device("cpu").check(model).fits


def test_native_engine_still_runs_the_shift_leak():
    pytest.importorskip("edgesnn.native")
    model = single_neuron(leak_shift=2)
    x5 = np.full((1, 4, 1, 1, 1), 4, np.uint8)
    np.testing.assert_array_equal(model.forward(x5, device="cpu"), model.forward(x5, device="reference"))


def test_summary_shows_the_dynamics():
    model = single_neuron(decay_multiplier=3, decay_shift=2, reset="zero", membrane_floor=0)
    table = model.summary(print_fn=lambda *_: None, device="reference")
    assert "lif/b0.75 reset=zero floor=0" in table
    pytest.importorskip("edgesnn.native")
    assert "lif/b0.75 reset=zero floor=0" in model.summary(print_fn=lambda *_: None, device="cpu")


def record_field(data: bytes, layer: int, offset: int) -> int:
    """Byte offset of field `offset` of layer record `layer` in .esnn bytes (docs/format.md)."""
    from edgesnn import format as F

    table = {data[64 + 16 * i:68 + 16 * i]: int.from_bytes(data[72 + 16 * i:76 + 16 * i], "little") for i in range(4)}
    return table[b"GRPH"] + F.MODEL_RECORD_BYTES + layer * F.LAYER_RECORD_BYTES + offset


def patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    """`data` with one value written at `at` and the checksums fixed (so the field's check is reached)."""
    import struct
    import zlib

    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    struct.pack_into("<I", out, 32, zlib.crc32(out[64:]))
    struct.pack_into("<I", out, 36, zlib.crc32(out[:36]))
    return bytes(out)


def decay_multiplier_at(data: bytes) -> int:
    """Byte offset of the first decay_multiplier element (slot 13) of layer 0."""
    table = {data[64 + 16 * i:68 + 16 * i]: int.from_bytes(data[72 + 16 * i:76 + 16 * i], "little") for i in range(4)}
    slot_offset = int.from_bytes(data[record_field(data, 0, 128 + 8 * 13):][:4], "little")
    return table[b"TENS"] + slot_offset


@pytest.mark.parametrize("where, fmt, value, words", [
    (284, "<I", 31, "decay_shift 31, expected 0 (shift leak) or 1..30"),
    (288, "<I", 3, "reset 3, expected 0 subtract, 1 zero or 2 none"),
    (292, "<I", 2, "neuron_flags 0x2"),
    (296, "<i", 1, "membrane_floor 1, expected <= 0"),
    ("multiplier", "<i", 5, "decay_multiplier[0] = 5, expected 0..4"),
    ("multiplier", "<i", -1, "decay_multiplier[0] = -1, expected 0..4"),
    (100, "<I", 3, "leak_shift 3, expected 1..31 for lif without a decay_shift"),
])
def test_out_of_range_dynamics_are_refused_by_both_readers(where, fmt, value, words):
    native = pytest.importorskip("edgesnn.native")
    data = single_neuron(decay_multiplier=3, decay_shift=2, reset="zero", membrane_floor=-5).to_bytes()
    at = decay_multiplier_at(data) if where == "multiplier" else record_field(data, 0, where)
    bad = patched(data, at, fmt, value)
    with pytest.raises(es.FormatError, match="native loader refused") as info:
        native.NativeModel(bad)
    assert words in str(info.value) and "layer 0" in str(info.value)
    with pytest.raises((es.FormatError, es.ModelError)):
        es.Model.from_bytes(bad)


def test_dynamics_on_a_relu_layer_are_refused_natively():
    native = pytest.importorskip("edgesnn.native")
    data = es.Model([L.Dense(name="n", weights=np.ones((1, 1), int), bias=0, out_multiplier=1, out_shift=0)],
                    input_shape=(1, 1, 1)).to_bytes()
    for where, words in [(284, "decay_shift 2"), (288, "has no membrane to reset"), (292, "0 for neuron relu/none")]:
        bad = patched(data, record_field(data, 0, where), "<I", 2 if where == 284 else 1)
        with pytest.raises(es.FormatError, match=words):
            native.NativeModel(bad)
        with pytest.raises((es.FormatError, es.ModelError)):
            es.Model.from_bytes(bad)
