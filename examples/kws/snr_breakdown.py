"""Where the float DS-CNN fails on held-out voices: accuracy by noise kind and SNR.

    python examples/kws/snr_breakdown.py --data /tmp/kws_data          # after train.py

Each raw test utterance (test_utterances.npz: held-out voices) is put at a random time in a 1 s
clip, clean or over pink noise or babble (of the test split's unknown words) at 20/10/5/0 dB SNR,
and classified by the trained float model (dscnn_kws.pt) through the calibrated frontend
(frontend.json). Prints the accuracy over all clips, of `_unknown_`, of the keywords and of flite's
held-out voice, per condition. Seeded: the same files give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dataset import babble, colored_noise  # noqa: E402
from train import Features, build_model, load_utterances, predict  # noqa: E402


def main(argv=None) -> int:
    import torch

    import edgesnn as es

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    labels = json.loads((args.data / "labels.json").read_text())
    features = Features(es.frontend("kws", **json.loads((args.data / "frontend.json").read_text())))
    model = build_model(len(labels))
    model.load_state_dict(torch.load(args.data / "dscnn_kws.pt"))
    clips, y, voice = load_utterances(args.data / f"{args.split}_utterances.npz", labels)
    rng = np.random.default_rng(args.seed)
    pools = {kind: colored_noise(rng, 20 * 16000, kind) for kind in ("pink",)}
    pools["babble"] = babble(rng, 20 * 16000, [c for c, label in zip(clips, y) if label == 1])
    flite = np.array([v.startswith("flite") for v in voice])

    def clip(word, snr, kind):
        out = np.zeros(16000, np.float32)
        word = word[:16000] * 0.3
        at = int(rng.integers(0, 16000 - len(word) + 1))
        out[at:at + len(word)] = word
        if snr is not None:
            start = int(rng.integers(0, len(pools[kind]) - 16000))
            out += pools[kind][start:start + 16000] * np.sqrt(np.mean(word ** 2)) / 10 ** (snr / 20)
        return np.clip(out, -1, 1)

    print(f"{'condition':<14} {'all':>6} {'unknown':>8} {'keywords':>9} {'flite':>6}")
    for snr, kind in [(None, "clean")] + [(s, k) for s in (20, 10, 5, 0) for k in ("pink", "babble")]:
        p = predict(model, features.uint8(np.stack([clip(c, snr, kind) for c in clips])))
        name = kind if snr is None else f"{kind} {snr} dB"
        print(f"{name:<14} {np.mean(p == y):>6.3f} {np.mean(p[y == 1] == 1):>8.3f} "
              f"{np.mean(p[y > 1] == y[y > 1]):>9.3f} {np.mean(p[flite] == y[flite]):>6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
