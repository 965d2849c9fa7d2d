"""The `edgesnn` command line.

Each command is one `_add_<command>(commands)` function that adds its subparser and sets
`run=<function>`; `COMMANDS` lists them in help order.  To add a command, write both and append
the adder to `COMMANDS`.  A command's function takes the parsed arguments and returns the exit
status; edgesnn errors and OS errors become one `edgesnn: error: ...` line and status 1.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import __version__, plugins
from .errors import EdgesnnError
from .statistics import format_table


# -- plugins ---------------------------------------------------------------------------------------


def _add_plugins(commands) -> None:
    sub = commands.add_parser("plugins", help="list loaded plugins: name, kind, distribution, version",
                              description="List the loaded plugins and what each registered.")
    sub.set_defaults(run=_run_plugins)


def _run_plugins(args) -> int:
    provided: dict[str, list[str]] = {}
    for registration in plugins.registrations():
        provided.setdefault(registration.plugin, []).append(f"{registration.kind} {registration.name}")
    rows = [(row.name, ", ".join(row.kinds) or "-", row.distribution or "(in code)", row.version or "-",
             ", ".join(provided.get(row.name, [])) or "-")
            for row in plugins.list_plugins()]
    print(format_table(("name", "kind", "distribution", "version", "provides"), rows))
    return 0


# -- devices ---------------------------------------------------------------------------------------


def _add_devices(commands) -> None:
    sub = commands.add_parser("devices", help="list the devices a model can run on",
                              description="List the registered devices and the plugin of each.")
    sub.set_defaults(run=_run_devices)


def _run_devices(args) -> int:
    rows = [(r.name, r.plugin, _first_doc_line(r.obj)) for r in plugins.registrations("device")]
    print(format_table(("device", "plugin", "description"), rows))
    return 0


def _first_doc_line(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


# -- summary ---------------------------------------------------------------------------------------


def _add_summary(commands) -> None:
    sub = commands.add_parser("summary", help="print the layer table of a .esnn model",
                              description="Load a .esnn model and print its layer table with totals.")
    sub.add_argument("model", metavar="MODEL", help="path of a .esnn file")
    sub.set_defaults(run=_run_summary)


def _run_summary(args) -> int:
    from .model import Model

    model = Model.load(args.model)
    print(f"{args.model}: {model!r}")
    model.summary(print_fn=print)
    return 0


# -- demo ------------------------------------------------------------------------------------------


def _add_demo(commands) -> None:
    sub = commands.add_parser("demo", help="build a small model by hand, run it and print its statistics",
                              description="Build a small integer model by hand (a conv layer of fixed "
                                          "edge filters and a dense nearest-class-mean layer), classify "
                                          "8x8 digits with it, and print its summary and statistics.")
    sub.add_argument("--device", default="reference", help="device to run on (default: reference)")
    sub.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from .model import Model

    (train_x, train_y), (test_x, test_y), source = _demo_data()
    conv = _demo_conv_layer()
    features_model = Model(layers=[conv], input_shape=train_x.shape[1:])
    train_features = features_model.forward(train_x, device=args.device)   # (N, 8, 8, 4) relu outputs
    dense = _demo_dense_layer(train_features.reshape(len(train_x), -1), train_y)
    model = Model(layers=[conv, dense], input_shape=train_x.shape[1:],
                  metadata={"labels": [str(c) for c in range(dense.weights.shape[1])],
                            "source": f"edgesnn demo ({source})"})
    print(f"Hand-built model for {source}: {len(train_x)} samples give the class templates, "
          f"{len(test_x)} are classified.\n")
    model.summary(print_fn=print)
    predicted = model.predict(test_x, device=args.device)
    accuracy = float(np.mean(predicted == test_y))
    print(f"\nAccuracy on {len(test_x)} held-out samples: {accuracy:.1%} (device {args.device!r})\n")
    print(model.statistics.table())
    return 0


def _demo_data():
    """((train_x, train_y), (test_x, test_y), description): uint8 (N, 8, 8, 1) images and int labels.

    scikit-learn's 8x8 digits when scikit-learn is installed, else four classes of synthetic bars.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return _synthetic_bars() + ("synthetic 8x8 bars (install scikit-learn for real digits)",)
    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]   # 0..16 -> 0..255
    split = 1000
    return ((images[:split], digits.target[:split]), (images[split:], digits.target[split:]),
            "scikit-learn's 8x8 digits")


