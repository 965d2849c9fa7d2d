"""The C embedding: examples/c/classify.c built with `zig cc` against libedgesnn.a and edgesnn.h
(examples/c/build.sh, ReleaseSafe), run on models written by edgesnn; its printed class and
potentials must equal the numpy reference's. test_cross.py reuses these helpers for other targets.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import layers as L

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "examples" / "c" / "build.sh"
MALFORMED = ROOT / "tests" / "data" / "malformed"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_format import every_kind_model  # noqa: E402  (all six kinds, all neurons and pools)


def build_example(target: str, out: Path, *cc_flags: str) -> Path:
    """Run examples/c/build.sh (ReleaseSafe) for `target` into `out`; return the classify binary."""
    env = {**os.environ, "OPTIMIZE": "ReleaseSafe"}
    result = subprocess.run(["bash", str(BUILD_SCRIPT), target, str(out), *cc_flags], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, f"build.sh {target} failed:\n{result.stdout}\n{result.stderr}"
    binary = out / "classify"
    assert binary.is_file()
    return binary


def spiking_mnist_like(seed: int = 0) -> es.Model:
    """28x28x1, 4-bit conv -> lif conv -> dense: the shape of a small MNIST spiking net."""
    rng = np.random.default_rng(seed)
    return es.Model([
        L.InputConv2D(name="conv1", weights=rng.integers(-8, 8, (5, 5, 1, 8)), bias=rng.integers(-50, 50, 8),
                      weight_bits=4, stride=2, out_multiplier=rng.integers(1, 6, 8), out_shift=8,
                      activation_bits=4),
        L.Conv2D(name="conv2", weights=rng.integers(-8, 8, (3, 3, 8, 16)), weight_bits=4, pool="max", pool_size=2,
                 neuron="lif", threshold=rng.integers(5, 40, 16), leak_shift=4),
        L.Dense(name="classes", weights=rng.integers(-128, 128, (7 * 7 * 16, 10)), bias=rng.integers(-99, 99, 10),
                weight_bits=8, neuron="none"),
    ], input_shape=(28, 28, 1), input_bits=8, metadata={"labels": [str(d) for d in range(10)]})


def models() -> dict[str, es.Model]:
    return {"every_kind": every_kind_model(4, seed=11), "spiking_mnist_like": spiking_mnist_like()}


def run_classify(command: list[str], model_path: Path, frame: np.ndarray, timesteps: int,
                 tmp_path: Path) -> subprocess.CompletedProcess:
    input_path = tmp_path / "input.u8"
    input_path.write_bytes(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    return subprocess.run([*command, str(model_path), str(input_path), str(timesteps)], capture_output=True,
                          text=True, timeout=120)


def parse_output(stdout: str) -> tuple[int, np.ndarray]:
    """classify's `class N` and `potentials v0 v1 ...` lines."""
    lines = dict(line.split(" ", 1) for line in stdout.strip().splitlines())
    return int(lines["class"]), np.array(lines["potentials"].split(), dtype=np.int64)


def check_against_reference(command: list[str], tmp_path: Path, samples: int = 3) -> None:
    """For each model, T in (1, 4) and a few sparse random inputs: class and potentials as the reference."""
    rng = np.random.default_rng(2024)
    for name, model in models().items():
        model_path = tmp_path / f"{name}.esnn"
        model.save(model_path)
        for timesteps in (1, 4):
            for _ in range(samples):
                x = rng.integers(0, 1 << model.input_bits, (1, *model.input_shape)).astype(np.uint8)
                x[rng.random(x.shape) < 0.6] = 0
                result = run_classify(command, model_path, x[0], timesteps, tmp_path)
                assert result.returncode == 0, (name, result.stderr)
                got_class, got_potentials = parse_output(result.stdout)
                expected = model.forward(x, timesteps=timesteps, device="reference")
                np.testing.assert_array_equal(got_potentials, expected.reshape(-1), err_msg=f"{name} T={timesteps}")
                assert got_class == model.predict(x, timesteps=timesteps, device="reference")[0], (name, timesteps)


@pytest.fixture(scope="module")
def classify(tmp_path_factory) -> Path:
    return build_example("native", tmp_path_factory.mktemp("c-native"))


@pytest.fixture(scope="module")
def same_tree_library(engine_build):
    """The Python binding over a build of the same native/ tree as the C program's static library
    (the installed edgesnn/_lib build may be older; tests/conftest.py builds it once per session)."""
    native = pytest.importorskip("edgesnn.native")
    return native.Library(engine_build("native"))


def arena_bytes(model: es.Model, library) -> int:
    from edgesnn import native

    return native.NativeModel(model.to_bytes(), library).arena_bytes


def test_classify_prints_the_reference_class(classify, tmp_path):
    check_against_reference([str(classify)], tmp_path)


