"""The `edgesnn` command line.

Each command is one `_add_<command>(commands)` function that adds its subparser and sets
`run=<function>`; `COMMANDS` lists them in help order.  To add a command, write both and append
the adder to `COMMANDS`.  A command's function takes the parsed arguments and returns the exit
status. A wrong input (an edgesnn error, an OS error, or the ValueError / TypeError a frontend or an
array check raises) becomes one `edgesnn CMD: error: ...` line on stderr and status 1, never a
traceback; tests/test_cli.py drives every command with one.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from . import __version__, demo, plugins
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


def _add_check(commands) -> None:
    sub = commands.add_parser("check", help="will a source model convert? does a .esnn model fit a device? "
                                            "every problem at once",
                              description="For a source model (.keras, .h5, .onnx): list every node that will not "
                                          "convert to integer layers, with the reason and what to change. For a "
                                          ".esnn model and --device: print the device's mapping report: fits or not, "
                                          "arena and program bytes against the device's memory, a verdict per layer "
                                          "with its reason. Exit status 0 when it converts / fits, 1 otherwise.")
    sub.add_argument("model", metavar="MODEL", help="a source model file, or a .esnn file with --device")
    sub.add_argument("--device", help="device or profile name (see `edgesnn devices`), e.g. cortex-m4")
    sub.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                     help="an option of the device (repeatable), e.g. -o address=127.0.0.1:5000; "
                          "JSON values are parsed (-o timeout_s=2)")
    sub.set_defaults(run=_run_check)


def _run_check(args) -> int:
    from .model import Model
    from .devices import resolve_device

    if not str(args.model).endswith(".esnn"):
        if args.device:
            raise EdgesnnError(f"--device checks a converted .esnn model; {args.model!r} is a source model: "
                               f"convert it first (edgesnn convert), or drop --device to list what will not convert")
        return _print_conversion_problems(args.model)
    if not args.device:
        raise EdgesnnError(f"{args.model}: checking a .esnn model needs --device NAME (see `edgesnn devices`)")
    model = Model.load(args.model)
    options = dict(_device_option(text) for text in args.option)
    device = _built("device", args.device, plugins.get_device(args.device), options, "--option") if options \
        else resolve_device(args.device)
    try:
        report = device.check(model)
    finally:
        if options:
            device.close()
    print(f"{args.model}: {model!r}")
    print(report)
    return 0 if report.fits else 1


def _print_conversion_problems(source) -> int:
    """`edgesnn check SRC` and `edgesnn convert SRC --check`: every node that will not convert; exit 1 if any.
    A source an importer turns straight into a Model (a NIR graph) has no float Graph to check: it is
    built, and the first node that does not map is the error."""
    from .convert import ConversionError, check, convert

    if _builds_model(source):
        try:
            convert(source, None)
        except ConversionError as exc:
            print(f"{source}: will not convert: {_one_line(exc)}")
            return 1
        print(f"{source}: every node converts to integer layers")
        return 0
    problems = check(source)
    if not problems:
        print(f"{source}: every node converts to integer layers")
        return 0
    print(f"{source}: {len(problems)} node(s) will not convert to integer layers:")
    for problem in problems:
        print(f"  - {problem}")
    return 1


def _builds_model(source) -> bool:
    """Whether an importer turns `source` straight into an integer Model (a NIR graph), with no float
    Graph to calibrate: then calibration samples are optional input spike trains."""
    from .convert import _model_builder

    return _model_builder(source, None) is not None


def _built(kind: str, name: str, factory, settings: dict, flag: str):
    """`factory(**settings)`, the frontend or device `name`; a setting it does not take is an error that
    names the ones it does."""
    from .plugins import unknown_options

    problem = unknown_options(kind, name, factory, settings)
    if problem:
        raise EdgesnnError(f"{flag}: {problem}")
    return factory(**settings)


def _device_option(text: str) -> tuple[str, object]:
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise EdgesnnError(f"--option {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _add_device_option(sub) -> None:
    sub.add_argument("--device", default=None, help="device to run on (default: cpu if built, else reference)")


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

    from .pipeline import FRONTEND_KEY, PIPELINE_KEY

    model = Model.load(args.model)
    print(f"{args.model}: {model!r}")
    model.summary(print_fn=print)
    stored = model.metadata.get(FRONTEND_KEY)
    if isinstance(stored, dict):
        config = ", ".join(f"{key}={value!r}" for key, value in (stored.get("config") or {}).items())
        print(f"frontend: {stored.get('name')!r}" + (f" ({config})" if config else ""))
    else:
        print("frontend: none stored (inputs must be .npy model inputs; attach one with `edgesnn pipeline`)")
    options = {key: value for key, value in (model.metadata.get(PIPELINE_KEY) or {}).items() if value is not None}
    if options:
        print("pipeline: " + ", ".join(f"{key}={value!r}" for key, value in options.items()))
    return 0


# -- demo ------------------------------------------------------------------------------------------


def _add_demo(commands) -> None:
    sub = commands.add_parser("demo", help="convert a float MNIST CNN to integer and spiking networks, classify "
                                           "real digits",
                              description="Convert the shipped float MNIST CNN into an integer network, compare it "
                                          "with the float model layer by layer, classify 1,000 real held-out digits, "
                                          "run the shipped spiking version at T = 4..32 and the shipped keyword "
                                          "spotter over a 12 s recording. Nothing is downloaded; about 20 s.")
    _add_device_option(sub)
    sub.add_argument("--bits", type=int, default=4, choices=(2, 4, 8),
                     help="weight and activation bits (default 4; 2 shows what post-training quantization alone loses)")
    sub.add_argument("--plot", metavar="PNG", help="also plot per-layer sparsity to this file")
    sub.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    if args.plot:
        _check_output_path(args.plot, "--plot")
    return demo.run(device=args.device, weight_bits=args.bits, activation_bits=args.bits, plot=args.plot)


# -- main ------------------------------------------------------------------------------------------

# -- convert ---------------------------------------------------------------------------------------


def _add_convert(commands) -> None:
    sub = commands.add_parser("convert", help="convert a Keras/ONNX/NIR model into an integer .esnn model",
                              description="Import SRC (.keras, .h5, .onnx, .nir) with the importer plugin that "
                                          "accepts it, calibrate on uint8 HWC samples and write an integer model. "
                                          "A NIR graph is already spiking: --samples (input spike trains "
                                          "(N, T, H, W, C)) is optional, --weight-bits, --input-bits, "
                                          "--timesteps and --labels apply.")
    sub.add_argument("source", metavar="SRC", help="the float model file (.keras, .h5, .onnx) or a NIR graph (.nir)")
    sub.add_argument("-o", "--output", metavar="OUT.esnn", help="the integer model to write (required unless --check)")
    sub.add_argument("--samples", metavar="CALIB.npz",
                     help="calibration samples: a .npz with array 'x' (N, H, W, C) uint8 (optional 'y' labels "
                          "for --report), or a .npy holding x; required unless --check")
    sub.add_argument("--check", action="store_true",
                     help="only list every node that will not convert (no samples needed), exit 1 if any")
    sub.add_argument("--weight-bits", type=int, default=8, choices=(2, 4, 8), help="default 8")
    sub.add_argument("--activation-bits", type=int, default=8, choices=(1, 2, 4, 8), help="default 8")
    sub.add_argument("--input-bits", type=int, default=8, choices=range(1, 9), metavar="1..8",
                     help="bits of the model input (default 8: uint8 images; 1 for binary spikes)")
    sub.add_argument("--input-scaling", type=float, nargs=2, default=(1.0, 0.0), metavar=("SCALE", "OFFSET"),
                     help="the source model sees (x - OFFSET) / SCALE (default 1 0)")
    sub.add_argument("--calibration", default="minmax", choices=("minmax", "percentile", "mse"),
                     help="how each activation range is chosen from the samples (default minmax; mse is "
                          "better at 4 bits and below)")
    sub.add_argument("--per-tensor", action="store_true", help="one weight scale per layer instead of per channel")
    sub.add_argument("--input-weight-bits", type=int, default=8, choices=(2, 4, 8),
                     help="weight bits of the layer that reads the model input (default 8, as BrainChip does)")
    sub.add_argument("--equalize", action="store_true", help="cross-layer equalization of depthwise -> pointwise")
    sub.add_argument("--bias-correction", action="store_true",
                     help="fold the mean shift quantization adds to each channel into its bias")
    sub.add_argument("--search-ranges", action="store_true",
                     help="choose each activation clip for the smallest output error (slower)")
    sub.add_argument("--budget", type=int, metavar="BYTES",
                     help="pick per-layer weight bits so the packed model fits in BYTES (es.sensitivity)")
    sub.add_argument("--on-low-fidelity", default="refuse", choices=("refuse", "warn"),
                     help="an 8/8 model under 25 dB SNR of the float output at some position: refuse (default, "
                          "exit 1 naming the SNR and the layer where it falls most) or warn and write it")
    sub.add_argument("--neuron", default="relu", choices=("relu", "if", "lif"),
                     help="if: spiking, rate-coded; lif: spiking with a leak chosen for --timesteps")
    sub.add_argument("--timesteps", type=int, default=None, help="timesteps of a spiking model (default 16)")
    sub.add_argument("--labels", help="comma-separated class names")
    sub.add_argument("--report", action="store_true",
                     help="print the fidelity report (float vs integer) on the samples, or on --test")
    sub.add_argument("--test", metavar="TEST.npz", help="labelled 'x', 'y' arrays for the report")
    sub.set_defaults(run=_run_convert)


def _run_convert(args) -> int:
    from .convert import compare, convert

    if args.check:
        return _print_conversion_problems(args.source)
    spiking_graph = _builds_model(args.source)   # a NIR graph: samples are optional input spike trains
    missing = [flag for flag, value in (("-o/--output", args.output), ("--samples", args.samples))
               if not value and not (flag == "--samples" and spiking_graph)]
    if missing:
        raise EdgesnnError(f"{' and '.join(missing)} required (or --check to only list what will not convert)")
    _check_output_path(args.output, "-o")
    if args.timesteps is not None:
        _check_at_least_1("--timesteps", args.timesteps)
    test = _labelled_arrays(args.test) if args.test else None   # a wrong --test fails before the work
    x = y = None
    if args.samples:
        data = _load_arrays(args.samples)
        if "x" not in data:
            raise EdgesnnError(f"{args.samples}: calibration file needs an array 'x'; it has {sorted(data)}")
        x, y = data["x"] if spiking_graph else _checked_samples(data["x"], args.samples), data.get("y")
    if args.report and (spiking_graph or x is None):
        raise EdgesnnError("--report compares with the float model, and a NIR graph converts without one")
    labels = args.labels.split(",") if args.labels else None
    model = convert(args.source, samples=x, weight_bits=args.weight_bits, activation_bits=args.activation_bits,
                    input_bits=args.input_bits, input_scaling=tuple(args.input_scaling),
                    per_channel=not args.per_tensor, calibration=args.calibration, neuron=args.neuron,
                    timesteps=args.timesteps, labels=labels, input_weight_bits=args.input_weight_bits,
                    equalize=args.equalize, bias_correction=args.bias_correction,
                    search_ranges=args.search_ranges, budget_bytes=args.budget,
                    on_low_fidelity=args.on_low_fidelity)
    model.save(args.output)
    model.summary(print_fn=print)
    print(f"\nwrote {args.output}")
    if args.report:
        test_x, test_y = test if test is not None else (x, y)
        print()
        print(compare(args.source, model, test_x, test_y).table())
    return 0


def _check_output_path(path: str, option: str) -> None:
    """Fail before any work when `path` cannot be written (no such directory, a directory, not writable)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise EdgesnnError(f"{option} {path}: the directory {parent} does not exist")
    if os.path.isdir(path):
        raise EdgesnnError(f"{option} {path}: is a directory; give a file name such as {os.path.join(path, 'model.esnn')}")
    if not os.access(parent, os.W_OK):
        raise EdgesnnError(f"{option} {path}: cannot write into {parent} (permission denied)")


