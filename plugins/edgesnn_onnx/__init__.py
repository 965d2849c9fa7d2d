"""ONNX importer: ``.onnx`` files and ``onnx.ModelProto`` (opset 13 and later) -> edgesnn float Graph.

    graph = es.plugins.get_importer("onnx").load("net.onnx")

ONNX tensors are NCHW (torch.onnx, TorchScript and dynamo exporters), NHWC (tf2onnx: the input up
to its first Transpose) or (N, C, L) (Conv1d); the Graph is HWC.  Weights are transposed, and a
Flatten of an NCHW tensor (which orders values C, H, W) in front of Gemm/MatMul is handled by
permuting the dense weight rows into the Graph's HWC flatten order.  Layout ops (Cast to float,
Transpose NCHW <-> NHWC, Squeeze/Unsqueeze/Reshape of unit axes, the Shape/Gather/Concat constant
chains) leave no node.  Ops that cannot be converted become ``unsupported`` nodes
(``graph.problems()``).  An older opset is converted to 13 with onnx.version_converter.
"""

from __future__ import annotations

import pluggy

from .importer import SUPPORTED_OPS, import_onnx, is_onnx_source

hookimpl = pluggy.HookimplMarker("edgesnn")


class OnnxImporter:
    """Reads ONNX models into a float Graph (see the module docstring)."""

    name = "onnx"
    extensions = (".onnx",)
    supported_ops = SUPPORTED_OPS

    def can_import(self, source) -> bool:
        return is_onnx_source(source)

    def load(self, source, **options):
        """``source``: a path to a .onnx file or an ``onnx.ModelProto``; no options."""
        if options:
            raise TypeError(f"the onnx importer takes no options, got {sorted(options)}")
        graph = import_onnx(source)
        graph.metadata["importer"] = self.name
        return graph


@hookimpl
def edgesnn_register_importers(register):
    register("onnx", OnnxImporter())


__all__ = ["OnnxImporter", "import_onnx", "SUPPORTED_OPS"]
