"""examples/mnist/convert_mnist.py writes the shipped MNIST models; a re-run must write them byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
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
    path = tmp_path / "again0.esnn"
    script.attach_frontend(script.shipped_model("mnist_cnn_4bit.esnn", calib, progress=False), path)
    written = [path.read_bytes()]
    # again in another process on another BLAS kernel (OpenBLAS's Sandybridge one: no FMA, sums in
    # another order, as another CPU's would): the float activations differ in their last bits, the
    # file does not (convert.reproducible); before ranges were rounded this wrote other multipliers
    other = tmp_path / "again1.esnn"
    code = ("import sys, importlib.util; from edgesnn.datasets import first_per_class, mnist; "
            "spec = importlib.util.spec_from_file_location('c', sys.argv[1]); m = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(m); x, y, _, _ = mnist(); "
            "m.attach_frontend(m.shipped_model('mnist_cnn_4bit.esnn', first_per_class(x, y, 50), progress=False), sys.argv[2])")
    env = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(ROOT / "examples" / "mnist" / "convert_mnist.py"), str(other)],
                   env=env, check=True, timeout=600)
    written.append(other.read_bytes())
    assert written[0] == written[1]
    # the provenance names the source by file name and content, not where this checkout happens to live
    assert str(ROOT).encode() not in written[0]
    provenance = es.Model.load(tmp_path / "again0.esnn").metadata["provenance"]
    assert provenance["source"] == "mnist_cnn.onnx"
    assert provenance["source_sha256"] == hashlib.sha256(script.SOURCE.read_bytes()).hexdigest()
    assert written[0] == SHIPPED_4BIT.read_bytes(), \
        "edgesnn/data/mnist_cnn_4bit.esnn is not what the converter writes now: re-run examples/mnist/convert_mnist.py"