def _checked_samples(x: np.ndarray, path) -> np.ndarray:
    """Calibration samples must be model inputs: uint8 images (N, H, W, C); say how to fix other arrays."""
    if x.ndim == 2 and x.shape[0] > 0:
        side = int(round(np.sqrt(x.shape[1])))
        example = f"x.reshape(-1, {side}, {side}, 1)" if side * side == x.shape[1] else "x.reshape(-1, H, W, C)"
        raise EdgesnnError(f"{path}: x is flattened, shape {x.shape}; calibration samples are images "
                           f"(N, H, W, C): save {example}")
    if x.ndim != 4 or x.shape[0] == 0:
        raise EdgesnnError(f"{path}: x must be uint8 images (N, H, W, C) with N > 0, got shape {x.shape}")
    if x.dtype != np.uint8:
        if x.dtype.kind in "iu" and x.min() >= 0 and x.max() <= 255:
            return x.astype(np.uint8)
        if x.dtype.kind == "f":
            top = float(np.nanmax(x)) if x.size else 0.0
            fix = "(x * 255).round().astype(np.uint8) and convert with --input-scaling 255 0" if top <= 1.0 else \
                "x.round().clip(0, 255).astype(np.uint8)"
            raise EdgesnnError(f"{path}: x is {x.dtype}; calibration samples are the uint8 model inputs (0..255) "
                               f"the source model sees as (x - OFFSET) / SCALE (--input-scaling): save {fix}")
        raise EdgesnnError(f"{path}: x must be uint8 (0..255), got {x.dtype} with values in [{x.min()}, {x.max()}]")
    return x


