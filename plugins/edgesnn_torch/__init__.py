"""PyTorch importer: an ``nn.Module`` plus an example input -> edgesnn float Graph.

    graph = es.plugins.get_importer("torch").load(net, example_input=torch.zeros(1, 1, 28, 28))
    graph = es.plugins.get_importer("torch").load(net, input_shape=(28, 28, 1))   # HWC, the same
    graph = es.plugins.get_importer("torch").load(net1d, example_input=torch.zeros(1, 40, 98))  # (N, C, L)

The module is exported (in eval mode, offline) with the TorchScript ONNX exporter and read by the
``onnx`` importer, so it supports what that supports: Conv2d/Conv1d (groups, depthwise with
multipliers), Linear, BatchNorm2d/1d, ReLU/ReLU6/Hardtanh, MaxPool2d/1d and AvgPool2d/1d (padding,
ceil_mode), AdaptiveAvgPool2d(1), x.mean((2, 3)), F.pad, torch.cat / chunk / split over channels,
channel shuffles, Flatten, Dropout, residual adds.  A 3-D input (N, C, L) is the Graph's (1, L, C).
Other layers become ``unsupported`` nodes (``graph.problems()``).  The module's training mode is
restored afterwards.
"""

from __future__ import annotations

import io
import sys
import warnings

import pluggy

hookimpl = pluggy.HookimplMarker("edgesnn")

OPSET = 17


def is_torch_module(source) -> bool:
    """True for an nn.Module, without importing torch when it was never imported."""
    if "torch" not in sys.modules:
        return False
    return isinstance(source, sys.modules["torch"].nn.Module)


class TorchImporter:
    """Reads torch ``nn.Module`` objects into a float Graph (see the module docstring)."""

    name = "torch"
    extensions = ()

    def can_import(self, source) -> bool:
        return is_torch_module(source)

    def load(self, source, *, example_input=None, input_shape=None):
        """``example_input``: a tensor (1, C, H, W), (1, C, L) or (1, K); or ``input_shape`` (H, W, C),
        (L, C) or (K,)."""
        graph = import_torch(source, example_input=example_input, input_shape=input_shape)
        graph.metadata["importer"] = self.name
        return graph


def _example(example_input, input_shape):
    import torch

    if example_input is not None:
        example = torch.as_tensor(example_input, dtype=torch.float32)
        if example.ndim not in (2, 3, 4):
            raise ValueError(f"example_input must be (N, C, H, W), (N, C, L) or (N, K), got shape "
                             f"{tuple(example.shape)}")
        return example[:1]
    if input_shape is None:
        raise ValueError("the torch importer needs example_input=torch.zeros(1, C, H, W) "
                         "or input_shape=(H, W, C) to trace the module")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 3:
        h, w, c = shape
        return torch.zeros(1, c, h, w)
    if len(shape) == 2:
        length, c = shape
        return torch.zeros(1, c, length)
    if len(shape) == 1:
        return torch.zeros(1, shape[0])
    raise ValueError(f"input_shape must be (H, W, C), (L, C) or (K,), got {shape}")


def export_onnx_bytes(module, example) -> bytes:
    """The module as ONNX bytes (eval mode, constant folding, dynamic batch)."""
    import torch

    was_training = module.training
    module.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET,
                              do_constant_folding=True, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except Exception as exc:
        from edgesnn.graph import GraphError
        raise GraphError(f"torch module {type(module).__name__}: ONNX export failed "
                         f"({type(exc).__name__}: {exc})") from exc
    finally:
        module.train(was_training)
    return buffer.getvalue()


def import_torch(module, *, example_input=None, input_shape=None):
    import onnx

    import edgesnn.plugins
    from edgesnn.graph import GraphError

    if not is_torch_module(module):
        raise TypeError(f"the torch importer reads a torch.nn.Module, got {type(module).__name__}")
    example = _example(example_input, input_shape)
    proto = onnx.load_from_string(export_onnx_bytes(module, example))
    try:
        graph = edgesnn.plugins.get_importer("onnx").load(proto)
    except GraphError as exc:
        raise GraphError(f"torch module {type(module).__name__} (exported to ONNX): {exc}") from exc
    graph.metadata.update({"source_format": "torch", "source": type(module).__name__,
                           "exported_with": f"torch {sys.modules['torch'].__version__} onnx opset {OPSET}"})
    return graph


@hookimpl
def edgesnn_register_importers(register):
    register("torch", TorchImporter())


__all__ = ["TorchImporter", "import_torch", "export_onnx_bytes"]