def test_classify_reports_the_arena_it_used(classify, same_tree_library, tmp_path):
    model = spiking_mnist_like()
    model.save(tmp_path / "m.esnn")
    result = run_classify([str(classify)], tmp_path / "m.esnn", np.zeros(model.input_shape, np.uint8), 1, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"arena_bytes {arena_bytes(model, same_tree_library)} of {1 << 20}" in result.stdout


def test_a_too_small_static_arena_is_refused_with_the_size_needed(same_tree_library, tmp_path):
    small = build_example("native", tmp_path / "small", "-DESNN_ARENA_BYTES=64")
    model = spiking_mnist_like()
    model.save(tmp_path / "m.esnn")
    result = run_classify([str(small)], tmp_path / "m.esnn", np.zeros(model.input_shape, np.uint8), 1, tmp_path)
    assert result.returncode == 1
    needed = arena_bytes(model, same_tree_library)
    assert f"needs {needed} arena bytes; rebuild with -DESNN_ARENA_BYTES={needed}" in result.stderr


@pytest.mark.parametrize("name", ["header_crc", "truncated_in_body", "kind_unknown", "foreign_png"])
def test_a_malformed_file_gets_the_loader_status_and_message(classify, same_tree_library, tmp_path, name):
    """The C program prints what the same loader tells the Python binding: status name and message."""
    from edgesnn import native

    path = MALFORMED / f"{name}.esnn"
    with pytest.raises(es.FormatError) as refused:
        native.NativeModel(path.read_bytes(), same_tree_library)
    status_name, message = re.fullmatch(r"native loader refused the \.esnn bytes \((\w+)\): (.*)",
                                        str(refused.value), re.S).groups()
    result = run_classify([str(classify)], path, np.zeros(4, np.uint8), 1, tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: {path}: {status_name}: {message}\n"


def test_an_input_of_the_wrong_size_is_refused(classify, tmp_path):
    model = spiking_mnist_like()
    model.save(tmp_path / "m.esnn")
    result = run_classify([str(classify)], tmp_path / "m.esnn", np.zeros(27 * 28, np.uint8), 1, tmp_path)
    assert result.returncode == 1
    assert "has 756 bytes, the model input (28, 28, 1) needs 784" in result.stderr


def test_stream_prints_every_window_as_the_reference(classify, tmp_path):
    """examples/c/stream.c (built beside classify): frames pushed one at a time through the C streaming
    API print every hop's window output, equal to the reference on that window, for a model valid along
    time and for one that pads along time; a model that does not stream gets the engine's reason."""
    rng = np.random.default_rng(12)

    def model_padded(padding):
        return es.Model([
            L.InputConv2D(name="stem", weights=rng.integers(-60, 60, (3, 2, 1, 8)), bias=rng.integers(-50, 50, 8),
                          stride=(2, 1), padding=padding, out_multiplier=rng.integers(1, 9, 8), out_shift=7,
                          activation_bits=4),
            L.Depthwise2D(name="dw", weights=rng.integers(-8, 8, (2, 3, 8)), weight_bits=4,
                          padding=(0, 0, 1, 1) if padding != "same" else "same", pool="global_avg",
                          out_multiplier=rng.integers(1, 9, 8), out_shift=6, activation_bits=4),
            L.Dense(name="classes", weights=rng.integers(-8, 8, (8, 5)), weight_bits=4, neuron="none"),
        ], input_shape=(12, 6, 1))

    model = model_padded((0, 0, 1, 0))
    model.save(tmp_path / "valid.esnn")
    frames = rng.integers(0, 256, (31, 6, 1)).astype(np.uint8)
    (tmp_path / "frames.u8").write_bytes(frames.tobytes())
    command = [str(classify.parent / "stream"), str(tmp_path / "valid.esnn"), str(tmp_path / "frames.u8"), "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("window")]
    windows = np.stack([frames[t:t + 12] for t in range(0, 31 - 12 + 1, 3)])
    expected = model.forward(windows, device="reference").reshape(len(windows), -1)
    assert [int(line[1]) for line in lines] == list(range(len(windows)))
    np.testing.assert_array_equal(np.array([line[5:] for line in lines], dtype=np.int64), expected)
    assert [int(line[3]) for line in lines] == list(expected.argmax(axis=1))
    padded = model_padded("same")          # pads along time: streams too, its edge rows recomputed per window
    padded.save(tmp_path / "padded.esnn")
    command[1] = str(tmp_path / "padded.esnn")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("window")]
    expected = padded.forward(windows, device="reference").reshape(len(windows), -1)
    np.testing.assert_array_equal(np.array([line[5:] for line in lines], dtype=np.int64), expected)
    unpooled = es.Model(padded.layers[:1], input_shape=(12, 6, 1))   # a conv output that is neither pooled nor dense
    unpooled.save(tmp_path / "unpooled.esnn")
    command[1] = str(tmp_path / "unpooled.esnn")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "neither pools globally nor feeds a dense layer" in result.stderr
