"""The conformance zoo's committed files (benchmarks/zoo/, written by benchmarks/zoo_build.py with
other people's code and writers): each imports exactly, converts at 8/8 bits with at least 25 dB at
every output position, or is refused with an edgesnn error that names the op.

What the converter cannot do yet is listed in XFAIL below (strict: a fix that makes one pass fails
the run until its line is removed), so the list is what is left of issue 9.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("zoo_runner", ROOT / "benchmarks" / "zoo.py")
zoo = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("zoo_runner", zoo)
_spec.loader.exec_module(zoo)

ENTRIES = zoo.load_manifest() if zoo.MANIFEST.exists() else []
COMMITTED = [e for e in ENTRIES if e["committed"]]

# (file name, check) -> why it fails today. check: "import" (the imported float Graph matches the framework),
# "convert" (8/8 SNR >= 25 dB everywhere) or "refuse" (an edgesnn error naming the op).
XFAIL: dict[tuple[str, str], str] = {
    ('tv_shufflenet_tiny.dynamo.onnx', 'import'):
        "GraphError: tv_shufflenet_tiny.dynamo.onnx: ONNX node 'node_cat' (Concat): op 'Concat' is not supported; supported ops: Add, AveragePool, BatchNormalization, Clip",
    ('tv_shufflenet_tiny.dynamo.onnx', 'convert'):
        "GraphError: tv_shufflenet_tiny.dynamo.onnx: ONNX node 'node_cat' (Concat): op 'Concat' is not supported; supported ops: Add, AveragePool, BatchNormalization, Clip",
    ('tv_shufflenet_tiny.ts.onnx', 'import'):
        "GraphError: tv_shufflenet_tiny.ts.onnx: ONNX node '/stage2/stage2.0/Concat' (Concat): op 'Concat' is not supported; supported ops: Add, AveragePool, BatchNormaliz",
    ('tv_shufflenet_tiny.ts.onnx', 'convert'):
        "GraphError: tv_shufflenet_tiny.ts.onnx: ONNX node '/stage2/stage2.0/Concat' (Concat): op 'Concat' is not supported; supported ops: Add, AveragePool, BatchNormaliz",
    ('timm_resnet_tiny.ts.onnx', 'convert'):
        "GraphError: node '/conv1/conv1.0/Conv' (conv2d, from onnx Conv '/conv1/conv1.0/Conv'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kerne",
    ('ka_mobilenet_0125_tfk.tf2onnx.onnx', 'import'):
        "GraphError: ka_mobilenet_0125_tfk.tf2onnx.onnx: ONNX node 'mobilenet_0.12_32/conv1/Conv2D__366' (Transpose): op 'Transpose' is not supported; supported ops: Add, ",
    ('ka_mobilenet_0125_tfk.tf2onnx.onnx', 'convert'):
        "GraphError: ka_mobilenet_0125_tfk.tf2onnx.onnx: ONNX node 'mobilenet_0.12_32/conv1/Conv2D__366' (Transpose): op 'Transpose' is not supported; supported ops: Add, ",
    ('akida_ds_cnn_kws.tf2onnx.onnx', 'import'):
        "GraphError: akida_ds_cnn_kws.tf2onnx.onnx: ONNX node 'ds_cnn_kws/rescaling/Cast' (Cast): op 'Cast' is not supported; supported ops: Add, AveragePool, BatchNormali",
    ('akida_ds_cnn_kws.tf2onnx.onnx', 'convert'):
        "GraphError: akida_ds_cnn_kws.tf2onnx.onnx: ONNX node 'ds_cnn_kws/rescaling/Cast' (Cast): op 'Cast' is not supported; supported ops: Add, AveragePool, BatchNormali",
    ('akida_ds_cnn_kws.tfk.keras', 'import'):
        "GraphError: akida_ds_cnn_kws.tfk.keras: Keras layer 'conv_0' (Conv2D): expected 1 weight arrays (kernel), the file has 0 for this layer",
    ('akida_ds_cnn_kws.tfk.keras', 'convert'):
        "GraphError: akida_ds_cnn_kws.tfk.keras: Keras layer 'conv_0' (Conv2D): expected 1 weight arrays (kernel), the file has 0 for this layer",
    ('akida_akidanet_0125_features.tf2onnx.onnx', 'import'):
        "GraphError: akida_akidanet_0125_features.tf2onnx.onnx: ONNX node 'akidanet_0.12_32_1000/rescaling/Cast' (Cast): op 'Cast' is not supported; supported ops: Add, Av",
    ('akida_akidanet_0125_features.tf2onnx.onnx', 'convert'):
        "GraphError: akida_akidanet_0125_features.tf2onnx.onnx: ONNX node 'akidanet_0.12_32_1000/rescaling/Cast' (Cast): op 'Cast' is not supported; supported ops: Add, Av",
    ('akida_mobilenet_0125_v1.tf2onnx.onnx', 'import'):
        "GraphError: akida_mobilenet_0125_v1.tf2onnx.onnx: ONNX node 'mobilenet_0.12_32_10/rescaling/Cast' (Cast): op 'Cast' is not supported; supported ops: Add, AverageP",
    ('akida_mobilenet_0125_v1.tf2onnx.onnx', 'convert'):
        "GraphError: akida_mobilenet_0125_v1.tf2onnx.onnx: ONNX node 'mobilenet_0.12_32_10/rescaling/Cast' (Cast): op 'Cast' is not supported; supported ops: Add, AverageP",
    ('hand_stem_s2p1.dynamo.onnx', 'convert'):
        "GraphError: node 'node_Conv_24' (conv2d, from onnx Conv 'node_Conv_24'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kernel (3, 3), stri",
    ('hand_stem_s2p1.ts.onnx', 'convert'):
        "GraphError: node '/0/Conv' (conv2d, from onnx Conv '/0/Conv'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kernel (3, 3), strides (2, 2)",
    ('hand_maxpool_3s2p1.dynamo.onnx', 'convert'):
        "GraphError: node 'node_Conv_18' (conv2d, from onnx Conv 'node_Conv_18'): padding (top, bottom, left, right) = (3, 3, 3, 3) on the 32x32 input (kernel (7, 7), stri",
    ('hand_maxpool_3s2p1.ts.onnx', 'convert'):
        "GraphError: node '/0/Conv' (conv2d, from onnx Conv '/0/Conv'): padding (top, bottom, left, right) = (3, 3, 3, 3) on the 32x32 input (kernel (7, 7), strides (2, 2)",
    ('hand_avgpool_exclude_pad.dynamo.onnx', 'convert'):
        "GraphError: node 'node_avg_pool2d' (avg_pool, from onnx AveragePool 'node_avg_pool2d'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kern",
    ('hand_avgpool_exclude_pad.ts.onnx', 'convert'):
        "GraphError: node '/2/AveragePool' (avg_pool, from onnx AveragePool '/2/AveragePool'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kernel",
    ('hand_avgpool_include_pad.dynamo.onnx', 'convert'):
        "GraphError: node 'node_avg_pool2d' (avg_pool, from onnx AveragePool 'node_avg_pool2d'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kern",
    ('hand_avgpool_include_pad.ts.onnx', 'convert'):
        "GraphError: node '/2/AveragePool' (avg_pool, from onnx AveragePool '/2/AveragePool'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kernel",
    ('hand_conv1d_mel.dynamo.onnx', 'import'):
        "GraphError: hand_conv1d_mel.dynamo.onnx: input 'input' must be (N, C, H, W) or (N, K) with static sizes after N, got [None, 40, 49]",
    ('hand_conv1d_mel.dynamo.onnx', 'convert'):
        "GraphError: hand_conv1d_mel.dynamo.onnx: input 'input' must be (N, C, H, W) or (N, K) with static sizes after N, got [None, 40, 49]",
    ('hand_conv1d_mel.ts.onnx', 'import'):
        "GraphError: hand_conv1d_mel.ts.onnx: input 'input' must be (N, C, H, W) or (N, K) with static sizes after N, got [None, 40, 49]",
    ('hand_conv1d_mel.ts.onnx', 'convert'):
        "GraphError: hand_conv1d_mel.ts.onnx: input 'input' must be (N, C, H, W) or (N, K) with static sizes after N, got [None, 40, 49]",
    ('hand_concat_branches.dynamo.onnx', 'import'):
        "GraphError: hand_concat_branches.dynamo.onnx: ONNX node 'node_cat' (Concat): op 'Concat' is not supported; supported ops: Add, AveragePool, BatchNormalization, Cl",
    ('hand_concat_branches.dynamo.onnx', 'convert'):
        "GraphError: hand_concat_branches.dynamo.onnx: ONNX node 'node_cat' (Concat): op 'Concat' is not supported; supported ops: Add, AveragePool, BatchNormalization, Cl",
    ('hand_concat_branches.ts.onnx', 'import'):
        "GraphError: hand_concat_branches.ts.onnx: ONNX node '/Concat' (Concat): op 'Concat' is not supported; supported ops: Add, AveragePool, BatchNormalization, Clip, C",
    ('hand_concat_branches.ts.onnx', 'convert'):
        "GraphError: hand_concat_branches.ts.onnx: ONNX node '/Concat' (Concat): op 'Concat' is not supported; supported ops: Add, AveragePool, BatchNormalization, Clip, C",
    ('hand_mean_hw.dynamo.onnx', 'convert'):
        "GraphError: node 'node_Conv_17' (conv2d, from onnx Conv 'node_Conv_17'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kernel (3, 3), stri",
    ('hand_mean_hw.ts.onnx', 'convert'):
        "GraphError: node '/body/body.0/Conv' (conv2d, from onnx Conv '/body/body.0/Conv'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kernel (3",
    ('hand_relu6.dynamo.onnx', 'convert'):
        "GraphError: node 'node_Conv_34' (conv2d, from onnx Conv 'node_Conv_34'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kernel (3, 3), stri",
    ('hand_relu6.ts.onnx', 'convert'):
        "GraphError: node '/0/Conv' (conv2d, from onnx Conv '/0/Conv'): padding (top, bottom, left, right) = (1, 1, 1, 1) on the 32x32 input (kernel (3, 3), strides (2, 2)",
    ('hand_residual_relu_maxpool.dynamo.onnx', 'convert'):
        "GraphError: node 'node_relu_2' (relu, from onnx Relu 'node_relu_2'): its input 'node_add_40' has no integer form (it is signed or was not converted); edgesnn acti",
    ('hand_residual_relu_maxpool.ts.onnx', 'convert'):
        "GraphError: node '/Relu' (relu, from onnx Relu '/Relu'): its input '/Add' has no integer form (it is signed or was not converted); edgesnn activations are unsigne",
    ('hand_bn_after_pool.dynamo.onnx', 'convert'):
        "GraphError: node 'node_max_pool2d' (max_pool, from onnx MaxPool 'node_max_pool2d'): its output is signed (no ReLU follows) and feeds ['node__native_batch_norm_leg",
    ('hand_bn_after_pool.ts.onnx', 'convert'):
        "GraphError: node '/1/MaxPool' (max_pool, from onnx MaxPool '/1/MaxPool'): its output is signed (no ReLU follows) and feeds ['/2/BatchNormalization']; edgesnn acti",
    ('hand_input_normalize.dynamo.onnx', 'convert'):
        "GraphError: node 'node_sub_1' (affine, from onnx Sub 'node_sub_1'): op 'affine' cannot be converted to integer layers here; convertible: conv2d, depthwise_conv2d,",
    ('hand_input_normalize.ts.onnx', 'convert'):
        "GraphError: node '/Sub' (affine, from onnx Sub '/Sub'): op 'affine' cannot be converted to integer layers here; convertible: conv2d, depthwise_conv2d, separable_c",
    ('hand_hardswish.dynamo.onnx', 'import'):
        "GraphError: hand_hardswish.dynamo.onnx: ONNX node 'n0' (HardSwish): op 'HardSwish' is not supported; supported ops: Add, AveragePool, BatchNormalization, Clip, Co",
    ('hand_hardswish.ts.onnx', 'import'):
        "GraphError: hand_hardswish.ts.onnx: ONNX node '/2/HardSwish' (HardSwish): op 'HardSwish' is not supported; supported ops: Add, AveragePool, BatchNormalization, Cl",
    ('hand_sigmoid_gate.dynamo.onnx', 'import'):
        "GraphError: hand_sigmoid_gate.dynamo.onnx: ONNX node 'node_sigmoid' (Sigmoid): op 'Sigmoid' is not supported; supported ops: Add, AveragePool, BatchNormalization,",
    ('hand_sigmoid_gate.ts.onnx', 'import'):
        "GraphError: hand_sigmoid_gate.ts.onnx: ONNX node '/Sigmoid' (Sigmoid): op 'Sigmoid' is not supported; supported ops: Add, AveragePool, BatchNormalization, Clip, C",
    ('hand_keras_bn_axis3_k3.k3.h5', 'convert'):
        "GraphError: node 'max_pooling2d' (max_pool, from keras MaxPooling2D 'max_pooling2d'): its output is signed (no ReLU follows) and feeds ['batch_normalization_1']; ",
    ('hand_keras_bn_axis3_k3.k3.keras', 'convert'):
        "GraphError: node 'max_pooling2d' (max_pool, from keras MaxPooling2D 'max_pooling2d'): its output is signed (no ReLU follows) and feeds ['batch_normalization_1']; ",
    ('hand_keras_rescaling_k3.k3.h5', 'convert'):
        '8/8 SNR -6.6 dB at the worst output position',
    ('hand_keras_rescaling_k3.k3.keras', 'convert'):
        '8/8 SNR -6.6 dB at the worst output position',
    ('hand_keras_gap_keepdims_k3.k3.h5', 'convert'):
        "GraphError: node 'conv2d_6' (conv2d, from keras Conv2D 'conv2d_6'): its output is signed (no ReLU follows) and feeds ['flatten']; edgesnn activations are unsigned",
    ('hand_keras_gap_keepdims_k3.k3.keras', 'convert'):
        "GraphError: node 'conv2d_6' (conv2d, from keras Conv2D 'conv2d_6'): its output is signed (no ReLU follows) and feeds ['flatten']; edgesnn activations are unsigned",
    ('hand_keras_bn_axis3_tfk.tf2onnx.onnx', 'import'):
        "GraphError: hand_keras_bn_axis3_tfk.tf2onnx.onnx: ONNX node 'model_250/conv2d/Conv2D__5250' (Transpose): op 'Transpose' is not supported; supported ops: Add, Aver",
    ('hand_keras_bn_axis3_tfk.tf2onnx.onnx', 'convert'):
        "GraphError: hand_keras_bn_axis3_tfk.tf2onnx.onnx: ONNX node 'model_250/conv2d/Conv2D__5250' (Transpose): op 'Transpose' is not supported; supported ops: Add, Aver",
    ('hand_keras_bn_axis3_tfk.tfk.h5', 'convert'):
        "GraphError: node 'max_pooling2d' (max_pool, from keras MaxPooling2D 'max_pooling2d'): its output is signed (no ReLU follows) and feeds ['batch_normalization_1']; ",
    ('hand_keras_bn_axis3_tfk.tfk.keras', 'convert'):
        "GraphError: node 'max_pooling2d' (max_pool, from keras MaxPooling2D 'max_pooling2d'): its output is signed (no ReLU follows) and feeds ['batch_normalization_1']; ",
    ('hand_keras_rescaling_tfk.tf2onnx.onnx', 'import'):
        "GraphError: hand_keras_rescaling_tfk.tf2onnx.onnx: ONNX node 'model_253/conv2d_3/Conv2D__5281' (Transpose): op 'Transpose' is not supported; supported ops: Add, A",
    ('hand_keras_rescaling_tfk.tf2onnx.onnx', 'convert'):
        "GraphError: hand_keras_rescaling_tfk.tf2onnx.onnx: ONNX node 'model_253/conv2d_3/Conv2D__5281' (Transpose): op 'Transpose' is not supported; supported ops: Add, A",
    ('hand_keras_rescaling_tfk.tfk.h5', 'convert'):
        '8/8 SNR -6.6 dB at the worst output position',
    ('hand_keras_rescaling_tfk.tfk.keras', 'import'):
        "GraphError: hand_keras_rescaling_tfk.tfk.keras: Keras layer 'conv2d_3' (Conv2D): expected 2 weight arrays (kernel, bias), the file has 0 for this layer",
    ('hand_keras_rescaling_tfk.tfk.keras', 'convert'):
        "GraphError: hand_keras_rescaling_tfk.tfk.keras: Keras layer 'conv2d_3' (Conv2D): expected 2 weight arrays (kernel, bias), the file has 0 for this layer",
    ('hand_keras_gap_keepdims_tfk.tf2onnx.onnx', 'import'):
        "GraphError: hand_keras_gap_keepdims_tfk.tf2onnx.onnx: ONNX node 'model_256/conv2d_5/Conv2D__5310' (Transpose): op 'Transpose' is not supported; supported ops: Add",
    ('hand_keras_gap_keepdims_tfk.tf2onnx.onnx', 'convert'):
        "GraphError: hand_keras_gap_keepdims_tfk.tf2onnx.onnx: ONNX node 'model_256/conv2d_5/Conv2D__5310' (Transpose): op 'Transpose' is not supported; supported ops: Add",
    ('hand_keras_gap_keepdims_tfk.tfk.h5', 'convert'):
        "GraphError: node 'conv2d_6' (conv2d, from keras Conv2D 'conv2d_6'): its output is signed (no ReLU follows) and feeds ['flatten']; edgesnn activations are unsigned",
    ('hand_keras_gap_keepdims_tfk.tfk.keras', 'import'):
        "GraphError: hand_keras_gap_keepdims_tfk.tfk.keras: Keras layer 'conv2d_5' (Conv2D): expected 2 weight arrays (kernel, bias), the file has 0 for this layer",
    ('hand_keras_gap_keepdims_tfk.tfk.keras', 'convert'):
        "GraphError: hand_keras_gap_keepdims_tfk.tfk.keras: Keras layer 'conv2d_5' (Conv2D): expected 2 weight arrays (kernel, bias), the file has 0 for this layer",
}


def _marks(name: str, check: str):
    reason = XFAIL.get((name, check))
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def _params(check: str, entries):
    return [pytest.param(e, id=e["name"], marks=_marks(e["name"], check)) for e in entries]


def test_committed_zoo_files_are_present():
    assert COMMITTED, "benchmarks/zoo/manifest.json lists no committed file"
    missing = [e["file"] for e in COMMITTED if not e["present"]]
    assert not missing, f"committed zoo files missing: {missing}"


def test_xfail_list_names_only_zoo_files():
    names = {e["name"] for e in COMMITTED}
    assert {name for name, _ in XFAIL} <= names, sorted({name for name, _ in XFAIL} - names)


@pytest.mark.parametrize("entry", _params("import", COMMITTED))
def test_import_matches_framework(entry):
    from edgesnn.convert import load_graph

    ref = zoo.load_reference(entry)
    graph = load_graph(str(entry["path"]))
    got = graph.run(zoo.float_input(ref.x, ref.input_scaling))
    assert zoo.relative_max_diff(got, ref.y_hwc) <= zoo.FLOAT_MATCH_TARGET


@pytest.mark.parametrize("entry", _params("convert", [e for e in COMMITTED if e["expect"] == "convert"]))
def test_converts_with_snr_at_every_position(entry):
    ref = zoo.load_reference(entry)
    model = zoo.quiet_convert(entry["path"], ref.x, ref.input_scaling, 8)
    snr = zoo.snr_per_position(zoo.dequantized(model, ref.x, device="reference"), ref.logits)
    worst = np.unravel_index(np.argmin(snr), snr.shape)
    assert snr.min() >= zoo.SNR_TARGET_DB, f"SNR {snr.min():.1f} dB at output position {worst} (of {snr.shape})"


@pytest.mark.parametrize("entry", _params("refuse", [e for e in COMMITTED if e["expect"] == "refuse"]))
def test_refused_naming_the_op(entry):
    import edgesnn as es

    error_type = getattr(es, "ConversionError", es.EdgesnnError)
    ref = zoo.load_reference(entry)
    with pytest.raises(error_type) as info:
        zoo.quiet_convert(entry["path"], ref.x, ref.input_scaling, 8)
    assert zoo.names_op(str(info.value), entry["refuse_op"]), (entry["refuse_op"], str(info.value))
