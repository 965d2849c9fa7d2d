"""Where a zoo model's 8/8 SNR goes: its 8/8 model simulated in float64 with each noise source alone.

    python benchmarks/zoo_noise.py ka_mobilenet_025_k3.k3.keras          # a file of benchmarks/zoo/
    python benchmarks/zoo_noise.py ka_mobilenet_025_k3.k3.keras --floors  # + floors on depthwise-output scales

The model is converted as benchmarks/zoo.py converts it (its calibration samples: zoo.calibration_samples); then the float graph
is run again with the converter's own quantization applied in float64: the weights rounded to 8 bits
per output channel with the input's activation scales folded in (as the integer MAC needs; "unfolded":
without them, a bound that integers cannot express) and every layer's output rounded to its
activation scale (per channel, or one range per tensor). The first column (both) is what the integer
engine computes; the line above the table says how closely they agree. SNR in dB against the float
graph at each layer's output, on the 4 reference inputs. Only for nets whose activations are all
unsigned (ReLU'd: no zero points), e.g. the MobileNet v1 family. docs/zoo.md, "Deep nets at 8/8".
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402

CONFIGS = {"both": dict(weights="folded", acts="channel"), "W only": dict(weights="folded", acts=None),
           "W unfolded": dict(weights="unfolded", acts=None), "A only": dict(weights=None, acts="channel"),
           "A per-tensor": dict(weights=None, acts="tensor")}


def rounded_weights(w: np.ndarray, bits: int = 8) -> np.ndarray:
    qmax = (1 << (bits - 1)) - 1
    top = np.abs(w).reshape(-1, w.shape[-1]).max(axis=0)
    step = np.where(top > 0, top / qmax, 1.0)
    return np.clip(np.round(w / step), -qmax - 1, qmax) * step


def simulate(graph, xf, scales, in_scale, weights=None, acts=None, floor=None):
    from edgesnn.graph import Node, _run_node

    values, scale_of = {graph.input_name: xf.astype(np.float64)}, {graph.input_name: in_scale}
    for node in graph.nodes:
        run = node
        if weights and node.op in ("conv2d", "depthwise_conv2d", "dense"):
            w = np.asarray(node.params["weight"], np.float64)
            s = scale_of[node.inputs[0]]
            fold = {"conv2d": lambda: s[None, None, :, None], "depthwise_conv2d": lambda: s[None, None, :],
                    "dense": lambda: np.tile(s, w.shape[0] // len(s))[:, None]}[node.op]() if weights == "folded" else 1.0
            run = Node(node.name, node.op, node.inputs, attrs=node.attrs,
                       params=dict(node.params, weight=(rounded_weights(w * fold) / fold).astype(np.float32)))
        v = _run_node(run, [values[i] for i in node.inputs]).astype(np.float64)
        if node.name in scales:
            s = np.asarray(scales[node.name], np.float64)
            readers = graph.consumers(node.name)
            if floor is not None and readers and all(r.op in ("conv2d", "dense") for r in readers):
                s = np.maximum(s, floor * s.max())
            if acts == "tensor":
                s = np.full_like(s, s.max())
            if acts:
                v = np.clip(np.round(v / s), 0, 255) * s
            scale_of[node.name] = s
        elif node.op in ("relu", "max_pool") and node.inputs[0] in scale_of:
            scale_of[node.name] = scale_of[node.inputs[0]]
        values[node.name] = v
    return values


def snr(a, b) -> float:
    return float(10 * np.log10(np.sum(b ** 2) / max(float(np.sum((a - b) ** 2)), 1e-30)))


def main(argv=None) -> int:
    import edgesnn as es
    from edgesnn.convert import _float_input, load_graph

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a file name of benchmarks/zoo/manifest.json")
    parser.add_argument("--floors", action="store_true",
                        help="also: per-channel scales of tensors read only by convs floored at a share of the "
                             "largest channel's (the depthwise outputs of a MobileNet)")
    args = parser.parse_args(argv)
    e = next((e for e in zoo.load_manifest() if e["file"] == args.file), None)
    if e is None or not e["present"]:
        parser.error(f"{args.file} is not a present file of {zoo.MANIFEST}")
    ref = zoo.load_reference(e)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.quiet_convert(e["path"], zoo.calibration_samples(e, ref), ref.input_scaling, 8,
                                  on_low_fidelity="record")   # diagnoses models under the bar too
    if model.metadata.get("activation_zero_points"):
        parser.error("this model has signed (zero-pointed) tensors, which the simulation does not model")
    graph = load_graph(str(e["path"]), input_shape_hint=ref.x.shape[1:]).simplify()
    nodes, act_scales = model.metadata["float_nodes"], model.metadata["activation_scales"]
    scales = {nodes[l]: act_scales[l] for l in nodes if l in act_scales and nodes[l] != graph.output}
    xf = _float_input(ref.x, ref.input_scaling)
    in_scale = np.full(graph.input_shape[-1], 1.0 / ref.input_scaling[0])
    exact = simulate(graph, xf, scales, in_scale)
    configs = dict(CONFIGS)
    if args.floors:
        configs.update({f"floor {f:g}": dict(weights="folded", acts="channel", floor=f) for f in (0.05, 0.2, 0.5)})
    runs = {k: simulate(graph, xf, scales, in_scale, **v) for k, v in configs.items()}
    engine = zoo.dequantized(model, ref.x)
    print(f"{args.file}: integer engine {zoo.snr_per_position(engine, ref.logits).min():.1f} dB at the worst "
          f"position; the simulation ('both') agrees with the engine to "
          f"{snr(runs['both'][graph.output].reshape(engine.shape), engine):.1f} dB")
    print(f"{'float node':28s}" + "".join(f"{k:>13s}" for k in configs))
    for node in graph.nodes:
        if node.name in scales or node.name == graph.output:
            print(f"{node.name:28s}" + "".join(f"{snr(runs[k][node.name], exact[node.name]):13.1f}" for k in configs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
