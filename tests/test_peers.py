"""benchmarks/peers.py, the TFLite peer of the benchmarks: the torch -> Keras-layout weights that
benchmarks/tflite_build.py twin rebuilds, and the committed .tflite files beside the zoo files they were
made from. TensorFlow is not needed; the .tflite runs need ai-edge-litert (the "bench" extra) and are
skipped without it."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("peers", ROOT / "benchmarks" / "peers.py")
peers = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("peers", peers)
_spec.loader.exec_module(peers)
# $EDGESNN_ZOO: another checkout's zoo folder, as benchmarks/zoo.py reads it (its git-ignored big files)
ZOO = Path(os.environ.get("EDGESNN_ZOO") or ROOT / "benchmarks" / "zoo")
RECORDED = json.loads((peers.TFLITE_DIR / "manifest.json").read_text())["files"]
COMMITTED = sorted(name for name, entry in RECORDED.items() if entry["committed"])
ZOO_FILES = {e["file"]: e for e in json.loads((ZOO / "manifest.json").read_text())["models"]}


def source_here(name: str) -> bool:
    """Whether the zoo file `name` was made from is in ZOO as that very build (its recorded sha256). A
    committed zoo file must be; a git-ignored one may be absent or rebuilt since (tflite_build.py check)."""
    paths, _ = peers.zoo_tflites(RECORDED[name]["model"], ZOO)
    return peers.TFLITE_DIR / name in paths


def keras_layout_forward(spec: dict, arrays: dict, x_nhwc: np.ndarray) -> np.ndarray:
    """The twin spec run in numpy, NHWC as Keras runs it (only the layer kinds the test network has)."""
    x = x_nhwc.astype(np.float64)
    for i, layer in enumerate(spec["layers"]):
        if layer["kind"] == "conv2d":
            kernel, bias = arrays[f"{i}.kernel"], arrays[f"{i}.bias"]   # (kh, kw, in, out)
            kh, kw = kernel.shape[:2]
            pad = ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)) if layer["padding"] == "same" else None
            xp = np.pad(x, pad) if pad else x
            h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
            out = np.zeros((len(x), h, w, kernel.shape[3]))
            for dy in range(kh):
                for dx in range(kw):
                    out += xp[:, dy:dy + h, dx:dx + w] @ kernel[dy, dx]
            x = out + bias
        elif layer["kind"] == "maxpool":
            n, h, w, c = x.shape
            x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        elif layer["kind"] == "flatten":
            x = x.reshape(len(x), -1)
        elif layer["kind"] == "dense":
            x = x @ arrays[f"{i}.kernel"] + arrays[f"{i}.bias"]
        else:
            raise AssertionError(layer["kind"])
        if layer.get("relu"):
            x = np.maximum(x, 0)
    return x


def test_torch_twin_spec_is_the_same_network_in_keras_layouts():
    torch = pytest.importorskip("torch")
    import torch.nn as nn

    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(4 * 3 * 2, 5), nn.ReLU(), nn.Linear(5, 3))
    bn = network[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(-1.5, 1.5)
    network.eval()
    x = np.random.default_rng(1).random((6, 6, 5, 2), dtype=np.float32)       # odd width: the pool drops a column
    arrays = peers.torch_twin_spec(network, (6, 5, 2), x[:3], x)
    spec = json.loads(str(arrays["spec"]))
    assert [layer["kind"] for layer in spec["layers"]] == ["conv2d", "maxpool", "flatten", "dense", "dense"]
    got = keras_layout_forward(spec, arrays, x)
    np.testing.assert_allclose(got, arrays["check_logits"], rtol=1e-4, atol=1e-5)
    assert peers.twin_hash(arrays) == peers.twin_hash(dict(arrays))
    changed = dict(arrays, **{"0.bias": arrays["0.bias"] + 1})
    assert peers.twin_hash(changed) != peers.twin_hash(arrays)


def test_twin_spec_refuses_what_it_cannot_rebuild():
    pytest.importorskip("torch")
    import torch.nn as nn

    network = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU()).eval()
    x = np.zeros((1, 6, 6, 2), np.float32)
    with pytest.raises(ValueError, match="padding"):
        peers.torch_twin_spec(network, (6, 6, 2), x, x)
    with pytest.raises(ValueError, match="Sigmoid"):
        peers.torch_twin_spec(nn.Sequential(nn.Sigmoid()).eval(), (6, 6, 2), x, x)


def test_committed_tflite_files_are_recorded_beside_their_zoo_files():
    assert COMMITTED, "benchmarks/tflite/manifest.json lists no committed file"
    for name in COMMITTED:
        entry = RECORDED[name]
        assert (peers.TFLITE_DIR / name).exists(), name
        assert entry["source"] in ZOO_FILES, f"{name} is made from {entry['source']}, which the zoo does not list"
        assert entry["bytes"] == (peers.TFLITE_DIR / name).stat().st_size, name
        # only twins of committed zoo files are committed (a clone has no other build of a git-ignored one)
        assert ZOO_FILES[entry["source"]]["committed"], f"{name}: its zoo file {entry['source']} is not committed"
        paths, left_out = peers.zoo_tflites(entry["model"], ZOO)
        assert peers.TFLITE_DIR / name in paths, left_out


def test_an_absent_twin_is_named_with_the_command_that_makes_it(tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    monkeypatch.setattr(peers, "TFLITE_DIR", tmp_path / "tflite")
    peers.TFLITE_DIR.mkdir()
    files = {"a.int8.tflite": {"model": "a", "source": "a.tfk.keras", "source_sha256": "0" * 64, "bytes": 1000,
                               "committed": False},
             "b.int8.tflite": {"model": "b", "source": "b.tfk.keras", "source_sha256": "0" * 64, "bytes": 600_000,
                               "committed": False}}
    (peers.TFLITE_DIR / "manifest.json").write_text(json.dumps({"files": files}))
    assert peers.zoo_tflites("a", zoo) == ([], [
        "tflite/a.int8.tflite is absent, not committed (its zoo file a.tfk.keras is git-ignored): make it with "
        ".zoo-venv/bin/python benchmarks/tflite_build.py zoo --model a"])
    assert "(too big to commit)" in peers.zoo_tflites("b", zoo)[1][0]
    assert peers.zoo_tflites("c", zoo) == ([], [])          # no twin recorded: zoo_tflite_calls says so


def test_gitignore_keeps_exactly_the_committed_twins():
    ignore = (peers.TFLITE_DIR / ".gitignore").read_text().splitlines()
    assert sorted(line[1:] for line in ignore if line.startswith("!")) == COMMITTED


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_tflite_runs_the_zoo_model(name):
    pytest.importorskip("ai_edge_litert")
    entry = RECORDED[name]
    if not source_here(name):
        pytest.skip(f"{entry['source']} (git-ignored) is absent from {ZOO} or another build of it")
    with np.load(ZOO / f"{entry['model']}.npz") as data:
        x, y = data["x"], data["y"]
        logits = data["y_logits"] if "y_logits" in data.files else y
        scale, offset = (float(v) for v in data["input_scaling"])
    x_float = (x.astype(np.float32) - offset) / scale
    for xnnpack in (True, False):
        peer = peers.TFLitePeer(peers.TFLITE_DIR / name, threads=1, xnnpack=xnnpack)
        snr = peers.snr_db(peer.forward(x_float), logits)
        # TensorFlow's reference kernels gave the recorded SNR at build time; XNNPACK and the builtin
        # kernels round a few values differently (the builtin ones 3.4 dB under the reference kernels'
        # 33.1 dB on akida_mobilenet_025); another network would be near 0 dB
        assert snr >= entry["snr_db"] - 6.0, (name, xnnpack, snr)
        batch = peer.prepare(np.concatenate([x_float, x_float]))
        assert peer.run(batch).shape[0] == 2 * len(x)
    assert peers.TFLitePeer(peers.TFLITE_DIR / name, xnnpack=True).delegate_partitions() >= 1
    assert peers.TFLitePeer(peers.TFLITE_DIR / name, xnnpack=False).delegate_partitions() == 0


def test_tflite_build_check_tells_stale_missing_and_absent_twins(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("tflite_build", ROOT / "benchmarks" / "tflite_build.py")
    tflite_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tflite_build)             # TensorFlow is imported only to convert
    zoo, out = tmp_path / "zoo", tmp_path / "tflite"
    zoo.mkdir()
    out.mkdir()
    models = [{"model": m, "file": f"{m}.tfk.keras", "expect": "convert", "committed": False} for m in ("a", "b")]
    (zoo / "manifest.json").write_text(json.dumps({"models": models}))
    for m in ("a", "b"):
        (zoo / f"{m}.tfk.keras").write_bytes(m.encode() * 10)
    assert not tflite_build.commits(models[0], b"tflite")     # its zoo file is not committed
    assert tflite_build.commits({**models[0], "committed": True}, b"tflite")
    assert not tflite_build.commits({**models[0], "committed": True}, bytes(tflite_build.COMMIT_MAX_BYTES + 1))
    (out / "a.int8.tflite").write_bytes(b"tflite")
    entry = {"model": "a", "source": "a.tfk.keras", "source_sha256": tflite_build.sha256(zoo / "a.tfk.keras"),
             "snr_db": 30.0, "bytes": 6, "committed": True}
    tflite_build.record(out, "a.int8.tflite", entry)
    assert (out / ".gitignore").read_text().splitlines()[-1] == "!a.int8.tflite"
    assert tflite_build.check(zoo, out) == 1                  # b has no twin
    printed = capsys.readouterr().out
    assert "ok       a.int8.tflite" in printed and "NO TWIN  b (b.tfk.keras)" in printed
    (zoo / "a.tfk.keras").write_bytes(b"retrained")
    assert tflite_build.check(zoo, out) == 1
    assert "stale: a.tfk.keras was rebuilt since (tflite_build.py zoo --model a)" in capsys.readouterr().out
    (out / "a.int8.tflite").unlink()
    tflite_build.check(zoo, out)
    assert "NOT OK   a.int8.tflite: missing" in capsys.readouterr().out
    models.pop()
    (zoo / "manifest.json").write_text(json.dumps({"models": models}))
    (out / "a.int8.tflite").write_bytes(b"tflite")
    tflite_build.record(out, "a.int8.tflite", {**entry, "source_sha256": tflite_build.sha256(zoo / "a.tfk.keras")})
    assert tflite_build.check(zoo, out) == 0
