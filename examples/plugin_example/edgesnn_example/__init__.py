"""An example edgesnn plugin: an importer and a frontend, registered through one entry point.

    import edgesnn as es
    graph = es.plugins.get_importer("npz_mlp").load("mlp.npz")   # a float edgesnn Graph
    fe = es.frontend("ascii", height=3, width=3)
    fe("#..\\n.#.\\n..#")                                          # uint8 (3, 3, 1): 255 where '#'

The .npz format: ``input_shape`` (3 ints, H W C) and dense layers ``weight_0`` (fan_in, units),
``bias_0`` (units,), ``weight_1``, ``bias_1`` ... with relu between the layers and none after the
last; fan_in of the first layer is H*W*C of the input flattened in HWC order.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

import edgesnn as es
from edgesnn.graph import Graph, GraphBuilder, GraphError


class NpzMlpImporter:
    """Reads a multi-layer perceptron saved with numpy.savez (see the module docstring)."""

    name = "npz_mlp"
    extensions = (".npz",)

    def can_import(self, source) -> bool:
        """True for a path to a .npz file that holds ``weight_0``; never raises."""
        if not isinstance(source, (str, os.PathLike)) or not str(source).endswith(self.extensions):
            return False
        try:
            with zipfile.ZipFile(source) as archive:
                return "weight_0.npy" in archive.namelist()
        except (OSError, zipfile.BadZipFile):
            return False

    def load(self, source, **options) -> Graph:
        """The MLP in `source` as a float Graph: dense, relu, dense, ..., dense."""
        if options:
            raise TypeError(f"npz_mlp importer takes no options, got {sorted(options)}")
        with np.load(source) as arrays:
            arrays = dict(arrays)
        input_shape = self._input_shape(source, arrays)
        builder = GraphBuilder(input_shape)
        previous = builder.input_name
        for index in range(self._layer_count(source, arrays)):
            weight, bias = arrays[f"weight_{index}"], arrays.get(f"bias_{index}")
            if bias is None:
                raise GraphError(f"{source}: weight_{index} has no bias_{index}")
            if index > 0:
                previous = builder.add("relu", f"relu_{index - 1}", [previous], source=f"npz after layer {index - 1}")
            previous = builder.add("dense", f"dense_{index}", [previous], params={"weight": weight, "bias": bias},
                                   source=f"npz weight_{index}/bias_{index}")
        return builder.build(metadata={"source": str(source), "importer": self.name})

    @staticmethod
    def _input_shape(source, arrays) -> tuple[int, int, int]:
        shape = arrays.get("input_shape")
        if shape is None or np.shape(shape) != (3,):
            raise GraphError(f"{source}: needs an array 'input_shape' of 3 ints (H, W, C), "
                             f"got {None if shape is None else np.shape(shape)}")
        return tuple(int(v) for v in shape)

    @staticmethod
    def _layer_count(source, arrays) -> int:
        count = 0
        while f"weight_{count}" in arrays:
            count += 1
        if count == 0:
            raise GraphError(f"{source}: no 'weight_0' array; arrays: {sorted(arrays)}")
        return count


class AsciiFrontend:
    """Text pictures -> uint8 images (H, W, 1): an `on` character is 255, any other character 0."""

    name = "ascii"

    def __init__(self, height: int = 8, width: int = 8, on: str = "#"):
        if not (isinstance(height, int) and isinstance(width, int) and height >= 1 and width >= 1):
            raise ValueError(f"ascii frontend: height and width must be positive integers, got {height!r}, {width!r}")
        if not (isinstance(on, str) and len(on) == 1):
            raise ValueError(f"ascii frontend: `on` must be a single character, got {on!r}")
        self.config = {"height": height, "width": width, "on": on}
        self.output_shape = (height, width, 1)

    def __call__(self, raw) -> np.ndarray:
        """One picture (a str, rows separated by newlines) -> (H, W, 1); a list of pictures -> (N, H, W, 1)."""
        if isinstance(raw, str):
            return self._picture(raw, where="ascii frontend")
        return np.stack([self._picture(picture, where=f"ascii frontend, picture {i}") for i, picture in enumerate(raw)])

    def _picture(self, text: str, where: str) -> np.ndarray:
        height, width, _ = self.output_shape
        rows = text.split("\n")
        widest = max(len(row) for row in rows)
        if len(rows) > height or widest > width:
            raise ValueError(f"{where}: the picture is {len(rows)} rows x {widest} columns, "
                             f"larger than the configured {height} x {width}")
        image = np.zeros(self.output_shape, dtype=np.uint8)
        for y, row in enumerate(rows):
            for x, char in enumerate(row):
                if char == self.config["on"]:
                    image[y, x, 0] = 255
        return image


@es.hookimpl
def edgesnn_register_importers(register):
    register("npz_mlp", NpzMlpImporter())


@es.hookimpl
def edgesnn_register_frontends(register):
    register("ascii", AsciiFrontend)
