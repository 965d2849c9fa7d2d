"""Keras importer: ``.keras`` (Keras 3) and legacy ``.h5`` files -> edgesnn float Graph, without TensorFlow.

    graph = es.plugins.get_importer("keras").load("net.keras")     # or "net.h5", or a keras Model

Files are read with json and h5py only (layouts in ``edgesnn_keras.importer``): Keras 3 and tf.keras 2.x
``.keras``, legacy ``.h5`` of both; Sequential and Functional models with one input and one output,
nested models inlined.  Supported layers: ``SUPPORTED_LAYERS``; others become ``unsupported`` nodes
(``graph.problems()``).  An in-memory keras Model is saved to a temporary .keras file and read back
the same way.
"""

from __future__ import annotations

import pluggy

from .importer import SUPPORTED_LAYERS, import_keras, is_keras_source, read_keras_file

hookimpl = pluggy.HookimplMarker("edgesnn")


class KerasImporter:
    """Reads Keras model files into a float Graph (see the module docstring)."""

    name = "keras"
    extensions = (".keras", ".h5", ".hdf5")
    supported_layers = SUPPORTED_LAYERS

    def can_import(self, source) -> bool:
        return is_keras_source(source)

    def load(self, source, **options):
        """``source``: a .keras/.h5 path or a keras Model; no options."""
        if options:
            raise TypeError(f"the keras importer takes no options, got {sorted(options)}")
        graph = import_keras(source)
        graph.metadata["importer"] = self.name
        return graph


@hookimpl
def edgesnn_register_importers(register):
    register("keras", KerasImporter())


__all__ = ["KerasImporter", "import_keras", "read_keras_file", "SUPPORTED_LAYERS"]
