"""The device API from a vendor's side: examples/device_plugin_example (edgesnn-tinynpu) pip-installed
and used through its entry point; and the device module's own contract (one module, one resolver)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import cli, layers as L, plugins

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "device_plugin_example"

pytestmark = pytest.mark.usefixtures("fresh_registry")


@pytest.fixture(scope="module")
def tinynpu_site(tmp_path_factory):
    work = tmp_path_factory.mktemp("tinynpu")
    source = work / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True)
    yield target
    for module in [m for m in sys.modules if m.startswith("edgesnn_tinynpu")]:
        del sys.modules[module]


@pytest.fixture
def tinynpu(tinynpu_site, monkeypatch):
    monkeypatch.syspath_prepend(str(tinynpu_site))
    plugins.reset()


def small_model(activation_bits=4, channels=8) -> es.Model:
    rng = np.random.default_rng(1)
    return es.Model([
        L.InputConv2D(name="conv_1", weights=rng.integers(-8, 8, (3, 3, 1, channels)), weight_bits=4,
                      out_multiplier=np.ones(channels, int), out_shift=6, activation_bits=activation_bits),
        L.Conv2D(name="conv_3", weights=rng.integers(-8, 8, (3, 3, channels, 8)), weight_bits=4, stride=2,
                 out_multiplier=np.ones(8, int), out_shift=6, activation_bits=activation_bits),
        L.Dense(name="head", weights=rng.integers(-8, 8, (4 * 4 * 8, 3)), weight_bits=4, neuron="none"),
    ], input_shape=(8, 8, 1))


def test_the_installed_device_plugin_is_listed_with_its_distribution(tinynpu, capsys):
    rows = {row.name: row for row in plugins.list_plugins()}
    assert rows["tinynpu"] == ("tinynpu", ("device",), "edgesnn-tinynpu", "0.1.0")
    assert "tinynpu" in es.devices()
    assert cli.main(["devices"]) == 0
    assert "TinyNPU (example plugin)" in capsys.readouterr().out


def test_the_plugin_runs_a_model_that_fits(tinynpu):
    model = small_model()
    report = model.check("tinynpu")
    assert report.fits and report.arena_bytes_max == 64 * 1024
    x = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 1)).astype(np.uint8)
    expected = model.forward(x, device="reference")
    expected_stats = model.statistics
    np.testing.assert_array_equal(model.forward(x, device="tinynpu"), expected)
    assert model.statistics.layers == expected_stats.layers


def test_check_reports_every_problem_per_layer(tinynpu, capsys, tmp_path):
    model = small_model(activation_bits=8, channels=80)
    report = model.check("tinynpu")
    assert not report.fits
    verdicts = {p.name: p for p in report.layers}
    assert not verdicts["conv_3"].supported
    assert "8-bit activations unsupported on this device" in verdicts["conv_3"].reason
    assert "80 channels, this device takes at most 64" in verdicts["conv_1"].reason
    assert verdicts["head"].supported
    assert "conv_3: 8-bit activations unsupported on this device (it takes 1, 4)" in report.unsupported
    with pytest.raises(es.DeviceError, match="tinynpu cannot run this model: conv_1: 8-bit activations"):
        model.forward(np.zeros((1, 8, 8, 1), np.uint8), device="tinynpu")
    model.save(tmp_path / "m.esnn")
    assert cli.main(["check", str(tmp_path / "m.esnn"), "--device", "tinynpu"]) == 1
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "conv_3: 8-bit activations unsupported" in out
    assert "fit tinynpu" in model.summary(print_fn=None, device="tinynpu")


def wide_model(side: int) -> es.Model:
    """Large activations, few weights: 4 channels at side x side (4 * side^2 bytes of the NPU's SRAM),
    then a global average to 2 values."""
    rng = np.random.default_rng(4)
    return es.Model([
        L.InputConv2D(name="wide", weights=rng.integers(-8, 8, (3, 3, 1, 4)), weight_bits=4,
                      out_multiplier=np.ones(4, int), out_shift=6, activation_bits=4),
        L.Conv2D(name="head", weights=rng.integers(-8, 8, (1, 1, 4, 2)), weight_bits=4, neuron="none",
                 pool="global_avg"),
    ], input_shape=(side, side, 1))


def deep_model(units: int) -> es.Model:
    """Many weights, a small arena: 16384 x `units` 4-bit weights on a 128x128 input (1 channel: the NPU
    takes at most 64)."""
    rng = np.random.default_rng(units)
    return es.Model([L.Dense(name="fc", weights=rng.integers(-8, 8, (128 * 128, units)), weight_bits=4,
                             neuron="none")], input_shape=(128, 128, 1))


def just_fits(build, low: int, high: int) -> int:
    """The largest argument in [low, high) whose model fits the tinynpu (the one after it does not)."""
    assert build(low).check("tinynpu").fits and not build(high).check("tinynpu").fits
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if build(middle).check("tinynpu").fits else (low, middle)
    return low


def test_check_names_the_arena_or_program_memory_that_just_does_not_fit(tinynpu):
    """A device with separate limits for its arena (SRAM) and its program (flash): one step either side
    of each, the report names the memory that overflows with its exact need (the NPU's own sizing rule,
    TinyNpu.memory_figures), and nothing else."""
    from edgesnn_tinynpu import FLASH_BYTES, SRAM_BYTES, TinyNpu

    side = just_fits(wide_model, 8, 256)
    assert side == 127   # 4 * 127^2 + 2 * 4 = 64,524 B of 65,536; 4 * 128^2 + 8 = 65,544 B
    units = just_fits(deep_model, 1, 64)
    assert units == 31   # 254,076 packed bytes of 262,144; 32 units: 262,272 B
    for build, low, what, most, other in ((wide_model, side, "arena", SRAM_BYTES, "program"),
                                          (deep_model, units, "program", FLASH_BYTES, "arena")):
        fits, over = build(low).check("tinynpu"), build(low + 1).check("tinynpu")
        for model, report in ((build(low), fits), (build(low + 1), over)):
            assert (report.program_bytes, report.arena_bytes) == TinyNpu().memory_figures(model)
        used = getattr(over, f"{what}_bytes")
        assert getattr(fits, f"{what}_bytes") <= most < used
        assert getattr(over, f"{other}_bytes") < getattr(over, f"{other}_bytes_max") // 4   # only one memory binds
        assert fits.fits and fits.unsupported == []
        assert over.unsupported == [f"{what} memory: the model needs {used:,} B, this device has {most:,} B "
                                    f"({used - most:,} B too many)"]
        assert all(layer.supported for layer in over.layers)
        with pytest.raises(es.DeviceError, match=f"tinynpu cannot run this model: {what} memory"):
            build(low + 1).forward(np.zeros((1, *build(low + 1).input_shape), np.uint8), device="tinynpu")
    assert wide_model(side + 1).check("tinynpu").arena_bytes - SRAM_BYTES == 8


# -- the device module itself -------------------------------------------------------------------------


def test_the_devices_module_is_importable_and_es_devices_still_lists():
    import edgesnn.devices as d

    assert d.Device is es.Device and d.MappingReport is es.MappingReport
    assert es.DeviceError is d.DeviceError
    assert es.devices is d and "reference" in es.devices() and es.devices() == plugins.devices()


def test_every_optional_capability_is_declared_on_device_and_documented():
    """Capabilities are class attributes of es.Device, off by default, each explained in its docstring and in
    docs/plugins.md "Optional capabilities" (a vendor reads them there, never discovers them by getattr)."""
    capabilities = [name for name, value in vars(es.Device).items() if isinstance(value, bool)]
    assert sorted(capabilities) == ["checks_input_range", "repeats_dense_input", "returns_counts", "runs_over_time"]
    docs = (EXAMPLE.parent.parent / "docs" / "plugins.md").read_text()
    section = docs[docs.index("### Optional capabilities"):docs.index("### Register it")]
    for name in capabilities:
        assert getattr(es.Device, name) is False
        assert f"``{name}``" in es.Device.__doc__ and f"`{name} = True`" in section, name


def test_one_resolver_one_instance_per_registration():
    from edgesnn.devices import resolve_device

    assert resolve_device("reference") is resolve_device("reference")
    first = resolve_device("reference")
    plugins.reset()
    assert resolve_device("reference") is first   # the same registration: the same instance
    assert es.device("reference") is not first    # es.device builds a new one (options make another device)


def test_a_device_declaring_no_capabilities_gets_checked_input_and_statistics():
    class Plain(es.Device):
        name = "plain"

        def run(self, program, x5, timesteps=None):
            assert x5.dtype == np.uint8 and x5.ndim == 5
            return es.device("reference").run(program, x5, timesteps)

    model = small_model()
    x = np.random.default_rng(3).integers(0, 16, (1, 8, 8, 1)).astype(np.uint8)
    np.testing.assert_array_equal(model.forward(x, device=Plain()), model.forward(x, device="reference"))
    with pytest.raises(ValueError):
        model.forward(x.astype(np.float32), device=Plain())
    assert Plain().check(model).fits and Plain().info().name == "plain"


def test_check_cli_on_a_profile_fits_and_lists_the_memory(capsys):
    path = Path(es.__file__).resolve().parent / "data" / "mnist_cnn_4bit.esnn"
    assert cli.main(["check", str(path), "--device", "cortex-m4"]) == 0
    out = capsys.readouterr().out
    room = es.devices.PROFILES["cortex-m4"].file_bytes_max   # 1 MB of flash less the engine's own code
    assert "device 'cortex-m4': fits" in out and "of 262,144 B memory" in out
    assert f"model file {path.stat().st_size:,} B of {room:,} B" in out
    assert cli.main(["check", str(path), "--device", "cortex-m4", "-o", "bad"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err
