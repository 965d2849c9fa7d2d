"""The plugin registry: default plugin, lookups, errors naming the plugin, entry points, env vars,
the documentation of every hook, and the example plugin installed with pip and used through its
entry point."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import hookspecs, plugins
from edgesnn.devices import Device, ReferenceDevice
from edgesnn.errors import EdgesnnError, PluginError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = REPO / "examples" / "plugin_example"
DEFAULT_PLUGIN = "edgesnn.default_plugin"


pytestmark = pytest.mark.usefixtures("fresh_registry")  # tests/conftest.py


def hook_names() -> list[str]:
    return [name for name, value in vars(hookspecs).items()
            if callable(value) and hasattr(value, hookspecs.PROJECT_NAME + "_spec")]


def native_loads() -> bool:
    """Whether the native engine's module imports and its library loads (decided here independently)."""
    try:
        import edgesnn.native  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


# -- hookspecs and their documentation ---------------------------------------------------------------


def test_hookspecs_are_the_three_register_hooks():
    assert sorted(hook_names()) == ["edgesnn_register_devices", "edgesnn_register_frontends",
                                    "edgesnn_register_importers"]


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_summary_and_documents_every_parameter(hook):
    function = getattr(hookspecs, hook)
    doc = inspect.getdoc(function) or ""
    assert doc.splitlines() and doc.splitlines()[0].strip(), f"{hook} has no one-line summary"
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in doc, f"{hook} does not document its parameter {parameter!r}"


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_section_in_docs_plugins_md(hook):
    docs = (REPO / "docs" / "plugins.md").read_text()
    headings = [line for line in docs.splitlines() if line.startswith("#")]
    assert any(f"`{hook}(" in line for line in headings), \
        f"hook {hook} is in edgesnn/hookspecs.py but has no heading in docs/plugins.md"


# -- the default plugin and lookups ------------------------------------------------------------------


def test_default_plugin_registers_reference_and_cpu_when_the_native_engine_loads():
    assert "reference" in es.devices()
    assert ("cpu" in es.devices()) == native_loads()
    assert es.plugins.get_device("reference") is ReferenceDevice
    device = es.device("reference")
    assert isinstance(device, Device) and device.name == "reference"
    rows = {row.name: row for row in plugins.list_plugins()}
    assert rows[DEFAULT_PLUGIN] == (DEFAULT_PLUGIN, ("device",), "edgesnn", es.__version__)


def test_lookups_return_sorted_names():
    for names in (es.importers(), es.frontends(), es.devices()):
        assert names == sorted(names)


@pytest.mark.parametrize("kind, lookup", [("importer", plugins.get_importer), ("frontend", plugins.get_frontend),
                                          ("device", plugins.get_device)])
def test_an_unknown_name_is_a_lookup_error_listing_the_registered_names(kind, lookup):
    with pytest.raises(plugins.UnknownNameError) as info:
        lookup("no-such-thing")
    error = info.value
    assert isinstance(error, KeyError) and isinstance(error, LookupError) and isinstance(error, EdgesnnError)
    message = str(error)
    assert f"no {kind} named 'no-such-thing'" in message
    registered = {"importer": es.importers, "frontend": es.frontends, "device": es.devices}[kind]()
    for name in registered:
        assert name in message


def test_an_unknown_device_suggests_the_close_name():
    with pytest.raises(KeyError, match="did you mean 'reference'"):
        es.device("referense")


