"""Train the DS-CNN keyword spotter (MLPerf Tiny / BrainChip shape) on the espeak-ng set, on the CPU.

    python examples/make_dataset.py --out /tmp/kws_data        # first, once
    python examples/kws/train.py --data /tmp/kws_data            # about 10 minutes on one core

Input: the project's own ``kws`` frontend (49 x 10 MFCC as uint8, calibrated on training clips),
given to the network as x / 255. Network: conv 10x4 stride 2 (64 channels), four depthwise-separable
blocks (3x3 depthwise + 1x1 pointwise, each with batch norm and ReLU), global average pooling and
a dense layer to the 12 classes
(the last block pools before its ReLU, so the pooling folds into its layer). Writes into DATA: ``features.npz`` (the uint8 features of every
split, reused by convert_kws.py), ``frontend.json`` (the calibrated frontend config) and
``dscnn_kws.onnx`` (the float model, NCHW input (N, 1, 49, 10)); prints the float clip accuracy
on the held-out voices.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import edgesnn as es

CHANNELS = 64


def build_model(classes: int = 12, channels: int = CHANNELS):
    import torch.nn as nn

    layers = [nn.Conv2d(1, channels, (10, 4), stride=(2, 2), padding=(5, 1), bias=False),
              nn.BatchNorm2d(channels), nn.ReLU()]
    for block in range(4):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                   nn.BatchNorm2d(channels), nn.ReLU(),
                   nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)]
        # The last block pools before its ReLU (as Akida's DS-CNN): the pooling then folds into
        # that layer (synaptic stage -> pooling -> neuron) instead of being a layer of its own.
        layers += [nn.ReLU()] if block < 3 else [nn.AdaptiveAvgPool2d(1), nn.ReLU()]
    layers += [nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def features(data: Path, calibration_clips: int = 600, seed: int = 0) -> tuple[dict, dict]:
    """uint8 (N, 49, 10, 1) features and labels of every split (cached in DATA/features.npz)."""
    cache, config_path = data / "features.npz", data / "frontend.json"
    if cache.exists() and config_path.exists():
        stored = np.load(cache)
        return {k: stored[k] for k in stored.files}, json.loads(config_path.read_text())
    splits = {s: np.load(data / f"{s}.npz") for s in ("train", "val", "test")}
    rng = np.random.default_rng(seed)
    train_x = splits["train"]["x"]
    pick = rng.choice(len(train_x), size=min(calibration_clips, len(train_x)), replace=False)
    fe = es.frontend("kws").calibrate([train_x[i] for i in pick])
    out = {}
    for name, split in splits.items():
        start = time.perf_counter()
        out[f"x_{name}"] = np.stack([fe(clip) for clip in split["x"]])
        out[f"y_{name}"] = split["y"]
        print(f"features {name}: {out[f'x_{name}'].shape} in {time.perf_counter() - start:.1f} s", flush=True)
    np.savez(cache, **out)
    config_path.write_text(json.dumps(fe.config) + "\n")
    return out, fe.config


def accuracy(model, x_uint8: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(_as_input(x_uint8[i:i + 512])) for i in range(0, len(x_uint8), 512)])
    return float((logits.argmax(1).numpy() == y).mean())


def _as_input(x_uint8: np.ndarray):
    """uint8 (N, 49, 10, 1) HWC -> float (N, 1, 49, 10) in [0, 1]."""
    import torch

    return torch.from_numpy(x_uint8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=12.0, help="stop training after this long")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    f, config = features(args.data, seed=args.seed)
    x_train, y_train = f["x_train"], f["y_train"]
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(x_train) + 63) // 64
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, total_steps=args.epochs * steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    rng = np.random.default_rng(args.seed)
    best, best_state = -1.0, None
    budget_s = args.minutes * 60
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), 64):
            batch = order[i:i + 64]
            xb = x_train[batch]
            shift = int(rng.integers(-3, 4))                     # a time shift of a few frames
            xb = np.roll(xb, shift, axis=1)
            loss = loss_fn(model(_as_input(xb)), torch.from_numpy(y_train[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss) * len(batch)
        val = accuracy(model, f["x_val"], f["y_val"])
        if val >= best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
        elapsed = time.perf_counter() - started
        print(f"epoch {epoch + 1:>2}: loss {total / len(order):.3f}  val {val:.4f}  ({elapsed / 60:.1f} min)", flush=True)
        if elapsed > budget_s:
            print(f"stopping: {args.minutes} min budget reached")
            break
    model.load_state_dict(best_state)
    test = accuracy(model, f["x_test"], f["y_test"])
    print(f"float DS-CNN: best val {best:.4f}, test (held-out voices) {test:.4f}; "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; {(time.perf_counter() - started) / 60:.1f} min")
    model.eval()
    out = args.data / "dscnn_kws.onnx"
    torch.onnx.export(model, _as_input(f["x_test"][:1]), str(out), input_names=["mfcc"], output_names=["logits"],
                      dynamic_axes={"mfcc": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