def _load_arrays(path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file by name, or a .npy file's one array as 'x'; EdgesnnError naming the file
    when it is neither."""
    import zipfile

    with open(path, "rb") as file:
        start = file.read(6)
    if not (start.startswith(b"\x93NUMPY") or start.startswith(b"PK\x03\x04")):
        raise EdgesnnError(f"{path}: not a .npy or .npz file (it starts with {start!r}); save arrays with "
                           f"np.save('x.npy', x) or np.savez('data.npz', x=x, y=y)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgesnnError(f"{path}: not a .npy or .npz file numpy can read without pickle ({exc})") from exc
    if isinstance(loaded, np.ndarray):
        return {"x": loaded}
    try:
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise EdgesnnError(f"{path}: an array in the .npz cannot be read without pickle ({exc})") from exc


def _numbers(option: str, text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers, such as --thresholds 0.5,0.7,0.9."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise EdgesnnError(f"{option} {text!r}: expected comma-separated numbers, e.g. 0.5,0.7,0.9") from None


def _check_at_least_1(option: str, value: int) -> None:
    if value < 1:
        raise EdgesnnError(f"{option} must be at least 1, got {value}")


# -- pipeline: attach a frontend, labels and options to a model file ---------------------------------


def _add_pipeline(commands) -> None:
    sub = commands.add_parser("pipeline", help="write a pipeline file: a model with its frontend, labels, options",
                              description="Write OUT.esnn: MODEL with the frontend NAME (configured by --config), "
                                          "its labels and options, so `predict`, `eval` and `stream` take raw "
                                          "images or audio. --frontend none removes a stored frontend.")
    sub.add_argument("model", metavar="MODEL", help="path of a .esnn file (a model or a pipeline file)")
    sub.add_argument("-o", "--output", required=True, metavar="OUT.esnn")
    sub.add_argument("--frontend", required=True, metavar="NAME", help="a registered frontend (image, kws, rate, "
                                                                          "...) or 'none'")
    sub.add_argument("--config", default="{}", metavar="JSON",
                     help='the frontend\'s settings as a JSON object, e.g. \'{"size": [28, 28], "invert": "auto"}\'')
    sub.add_argument("--labels", help="comma-separated class names (default: the model's)")
    sub.add_argument("--threshold", type=float, default=None, help="answer 'unknown' below this score")
    sub.add_argument("--timesteps", type=int, default=None, help="timesteps for dense input (default: the model's)")
    sub.set_defaults(run=_run_pipeline)


def _run_pipeline(args) -> int:
    import json

    from . import plugins
    from .model import Model
    from .pipeline import Pipeline

    _check_output_path(args.output, "-o")
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise EdgesnnError(f"--config is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise EdgesnnError(f"--config must be a JSON object of the frontend's settings, got {args.config!r}")
    if args.timesteps is not None:
        _check_at_least_1("--timesteps", args.timesteps)
    model = Model.load(args.model)
    frontend = None if args.frontend == "none" else \
        _built("frontend", args.frontend, plugins.get_frontend(args.frontend), config, "--config")
    labels = args.labels.split(",") if args.labels else None
    pipe = Pipeline(frontend, model, labels=labels, timesteps=args.timesteps, threshold=args.threshold)
    pipe.save(args.output)
    print(f"wrote {args.output}: {pipe!r}")
    return 0


# -- predict, stream, eval, bench: models with their frontends (edgesnn/pipeline.py) -------------


def _user_errors(run):
    """Frontends and arrays raise ValueError/TypeError on bad input; the CLI prints them as one line."""
    def wrapped(args) -> int:
        try:
            return run(args)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, EdgesnnError):
                raise
            raise EdgesnnError(str(exc)) from exc
    return wrapped


def _load_pipeline(path, device=None, threshold=None):
    from .classifier import Classifier
    from .pipeline import Pipeline

    pipe = Pipeline.load(path, device=device)
    if threshold is not None:
        old = pipe.classifier
        pipe.classifier = Classifier(old.labels, output_scale=old.output_scale, threshold=threshold,
                                     unknown_label=old.unknown_label)
    return pipe


ATTACH_HINT = "attach one with `edgesnn pipeline MODEL --frontend image -o OUT.esnn`"


def _samples_of(pipe, name: str) -> list[tuple[str, np.ndarray]]:
    """One CLI input file -> (display name, model input) pairs. A .npy of model inputs is used as it is:
    one input (H, W, C), a batch (N, H, W, C) (or, for a spike-train frontend, one train (T, H, W, C)),
    a batch of spike trains (N, T, H, W, C); anything else (images, audio, other arrays) goes through
    the pipeline's frontend."""
    if not os.path.isfile(name):
        raise EdgesnnError(f"{name}: no such file" if not os.path.exists(name) else f"{name}: not a file")
    shape = tuple(pipe.model.input_shape)
    source = name
    if str(name).endswith(".npy"):
        array = _load_arrays(name)["x"]
        spike_trains = bool(getattr(pipe.frontend, "time_axis", False))
        if array.shape == shape or (spike_trains and array.ndim == 4 and array.shape[1:] == shape):
            return [(name, pipe.as_model_input(array))]
        if (array.ndim == 4 and array.shape[1:] == shape) or (array.ndim == 5 and array.shape[2:] == shape):
            return [(f"{name}[{i}]", pipe.as_model_input(sample)) for i, sample in enumerate(array)]
        if pipe.frontend is None:
            raise EdgesnnError(f"{name}: holds {array.dtype} {array.shape}, not model inputs: the model takes "
                               f"{shape}, a batch (N, {', '.join(map(str, shape))}) or spike trains "
                               f"(N, T, {', '.join(map(str, shape))}); for raw data the model file needs a "
                               f"frontend, and it stores none: {ATTACH_HINT}")
        source = array
    if pipe.frontend is None:
        raise EdgesnnError(f"{name}: the model file stores no frontend, so inputs must be .npy model inputs "
                           f"of shape {shape}; {ATTACH_HINT}")
    return [(name, pipe.encode(source))]


def _add_predict(commands) -> None:
    sub = commands.add_parser("predict", help="classify images, WAVs or .npy inputs with a .esnn model",
                              description="Run each INPUT through the model's frontend (stored by "
                                          "Pipeline.save), the model and the classifier; print label and score. "
                                          ".npy inputs already of the model's input shape skip the frontend.")
    sub.add_argument("model", metavar="MODEL", help="path of a .esnn file")
    sub.add_argument("inputs", metavar="INPUT", nargs="+",
                     help="image, audio or .npy files (a .npy of model inputs may hold a batch: one answer each)")
    sub.add_argument("--json", action="store_true", help="one JSON object per input, for machines")
    sub.add_argument("--top", type=int, default=1, help="also print the k best labels (default 1)")
    sub.add_argument("--threshold", type=float, default=None, help="answer 'unknown' below this score")
    _add_device_option(sub)
    sub.add_argument("--plot", metavar="PNG",
                     help=f"class scores over timesteps of the first {PLOT_INPUTS_MAX} inputs, each beside its input "
                          f"(spiking models, or any model run over several timesteps)")
    sub.add_argument("--early-exit", type=int, default=None, metavar="MARGIN",
                     help="stop a sample once its leading output potential leads the second by MARGIN "
                          "(docs/semantics.md, 'Over time and early exit'); prints the timesteps used")
    sub.set_defaults(run=_user_errors(_run_predict))


PLOT_INPUTS_MAX = 4   # predict --plot: inputs drawn, one row each


def _run_predict(args) -> int:
    import json

    _check_at_least_1("--top", args.top)
    if args.plot:
        _check_output_path(args.plot, "--plot")
    if args.early_exit is not None:
        _check_at_least_1("--early-exit", args.early_exit)
    pipe = _load_pipeline(args.model, args.device, args.threshold)
    failed = 0
    plotting = []   # (name, model input) of the first inputs, for --plot
    for path in args.inputs:   # a bad input is reported and skipped; the others are still answered
        try:
            samples = _samples_of(pipe, path)
            predictions, used = _classify(pipe, np.stack([sample for _, sample in samples]), args.early_exit)
        except (EdgesnnError, OSError, ValueError, TypeError) as exc:
            if len(args.inputs) == 1:
                raise
            failed += 1
            print(f"edgesnn predict: error: {_one_line(exc)}", file=sys.stderr)
            continue
        plotting += samples[:PLOT_INPUTS_MAX - len(plotting)]
        for (name, _), prediction, steps in zip(samples, predictions, used):
            top = [(label, round(score, 6)) for label, score in prediction.top[:args.top]]
            if args.json:
                answer = {"input": name, "label": prediction.label, "index": prediction.index,
                          "score": round(prediction.score, 6), "top": top}
                print(json.dumps(answer if steps is None else {**answer, "timesteps_used": steps}))
            else:
                best = "" if args.top <= 1 else "  [" + ", ".join(f"{label} {score:.3f}" for label, score in top) + "]"
                ran = "" if steps is None else f"  ({steps} timesteps)"
                print(f"{name}: {prediction.label} ({prediction.score:.3f}){best}{ran}")
    if args.plot and plotting:
        _plot_over_time(pipe, plotting, args.plot, args.early_exit)
    if failed:
        print(f"edgesnn predict: error: {failed} of {len(args.inputs)} inputs failed (reported above)", file=sys.stderr)
        return 1
    return 0


def _classify(pipe, batch: np.ndarray, early_exit) -> tuple[list, list]:
    """The pipeline's predictions of a batch of model inputs, and the timesteps each ran (None without
    an early exit)."""
    if early_exit is None:
        return pipe.classify_samples(batch), [None] * len(batch)
    time_axis = batch.ndim == 5
    potentials = pipe.model.forward(batch, timesteps=None if time_axis else pipe.timesteps, device=pipe.device,
                                    early_exit=early_exit)
    used = [int(steps) for steps in pipe.model.statistics.timesteps_used]
    # each sample's scores as if its run had been `steps` long: the potentials it stopped with
    predictions = [pipe.classifier.classify(potentials[i:i + 1], timesteps=steps)[0] for i, steps in enumerate(used)]
    return predictions, used


def _add_stream(commands) -> None:
    sub = commands.add_parser("stream", help="spot keywords in a recording, stdin PCM or the microphone",
                              description="Stream AUDIO through a kws pipeline: the frontend runs incrementally, "
                                          "the model classifies the last window every hop, and the detector "
                                          "(smoothing, threshold, minimum count, suppression; defaults from the "
                                          "file) prints each keyword: time, label, score. AUDIO is a WAV/FLAC/OGG "
                                          "file, '-' for raw 16-bit little-endian mono PCM at the model's rate on "
                                          "stdin (arecord -f S16_LE -r 16000 -c 1 | edgesnn stream kws.esnn -), "
                                          "or --mic (needs the 'mic' extra: sounddevice).")
    sub.add_argument("model", metavar="MODEL", help="path of a .esnn file saved by a kws Pipeline")
    sub.add_argument("audio", metavar="AUDIO", nargs="?", help="a recording, or '-' for PCM on stdin")
    sub.add_argument("--mic", action="store_true", help="listen to the default microphone (Ctrl-C stops)")
    sub.add_argument("--seconds", type=float, default=None, help="with --mic: stop after this long")
    sub.add_argument("--hop-s", type=float, default=None, help="seconds between inferences (file default 0.02)")
    sub.add_argument("--threshold", type=float, default=None, help="average score to report a keyword")
    sub.add_argument("--window-s", type=float, default=None, help="score averaging window in seconds")
    sub.add_argument("--min-count", type=int, default=None, help="results needed in the window before deciding")
    sub.add_argument("--suppression-s", type=float, default=None, help="do not repeat a label within this time")
    sub.add_argument("--json", action="store_true", help="one JSON object per detection")
    _add_device_option(sub)
    sub.set_defaults(run=_user_errors(_run_stream))


def _stream_source(args, pipe):
    """The chunks to stream: a recording path, stdin PCM, or the microphone."""
    import sys

    from .stream_eval import microphone_chunks, pcm_chunks

    if args.mic:
        return microphone_chunks(pipe.frontend.sample_rate, seconds=args.seconds), "the microphone"
    if args.audio is None:
        raise EdgesnnError("stream: give AUDIO (a file, or '-' for PCM on stdin) or --mic")
    if args.audio == "-":
        return pcm_chunks(sys.stdin.buffer), "stdin"
    return args.audio, args.audio


def _run_stream(args) -> int:
    import json
    import sys

    if args.hop_s is not None and not args.hop_s > 0:
        raise EdgesnnError(f"--hop-s must be positive, got {args.hop_s}")
    if args.audio not in (None, "-") and not os.path.isfile(args.audio):
        raise EdgesnnError(f"{args.audio}: no such file")
    pipe = _load_pipeline(args.model, args.device)
    source, name = _stream_source(args, pipe)
    count = 0
    for detection in pipe.stream(source, hop_s=args.hop_s, threshold=args.threshold, window_s=args.window_s,
                                 min_count=args.min_count, suppression_s=args.suppression_s,
                                 on_pad=lambda text: print(text, file=sys.stderr),
                                 on_note=lambda text: print(text, file=sys.stderr)):
        count += 1
        if args.json:
            print(json.dumps({"label": detection.label, "time_s": detection.time_s,
                              "score": round(detection.score, 6)}), flush=True)
        else:
            print(f"{detection.time_s:8.2f} s  {detection.label}  ({detection.score:.3f})", flush=True)
    if not args.json:
        print(f"{count} detection{'s' if count != 1 else ''} in {name}")
    return 0


def _add_eval_stream(commands) -> None:
    sub = commands.add_parser("eval-stream", help="keyword recall and false accepts per hour on long test streams",
                              description="Build long test streams from held-out clips (KEYWORDS/<label>/*.wav; "
                                          "folders not named after a keyword are non-keyword speech) at known "
                                          "times over BACKGROUND/*.wav, stream them through the pipeline's "
                                          "detector at every threshold, and print per-keyword recall, false "
                                          "accepts per hour and the trade-off curve.")
    sub.add_argument("model", metavar="MODEL", help="path of a .esnn file saved by a kws Pipeline")
    sub.add_argument("--keywords", required=True, metavar="DIR", help="held-out clips, one folder per label")
    sub.add_argument("--background", required=True, metavar="DIR", help="background noise / speech WAVs")
    sub.add_argument("--streams", type=int, default=6, help="number of test streams (default 6)")
    sub.add_argument("--stream-s", type=float, default=600.0, help="seconds per stream (default 600)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the streams' layout (default 0)")
    sub.add_argument("--thresholds", default=None, help="comma-separated thresholds (default 0.30..0.99)")
    sub.add_argument("--hop-s", type=float, default=None, help="inference hop (default: the file's)")
    sub.add_argument("--windows-s", default=None, help="comma-separated averaging windows to sweep too "
                                                      "(default: the file's window only)")
    sub.add_argument("--min-count", type=int, default=None, help="detector minimum count (default: the file's)")
    sub.add_argument("--suppression-s", type=float, default=None, help="suppression time (default: the file's)")
    sub.add_argument("--max-fa-per-hour", type=float, default=1.0, help="operating point: lowest threshold "
                                                                       "with at most this many FA/h")
    sub.add_argument("--workers", type=int, default=None, help="local processes (default min(4, cores))")
    sub.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="run on Ray: a cluster address ('auto', 'ray://host:10001') or a local Ray instance")
    sub.add_argument("--plot", metavar="PNG", help="the trade-off curve (false rejects vs false accepts/h)")
    sub.add_argument("--json", metavar="PATH", help="write all counts as JSON")
    _add_device_option(sub)
    sub.set_defaults(run=_user_errors(_run_eval_stream))