def test_plugins_load_lazily_on_first_lookup():
    code = textwrap.dedent("""
        import sys
        import edgesnn as es
        before = sorted(m for m in sys.modules if m.startswith("edgesnn.default_plugin"))
        es.devices()
        after = sorted(m for m in sys.modules if m.startswith("edgesnn.default_plugin"))
        print(before, after)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] ['edgesnn.default_plugin']"


# -- plugins registered in code, and the errors that name the plugin ---------------------------------


class EchoDevice(Device):
    """Runs nothing; records its options."""

    name = "echo"

    def __init__(self, **options):
        self.options = options


class TinyFrontend:
    name = "tiny"

    def __init__(self, scale: int = 1):
        self.config = {"scale": scale}
        self.output_shape = (1, 1, 1)

    def __call__(self, raw):
        return np.full((1, 1, 1), raw * self.config["scale"], dtype=np.uint8)


class EchoPlugin:
    @es.hookimpl
    def edgesnn_register_devices(self, register):
        register("echo", EchoDevice)

    @es.hookimpl
    def edgesnn_register_frontends(self, register):
        register("tiny", TinyFrontend)


def test_a_plugin_registered_in_code_provides_a_device_and_a_frontend():
    plugins.register(EchoPlugin(), name="echo-plugin")
    assert "echo" in es.devices() and "tiny" in es.frontends()
    device = es.device("echo", port="/dev/null", baud=9600)
    assert isinstance(device, EchoDevice) and device.options == {"port": "/dev/null", "baud": 9600}
    frontend = es.frontend("tiny", scale=3)
    assert frontend.config == {"scale": 3}
    assert frontend(5)[0, 0, 0] == 15
    row = [r for r in plugins.list_plugins() if r.name == "echo-plugin"][0]
    assert row == ("echo-plugin", ("device", "frontend"), None, None)
    plugins.unregister("echo-plugin")
    assert "echo" not in es.devices()


def test_a_duplicate_name_names_both_plugins():
    class First:
        @es.hookimpl
        def edgesnn_register_devices(self, register):
            register("twin", EchoDevice)

    class Second:
        @es.hookimpl
        def edgesnn_register_devices(self, register):
            register("twin", EchoDevice)

    plugins.register(First(), name="first-plugin")
    with pytest.raises(PluginError, match="registered twice") as info:
        plugins.register(Second(), name="second-plugin")
    assert "'first-plugin'" in str(info.value) and "'second-plugin'" in str(info.value)
    assert plugins.get_device("twin") is EchoDevice  # the failed plugin was not kept
    assert "second-plugin" not in [row.name for row in plugins.list_plugins()]


def test_a_duplicate_of_a_built_in_name_names_the_default_plugin():
    class Shadow:
        @es.hookimpl
        def edgesnn_register_devices(self, register):
            register("reference", EchoDevice)

    with pytest.raises(PluginError) as info:
        plugins.register(Shadow(), name="shadow")
    assert DEFAULT_PLUGIN in str(info.value) and "'shadow'" in str(info.value)


def test_a_bad_hookimpl_signature_names_the_plugin():
    class Misspelt:
        @es.hookimpl
        def edgesnn_register_devices(self, registr):
            registr("never", EchoDevice)

    with pytest.raises(PluginError, match="'misspelt-plugin'") as info:
        plugins.register(Misspelt(), name="misspelt-plugin")
    assert "registr" in str(info.value)
    assert "misspelt-plugin" not in [row.name for row in plugins.list_plugins()]
    assert "reference" in es.devices()


def test_an_unknown_hook_names_the_plugin():
    class Typo:
        @es.hookimpl
        def edgesnn_register_device(self, register):  # missing "s"
            register("never", EchoDevice)

    with pytest.raises(PluginError, match="'typo-plugin'.*edgesnn_register_device"):
        plugins.register(Typo(), name="typo-plugin")


def test_an_exception_in_a_register_hook_names_the_plugin_and_chains_the_cause():
    class Broken:
        @es.hookimpl
        def edgesnn_register_frontends(self, register):
            raise RuntimeError("the microphone library is missing")

    with pytest.raises(PluginError, match="'broken-plugin'.*RuntimeError.*microphone") as info:
        plugins.register(Broken(), name="broken-plugin")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_an_implementation_may_take_fewer_arguments_than_the_spec():
    class NoArguments:
        calls = 0

        @es.hookimpl
        def edgesnn_register_devices(self):
            NoArguments.calls += 1

    plugins.register(NoArguments(), name="no-arguments")
    assert NoArguments.calls == 1


@pytest.mark.parametrize("hook, name, obj, expected", [
    ("edgesnn_register_importers", "half", object(), "lacks the methods can_import, load"),
    ("edgesnn_register_devices", "gadget", "not a factory", "not callable"),
    ("edgesnn_register_frontends", "two words", TinyFrontend, "without spaces"),
    ("edgesnn_register_devices", "", EchoDevice, "non-empty string"),
])
def test_a_wrong_registration_names_the_plugin_and_what_is_wrong(hook, name, obj, expected):
    def implementation(register):
        register(name, obj)

    plugin = type("Wrong", (), {hook: staticmethod(es.hookimpl(implementation))})()
    with pytest.raises(PluginError, match="'wrong-plugin'") as info:
        plugins.register(plugin, name="wrong-plugin")
    assert expected in str(info.value)


def test_trace_hooks_writes_every_hook_call_to_stderr(monkeypatch, capsys):
    monkeypatch.setenv(plugins.TRACE_HOOKS_ENV, "1")
    es.devices()
    err = capsys.readouterr().err
    assert "edgesnn_register_devices [hook]" in err
    assert f"<register devices for plugin {DEFAULT_PLUGIN!r}>" in err


def test_without_trace_hooks_nothing_is_written(capsys):
    es.devices()
    assert capsys.readouterr().err == ""


# -- entry points: fake installed distributions (a dist-info folder on sys.path) ---------------------


def make_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str],
                      modules: dict[str, str]) -> None:
    """Write an installed distribution the way pip leaves one: modules plus NAME-VERSION.dist-info."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[edgesnn]\n{lines}")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