def _synthetic_bars(samples_per_class: int = 100):
    """Horizontal, vertical, diagonal and anti-diagonal bars at random positions with noise."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for _ in range(samples_per_class):
        for label in range(4):
            image = rng.integers(0, 40, size=(8, 8)).astype(np.int64)
            offset = int(rng.integers(1, 7))
            if label == 0:
                image[offset, :] = 255
            elif label == 1:
                image[:, offset] = 255
            else:
                diagonal = np.eye(8, dtype=bool) if label == 2 else np.fliplr(np.eye(8, dtype=bool))
                image[diagonal] = 255
            images.append(image)
            labels.append(label)
    x = np.clip(np.array(images), 0, 255).astype(np.uint8)[..., None]
    y = np.array(labels)
    split = len(x) // 2
    return (x[:split], y[:split]), (x[split:], y[split:])


def _demo_conv_layer():
    """3x3 conv, 4-bit weights: centre pixel, horizontal edges, vertical edges, blur; relu to 4 bits."""
    from .layers import InputConv2D

    sobel = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    centre = np.zeros((3, 3), dtype=np.int64)
    centre[1, 1] = 7
    filters = [centre, 3 * sobel // 2, 3 * sobel.T // 2, np.ones((3, 3), dtype=np.int64)]
    weights = np.stack(filters, axis=-1)[:, :, None, :]                    # (3, 3, 1, 4)
    positive_sum = np.clip(weights, 0, None).reshape(-1, 4).sum(axis=0)   # largest gain per channel
    # requantize: the brightest full response (positive_sum * 255) lands near 2 * 15, saturating at 15
    out_shift = np.ceil(np.log2(positive_sum * 255 / 30)).astype(np.int32)
    return InputConv2D(name="edges", weights=weights, bias=0, weight_bits=4, padding="same",
                       neuron="relu", activation_bits=4,
                       out_multiplier=1, out_shift=out_shift)


def _demo_dense_layer(features: np.ndarray, labels: np.ndarray):
    """Nearest-class-mean classifier as a 4-bit dense layer.

    argmin_c |f - mean_c|^2 = argmax_c  d_c . f - d_c . mean - |d_c|^2 / 2   with d_c = mean_c - mean,
    so the weights are the scaled d_c and the bias holds the two constant terms (in the same scale).
    """
    from .layers import Dense

    classes = int(labels.max()) + 1
    overall_mean = features.mean(axis=0)                                                     # (F,)
    class_means = np.stack([features[labels == c].mean(axis=0) for c in range(classes)], axis=1)  # (F, classes)
    centred = class_means - overall_mean[:, None]
    scale = 7 / np.abs(centred).max()                                                        # 4-bit: -7..7
    weights = np.round(centred * scale)
    bias = np.round(-(weights * overall_mean[:, None]).sum(axis=0) - 0.5 * (weights ** 2).sum(axis=0) / scale)
    return Dense(name="templates", weights=weights.astype(np.int64), bias=bias.astype(np.int64),
                 weight_bits=4, neuron="none")


# -- main ------------------------------------------------------------------------------------------

COMMANDS = [_add_plugins, _add_devices, _add_summary, _add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgesnn",
        description="Convert networks into integer, event-driven networks and run them on the edge.")
    parser.add_argument("--version", action="version", version=f"edgesnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (EdgesnnError, OSError) as exc:
        print(f"edgesnn {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
