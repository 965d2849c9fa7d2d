"""The `edgesnn` command line: plugins, devices, summary, demo, and its errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import cli, plugins
from edgesnn.devices import Device
from edgesnn.layers import Dense, InputConv2D


pytestmark = pytest.mark.usefixtures("fresh_registry")  # tests/conftest.py


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def table_rows(text: str) -> dict[str, list[str]]:
    """First column -> the other cells of a table printed by the CLI (cells split on 2+ spaces)."""
    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) > 1 and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells[1:]
    return rows


def small_model() -> es.Model:
    """conv 3x3 (2 channels, 4-bit) -> dense 8x8x2 -> 3, built by hand."""
    rng = np.random.default_rng(0)
    conv = InputConv2D(name="conv", weights=rng.integers(-8, 8, size=(3, 3, 1, 2)), bias=[1, -1], weight_bits=4,
                       neuron="relu", activation_bits=4, out_multiplier=1, out_shift=8)
    dense = Dense(name="head", weights=rng.integers(-2, 2, size=(8 * 8 * 2, 3)), bias=[0, 5, -5], weight_bits=2,
                  neuron="none")
    return es.Model(layers=[conv, dense], input_shape=(8, 8, 1))


# -- plugins and devices -----------------------------------------------------------------------------


def test_plugins_prints_name_kind_distribution_version_of_each_loaded_plugin(capsys):
    status, out, _ = run_cli(capsys, "plugins")
    assert status == 0
    assert out.splitlines()[0].split() == ["name", "kind", "distribution", "version", "provides"]
    rows = table_rows(out)
    assert rows["edgesnn.default_plugin"][:3] == ["device", "edgesnn", es.__version__]
    assert "device reference" in rows["edgesnn.default_plugin"][3]
    listed = [name for name in rows if name != "name"]
    assert listed == [row.name for row in plugins.list_plugins()]


def test_plugins_lists_the_built_in_frontends(capsys):
    _, out, _ = run_cli(capsys, "plugins")
    rows = table_rows(out)
    for name in ("image", "kws", "rate"):      # pyproject's [project.entry-points.edgesnn]
        assert rows[name][:2] == ["frontend", "edgesnn"], rows.get(name)


def test_plugins_lists_a_plugin_registered_in_code(capsys):
    class Gadget(Device):
        name = "gadget"

    class GadgetPlugin:
        @es.hookimpl
        def edgesnn_register_devices(self, register):
            register("gadget", Gadget)

    plugins.register(GadgetPlugin(), name="gadget-plugin")
    _, out, _ = run_cli(capsys, "plugins")
    assert table_rows(out)["gadget-plugin"] == ["device", "(in code)", "-", "device gadget"]


def test_devices_lists_every_registered_device_with_its_plugin(capsys):
    status, out, _ = run_cli(capsys, "devices")
    assert status == 0
    rows = table_rows(out)
    assert sorted(name for name in rows if name != "device") == es.devices()
    assert rows["reference"][0] == "edgesnn.default_plugin"
    assert "reference engine" in rows["reference"][1]


def test_environment_selection_reaches_the_cli(capsys, monkeypatch):
    monkeypatch.setenv(plugins.ONLY_PLUGINS_ENV, "")
    _, out, _ = run_cli(capsys, "plugins")
    assert [name for name in table_rows(out) if name != "name"] == ["edgesnn.default_plugin"]


def test_a_plugin_error_is_one_line_on_stderr_and_status_1(capsys, monkeypatch):
    monkeypatch.setenv(plugins.ONLY_PLUGINS_ENV, "no-such-plugin")
    status, out, err = run_cli(capsys, "devices")
    assert status == 1 and out == ""
    assert err.startswith("edgesnn devices: error: EDGESNN_PLUGINS='no-such-plugin' names 'no-such-plugin'")
    assert "Traceback" not in err


# -- summary -----------------------------------------------------------------------------------------


def test_summary_prints_every_layer_and_the_totals(capsys, tmp_path):
    model = small_model()
    path = tmp_path / "small.esnn"
    model.save(path)
    status, out, _ = run_cli(capsys, "summary", str(path))
    assert status == 0
    rows = table_rows(out)
    assert rows["conv"][0] == "input_conv2d" and rows["head"][0] == "dense"
    params = 3 * 3 * 1 * 2 + 2 + 8 * 8 * 2 * 3 + 3          # weights + biases, counted here
    assert rows["total"][-2] == f"{params:,}"


def test_summary_of_a_missing_file_is_an_error_line(capsys, tmp_path):
    status, _, err = run_cli(capsys, "summary", str(tmp_path / "absent.esnn"))
    assert status == 1
    assert err.startswith("edgesnn summary: error:") and "absent.esnn" in err


def test_summary_of_a_foreign_file_says_what_is_wrong(capsys, tmp_path):
    path = tmp_path / "not-a-model.esnn"
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a model" * 4)
    status, _, err = run_cli(capsys, "summary", str(path))
    assert status == 1
    assert err.startswith("edgesnn summary: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# -- demo and the parser ------------------------------------------------------------------------------


def test_demo_converts_classifies_and_reports_statistics(capsys):
    status, out, _ = run_cli(capsys, "demo")
    assert status == 0
    rows = table_rows(out)
    assert rows["/0/Conv"][0] == "input_conv2d" and rows["/12/Gemm"][0] == "dense"
    float_accuracy = float(re.search(r"float accuracy\s+([\d.]+)", out).group(1))
    accuracy = float(re.search(r"on device '\w+': accuracy ([\d.]+)", out).group(1))
    assert float_accuracy > 0.95 and accuracy > float_accuracy - 0.02
    assert "Statistics:" in out and "synops/sample" in out
    assert "gives the same answers" in out
    spiking = [float(v) for v in re.findall(r"T = \s*\d+: accuracy ([\d.]+)", out)]
    assert len(spiking) == 4 and spiking[-1] > 0.95


def test_demo_on_an_unknown_device_lists_the_devices(capsys):
    status, _, err = run_cli(capsys, "demo", "--device", "nowhere")
    assert status == 1
    assert "no device named 'nowhere'" in err and "reference" in err


def test_no_command_prints_usage_and_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "usage: edgesnn" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"edgesnn {es.__version__}"


def test_the_module_runs_as_a_program():
    result = subprocess.run([sys.executable, "-m", "edgesnn.cli", "devices"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "reference" in result.stdout


# -- every subcommand, given a wrong input: one line, status 1, no traceback (issue 15) --------------


def bomb_png(path) -> None:
    """A tiny PNG whose header claims 20,000 x 20,000 pixels (above twice Pillow's bomb limit)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def files(tmp_path):
    """A model file, a pipeline file, and the wrong inputs newcomers give them."""
    model = small_model()
    paths = {"model": tmp_path / "model.esnn", "image_pipe": tmp_path / "image_pipe.esnn"}
    model.save(paths["model"])
    es.Pipeline(es.frontend("image", size=(8, 8)), model, labels=["a", "b", "c"]).save(paths["image_pipe"])
    for name, metadata in (("labels5", {"labels": 5}),
                           ("threshold_x", {"pipeline": {"threshold": "x"}})):
        paths[name] = tmp_path / f"{name}.esnn"
        es.Model(model.layers, model.input_shape, metadata=metadata).save(paths[name])
    paths["flat_npy"] = tmp_path / "flat.npy"
    np.save(paths["flat_npy"], np.zeros((4, 64), np.float32))
    paths["float_npz"] = tmp_path / "float.npz"
    np.savez(paths["float_npz"], x=np.random.default_rng(0).random((4, 8, 8, 1), np.float32))
    paths["one_npy"] = tmp_path / "one.npy"
    np.save(paths["one_npy"], np.zeros((8, 8, 1), np.uint8))
    paths["wrong_npy"] = tmp_path / "wrong.npy"
    np.save(paths["wrong_npy"], np.zeros((5, 7, 7, 2), np.uint8))
    paths["bomb"] = tmp_path / "bomb.png"
    bomb_png(paths["bomb"])
    paths["wav"] = tmp_path / "clip.wav"
    import soundfile
    soundfile.write(paths["wav"], np.zeros(16000, np.float32), 16000)
    paths["text"] = tmp_path / "notes.npz"
    paths["text"].write_text("x = 1, 2, 3\n")
    paths["digits_npy"] = tmp_path / "digits.npy"
    np.save(paths["digits_npy"], np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8))
    paths["missing"] = tmp_path / "nosuch.png"
    paths["no_dir_out"] = tmp_path / "no" / "such" / "dir" / "x.esnn"
    paths["onnx"] = Path(es.__file__).resolve().parent / "data" / "mnist_cnn.onnx"
    paths["tmp"] = tmp_path
    return paths