DEVICE_PLUGIN_SOURCE = """
    import edgesnn as es
    from edgesnn.devices import ReferenceDevice

    @es.hookimpl
    def edgesnn_register_devices(register):
        register({device!r}, ReferenceDevice)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for fake distributions; their modules leave sys.modules afterwards."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for module in set(sys.modules) - before:
        if module.startswith("fake_edgesnn_"):
            del sys.modules[module]


def test_an_entry_point_plugin_is_listed_with_its_distribution_and_version(site):
    make_distribution(site, "fake-gadget", "2.5.1", {"gadget": "fake_edgesnn_gadget"},
                      {"fake_edgesnn_gadget": DEVICE_PLUGIN_SOURCE.format(device="gadget")})
    assert "gadget" in es.devices()
    row = [r for r in plugins.list_plugins() if r.name == "gadget"][0]
    assert row == ("gadget", ("device",), "fake-gadget", "2.5.1")


def test_two_entry_point_plugins_registering_one_name_are_both_named(site):
    make_distribution(site, "fake-one", "1.0", {"one": "fake_edgesnn_one"},
                      {"fake_edgesnn_one": DEVICE_PLUGIN_SOURCE.format(device="onnx-ish")})
    make_distribution(site, "fake-two", "2.0", {"two": "fake_edgesnn_two"},
                      {"fake_edgesnn_two": DEVICE_PLUGIN_SOURCE.format(device="onnx-ish")})
    with pytest.raises(PluginError) as info:
        es.devices()
    message = str(info.value)
    assert "'onnx-ish' is registered twice" in message
    assert "plugin 'one' (distribution fake-one 1.0)" in message
    assert "plugin 'two' (distribution fake-two 2.0)" in message


def test_a_plugin_that_fails_to_import_is_named_with_the_cause(site):
    make_distribution(site, "fake-broken", "0.3", {"broken": "fake_edgesnn_broken"},
                      {"fake_edgesnn_broken": "import fake_edgesnn_no_such_dependency\n"})
    with pytest.raises(PluginError, match="plugin 'broken' \\(distribution fake-broken 0.3\\)") as info:
        es.devices()
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_a_bad_signature_in_an_entry_point_plugin_names_it(site):
    make_distribution(site, "fake-bad", "1.0", {"bad": "fake_edgesnn_bad"}, {"fake_edgesnn_bad": """
        import edgesnn as es

        @es.hookimpl
        def edgesnn_register_importers(register, extra):
            pass
    """})
    with pytest.raises(PluginError, match="plugin 'bad' \\(distribution fake-bad 1.0\\) has a bad hook"):
        es.importers()


def test_edgesnn_plugins_loads_only_the_named_entry_points(site, monkeypatch):
    for name in ("alpha", "beta"):
        make_distribution(site, f"fake-{name}", "1.0", {name: f"fake_edgesnn_{name}"},
                          {f"fake_edgesnn_{name}": DEVICE_PLUGIN_SOURCE.format(device=f"{name}-device")})
    monkeypatch.setenv(plugins.ONLY_PLUGINS_ENV, " beta ,")
    assert "beta-device" in es.devices() and "alpha-device" not in es.devices()
    assert "alpha" not in [row.name for row in plugins.list_plugins()]

    monkeypatch.setenv(plugins.ONLY_PLUGINS_ENV, "")
    plugins.reset()
    assert [row.name for row in plugins.list_plugins()] == [DEFAULT_PLUGIN]
    profiles = list(es.devices.PROFILES)  # the target profiles are built in, like reference
    assert es.devices() == sorted(["reference"] + profiles + (["cpu"] if native_loads() else []))

    monkeypatch.setenv(plugins.ONLY_PLUGINS_ENV, "alpha,gamma")
    plugins.reset()
    with pytest.raises(PluginError, match="'gamma'.*available: .*alpha.*beta"):
        es.devices()


# -- the example plugin, installed with pip and used through its entry point -------------------------


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """examples/plugin_example pip-installed into a fresh target folder (removed afterwards)."""
    work = tmp_path_factory.mktemp("example_plugin")
    source = work / "source"
    shutil.copytree(EXAMPLE_PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True)
    yield target
    shutil.rmtree(work)
    for module in [m for m in sys.modules if m.startswith("edgesnn_example")]:
        del sys.modules[module]


@pytest.fixture
def with_example(example_site, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    return example_site


def test_the_installed_example_plugin_is_listed_with_its_distribution(with_example):
    rows = {row.name: row for row in plugins.list_plugins()}
    assert rows["example"] == ("example", ("frontend", "importer"), "edgesnn-example", "0.1.0")
    assert "npz_mlp" in es.importers() and "ascii" in es.frontends()


def test_the_example_frontend_draws_the_picture(with_example):
    frontend = es.frontend("ascii", height=3, width=4)
    image = frontend("#..#\n.##")
    expected = np.zeros((3, 4, 1), np.uint8)
    for y, x in [(0, 0), (0, 3), (1, 1), (1, 2)]:
        expected[y, x, 0] = 255
    assert image.dtype == np.uint8 and np.array_equal(image, expected)
    assert es.frontend("ascii", **frontend.config).config == frontend.config
    with pytest.raises(ValueError, match="2 rows x 5 columns, larger than the configured 3 x 4"):
        frontend("#####\n#")


def test_the_example_importer_reads_an_mlp_that_runs_like_numpy(with_example, tmp_path):
    rng = np.random.default_rng(7)
    w0, b0 = rng.normal(size=(2 * 3 * 2, 5)), rng.normal(size=5)
    w1, b1 = rng.normal(size=(5, 4)), rng.normal(size=4)
    path = tmp_path / "mlp.npz"
    np.savez(path, input_shape=np.array([2, 3, 2]), weight_0=w0, bias_0=b0, weight_1=w1, bias_1=b1)
    importer = plugins.get_importer("npz_mlp")
    assert importer.can_import(str(path)) and not importer.can_import(tmp_path / "missing.npz")
    assert not importer.can_import(object()) and ".npz" in importer.extensions

    graph = importer.load(path)
    x = rng.normal(size=(6, 2, 3, 2)).astype(np.float32)
    hidden = np.maximum(x.reshape(6, -1) @ w0 + b0, 0)
    expected = hidden @ w1 + b1
    assert np.allclose(graph.run(x).reshape(6, -1), expected, atol=1e-4)


def test_edgesnn_plugins_lists_the_installed_example(with_example):
    env_path = str(with_example)
    result = subprocess.run([sys.executable, "-m", "edgesnn.cli", "plugins"], capture_output=True, text=True,
                            env={**_clean_env(), "PYTHONPATH": env_path})
    assert result.returncode == 0, result.stderr
    line = [l for l in result.stdout.splitlines() if l.startswith("example ")][0]
    assert re.search(r"frontend, importer\s+edgesnn-example\s+0\.1\.0\s+importer npz_mlp, frontend ascii", line)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (plugins.ONLY_PLUGINS_ENV, plugins.TRACE_HOOKS_ENV)}


def test_an_entry_point_plugin_is_imported_only_on_first_lookup(with_example):
    code = ("import sys, edgesnn as es\n"
            "before = 'edgesnn_example' in sys.modules\n"
            "es.frontends()\n"
            "print(before, 'edgesnn_example' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**_clean_env(), "PYTHONPATH": str(with_example)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_an_option_a_frontend_or_device_does_not_take_is_named_with_those_it_takes():
    with pytest.raises(TypeError, match=r"the frontend 'image' has no setting 'sizee'; it takes size, channels"):
        es.frontend("image", sizee=28)
    with pytest.raises(TypeError, match=r"the device 'cortex-m4' has no setting 'arena'; it takes none"):
        es.device("cortex-m4", arena=1)
    assert es.frontend("image", size=28).output_shape == (28, 28, 1)      # the options it takes still work
