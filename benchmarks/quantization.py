"""Accuracy of the DS-CNN keyword net at 4 and 2 bits: the post-training recipe step by step, then fine-tuning.

    python benchmarks/quantization.py                 # about 15 minutes on 2 shared cores
    python benchmarks/quantization.py --quick         # a smoke run
    python benchmarks/quantization.py --markdown out.md
    python benchmarks/quantization.py --recipe-only   # only the post-training table (1.), no fine-tuning

The DS-CNN of benchmarks/engine.py (49x10x1 MFCCs of espeak-ng speech through es.frontend("kws"), conv
10x4/2 (64), 4 depthwise-separable blocks, GAP, dense 12), trained in float by engine.py's own training
code on more renditions per word (a larger test split than the speed benchmark's), exported to ONNX, then:

1. post-training quantization at 4/4 bits, adding one step of the recipe at a time (each es.convert
   keyword): min/max ranges with 4-bit input weights (the 0.1 converter), 8-bit input weights, mse
   ranges, cross-layer equalization, bias correction, per-layer range search;
2. es.finetune at 4/4 bits (timed: the issue's budget is 10 minutes on 2 cores);
3. the progressive schedule 4/4 -> 3/4 -> 3/3 -> 2/3 -> 2/2 as CNN2SNN's episode table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCALING = (255.0, 0.0)
SCHEDULE = [(4, 4), (3, 4), (3, 3), (2, 3), (2, 2)]


def recipe_steps():
    """(label, es.convert keywords), each adding one step to the one before."""
    base = dict(weight_bits=4, activation_bits=4, input_scaling=SCALING, progress=False)
    steps = [("min/max, 4-bit input layer", dict(base, calibration="minmax", input_weight_bits=4)),
             ("+ 8-bit input layer", dict(base, calibration="minmax")),
             ("+ mse ranges", dict(base, calibration="mse")),
             ("+ equalization", dict(base, calibration="mse", equalize=True)),
             ("+ bias correction", dict(base, calibration="mse", equalize=True, bias_correction=True)),
             ("+ range search", dict(base, calibration="mse", equalize=True, bias_correction=True,
                                     search_ranges=True))]
    return steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variants", type=int, default=None, help="espeak-ng renditions per word")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs at 4/4 bits")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--skip-schedule", action="store_true")
    parser.add_argument("--recipe-only", action="store_true", help="only the post-training recipe table")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    import edgesnn as es
    from edgesnn import finetuning
    from engine import dscnn_network, export_onnx, keyword_dataset, train_classifier

    variants = args.variants or (12 if args.quick else 60)
    ft_epochs = args.epochs or (1 if args.quick else 8)
    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        x, y, how = keyword_dataset(variants, workdir)
        order = np.random.default_rng(2).permutation(len(x))
        cut = int(len(x) * 0.8)
        x_train, y_train, x_test, y_test = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
        torch.manual_seed(0)
        network = train_classifier(dscnn_network(), x_train, y_train, 4 if args.quick else 30)
        onnx_path = workdir / "dscnn.onnx"
        export_onnx(network, x_train.shape[1:], onnx_path)
        calib = x_train[np.random.default_rng(1).permutation(len(x_train))[:200]]
        float_accuracy = es.compare(str(onnx_path), es.convert(str(onnx_path), calib, input_scaling=SCALING,
                                                               progress=False), x_test, y_test).float_accuracy
        say(f"DS-CNN keyword net: {len(x_train)} training / {len(x_test)} test clips ({how}), "
            f"{variants} renditions per word; data and float training {time.perf_counter() - start:.0f} s")
        say()
        say("| post-training recipe, 4/4 bits | test accuracy | drop, points |")
        say("|---|---:|---:|")
        say(f"| float | {float_accuracy:.3f} | |")
        for label, options in recipe_steps():
            try:
                model = es.convert(str(onnx_path), calib, **options)
            except (ImportError, TypeError) as exc:   # a recipe step this version does not have
                say(f"| {label} | n/a ({exc}) | |")
                continue
            accuracy = float(np.mean(model.predict(x_test) == y_test))
            say(f"| {label} | {accuracy:.3f} | {100 * (float_accuracy - accuracy):.1f} |")
        say()
        if args.recipe_only:
            return _write(args.markdown, lines)

        start = time.perf_counter()
        result = finetuning.finetune_result(str(onnx_path), x_train, y_train, weight_bits=4, activation_bits=4,
                                            epochs=ft_epochs, input_scaling=SCALING, samples=calib,
                                            evaluation=(x_test, y_test), threads=2, learning_rate=5e-4,
                                            progress=False)
        seconds = time.perf_counter() - start
        accuracy = result.episodes[-1].integer_test_accuracy
        report = finetuning.agreement(result.module, result.model, x_test, SCALING)
        say(f"es.finetune 4/4 bits, {ft_epochs} epochs: test accuracy {accuracy:.3f} "
            f"(drop {100 * (float_accuracy - accuracy):.1f} points), {seconds / 60:.1f} min on 2 cores; "
            f"fake-quantized vs integer top-1 agreement {100 * report['agreement']:.2f} %, activations within "
            f"one step: min over layers "
            f"{100 * min(v['within_one_step'] for v in report['layers'].values()):.2f} %")
        say()
        if not args.skip_schedule:
            start = time.perf_counter()
            result = finetuning.finetune_result(str(onnx_path), x_train, y_train, schedule=SCHEDULE,
                                                epochs=max(1, ft_epochs // 2), input_scaling=SCALING,
                                                samples=calib, evaluation=(x_test, y_test), threads=2,
                                                learning_rate=5e-4, progress=False)
            say(f"progressive schedule ({(time.perf_counter() - start) / 60:.1f} min):")
            say()
            say(result.table())
    return _write(args.markdown, lines)


def _write(markdown: Path | None, lines: list[str]) -> int:
    if markdown:
        markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