WRONG_INPUTS = [
    # (command line with {file} placeholders, extra environment, words the one error line must hold)
    ("plugins", {"EDGESNN_PLUGINS": "no-such-plugin"}, "names 'no-such-plugin'"),
    ("devices", {"EDGESNN_PLUGINS": "no-such-plugin"}, "names 'no-such-plugin'"),
    ("convert {onnx} -o {model}.out --samples {flat_npy}", {}, "reshape(-1, 8, 8, 1)"),
    ("convert {onnx} -o {model}.out --samples {float_npz}", {}, "float32"),
    ("convert {onnx} -o {no_dir_out} --samples {float_npz}", {}, "does not exist"),
    ("convert {onnx} -o {model}.out --samples {missing}", {}, "No such file"),
    ("convert {onnx} -o {model}.out --samples {text}", {}, "not a .npy or .npz file"),
    ("convert {onnx} -o {model}.out --samples {digits_npy} --report --test {missing}", {}, "nosuch.png"),
    ("summary {missing}", {}, "nosuch.png"),
    ("demo --device nowhere", {}, "no device named 'nowhere'"),
    ("pipeline {model} -o {model}.out --frontend image --config nojson", {}, "--config is not JSON"),
    ("pipeline {model} -o {model}.out --frontend nosuch", {}, "nosuch"),
    ("pipeline {model} -o {model}.out --frontend image --config {{\"sise\":8}}", {}, "no setting 'sise'; it takes size"),
    ("pipeline {model} -o {model}.out --frontend image --config {{\"size\":[7,7]}}", {}, "expects input"),
    ("predict {image_pipe} {missing}", {}, "nosuch.png: no such file"),
    ("predict {model} {one_npy}.png", {}, "no such file"),
    ("predict {image_pipe} {bomb}", {}, "decompression bomb"),
    ("predict {labels5} {one_npy}", {}, "'labels' must be a list"),
    ("predict {threshold_x} {one_npy}", {}, "'threshold' must be a number"),
    ("predict {model} {wrong_npy}", {}, "not model inputs"),
    ("predict {image_pipe} {one_npy} --top 0", {}, "--top must be at least 1"),
    ("stream {model} {wav}", {}, "no frontend"),
    ("stream {image_pipe} {wav}", {}, "no streaming mode"),
    ("eval-stream {image_pipe} --keywords {tmp} --background {tmp}", {}, "no streaming audio frontend"),
    ("eval-stream {image_pipe} --keywords /nonexistent --background {tmp}", {}, "no such directory"),
    ("eval-stream {image_pipe} --keywords {tmp} --background {tmp} --streams 0", {}, "--streams must be at least 1"),
    ("eval-stream {image_pipe} --keywords {tmp} --background {tmp} --thresholds .5,x", {}, "comma-separated numbers"),
    ("predict {image_pipe} {one_npy} --plot {no_dir_out}", {}, "--plot"),
    ("eval {model} {one_npy}", {}, "a .npy holds one array"),
    ("eval {model} {float_npz} --batch 0", {}, "--batch must be at least 1"),
    ("bench {model} --input {wrong_npy}", {}, "(5, 7, 7, 2)"),
    ("bench {model} --repeat 0", {}, "--repeat must be at least 1"),
    ("export {missing} --nir {model}.nir", {}, "nosuch.png"),
    ("export {model} --nir {model}.nir", {}, "has no NIR node (relu is not spiking)"),
    ("export {model} --nir {model}.nir --dt 0", {}, "--dt must be positive"),
    ("export {model} --nir {no_dir_out}", {}, "does not exist"),
]