def _run_eval_stream(args) -> int:
    from .pipeline import Pipeline
    from .stream_eval import DEFAULT_THRESHOLDS, LocalBackend, RayBackend, evaluate, plot_curve, write_json

    for flag, folder in (("--keywords", args.keywords), ("--background", args.background)):
        if not os.path.isdir(folder):
            raise EdgesnnError(f"{flag} {folder!r}: no such directory (held-out keyword clips, one folder per "
                               f"label; background WAVs)")
    _check_at_least_1("--streams", args.streams)
    if not args.stream_s > 0:
        raise EdgesnnError(f"--stream-s must be positive seconds, got {args.stream_s}")
    if args.workers is not None:
        _check_at_least_1("--workers", args.workers)
    for flag, path in (("--plot", args.plot), ("--json", args.json)):
        if path:
            _check_output_path(path, flag)
    thresholds = DEFAULT_THRESHOLDS if args.thresholds is None else _numbers("--thresholds", args.thresholds)
    pipe = Pipeline.load(args.model)
    if pipe.frontend is None or not hasattr(pipe.frontend, "sample_rate") or not callable(
            getattr(pipe.frontend, "stream", None)):
        raise EdgesnnError(f"{args.model}: its pipeline has no streaming audio frontend (it has "
                           f"{getattr(pipe.frontend, 'name', None)!r}); eval-stream needs a keyword-spotting "
                           f"pipeline such as edgesnn/data's kws file")
    settings = pipe.detector_settings(hop_s=args.hop_s, min_count=args.min_count, suppression_s=args.suppression_s)
    windows = () if args.windows_s is None else _numbers("--windows-s", args.windows_s)
    if args.ray is not None:
        backend = RayBackend(address=None if args.ray == "local" else args.ray, num_cpus=args.workers)
    else:
        backend = LocalBackend(args.workers)
    result = evaluate(args.model, args.keywords, args.background, streams=args.streams, stream_s=args.stream_s,
                      seed=args.seed, thresholds=thresholds, settings=settings, backend=backend, device=args.device,
                      windows_s=windows)
    point = result.operating_point(args.max_fa_per_hour)
    chosen, window = point["threshold"], point["window_s"]
    print(result.table(chosen, window))
    print(f"operating point (best recall at most {args.max_fa_per_hour:g} FA/h): averaging window {window:g} s, "
          f"threshold {chosen:g} (the file's: {settings.window_s:g} s, {settings.threshold:g}); backend {backend.name}")
    if args.plot:
        plot_curve(result, args.plot, operating_threshold=chosen, operating_window_s=window)
        print(f"wrote {args.plot}")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def _add_eval(commands) -> None:
    sub = commands.add_parser("eval", help="accuracy and confusion matrix of a model on a labelled .npz",
                              description="DATA.npz holds x (model inputs, or raw inputs for the model's "
                                          "frontend) and y (class indices). Prints accuracy and the confusion "
                                          "matrix (rows: true class, columns: predicted).")
    sub.add_argument("model", metavar="MODEL", help="path of a .esnn file")
    sub.add_argument("data", metavar="DATA.npz", help="arrays x and y")
    sub.add_argument("--batch", type=int, default=256, help="samples per model run (default 256)")
    _add_device_option(sub)
    sub.add_argument("--json", action="store_true", help="print the results as one JSON object")
    sub.add_argument("--plot", metavar="PNG", help="write the confusion matrix as an image")
    sub.set_defaults(run=_user_errors(_run_eval))


