"""Store detector settings in a keyword pipeline file: by hand, or the operating point of an eval-stream run.

    python examples/kws/set_detector.py edgesnn/data/kws_dscnn_4bit.esnn --from-eval eval.json --max-fa-per-hour 1
    python examples/kws/set_detector.py kws.esnn --threshold 0.6 --window-s 0.5 --hop-s 0.04
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import edgesnn as es
from edgesnn.detector import METADATA_KEY
from edgesnn.stream_eval import StreamEvaluation


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--from-eval", type=Path, help="JSON written by edgesnn eval-stream --json")
    parser.add_argument("--max-fa-per-hour", type=float, default=1.0)
    for name, kind in (("hop-s", float), ("window-s", float), ("threshold", float), ("min-count", int),
                       ("suppression-s", float)):
        parser.add_argument(f"--{name}", type=kind, default=None)
    args = parser.parse_args(argv)
    pipe = es.Pipeline.load(args.model)
    changes = {"hop_s": args.hop_s, "window_s": args.window_s, "threshold": args.threshold,
               "min_count": args.min_count, "suppression_s": args.suppression_s}
    if args.from_eval:
        result = StreamEvaluation(**json.loads(args.from_eval.read_text()))
        point = result.operating_point(args.max_fa_per_hour)
        changes = {**{k: v for k, v in result.settings.items() if k != "ignore"}, **{
            "threshold": point["threshold"], "window_s": point["window_s"]}, **{k: v for k, v in changes.items()
                                                                                if v is not None}}
        print(result.table(point["threshold"], point["window_s"]))
    settings = pipe.detector_settings(**changes)
    pipe.model.metadata[METADATA_KEY] = settings.as_dict()
    pipe.save(args.model)
    print(f"{args.model}: detector {settings.as_dict()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
