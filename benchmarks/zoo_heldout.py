"""es.convert's fidelity check against what the zoo's 8/8 models do on inputs they were not calibrated on.

    python benchmarks/zoo_heldout.py FILE [FILE ...]        # zoo file names (benchmarks/zoo/manifest.json)
    python benchmarks/zoo_heldout.py --committed > rows.jsonl
    python benchmarks/zoo_heldout.py --granularity ka_mobilenet_0125_tfk.tf2onnx.onnx

es.convert decides on an out-of-sample check (each fold of its samples through a model calibrated on the
others, edgesnn.convert._check_fidelity). This prints, per file, one JSON line per calibration set — "8
images" (the 4 reference digits and their mirror images, the zoo's calibration until 2026-12-02) and "zoo"
(those and zoo.CALIBRATION_DIGITS held-out-pool digits, benchmarks/zoo.py calibration_samples) — with what
es.convert decided (converts or refused, the range granularity it chose, the bias correction), its in-sample
and out-of-sample figures (worst position; 10th percentile of the batches of half), and the worst-position
SNR of the same model on zoo.HELD_OUT_DIGITS held-out digits (another seed) and the share of their batches
of 4 that keep 25 dB; a refused model is measured too (on_low_fidelity="warn" returns it). `--granularity`:
also per channel and per layer forced (per_channel_activations=True / False). `cpu_s`: es.convert's CPU
time. Runs in the project's environment (zoo_build is imported for its numpy digit generator only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo as Z             # noqa: E402


def worst_db(model, graph, x, scaling) -> float:
    """Worst-position SNR of the model's dequantized output against the float graph's on x."""
    got = Z.dequantized(model, x)
    return round(float(Z.snr_per_position(got, Z.float_output(graph, x, scaling).reshape(got.shape)).min()), 2)


def row(model, refused: bool, cpu_s: float, graph, held, scaling) -> dict:
    fidelity = model.metadata["fidelity"]
    batches = [worst_db(model, graph, held[i:i + 4], scaling) for i in range(0, len(held) - 3, 4)]
    return {"converts": not refused, "per_channel": fidelity.get("per_channel_activations"),
            "bias_corrected": "bias_corrected" in model.metadata, "decided_by": fidelity.get("decided_by"),
            "in_sample": fidelity.get("in_sample", fidelity)["worst_position_snr_db"],
            "out_of_sample": fidelity["worst_position_snr_db"], "out_of_sample_p10": fidelity["half_batch_p10_snr_db"],
            "held_out": worst_db(model, graph, held, scaling),
            "held_out_batches_of_4_at_25_db": round(float(np.mean(np.array(batches) >= 25)), 2), "cpu_s": cpu_s}


def main(argv=None) -> int:
    import edgesnn as es
    from edgesnn.convert import load_graph

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="zoo file names (default: every present file that should convert)")
    parser.add_argument("--committed", action="store_true", help="only the committed files")
    parser.add_argument("--granularity", action="store_true", help="also per channel and per layer forced")
    args = parser.parse_args(argv)
    entries = [e for e in Z.load_manifest() if e["present"] and e["expect"] == "convert"]
    if args.names:
        entries = [e for e in entries if e["name"] in args.names]
    if args.committed:
        entries = [e for e in entries if e["committed"]]
    for e in entries:
        ref = Z.load_reference(e)
        held = Z.held_out_samples(e, ref)
        graph = load_graph(str(e["path"])).simplify()
        sets = {"8 images": np.concatenate([ref.x, ref.x[:, :, ::-1]]), "zoo": Z.calibration_samples(e, ref)}
        for label, samples in sets.items():
            out = {"name": e["name"], "calibration": label, "samples": len(samples)}
            for key, options in [("auto", {})] + ([("per_channel", {"per_channel_activations": True}),
                                                   ("per_layer", {"per_channel_activations": False})]
                                                  if args.granularity else []):
                start = time.process_time()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    model = es.convert(str(e["path"]), samples=samples, input_scaling=ref.input_scaling,
                                       weight_bits=8, activation_bits=8, progress=False, on_low_fidelity="warn",
                                       **options)
                refused = any(issubclass(w.category, es.PrecisionWarning) for w in caught)
                out[key] = row(model, refused, round(time.process_time() - start, 2), graph, held, ref.input_scaling)
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