def _run_eval(args) -> int:
    import json

    _check_at_least_1("--batch", args.batch)
    if args.plot:
        _check_output_path(args.plot, "--plot")
    pipe = _load_pipeline(args.model, args.device)
    x, y = _labelled_arrays(args.data)
    samples = _samples_of_array(pipe, x)
    predicted = np.array([p.index for start in range(0, len(samples), args.batch)
                          for p in pipe.classify_samples(samples[start:start + args.batch])])
    classes = int(np.prod(pipe.model.output_shape))
    labels = pipe.labels or [str(c) for c in range(classes)]
    if y.min() < 0 or y.max() >= classes:
        raise EdgesnnError(f"{args.data}: y holds class indices in [{y.min()}, {y.max()}], the model has {classes} classes")
    confusion = np.zeros((classes, classes + 1), dtype=np.int64)   # last column: rejected as unknown
    np.add.at(confusion, (y, np.where(predicted < 0, classes, predicted)), 1)
    accuracy = float(np.mean(predicted == y))
    if args.json:
        print(json.dumps({"accuracy": accuracy, "samples": int(len(y)), "labels": labels,
                          "confusion": confusion[:, :classes].tolist(), "rejected": int(confusion[:, -1].sum())}))
    else:
        print(f"accuracy {accuracy:.4f} ({int(np.sum(predicted == y))} of {len(y)}) on {args.data}")
        show_rejected = confusion[:, -1].any()
        header = ("true \\ predicted", *labels, *(("unknown",) if show_rejected else ()))
        rows = [(labels[c], *map(str, confusion[c, :classes]), *((str(confusion[c, -1]),) if show_rejected else ()))
                for c in range(classes)]
        print(format_table(header, rows))
    if args.plot:
        _plot_confusion(confusion[:, :classes], labels, accuracy, args.plot)
    return 0


