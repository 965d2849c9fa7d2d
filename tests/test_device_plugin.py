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


# -- the device module itself -------------------------------------------------------------------------


def test_the_devices_module_is_importable_and_es_devices_still_lists():
    import edgesnn.devices as d

    assert d.Device is es.Device and d.MappingReport is es.MappingReport
    assert es.DeviceError is d.DeviceError
    assert es.devices is d and "reference" in es.devices() and es.devices() == plugins.devices()


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
