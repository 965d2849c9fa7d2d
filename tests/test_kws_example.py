"""The shipped keyword-spotting pipeline and demo recording, and the data set recipe (no training, no espeak)."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

import edgesnn as es
from edgesnn import demo

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIPELINE, RECORDING = demo.KWS_PIPELINE, demo.KWS_DEMO
shipped = pytest.mark.skipif(not (PIPELINE.exists() and RECORDING.exists()), reason="kws files not shipped")


def _module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "kws" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dataset_splits_hold_voices_out_and_are_deterministic():
    make = _module("make_dataset")
    names = [f"v{i}" for i in range(60)]
    voices = make.split_voices(names, seed=0)
    assert voices == make.split_voices(names, seed=0)
    assert sorted(sum(voices.values(), [])) == sorted(names)
    assert not set(voices["train"]) & set(voices["test"]) and voices["test"] and voices["val"]
    a = make.plan("test", voices["test"], np.random.default_rng([0, 2]), 3, 1)
    assert a == make.plan("test", voices["test"], np.random.default_rng([0, 2]), 3, 1)
    assert {job[1].split("+")[1] for job in a} <= set(voices["test"])
    assert len(make.LABELS) == 12 and not set(make.UNKNOWN_WORDS) & set(make.KEYWORDS)
    rng = np.random.default_rng(0)
    clip = make.mix(rng, np.ones(4000, np.float32) * 0.1, make.babble(rng, 3 * 16000, [np.ones(800, np.float32)]))
    assert clip.shape == (16000,) and np.abs(clip).max() <= 1


@shipped
def test_shipped_pipeline_is_small_and_complete():
    assert PIPELINE.stat().st_size < 64 * 1024
    pipe = es.Pipeline.load(PIPELINE)
    assert pipe.frontend.name == "kws" and pipe.frontend.output_shape == (49, 10, 1)
    assert pipe.labels[:2] == ["_silence_", "_unknown_"] and len(pipe.labels) == 12
    settings = pipe.detector_settings()
    assert 0.02 <= settings.hop_s <= 0.1 and 0 < settings.threshold < 1
    assert {layer.weight_bits for layer in pipe.model.layers if hasattr(layer, "weight_bits")} <= {4, 8}


@shipped
def test_shipped_recording_streams_to_its_keywords():
    pipe = es.Pipeline.load(PIPELINE)
    said = json.loads(RECORDING.with_suffix(".json").read_text())
    keywords = [w for w in said if w["word"] in pipe.labels]
    found = list(pipe.stream(RECORDING))
    from edgesnn.stream_eval import match

    truth = [(w["word"], w["start_s"], w["end_s"]) for w in keywords]
    hit, latencies, false_accepts = match(found, truth, before_s=0.5, after_s=1.0)
    # The shipped model finds 3 of the 6 keywords and no false accept (README: not yet at target).
    assert len(hit) >= 3 and false_accepts == 0, (found, truth)
    assert all(d.label in pipe.labels[2:] for d in found) and all(-0.5 <= v <= 1.0 for v in latencies)


@shipped
def test_demo_prints_the_streaming_part():
    lines = []
    demo.stream_demo(print_fn=lines.append)
    text = "\n".join(lines)
    assert "streaming keyword spotting" in text and "detections" in text
