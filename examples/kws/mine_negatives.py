"""Hard negatives for the keyword spotter: windows of non-keyword training speech that the model takes for keywords.

    python examples/kws/mine_negatives.py --data /tmp/kws_data     # after train.py; writes DATA/negatives.npz
    python examples/kws/mine_negatives.py --data /tmp/kws_data --pipeline edgesnn/data/kws_dscnn_4bit.esnn \
        --model edgesnn/data/kws_dscnn.onnx --out /tmp/kws_data/negatives.npz   # the shipped float model, before training

A model trained on 1 s clips, each holding one whole word, meets other windows in a stream: the tail
of one word and the head of the next, half a word at the window's edge, a word over babble that
sounds like part of a keyword. On the long-stream evaluation nearly every false accept is such a
non-keyword window. This script builds streams of the *training* voices' non-keyword words (no
keyword at all, so every window is a true negative) over the training set's own kinds of background
(white, pink and brown noise, babble of training words), 0.3-2 s apart at 5-20 dB SNR, runs the float
model over every window at a 40 ms hop exactly as the stream path frames them (the calibrated
frontend of DATA/frontend.json), and keeps the windows whose best keyword score exceeds
``--min-score``: labelled ``_unknown_`` when the window overlaps a word, ``_silence_`` otherwise.
convert_kws.py adds their features (``x``) to the 4-bit fine-tuning clips (``--negatives``); train.py
adds their audio (``audio``: the window's samples) to the training clips (``--negatives``), augmented as
any clip. The frontend is DATA/frontend.json (train.py's) or, with ``--pipeline``, a pipeline file's (to
mine with an earlier model before training a new one). The test voices are never used: the evaluation
streams stay held out. Deterministic for a seed.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import edgesnn as es

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dataset import babble, colored_noise  # noqa: E402
from train import SILENCE, UNKNOWN, load_utterances  # noqa: E402

RATE = 16000


def negative_stream(rng, words: list[np.ndarray], seconds: float, babble_pool: np.ndarray):
    """(waveform, [(start, end) sample ranges of the words]) of one stream of non-keyword words."""
    n = int(seconds * RATE)
    kind = ("white", "pink", "brown", "babble")[int(rng.integers(4))]
    if kind == "babble":
        start = int(rng.integers(0, len(babble_pool) - n))
        y = babble_pool[start:start + n].astype(np.float32).copy()
    else:
        y = colored_noise(rng, n, kind).astype(np.float32)
    y *= np.float32(rng.uniform(0.003, 0.03) / (np.sqrt(np.mean(y ** 2)) + 1e-12))
    bg_rms = float(np.sqrt(np.mean(y ** 2)))
    spans = []
    at = int(rng.uniform(0.3, 2.0) * RATE)
    while True:
        word = words[int(rng.integers(len(words)))]
        if at + len(word) > n:
            break
        gain = bg_rms * 10 ** (rng.uniform(5, 20) / 20) / (np.sqrt(np.mean(word ** 2)) + 1e-12)
        y[at:at + len(word)] += word * np.float32(gain)
        spans.append((at, at + len(word)))
        at += len(word) + int(rng.uniform(0.3, 2.0) * RATE)
    return np.clip(y, -1, 1), spans


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="float ONNX model (default DATA/dscnn_kws.onnx)")
    parser.add_argument("--pipeline", type=Path, default=None, help="take the frontend from this pipeline file "
                        "(default: DATA/frontend.json)")
    parser.add_argument("--out", type=Path, default=None, help="default DATA/negatives.npz")
    parser.add_argument("--minutes", type=float, default=40.0, help="stream audio to search")
    parser.add_argument("--hop-s", type=float, default=0.04)
    parser.add_argument("--min-score", type=float, default=0.5, help="keep windows whose best keyword score "
                                                                     "exceeds this")
    parser.add_argument("--max", type=int, default=4000, help="keep at most this many (evenly subsampled)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import onnxruntime as ort

    started = time.perf_counter()
    labels = json.loads((args.data / "labels.json").read_text())
    config = (es.Pipeline.load(args.pipeline).frontend.config if args.pipeline
              else json.loads((args.data / "frontend.json").read_text()))
    fe = es.frontend("kws", **config)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model or args.data / "dscnn_kws.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    clips, y, _ = load_utterances(args.data / "train_utterances.npz", labels)
    words = [c for c, label in zip(clips, y) if label == UNKNOWN]
    rng = np.random.default_rng([args.seed, 77])
    babble_pool = np.concatenate([babble(rng, 60 * RATE, words, talkers) for talkers in (4, 5, 6)])
    window = fe.output_shape[0]
    hop_frames = max(1, round(args.hop_s / fe.hop_s))
    keyword = np.arange(len(labels)) > UNKNOWN
    window_samples = (window - 1) * fe.hop_samples + fe.frame_samples
    xs, ys, audios, searched_s, windows_n = [], [], [], 0.0, 0
    while searched_s < args.minutes * 60:
        audio, spans = negative_stream(rng, words, 60.0, babble_pool)
        frames = fe.quantize(fe.features(audio))
        starts = np.arange(0, frames.shape[0] - window + 1, hop_frames)
        views = np.lib.stride_tricks.sliding_window_view(frames, window, axis=0)   # (F-w+1, n_mfcc, w)
        batch = np.ascontiguousarray(views[starts].transpose(0, 2, 1))[..., None]    # (N, w, n_mfcc, 1) uint8
        logits = np.concatenate([session.run(None, {"mfcc": batch[i:i + 1024].transpose(0, 3, 1, 2).astype(
            np.float32) / 255.0})[0] for i in range(0, len(batch), 1024)]).astype(np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        hard = np.flatnonzero(p[:, keyword].max(1) > args.min_score)
        first = starts[hard] * fe.hop_samples                       # the windows' sample ranges
        last = first + (window - 1) * fe.hop_samples + fe.frame_samples
        speech = np.array([any(a < e and s < b for s, e in spans) for a, b in zip(first, last)], bool)
        xs.append(batch[hard])
        ys.append(np.where(speech, UNKNOWN, SILENCE))
        audios.append(np.stack([audio[a:a + window_samples] for a in first]) if len(first)
                      else np.zeros((0, window_samples), np.float32))
        searched_s += len(audio) / RATE
        windows_n += len(batch)
    x, label, windows_audio = np.concatenate(xs), np.concatenate(ys), np.concatenate(audios)
    found = len(x)
    if found > args.max:
        keep = np.linspace(0, found - 1, args.max).round().astype(int)
        x, label, windows_audio = x[keep], label[keep], windows_audio[keep]
    out = args.out or args.data / "negatives.npz"
    np.savez_compressed(out, x=x, y=label, audio=(windows_audio * 32767).round().astype(np.int16))
    print(f"{searched_s / 60:.0f} min of training-voice non-keyword streams, {windows_n:,} windows: {found:,} "
          f"({100 * found / windows_n:.2f} %) score a keyword above {args.min_score}; kept {len(x):,} "
          f"({int(np.sum(label == UNKNOWN)):,} _unknown_, {int(np.sum(label == SILENCE)):,} _silence_) -> {out} "
          f"({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