def _labelled_arrays(path) -> tuple[np.ndarray, np.ndarray]:
    if str(path).endswith(".npy"):
        raise EdgesnnError(f"{path}: a .npy holds one array; an eval file is a .npz with arrays 'x' (inputs) "
                           f"and 'y' (class indices): np.savez('data.npz', x=x, y=y)")
    data = _load_arrays(path)
    if "x" not in data or "y" not in data:
        raise EdgesnnError(f"{path}: an eval file needs arrays 'x' and 'y'; it has {sorted(data)}")
    x, y = data["x"], data["y"]
    if len(x) != len(y) or len(x) == 0 or y.ndim != 1 or y.dtype.kind not in "iu":
        raise EdgesnnError(f"{path}: need x (N, ...) and integer y (N,) with N > 0; got x {x.shape}, "
                           f"y {y.shape} {y.dtype}")
    return x, y.astype(np.int64)


def _samples_of_array(pipe, x: np.ndarray) -> np.ndarray:
    """Model inputs (N, H, W, C) / (N, T, H, W, C) pass as they are; anything else goes through the frontend."""
    shape = tuple(pipe.model.input_shape)
    if x.shape[1:] == shape or x.shape[2:] == shape or pipe.frontend is None:
        return np.stack([pipe.as_model_input(sample) for sample in x])
    return np.stack([pipe.encode(sample) for sample in x])