@pytest.mark.parametrize("command, env, words", WRONG_INPUTS, ids=[c for c, _, _ in WRONG_INPUTS])
def test_every_subcommand_answers_a_wrong_input_with_one_error_line_and_status_1(
        command, env, words, files, capsys, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plugins.reset()   # the files were made with the plugins loaded; the environment applies from here
    argv = [part.format(**files) for part in command.split()]
    status, out, err = run_cli(capsys, *argv)
    assert status == 1, (out, err)
    assert err.startswith(f"edgesnn {argv[0]}: error: ") and len(err.strip().splitlines()) == 1, err
    assert words in err and "Traceback" not in err


def test_the_wrong_input_table_covers_every_subcommand():
    commands = {name for action in cli.build_parser()._subparsers._group_actions for name in action.choices}
    covered = {command.split()[0] for command, _, _ in WRONG_INPUTS}
    assert commands - covered <= {"check"}, commands - covered   # 'check': tested in test_convert / test_remote


# -- predict over time: --plot and --early-exit on the shipped spiking MNIST model ---------------------

SPIKING_MNIST = Path(es.__file__).parent / "data" / "mnist_cnn_if.esnn"


@pytest.fixture
def two_digits(tmp_path) -> Path:
    from edgesnn.datasets import mnist

    _, _, x_test, y_test = mnist()
    path = tmp_path / "digits.npy"
    np.save(path, np.stack([x_test[y_test == 0][0], x_test[y_test == 7][0]]))
    return path


def test_predict_plots_class_scores_over_timesteps(capsys, tmp_path, two_digits):
    pytest.importorskip("matplotlib")
    status, out, _ = run_cli(capsys, "predict", str(SPIKING_MNIST), str(two_digits), "--plot", str(tmp_path / "t.png"),
                             "--device", "reference")
    assert status == 0 and f"wrote {tmp_path / 't.png'}" in out
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"digits.npy\[0\]: 0 .*\n.*digits.npy\[1\]: 7 ", out), out


