"""Real files written by other frameworks' writers (copied from the conformance zoo, benchmarks/zoo_build.py):
tf.keras 2.x .keras / legacy .h5 (BrainChip's akida_models ds_cnn_kws, a BatchNormalization(axis=3)
pattern), tf2onnx (uint8 NHWC input, Cast, Rescaling as Mul/Add, clip_by_value as Min/Max), torch.onnx
TorchScript (Conv1d over a 3-D input, ceil_mode pools) and dynamo (a ShuffleNet v2 unit).  Each imported
float Graph, and its simplified form, matches the framework's own output stored beside it (.npz, HWC
uint8 inputs x, outputs y computed by the framework on (x - offset) / scale); none of them needs
TensorFlow."""

from pathlib import Path

import numpy as np
import pytest

import edgesnn.plugins

DATA = Path(__file__).parent / "data" / "zoo"

# file, importer (the reference inputs' scaling is in the .npz; ds_cnn_kws takes uint8 as it is)
FILES = [
    ("akida_ds_cnn_kws.tfk.keras", "keras"),
    ("akida_ds_cnn_kws.tf2onnx.onnx", "onnx"),
    ("hand_keras_bn_axis3_tfk.tfk.h5", "keras"),
    ("hand_conv1d_mel.ts.onnx", "onnx"),
    ("hand_ceil_pool.ts.onnx", "onnx"),
    ("tv_shufflenet_tiny.dynamo.onnx", "onnx"),
]


def reference(file: str):
    data = np.load(DATA / (file.split(".")[0] + ".npz"))
    scale, offset = data["input_scaling"]
    return data, ((data["x"].astype(np.float32) - np.float32(offset)) / np.float32(scale))


def to_hwc(y: np.ndarray, like: tuple) -> np.ndarray:
    """A framework output (NC, NHWC or NCHW) as the Graph's (N, H, W, C)."""
    if y.ndim == 4 and y.shape[1:] != like:
        y = y.transpose(0, 2, 3, 1)
    return y.reshape(len(y), *like)


@pytest.mark.parametrize("file,kind", FILES)
def test_zoo_file_matches_its_framework(file, kind):
    graph = edgesnn.plugins.get_importer(kind).load(DATA / file)
    assert graph.problems() == [] and "import_stopped" not in graph.metadata
    data, x = reference(file)
    x = x.reshape(len(x), *graph.input_shape)   # the Conv1d reference is (N, 1, T, C): the HWC (1, T, C)
    expected = data["y"]
    out = graph.run(x)
    np.testing.assert_allclose(out, to_hwc(expected, out.shape[1:]), atol=1e-4)
    simple = graph.simplify()
    logits = data["y_logits"] if "y_logits" in data.files else expected
    simple_out = simple.run(x)
    np.testing.assert_allclose(simple_out, to_hwc(logits, simple_out.shape[1:]), atol=1e-4)


def test_tf_keras2_files_and_their_tf2onnx_export_give_one_graph():
    keras_graph = edgesnn.plugins.get_importer("keras").load(DATA / "akida_ds_cnn_kws.tfk.keras").simplify()
    onnx_graph = edgesnn.plugins.get_importer("onnx").load(DATA / "akida_ds_cnn_kws.tf2onnx.onnx").simplify()
    assert keras_graph.metadata["keras_version"].startswith("2.") and keras_graph.metadata["input_dtype"] == "uint8"
    assert onnx_graph.metadata["input_layout"] == "NHWC" and onnx_graph.metadata["input_dtype"] == "uint8"
    assert [n.op for n in keras_graph] == [n.op for n in onnx_graph]
    assert keras_graph.metadata["final_softmax_dropped"] and onnx_graph.metadata["final_softmax_dropped"]


def test_dynamo_shufflenet_keeps_its_channel_ops():
    ops = [n.op for n in edgesnn.plugins.get_importer("onnx").load(DATA / "tv_shufflenet_tiny.dynamo.onnx").simplify()]
    assert "permute_channels" in ops and "concat" in ops and "slice_channels" in ops


def test_a_gating_multiplication_is_listed_with_its_torch_names():
    graph = edgesnn.plugins.get_importer("onnx").load(DATA / "hand_sigmoid_gate.ts.onnx")
    assert [(p["op"], p["layer"]) for p in graph.problems()] == [("Sigmoid", "/Sigmoid"), ("Mul", "/Mul")]
    assert "squeeze-excite" in graph.problems()[1]["hint"]