def _add_bench(commands) -> None:
    sub = commands.add_parser("bench", help="latency, throughput and per-layer statistics of a model",
                              description="Run MODEL repeatedly on a batch and print latency, throughput "
                                          "and the per-layer events, sparsity and synaptic operations.")
    sub.add_argument("model", metavar="MODEL", help="path of a .esnn file")
    sub.add_argument("--input", metavar="FILE", help=".npy or .npz (array x) of model inputs; default: random")
    sub.add_argument("--batch", type=int, default=1, help="samples per run (default 1)")
    sub.add_argument("--repeat", type=int, default=20, help="timed runs (default 20, after one warm-up)")
    sub.add_argument("--timesteps", type=int, default=None, help="timesteps for dense input (default: the "
                                                                  "model's own, else 1)")
    _add_device_option(sub)
    sub.add_argument("--json", action="store_true", help="print the results as one JSON object")
    sub.add_argument("--plot", metavar="PNG", help="write per-layer sparsity bars")
    sub.set_defaults(run=_user_errors(_run_bench))


def _run_bench(args) -> int:
    import json
    import time

    from .model import Model, resolve_device

    _check_at_least_1("--batch", args.batch)
    _check_at_least_1("--repeat", args.repeat)
    if args.plot:
        _check_output_path(args.plot, "--plot")
    if args.timesteps is not None:
        _check_at_least_1("--timesteps", args.timesteps)
    model = Model.load(args.model)
    x = _bench_input(model, args.input, args.batch)
    timesteps = args.timesteps if args.timesteps is not None else (
        None if x.ndim == 5 else model.metadata.get("timesteps"))
    device = resolve_device(args.device)
    model.forward(x, timesteps=timesteps, device=device)   # warm-up
    latencies_s = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        model.forward(x, timesteps=timesteps, device=device)
        latencies_s.append(time.perf_counter() - start)
    median_s, p90_s = float(np.median(latencies_s)), float(np.percentile(latencies_s, 90))
    stats = model.statistics
    if args.json:
        print(json.dumps({"device": device.name, "batch": len(x), "timesteps": stats.timesteps,
                          "latency_ms_median": median_s * 1e3, "latency_ms_p90": p90_s * 1e3,
                          "samples_per_s": len(x) / median_s, "layers": stats.as_dicts()}))
    else:
        print(f"{args.model}: {model!r}")
        print(f"device {device.name}, batch {len(x)}, {stats.timesteps} timestep(s), {len(latencies_s)} runs")
        print(f"latency  median {median_s * 1e3:.3f} ms, p90 {p90_s * 1e3:.3f} ms per batch "
              f"({median_s * 1e3 / len(x):.3f} ms per sample)")
        print(f"throughput {len(x) / median_s:,.1f} samples/s\n")
        print(stats.table())
    if args.plot:
        _plot_sparsity(stats, args.plot)
    return 0


def _bench_input(model, path, batch: int) -> np.ndarray:
    """`batch` samples: random uint8 in the model's input range, or the first of a .npy / .npz (x) file."""
    if path is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 1 << model.input_bits, (batch, *model.input_shape), dtype=np.uint8)
    data = _load_arrays(path)
    if "x" not in data:
        raise EdgesnnError(f"{path}: a bench input file needs an array 'x'; it has {sorted(data)}")
    x = data["x"]
    shape = tuple(model.input_shape)
    if x.shape == shape:
        x = x[None]   # one sample
    elif not ((x.ndim == 4 and x.shape[1:] == shape) or (x.ndim == 5 and x.shape[2:] == shape)) or not len(x):
        raise EdgesnnError(f"{path}: holds {x.dtype} {x.shape}; bench needs model inputs {shape}, a batch "
                           f"(N, {', '.join(map(str, shape))}) or spike trains (N, T, {', '.join(map(str, shape))})")
    return x[:batch]


