"""Real files written by other frameworks' writers (copied from the conformance zoo, benchmarks/zoo_build.py):
tf.keras 2.x .keras / legacy .h5 (BrainChip's akida_models ds_cnn_kws, a BatchNormalization(axis=3)
pattern), tf2onnx (uint8 NHWC input, Cast, Rescaling as Mul/Add, clip_by_value as Min/Max), torch.onnx
TorchScript (Conv1d over a 3-D input, ceil_mode pools) and dynamo (a ShuffleNet v2 unit).  Each imported
float Graph, and its simplified form, matches the framework's own output stored beside it (.npz, HWC
uint8 inputs x, outputs y computed by the framework on (x - offset) / scale); none of them needs
TensorFlow."""

import warnings
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
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


# The 8/8 conversion of each file against its framework's float logits, at the worst output position.
# 18 dB is a floor, not the zoo's 25 dB target (tests/test_zoo.py holds these same trained files to that),
# so that it does not hang on the training: the random-init copies these replaced measured 19.3 dB
# (tv_shufflenet_tiny) to 44.6 dB, the trained ones 33.3-51.2 dB, while wrong conversions land below it:
# the input offset folded into the bias (issue 9) gave -0.4 dB at the zero-padded border, and converting
# these files with an input offset off by a quarter of the scale gives -7.9 to 16.3 dB.
SNR_FLOOR_DB = 18.0


def snr_worst_position_db(got: np.ndarray, want: np.ndarray) -> float:
    want = np.asarray(want, np.float64)
    got = np.asarray(got, np.float64).reshape(want.shape)
    signal = np.sum(want ** 2, axis=(0, 3))
    noise = np.maximum(np.sum((got - want) ** 2, axis=(0, 3)), 1e-30)
    return float(np.min(10 * np.log10(signal / noise)))


@pytest.mark.parametrize("file,kind", FILES)
def test_zoo_file_converts_at_8_bits_close_to_its_framework(file, kind):
    data = np.load(DATA / (file.split(".")[0] + ".npz"))
    x, scaling = data["x"], tuple(float(v) for v in data["input_scaling"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # on_low_fidelity="record": 8 calibration images are too few for es.convert to vouch for the model on
        # other inputs (tv_shufflenet_tiny is refused out of sample); this measures the conversion path on the
        # images it was calibrated on, tests/test_zoo.py the check on held-out inputs
        model = es.convert(str(DATA / file), samples=np.concatenate([x, x[:, :, ::-1]]), input_scaling=scaling,
                           weight_bits=8, activation_bits=8, progress=False, on_low_fidelity="record")
    got = model.forward(x, device="reference") * np.asarray(model.metadata["output_scale"], np.float64)
    logits = data["y_logits"] if "y_logits" in data.files else data["y"]
    want = to_hwc(logits, got.shape[1:])
    assert snr_worst_position_db(got, want) >= SNR_FLOOR_DB


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
