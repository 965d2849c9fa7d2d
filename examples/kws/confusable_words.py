"""Which non-keyword words a keyword pipeline takes for which keyword (the long streams' false accepts).

    python examples/kws/confusable_words.py --data /tmp/kws_data [--model edgesnn/data/kws_dscnn_4bit.esnn]

Every held-out-voice utterance of an ``_unknown_`` word (DATA/test_utterances.npz; --split val for the
validation voices) is placed in a 1 s window at three offsets (start, middle, end), at 20 and 10 dB
SNR over babble of other words, and classified by the pipeline's integer model; a window counts as a
fire when a keyword wins with at least --score (the detector's threshold on the softmax of the output).
Prints the words that fire most, and the keyword each fires as, and the share of fires per keyword.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dataset import babble  # noqa: E402
from train import Features, load_utterances  # noqa: E402

import edgesnn as es  # noqa: E402

DATA = Path(es.__file__).resolve().parent / "data"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=DATA / "kws_dscnn_4bit.esnn")
    parser.add_argument("--split", default="test")
    parser.add_argument("--score", type=float, default=0.85)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    labels = json.loads((args.data / "labels.json").read_text())
    pipe = es.Pipeline.load(args.model)
    features = Features(pipe.frontend)
    clips, y, _ = load_utterances(args.data / f"{args.split}_utterances.npz", labels)
    words = np.load(args.data / f"{args.split}_utterances.npz")["word"]
    rng = np.random.default_rng(args.seed)
    pool = babble(rng, 20 * 16000, [c for c, label in zip(clips, y) if label == 1])
    unknown = [i for i in range(len(clips)) if y[i] == 1]
    windows, owners = [], []
    for i in unknown:
        word = clips[i][:16000] * 0.3
        for at in (0, (16000 - len(word)) // 2, 16000 - len(word)):
            for snr in (20, 10):
                out = np.zeros(16000, np.float32)
                out[at:at + len(word)] = word
                start = int(rng.integers(0, len(pool) - 16000))
                out += pool[start:start + 16000] * np.sqrt(np.mean(word ** 2)) / 10 ** (snr / 20)
                windows.append(np.clip(out, -1, 1))
                owners.append(i)
    x = features.uint8(np.stack(windows))
    predictions = pipe.classify_samples(x)
    fires: dict[str, Counter] = defaultdict(Counter)
    per_keyword: Counter = Counter()
    for owner, prediction in zip(owners, predictions):
        label, score = prediction.label, prediction.score
        if label in labels[2:] and score >= args.score:
            fires[str(words[owner])][label] += 1
            per_keyword[label] += 1
    total = sum(per_keyword.values())
    print(f"{args.model.name}: {len(unknown)} held-out `_unknown_` utterances ({len(set(words[unknown]))} words) x 3 "
          f"offsets x 2 SNRs = {len(windows)} windows; {total} fire a keyword at score >= {args.score} "
          f"({total / len(windows):.1%})")
    print("fires per keyword: " + ", ".join(f"{k} {v}" for k, v in per_keyword.most_common()))
    print(f"the words that fire most (its fires / its windows):")
    ranked = sorted(fires.items(), key=lambda item: -sum(item[1].values()))[:args.top]
    for word, counter in ranked:
        n = 6 * int(np.sum(words[unknown] == word))
        print(f"  {word:<10} {sum(counter.values()):>3}/{n:<3} as " + ", ".join(f"{k} {v}" for k, v in counter.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