# -- plots (matplotlib, only when --plot is given) --------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise EdgesnnError("--plot needs matplotlib (pip install 'edgesnn[plot]')") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_confusion(confusion: np.ndarray, labels, accuracy: float, path) -> None:
    plt = _pyplot()
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for (row, col), count in np.ndenumerate(confusion):
        if count:
            ax.text(col, row, str(count), ha="center", va="center",
                    color="white" if count > confusion.max() / 2 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix, accuracy {accuracy:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def _plot_sparsity(stats, path) -> None:
    plt = _pyplot()
    names = [layer.name for layer in stats.layers]
    position = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 4))
    ax.bar(position - 0.2, [layer.input_sparsity for layer in stats.layers], 0.4, label="input")
    ax.bar(position + 0.2, [layer.sparsity for layer in stats.layers], 0.4, label="output")
    ax.set_xticks(position, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("sparsity (fraction of zero activations)")
    ax.set_title("per-layer sparsity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def _plot_over_time(pipe, samples: list, path, early_exit=None) -> None:
    """predict --plot: one row per input, the input on the left and its class scores (softmax of the
    dequantized potentials so far) over the timesteps on the right, as NengoDL plots its network's
    filtered output over steps. With an early exit, a dashed line marks where each sample stopped."""
    batch = np.stack([sample for _, sample in samples])
    time_axis = batch.ndim == 5
    model = pipe.model
    trace = model.forward(batch, timesteps=None if time_axis else pipe.timesteps, device=pipe.device,
                          per_timestep=True, early_exit=early_exit)
    steps = trace.shape[1]
    if steps < 2:
        raise EdgesnnError("--plot draws class scores over timesteps, and this model runs 1 timestep (a spiking "
                           "model stores its timesteps; a spike-train frontend gives one input per timestep)")
    used = model.statistics.timesteps_used
    ran = np.full(len(samples), steps) if used is None else np.asarray(used)
    # after a sample's stop its rows repeat its output: scored as the run of `ran` timesteps it was
    scores = np.stack([np.concatenate([pipe.classifier.scores(trace[i:i + 1, t], min(t + 1, ran[i]))
                                       for i in range(len(samples))]) for t in range(steps)], axis=1)  # (N, T, classes)
    labels = [pipe.classifier.label_of(index) for index in range(scores.shape[2])]
    plt = _pyplot()
    fig, axes = plt.subplots(len(samples), 2, figsize=(9, 2.4 * len(samples) + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 3]})
    timeline = np.arange(1, steps + 1)
    for row, ((name, sample), sample_scores) in enumerate(zip(samples, scores)):
        _draw_input(axes[row, 0], sample, name)
        ax = axes[row, 1]
        ax.plot(timeline, sample_scores)
        if used is not None:
            ax.axvline(used[row], color="gray", linestyle="--", linewidth=1)
        best = int(np.argmax(sample_scores[-1]))
        ax.set_title(f"{labels[best]} ({sample_scores[-1, best]:.2f})", fontsize=9)
        ax.set_ylim(0, min(1.0, 1.15 * float(sample_scores.max())))
        ax.set_ylabel("probability")
    axes[-1, 1].set_xlabel("timesteps")
    axes[0, 1].legend(labels, loc="upper left", fontsize=7, ncol=max(1, len(labels) // 6))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def _draw_input(ax, sample: np.ndarray, name: str) -> None:
    """An image input as an image (a spike train: its spikes per pixel over the timesteps); a vector
    input as a spike raster (a train) or bars."""
    frames = sample if sample.ndim == 4 else sample[None]   # (T, H, W, C)
    h, w = frames.shape[1:3]
    if h > 1 and w > 1:
        ax.imshow(frames.astype(np.float64).mean(axis=(0, 3)), cmap="gray")
        ax.axis("off")
    elif sample.ndim == 4:
        steps, rows = np.nonzero(frames.reshape(frames.shape[0], -1))
        ax.scatter(steps, rows, s=2, marker="|", color="black")
        ax.set_xlabel("timestep", fontsize=7)
    else:
        ax.bar(np.arange(frames[0].size), frames[0].reshape(-1), color="black")
    ax.set_title(os.path.basename(name), fontsize=8)


# -- export ----------------------------------------------------------------------------------------

def _add_export(commands) -> None:
    sub = commands.add_parser("export", help="write a .esnn model in another format (--nir: a NIR graph)",
                              description="Write a spiking .esnn model as a NIR graph (plugins/edgesnn_nir), "
                                          "for snnTorch, Norse and the other NIR simulators.")
    sub.add_argument("model", metavar="MODEL", help="path of a .esnn file")
    sub.add_argument("--nir", metavar="OUT", required=True, help="path of the .nir file to write")
    sub.add_argument("--dt", type=float, default=1e-4, help="seconds per timestep in the NIR graph (default 1e-4)")
    sub.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from .model import Model

    if not args.dt > 0:
        raise EdgesnnError(f"--dt must be positive seconds per timestep, got {args.dt}")
    _check_output_path(args.nir, "--nir")
    Model.load(args.model).to_nir(args.nir, dt=args.dt)
    print(f"wrote {args.nir}")
    return 0


COMMANDS = [_add_plugins, _add_devices, _add_check, _add_convert, _add_summary, _add_demo, _add_pipeline,
            _add_predict, _add_stream, _add_eval_stream, _add_eval, _add_bench, _add_export]


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
    except BrokenPipeError:   # the reader went away (`edgesnn eval ... | head`): stop quietly
        _silence_stdout()
        return 1
    except (EdgesnnError, OSError, ValueError, TypeError) as exc:   # wrong input: one line, no traceback
        print(f"edgesnn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)  # KeyError quotes its text
    return " ".join(str(text).split()) or type(exc).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout has no file descriptor (captured): nothing to flush
        pass


if __name__ == "__main__":
    sys.exit(main())
