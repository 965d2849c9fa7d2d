"""Convert the trained DS-CNN at 8/8 and 4/4 bits; clip accuracy per class; confusion matrix; ship the pipeline.

    python examples/kws/convert_kws.py --data /tmp/kws_data --run /tmp/kws_run --out /tmp/kws_out
                                                   # after make_dataset.py and train.py --out /tmp/kws_run

As BrainChip's KWS tutorial (seed 002): the float model's clip accuracy on the held-out voices,
then the integer models' on the same clips, per class, and the 4-bit model's confusion matrix
(rows: true class, normalized). The 4-bit model is made twice: the post-training recipe
(``es.convert`` with mse ranges, cross-layer equalization and bias correction; the
input layer at 8 bits) and quantization-aware fine-tuning (``es.finetune`` on the augmented
training clips train.py wrote, starting from the float weights); the one shipped is the better
on the *validation* voices (the test voices only measure it). Writes into SHIP (``--ship``, default
edgesnn/data) kws_dscnn_4bit.esnn: the 4-bit model, the calibrated ``kws`` frontend, the labels and
the detector settings (metadata "detector"), and kws_dscnn.onnx (the float model, for the onnxruntime
benchmark); into OUT (``--out``, default ./kws_out) the reports: kws_dscnn_8bit.esnn, confusion_4bit.png
and clip_accuracy.json. DATA (make_dataset.py's folder) and RUN (train.py's) are only read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

import edgesnn as es
from edgesnn.datasets import first_per_class
from edgesnn.detector import METADATA_KEY, DetectorSettings

DATA = Path(es.__file__).resolve().parent / "data"
SCALING = (255.0, 0.0)   # the float model takes the uint8 features / 255


def float_predict(onnx_path: Path, x_uint8: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = x_uint8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return np.concatenate([session.run(None, {"mfcc": x[i:i + 512]})[0] for i in range(0, len(x), 512)]).argmax(1)


def per_class(y: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    return np.array([np.mean(predicted[y == c] == c) if np.any(y == c) else np.nan for c in range(classes)])


def confusion(y: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes))
    np.add.at(matrix, (y, predicted), 1)
    return matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)


def plot_confusion(matrix: np.ndarray, labels, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8))
    image = ax.imshow(matrix, interpolation="nearest", cmap=plt.cm.Blues, vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > 0.5 else "black")
    ax.set_ylabel("True label")
    ax.set_xlabel("Predicted label")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def more_augmented(data: Path, labels, config: dict, seed: int, passes, context: float = 0.0,
                   negatives=None, negative_share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Augmented training clips as train.py's fixed_features makes its two passes (passes 0 and 1), for
    further passes: the same augmenter (seeded as train.py's, with its hard negatives), the same
    calibrated frontend."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train import Augmenter, Features, add_negatives, load_utterances, make_batches

    clips, y, _ = load_utterances(data / "train_utterances.npz", labels)
    augmenter, batches = Augmenter(clips, y, seed, context=context), Features(es.frontend("kws", **config))
    add_negatives(augmenter, negatives, negative_share)
    xs, ys = [], []
    for p in passes:
        for xb, yb in make_batches(augmenter, batches, seed + 1000, p):
            xs.append(xb), ys.append(yb)
    return np.concatenate(xs), np.concatenate(ys)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder make_dataset.py wrote (only read)")
    parser.add_argument("--run", type=Path, default=None, help="the folder train.py wrote (its --out; default DATA)")
    parser.add_argument("--out", type=Path, default=Path("kws_out"), help="where the reports go: the 8-bit "
                        "pipeline, confusion_4bit.png, clip_accuracy.json (default ./kws_out)")
    parser.add_argument("--ship", type=Path, default=DATA, help="where the shipped files go (default edgesnn/data)")
    parser.add_argument("--plot", type=Path, default=None, help="confusion matrix PNG (default OUT/confusion_4bit.png)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--calibration", default="mse", help="4-bit calibration (es.convert's calibration=)")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="es.finetune epochs at 4/4 bits (0: skip)")
    parser.add_argument("--negatives", type=Path, default=None, help="hard negatives (mine_negatives.py's "
                        "negatives.npz) added to the fine-tuning clips")
    parser.add_argument("--distillation", type=float, default=0.0, help="es.finetune's share of the float "
                                                                        "model's soft targets in the loss")
    parser.add_argument("--augmented-passes", type=int, default=2, help="epochs of augmented training clips "
                        "to fine-tune on: the 2 train.py stored, and more made here the same way (train.py's "
                        "augmenter, seed and calibrated frontend; each pass 7,280 fresh clips)")
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="es.finetune's learning rate")
    parser.add_argument("--seed", type=int, default=0, help="train.py's --seed (the augmenter's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--detector", type=Path, default=None, help="JSON of detector settings to ship "
                                                                     "(default: DetectorSettings())")
    args = parser.parse_args(argv)
    labels = json.loads((args.data / "labels.json").read_text())
    run = args.run or args.data
    features = np.load(run / "features.npz")
    config = json.loads((run / "frontend.json").read_text())
    trained = json.loads((run / "train.json").read_text()) if (run / "train.json").exists() else {}
    source = run / "dscnn_kws.onnx"
    args.out.mkdir(parents=True, exist_ok=True)
    x_test, y_test = features["x_test"], features["y_test"]
    calib = first_per_class(features["x_train"], features["y_train"], 50)
    classes = len(labels)

    x_val, y_val = features["x_val"], features["y_val"]
    rows = {"float32": float_predict(source, x_test)}
    m8 = es.convert(source, samples=calib, input_scaling=SCALING, labels=labels, weight_bits=8, activation_bits=8,
                    on_low_fidelity="warn")   # a comparison row: measured below on the clips, not shipped
    rows["8/8-bit"] = m8.predict(x_test, device=args.device)
    recipe = dict(calibration=args.calibration, equalize=True, bias_correction=True)
    candidates = {"4/4-bit PTQ recipe": es.convert(source, samples=calib, input_scaling=SCALING, labels=labels,
                                                   weight_bits=4, activation_bits=4, **recipe)}
    if args.finetune_epochs > 0:
        x_aug, y_aug = features["x_aug"], features["y_aug"]
        if args.augmented_passes > 2:
            started = time.perf_counter()
            x_more, y_more = more_augmented(args.data, labels, config, trained.get("seed", args.seed),
                                            range(2, args.augmented_passes), trained.get("context", 0.0),
                                            trained.get("negatives"), trained.get("negative_share", 1.0))
            x_aug, y_aug = np.concatenate([x_aug, x_more]), np.concatenate([y_aug, y_more])
            print(f"{len(x_more):,} more augmented clips ({args.augmented_passes - 2} passes) in "
                  f"{(time.perf_counter() - started) / 60:.1f} min")
        if args.negatives:
            negatives = np.load(args.negatives)
            x_aug, y_aug = np.concatenate([x_aug, negatives["x"]]), np.concatenate([y_aug, negatives["y"]])
            print(f"fine-tuning clips: {len(x_aug) - len(negatives['x']):,} augmented + {len(negatives['x']):,} "
                  f"hard negatives ({args.negatives})")
        started = time.perf_counter()
        candidates["4/4-bit fine-tuned"] = es.finetune(
            source, x_aug, y_aug, weight_bits=4, activation_bits=4, epochs=args.finetune_epochs,
            input_scaling=SCALING, samples=calib, labels=labels, calibration=args.calibration,
            validation_split=0.05, batch_size=128, learning_rate=args.learning_rate, threads=args.threads, progress=False,
            distillation=args.distillation)
        print(f"es.finetune: {args.finetune_epochs} epochs on {len(x_aug):,} augmented clips in "
              f"{(time.perf_counter() - started) / 60:.1f} min")
    val_accuracy = {name: float(np.mean(m.predict(x_val, device=args.device) == y_val))
                    for name, m in candidates.items()}
    val_accuracy["float32"] = float(np.mean(float_predict(source, x_val) == y_val))
    print("validation voices: " + ", ".join(f"{k} {v:.4f}" for k, v in val_accuracy.items()))
    for name, m in candidates.items():
        rows[name] = m.predict(x_test, device=args.device)
    chosen = max(candidates, key=lambda name: val_accuracy[name])
    m4 = candidates[chosen]
    rows["4/4-bit"] = rows[chosen]
    print(f"shipped 4-bit model: {chosen} (best on the validation voices)")
    m4.summary()

    print(f"\nclip accuracy on {len(y_test):,} held-out-voice clips (test split)")
    print(f"{'class':<10}" + "".join(f"{name:>10}" for name in rows))
    table = {name: per_class(y_test, predicted, classes) for name, predicted in rows.items()}
    for c, label in enumerate(labels):
        print(f"{label:<10}" + "".join(f"{table[name][c]:>10.3f}" for name in rows))
    overall = {name: float(np.mean(predicted == y_test)) for name, predicted in rows.items()}
    print(f"{'all':<10}" + "".join(f"{overall[name]:>10.4f}" for name in rows))
    for name in rows:
        if name != "float32":
            print(f"{name}: {100 * (overall[name] - overall['float32']):+.2f} points vs float "
                  f"(target for 4-bit: within 2 points)")
    plot = args.plot or args.out / "confusion_4bit.png"
    matrix = confusion(y_test, rows["4/4-bit"], classes)
    print("\nconfusion matrix of the shipped 4-bit model (rows: true class, fraction of its clips)")
    print(" " * 10 + "".join(f"{label[:6]:>7}" for label in labels))
    for c, label in enumerate(labels):
        print(f"{label:<10}" + "".join(f"{v:>7.2f}" for v in matrix[c]))
    plot_confusion(matrix, labels,
                   f"4-bit DS-CNN, held-out voices: accuracy {overall['4/4-bit']:.3f}", plot)
    print(f"wrote {plot}")

    settings = DetectorSettings.from_dict(json.loads(args.detector.read_text())) if args.detector else DetectorSettings()
    args.ship.mkdir(parents=True, exist_ok=True)
    for model, name in ((m4, "kws_dscnn_4bit.esnn"), (m8, "kws_dscnn_8bit.esnn")):
        model.metadata[METADATA_KEY] = settings.as_dict()
        model.metadata["clip_accuracy"] = {"float32": round(overall["float32"], 4),
                                           "integer": round(overall["4/4-bit" if model is m4 else "8/8-bit"], 4)}
        pipe = es.Pipeline(es.frontend("kws", **config), model, labels=labels)
        target = (args.ship if model is m4 else args.out) / name
        pipe.save(target)
        print(f"wrote {target} ({target.stat().st_size:,} bytes)")
    shutil.copyfile(source, args.ship / "kws_dscnn.onnx")
    print(f"wrote {args.ship / 'kws_dscnn.onnx'} ({source.stat().st_size:,} bytes)")
    (args.out / "clip_accuracy.json").write_text(json.dumps({"overall": overall, "per_class": {
        name: [None if np.isnan(v) else round(float(v), 4) for v in values] for name, values in table.items()},
        "labels": labels, "validation": val_accuracy, "chosen": chosen,
        "confusion_4bit": matrix.round(4).tolist()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
