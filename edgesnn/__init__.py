"""edgesnn: integer, event-driven (spiking) networks for the edge.

    import edgesnn as es
    model = es.Model(layers=[...], input_shape=(28, 28, 1))
    model.forward(x)            # int32 potentials, batch first
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import layers
from .errors import ConversionError, DeviceError, EdgesnnError, FormatError, ModelError, PluginError
from .errors import PrecisionError, PrecisionWarning
from .model import Model
from .statistics import LayerStatistics, Statistics
from . import plugins
from .hookspecs import hookimpl
# es.devices is the edgesnn.devices module, callable: es.devices() lists the registered device names
from . import devices
from .devices import Device, DeviceInfo, LayerPlacement, MappingReport
from .plugins import device, frontend, frontends, importers
from .classifier import Classifier, Detection, Prediction
from .pipeline import Pipeline
from .convert import ComparisonReport, Problem, check, compare, convert
from .graph import Graph, GraphError
from .finetuning import finetune
from .precision import sensitivity

__all__ = ["__version__", "layers", "Model", "Statistics", "LayerStatistics",
           "EdgesnnError", "FormatError", "ModelError", "PluginError", "DeviceError", "ConversionError",
           "PrecisionError", "PrecisionWarning",
           "Device", "DeviceInfo", "MappingReport", "LayerPlacement",
           "plugins", "hookimpl", "importers", "frontends", "devices", "frontend", "device",
           "Pipeline", "Prediction", "Detection", "Classifier", "convert", "compare", "ComparisonReport",
           "check", "Problem",
           "Graph", "GraphError",
           "finetune", "sensitivity"]
