"""examples/mnist/convert_mnist.py writes the shipped MNIST models; a re-run must write them byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import edgesnn as es
from edgesnn.datasets import first_per_class, mnist

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_4BIT = Path(es.__file__).resolve().parent / "data" / "mnist_cnn_4bit.esnn"


def load_script():
    spec = importlib.util.spec_from_file_location("convert_mnist", ROOT / "examples" / "mnist" / "convert_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_rerun_writes_the_shipped_4bit_model_byte_for_byte_and_names_no_checkout_path(tmp_path):
    script = load_script()
    x_train, y_train, _, _ = mnist()
    calib = first_per_class(x_train, y_train, 50)
    written = []
    for attempt in range(2):   # twice: the conversion is deterministic
        path = tmp_path / f"again{attempt}.esnn"
        script.attach_frontend(script.shipped_model("mnist_cnn_4bit.esnn", calib, progress=False), path)
        written.append(path.read_bytes())
    assert written[0] == written[1]
    # the provenance names the source by file name and content, not where this checkout happens to live
    assert str(ROOT).encode() not in written[0]
    provenance = es.Model.load(tmp_path / "again0.esnn").metadata["provenance"]
    assert provenance["source"] == "mnist_cnn.onnx"
    assert provenance["source_sha256"] == hashlib.sha256(script.SOURCE.read_bytes()).hexdigest()
    assert written[0] == SHIPPED_4BIT.read_bytes(), \
        "edgesnn/data/mnist_cnn_4bit.esnn is not what the converter writes now: re-run examples/mnist/convert_mnist.py"
