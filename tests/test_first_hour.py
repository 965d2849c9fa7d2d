"""What a newcomer trips on in the first hour (issue 15): shipped models that take what the README
says, messages that point the right way, pipeline files that keep what their author saved, and the
small ones (frontend edge cases, zero counts, partial failures, the README's own commands)."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgesnn as es
from edgesnn import cli, plugins
from edgesnn.datasets import mnist

pytestmark = pytest.mark.usefixtures("fresh_registry")  # tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(es.__file__).resolve().parent / "data"
SHIPPED = ["mnist_cnn_4bit.esnn", "mnist_cnn_8bit.esnn", "mnist_cnn_if.esnn"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def digits():
    """Four held-out MNIST digits of different classes and their labels."""
    _, _, x_test, y_test = mnist()
    index = [int(np.flatnonzero(y_test == c)[0]) for c in (0, 3, 7, 9)]
    return x_test[index], y_test[index]


def write_png(path: Path, digit: np.ndarray, paper: bool, size: int = 56) -> Path:
    pixels = 255 - digit[:, :, 0] if paper else digit[:, :, 0]
    Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC).convert("RGB").save(path)
    return path


# -- item 3: the shipped models take PNGs, white on black and dark on light -------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_models_store_their_image_frontend(name):
    pipe = es.Pipeline.load(DATA / name)
    assert pipe.frontend is not None and pipe.frontend.name == "image"
    assert pipe.frontend.output_shape == (28, 28, 1) and pipe.frontend.config["invert"] == "auto"
    assert pipe.labels == [str(d) for d in range(10)]


@pytest.mark.parametrize("paper", [False, True], ids=["mnist-style", "ink-on-paper"])
def test_predict_classifies_pngs_with_the_shipped_4bit_model(paper, digits, tmp_path, capsys):
    x, y = digits
    pngs = [write_png(tmp_path / f"{i}.png", digit, paper) for i, digit in enumerate(x)]
    status, out, err = run_cli(capsys, "predict", DATA / "mnist_cnn_4bit.esnn", *pngs)
    assert status == 0, err
    answers = [re.match(r".*: (\d) \(", line).group(1) for line in out.splitlines()]
    assert answers == [str(label) for label in y]


def test_summary_shows_the_stored_frontend_and_its_settings(capsys):
    status, out, _ = run_cli(capsys, "summary", DATA / "mnist_cnn_if.esnn")
    assert status == 0
    assert "frontend: 'image' (size=[28, 28], channels=1, fit='pad'" in out and "invert='auto'" in out
    assert "pipeline: " in out and "timesteps=32" in out


def test_the_pipeline_command_attaches_a_frontend_that_predict_then_uses(digits, tmp_path, capsys):
    x, y = digits
    bare = tmp_path / "bare.esnn"
    es.Model.load(DATA / "mnist_cnn_8bit.esnn").save(bare)        # the model's metadata ...
    model = es.Model.load(bare)
    model.metadata.pop("frontend")                                  # ... without its frontend
    model.save(bare)
    png = write_png(tmp_path / "digit.png", x[1], paper=True)
    status, _, err = run_cli(capsys, "predict", bare, png)
    assert status == 1 and "stores no frontend" in err and "edgesnn pipeline" in err
    with_frontend = tmp_path / "with.esnn"
    status, out, err = run_cli(capsys, "pipeline", bare, "-o", with_frontend, "--frontend", "image",
                               "--config", '{"size": [28, 28], "invert": true}')
    assert status == 0, err
    status, out, _ = run_cli(capsys, "predict", with_frontend, png)
    assert status == 0 and re.search(r": (\d) \(", out).group(1) == str(y[1])


def test_the_image_frontend_inverts_only_light_background_images_with_auto():
    dark_on_light = np.full((10, 10), 250, np.uint8)
    dark_on_light[3:7, 3:7] = 10
    light_on_dark = 255 - dark_on_light
    fe = es.frontend("image", size=(10, 10), invert="auto")
    assert np.array_equal(fe(dark_on_light)[:, :, 0], light_on_dark)
    assert np.array_equal(fe(light_on_dark)[:, :, 0], light_on_dark)
    with pytest.raises(ValueError, match="invert must be True, False or 'auto'"):
        es.frontend("image", invert="sometimes")


def test_the_png_digits_example_classifies_both_png_styles(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "png_digits" / "classify_pngs.py"),
                             "--count", "20", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    accuracies = [float(v) for v in re.findall(r"accuracy ([\d.]+) on", result.stdout)]
    assert len(accuracies) == 2 and min(accuracies) >= 0.9, result.stdout


# -- item 2: messages that point the right way ---------------------------------------------------------


def test_predict_answers_every_row_of_a_batch_npy(digits, tmp_path, capsys):
    x, y = digits
    np.save(tmp_path / "batch.npy", x[:3])
    status, out, _ = run_cli(capsys, "predict", DATA / "mnist_cnn_4bit.esnn", tmp_path / "batch.npy")
    assert status == 0
    lines = out.splitlines()
    assert [line.split(":")[0].rsplit("/", 1)[-1] for line in lines] == [f"batch.npy[{i}]" for i in range(3)]
    assert [line.split(": ")[1][0] for line in lines] == [str(v) for v in y[:3]]


def test_bench_names_the_shape_the_file_holds(tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 28, 28, 3), np.uint8))
    status, _, err = run_cli(capsys, "bench", DATA / "mnist_cnn_4bit.esnn", "--input", tmp_path / "wrong.npy")
    assert status == 1 and "holds uint8 (2, 28, 28, 3)" in err and "(28, 28, 1)" in err


# -- item 7: a pipeline saved without a frontend does not keep the old one ----------------------------


def test_a_pipeline_saved_without_a_frontend_drops_the_one_the_model_came_with(tmp_path):
    model = es.Pipeline.load(DATA / "mnist_cnn_4bit.esnn").model    # from a pipeline file
    assert "frontend" in model.metadata
    es.Pipeline(None, model).save(tmp_path / "bare.esnn")
    assert es.Pipeline.load(tmp_path / "bare.esnn").frontend is None
    assert "frontend" in model.metadata                               # the model itself is left as it was


# -- item 8: the small ones ------------------------------------------------------------------------------


def test_kws_refuses_a_zero_sample_rate_and_warns_on_audio_far_outside_unit_range():
    fe = es.frontend("kws")
    with pytest.raises(ValueError, match="positive whole sample rate"):
        fe((np.zeros(16000, np.float32), 0))
    with pytest.warns(UserWarning, match="peaks at 12000.*divide by 32768"):
        fe(np.full(16000, 12000.0, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fe(np.full(16000, 0.99, np.float32))                          # ordinary audio: no warning


def test_rate_checks_its_limits_before_allocating():
    with pytest.raises(ValueError, match=r"timesteps must be in \[1, 1048576\]"):
        es.frontend("rate", timesteps=2**20 + 1)
    fe = es.frontend("rate", timesteps=60000)
    with pytest.raises(ValueError, match="intermediate values, above the limit"):
        fe(np.zeros((100, 100), np.uint8))                            # 600 M values: refused, not allocated


def test_predict_prints_the_good_inputs_and_reports_the_bad_one(digits, tmp_path, capsys):
    x, y = digits
    good = [write_png(tmp_path / f"{i}.png", x[i], paper=False) for i in (0, 1)]
    status, out, err = run_cli(capsys, "predict", DATA / "mnist_cnn_4bit.esnn", good[0], tmp_path / "nosuch.png",
                               good[1])
    assert status == 1
    assert [line.split(": ")[1][0] for line in out.splitlines()] == [str(y[0]), str(y[1])]
    assert "nosuch.png: no such file" in err and "1 of 3 inputs failed" in err and "Traceback" not in err


def test_a_broken_pipe_ends_the_command_quietly(tmp_path):
    np.savez(tmp_path / "many.npz", x=np.zeros((300, 28, 28, 1), np.uint8), y=np.zeros(300, np.int64))
    np.save(tmp_path / "many.npy", np.zeros((300, 28, 28, 1), np.uint8))
    script = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'edgesnn.cli', 'predict', "
              f"{str(DATA / 'mnist_cnn_4bit.esnn')!r}, {str(tmp_path / 'many.npy')!r}], stdout=subprocess.PIPE, "
              f"stderr=subprocess.PIPE); p.stdout.readline(); p.stdout.close(); err = p.stderr.read(); "
              f"sys.exit(0 if p.wait() in (0, 1) and b'Broken pipe' not in err and b'Traceback' not in err "
              f"else 'stderr: ' + err.decode())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def test_the_readme_five_lines_use_the_installed_package_data_and_say_what_c_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                       # not a clone: only the installed package
    readme = (ROOT / "README.md").read_text()
    five = readme.split("In five lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "edgesnn/data/" not in five
    namespace: dict = {}
    exec(compile(five, "README five lines", "exec"), namespace)       # runs from any directory
    assert "ziglang" in readme.split("build.sh", 1)[1][:600]


def test_the_demo_explains_its_numbers(capsys):
    from edgesnn import demo

    lines: list[str] = []
    demo.explain(lines.append)
    text = "\n".join(lines)
    for term in ("SNR", "cosine", "synops", "arena", "T = 4"):
        assert term in text, term


# -- item 1: convert takes a .npy of samples ------------------------------------------------------------


def test_convert_takes_calibration_samples_as_a_npy(digits, tmp_path, capsys):
    x, _ = digits
    np.save(tmp_path / "calib.npy", x)
    out = tmp_path / "m.esnn"
    status, stdout, err = run_cli(capsys, "convert", DATA / "mnist_cnn.onnx", "-o", out, "--samples",
                                  tmp_path / "calib.npy", "--input-scaling", "255", "0")
    assert status == 0, err
    assert es.Model.load(out).input_shape == (28, 28, 1) and f"wrote {out}" in stdout


def test_every_link_of_the_readme_contents_names_a_heading():
    """README 'Start here' links (#anchors) point at headings that exist, by GitHub's anchor rule."""
    readme = (ROOT / "README.md").read_text()
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.*)$", readme, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", readme)
    assert links and set(links) <= anchors, set(links) - anchors