def test_predict_with_an_early_exit_reports_the_timesteps_used(capsys, two_digits):
    status, out, _ = run_cli(capsys, "predict", str(SPIKING_MNIST), str(two_digits), "--early-exit", "3000")
    assert status == 0
    used = [int(v) for v in re.findall(r"\((\d+) timesteps\)", out)]
    assert len(used) == 2 and all(1 <= steps < 32 for steps in used), out
    model = es.Model.load(SPIKING_MNIST)
    model.forward(np.load(two_digits), early_exit=3000, device="reference")
    assert model.statistics.timesteps_used.tolist() == used


def test_predict_plot_of_a_one_timestep_model_is_refused(capsys, tmp_path, two_digits):
    pytest.importorskip("matplotlib")
    status, _, err = run_cli(capsys, "predict", str(SPIKING_MNIST.with_name("mnist_cnn_4bit.esnn")), str(two_digits),
                             "--plot", str(tmp_path / "t.png"))
    assert status != 0 and "class scores over timesteps, and this model runs 1 timestep" in err
    assert not (tmp_path / "t.png").exists()


def test_a_nir_graph_converts_and_checks_from_the_command_line_without_samples(capsys, tmp_path):
    pytest.importorskip("nir")
    spiking = es.Model([Dense(name="h", weights=np.ones((4, 3), int), neuron="if", threshold=3),
                        Dense(name="o", weights=np.ones((3, 2), int), neuron="none")], input_shape=(1, 1, 4))
    with pytest.warns(UserWarning, match="subtractive reset"):
        spiking.to_nir(tmp_path / "net.nir")
    status, out, err = run_cli(capsys, "check", str(tmp_path / "net.nir"))
    assert status == 0 and "every node converts" in out, err
    status, out, err = run_cli(capsys, "convert", str(tmp_path / "net.nir"), "-o", str(tmp_path / "net.esnn"),
                               "--labels", "a,b")
    assert status == 0, err
    from edgesnn import format as F

    assert F.write_model(es.Model.load(tmp_path / "net.esnn")) == \
        F.write_model(es.convert(tmp_path / "net.nir", None, labels=["a", "b"]))


def test_convert_refuses_labels_that_do_not_name_every_class_before_writing(capsys, files):
    out = files["tmp"] / "labelled.esnn"
    status, _, err = run_cli(capsys, "convert", str(files["onnx"]), "-o", str(out), "--samples",
                             str(files["digits_npy"]), "--labels", "a,b")
    assert status == 1 and err.strip().splitlines()[-1] == (
        "edgesnn convert: error: labels names 2 classes (['a', 'b']), but the model outputs 10 (output shape "
        "(1, 1, 10)): give 10 labels, one per output, or none"), err
    assert not out.exists()


def test_the_readme_command_line_session_runs_as_written_and_prints_what_it_says(tmp_path):
    """README "Command line": the bash block, run from an empty directory with this interpreter's `edgesnn`."""
    import os

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    session = section.split("```bash\n", 1)[1].split("```", 1)[0]
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(["bash", "-e", "-c", session], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for said in re.findall(r"# (.*)", session):   # every comment that quotes output is in the output
        for quote in re.findall(r"(?:float|integer) (0\.\d{4})|(accuracy 0\.\d{4} \(\d+ of \d+\))|(\w+\.\w+: \d \(\d\.\d{3}\))",
                                said):
            assert any(part and part in result.stdout for part in quote), (quote, result.stdout[-3000:])
