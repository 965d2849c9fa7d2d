"""Pipeline and classifier: hand-built integer models fed through real frontends, checked against numpy."""

import json

import numpy as np
import pytest
from PIL import Image

import edgesnn as es
from edgesnn import datasets
from edgesnn.classifier import Classifier

DIGIT_LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def digits():
    return datasets.digits()


@pytest.fixture(scope="module")
def template_model(digits):
    """A one-layer integer classifier of 8x8 digits: each class's weights are its centred mean image."""
    x_train, y_train, _, _ = digits
    flat = x_train.reshape(len(x_train), -1).astype(np.float64)
    centred = np.stack([flat[y_train == c].mean(axis=0) for c in range(10)], axis=1) - flat.mean(axis=0)[:, None]
    weights = np.round(centred / np.abs(centred).max() * 127).astype(np.int8)   # (64, 10)
    layer = es.layers.Dense(name="templates", weights=weights, bias=np.zeros(10, np.int32), neuron="none")
    return es.Model(layers=[layer], input_shape=(8, 8, 1), metadata={"output_scale": 1e-4})


def _numpy_potentials(model, x_uint8):
    weights = model.layers[0].weights.astype(np.int64)
    return x_uint8.reshape(len(x_uint8), -1).astype(np.int64) @ weights


def test_image_pipeline_predicts_like_numpy(digits, template_model, tmp_path):
    _, _, x_test, y_test = digits
    paths = []
    for i in range(40):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(x_test[i * 8, :, :, 0]).save(path)
        paths.append(path)
    pipe = es.Pipeline(es.frontend("image", size=(8, 8)), template_model, labels=DIGIT_LABELS)
    predictions = pipe.batch(paths)
    images = np.stack([x_test[i * 8] for i in range(40)])
    potentials = _numpy_potentials(template_model, images)
    scores = _softmax(potentials * 1e-4)
    assert [p.index for p in predictions] == potentials.argmax(axis=1).tolist()
    assert [p.label for p in predictions] == [DIGIT_LABELS[i] for i in potentials.argmax(axis=1)]
    np.testing.assert_allclose([p.score for p in predictions], scores.max(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(np.stack([p.potentials for p in predictions]), potentials)
    accuracy = np.mean([p.index for p in predictions] == y_test[np.arange(40) * 8])
    assert accuracy > 0.75  # template matching is a real (if weak) digit classifier
    single = pipe(paths[3])
    assert single.index == predictions[3].index and single.score == pytest.approx(predictions[3].score)


def test_save_and_load_round_trip(digits, template_model, tmp_path):
    _, _, x_test, _ = digits
    fe = es.frontend("image", size=(8, 8), fit="pad", invert=False)
    pipe = es.Pipeline(fe, template_model, labels=DIGIT_LABELS, threshold=0.3, unknown_label="dunno")
    path = tmp_path / "digits.esnn"
    pipe.save(path)
    assert "frontend" not in template_model.metadata  # saving does not change the model
    stored = es.Model.load(path).metadata
    assert stored["labels"] == DIGIT_LABELS
    assert stored["frontend"] == {"name": "image", "config": json.loads(json.dumps(fe.config))}
    assert stored["output_scale"] == 1e-4
    loaded = es.Pipeline.load(path)
    assert loaded.labels == DIGIT_LABELS and loaded.frontend.config == fe.config
    assert loaded.classifier.threshold == 0.3 and loaded.classifier.unknown_label == "dunno"
    images = [x_test[i, :, :, 0] for i in range(0, 200, 10)]
    assert [(p.label, p.index, p.score) for p in loaded.batch(images)] == \
           [(p.label, p.index, p.score) for p in pipe.batch(images)]


def test_pipeline_without_frontend_takes_model_inputs(digits, template_model, tmp_path):
    _, _, x_test, _ = digits
    path = tmp_path / "bare.esnn"
    template_model.save(path)
    pipe = es.Pipeline.load(path)
    assert pipe.frontend is None and pipe.labels is None
    prediction = pipe(x_test[0])
    expected = _numpy_potentials(template_model, x_test[:1])[0]
    assert (prediction.index, prediction.label) == (int(expected.argmax()), str(expected.argmax()))
    assert [label for label, _ in prediction.top] == [str(i) for i in np.argsort(-expected, kind="stable")[:5]]
    with pytest.raises(es.ModelError, match=r"without a frontend.*model input \(8, 8, 1\).*got shape \(28, 28\)"):
        pipe(np.zeros((28, 28), np.uint8))
    with pytest.raises(TypeError, match="no frontend"):
        next(pipe.stream([np.zeros(100, np.float32)]))


def test_shape_mismatch_shows_both_shapes(template_model):
    with pytest.raises(es.ModelError, match=r"produces \(28, 28, 1\).*expects input \(8, 8, 1\)"):
        es.Pipeline(es.frontend("image", size=(28, 28)), template_model)
    with pytest.raises(es.ModelError, match=r"produces \(49, 10, 1\).*expects input \(8, 8, 1\)"):
        es.Pipeline("kws", template_model)
    with pytest.raises(es.ModelError, match="3 labels given but the model outputs 10 classes"):
        es.Pipeline(es.frontend("image", size=(8, 8)), template_model, labels=["a", "b", "c"])
    # a rate frontend without a configured shape is checked on each sample
    pipe = es.Pipeline(es.frontend("rate", timesteps=4), template_model)
    with pytest.raises(es.ModelError, match=r"produces \(4, 9, 9, 1\).*expects input \(4, 8, 8, 1\)"):
        pipe(np.zeros((9, 9)))


def test_bad_inputs_surface_frontend_errors(template_model, tmp_path):
    pipe = es.Pipeline(es.frontend("image", size=(8, 8)), template_model)
    with pytest.raises(ValueError, match="NaN"):
        pipe(np.full((8, 8), np.nan))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not an image"):
        pipe.batch([np.zeros((8, 8), np.uint8), broken])
    with pytest.raises(ValueError, match="no inputs"):
        pipe.batch([])


def test_rate_coded_pipeline_sums_over_timesteps(digits, template_model):
    _, _, x_test, _ = digits
    fe = es.frontend("rate", timesteps=10, max_spikes=8, shape=(8, 8, 1))
    pipe = es.Pipeline(fe, template_model, labels=DIGIT_LABELS, device="reference")
    predictions = pipe.batch([x_test[i] for i in range(5)])
    for i, prediction in enumerate(predictions):
        spikes = es.frontend("rate", timesteps=10, max_spikes=8, shape=(8, 8, 1))(x_test[i])
        per_step = _numpy_potentials(template_model, spikes)          # (T, 10): bias is zero
        expected = per_step.sum(axis=0)
        np.testing.assert_array_equal(prediction.potentials, expected)
        # dequantized per timestep: output_scale / T
        assert prediction.score == pytest.approx(_softmax(expected * 1e-4 / 10).max())


def test_classifier_top_k_threshold_and_per_class_scale():
    potentials = np.array([[[[10, 30, 20]]], [[[5, 5, 4]]]], dtype=np.int32)   # (N, 1, 1, C)
    clf = Classifier(["a", "b", "c"], output_scale=[1.0, 0.5, 2.0])
    logits = np.array([[10, 15, 40], [5, 2.5, 8]], dtype=np.float64)
    np.testing.assert_allclose(clf.scores(potentials), _softmax(logits))
    assert [p.label for p in clf.classify(potentials)] == ["c", "c"]  # the scale decides, not the raw argmax
    top = clf.top_k(potentials, k=2)
    assert [label for label, _ in top[0]] == ["c", "b"] and top[0][0][1] == pytest.approx(_softmax(logits)[0, 2])
    strict = Classifier(["a", "b", "c"], threshold=0.9)
    sure, unsure = strict.classify(np.array([[0, 100, 0], [5, 5, 4]], dtype=np.int32))
    assert (sure.label, sure.index) == ("b", 1)
    assert (unsure.label, unsure.index) == ("unknown", -1)
    assert unsure.score == pytest.approx(_softmax(np.array([5.0, 5, 4]))[0])
    ties = Classifier().classify(np.array([[7, 7, 1]], dtype=np.int32))[0]
    assert (ties.label, ties.index) == ("0", 0)
    with pytest.raises(ValueError, match="model outputs 3 classes but 2 labels"):
        Classifier(["a", "b"]).classify(potentials)
    with pytest.raises(ValueError, match="threshold"):
        Classifier(threshold=1.5)


@pytest.mark.parametrize("output_scale", [None, 0.037, [1.0, 0.5, 2.0, 1e-3, 3.0, 0.25, 7.0, 0.1, 1.5, 2.5, 0.01, 4.0]])
@pytest.mark.parametrize("timesteps", [1, 3])
def test_scores_one_is_scores_of_one_row_bit_for_bit(output_scale, timesteps):
    """The stream's per-hop scores_one and the batch scores share one softmax: the same float64 bits
    for each sample, whatever its shape, the scale and the timesteps; the rows are the float softmax."""
    rng = np.random.default_rng(timesteps)
    potentials = rng.integers(-3000, 3000, (6, 1, 1, 12)).astype(np.int32)
    clf = Classifier([str(i) for i in range(12)], output_scale=output_scale)
    batch = clf.scores(potentials, timesteps)
    for i in range(potentials.shape[0]):
        np.testing.assert_array_equal(clf.scores_one(potentials[i], timesteps), batch[i])
    scale = 1.0 if output_scale is None else np.asarray(output_scale)
    logits = potentials.reshape(6, 12) * scale / (1 if output_scale is None else timesteps)
    np.testing.assert_allclose(batch, _softmax(logits), rtol=1e-12)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0, rtol=1e-12)


# -- streaming keyword spotting ---------------------------------------------------------------------

def _energy_model(fe, threshold_c0):
    """Two classes over the (49, 10, 1) MFCC: '_silence_' is a constant, 'loud' the summed uint8 c0 of the
    window's frames minus a threshold, so 'loud' wins when the window holds enough energy."""
    n_frames, n_mfcc, _ = fe.output_shape
    weights = np.zeros((n_frames * n_mfcc, 2), np.int8)
    weights[0::n_mfcc, 1] = 1                                   # c0 of every frame
    bias = np.array([0, -threshold_c0], np.int32)
    layer = es.layers.Dense(name="energy", weights=weights, bias=bias, neuron="none")
    return es.Model(layers=[layer], input_shape=fe.output_shape)


def test_stream_finds_a_burst_once_and_at_the_right_time():
    fe = es.frontend("kws", low=[-700.0] + [-150.0] * 9, high=[200.0] + [150.0] * 9)
    rng = np.random.default_rng(0)
    silence_u8 = int(fe.quantize(fe.features(np.zeros(480, np.float32)))[0, 0])
    model = _energy_model(fe, threshold_c0=49 * silence_u8 + 400)
    pipe = es.Pipeline(fe, model, labels=["_silence_", "loud"])
    burst_start_s, burst_end_s = 2.0, 2.3
    audio = np.zeros(5 * 16000, np.float32)
    audio[int(burst_start_s * 16000):int(burst_end_s * 16000)] = 0.3 * rng.standard_normal(int(0.3 * 16000))
    chunks = [audio[i:i + 1234] for i in range(0, audio.size, 1234)]
    detections = list(pipe.stream(chunks, hop_s=0.1, window_s=0.0, min_count=1, threshold=0.5))   # the raw windows: no smoothing
    assert [d.label for d in detections] == ["loud"]
    assert burst_start_s < detections[0].time_s <= burst_end_s + 0.1
    # the detection's score is the offline pipeline's score on the same 1 s of samples
    end = round(detections[0].time_s * 16000)
    assert detections[0].score == pytest.approx(pipe(audio[end - 16000:end]).score, rel=1e-12)
    assert list(pipe.stream([np.zeros(48000, np.float32)])) == []


def test_stream_windows_every_hop():
    fe = es.frontend("kws")
    always = _energy_model(fe, threshold_c0=-10**6)   # 'loud' wins every window
    pipe = es.Pipeline(fe, always, labels=["_silence_", "loud"])
    audio = np.random.default_rng(1).standard_normal(3 * 16000 + 123).astype(np.float32) * 0.01
    detections = list(pipe.stream(audio, hop_s=0.2, window_s=0.0, min_count=1, threshold=0.5, suppression_s=0.0))   # every hit
    frames = 1 + (audio.size - 480) // 320
    hop_frames = 10
    expected_times = [((49 - 1 + k * hop_frames) * 320 + 480) / 16000 for k in range(1 + (frames - 49) // hop_frames)]
    assert [d.time_s for d in detections] == pytest.approx(expected_times)
    with pytest.raises(TypeError, match="no streaming mode"):
        next(es.Pipeline(es.frontend("image", size=(49, 10)), always).stream([audio]))


def test_stream_suppresses_repeats_within_the_suppression_time():
    fe = es.frontend("kws")
    silence_u8 = int(fe.quantize(fe.features(np.zeros(480, np.float32)))[0, 0])
    pipe = es.Pipeline(fe, _energy_model(fe, threshold_c0=49 * silence_u8 + 400), labels=["_silence_", "loud"])
    rng = np.random.default_rng(2)
    audio = np.zeros(7 * 16000, np.float32)
    audio[2 * 16000:5 * 16000] = 0.3 * rng.standard_normal(3 * 16000)   # loud for 3 s: windows loud ~2.1..6 s
    repeats = list(pipe.stream(audio, hop_s=0.1, window_s=0.0, min_count=1, threshold=0.5, suppression_s=1.0))
    assert [d.label for d in repeats] == ["loud"] * 4
    gaps = np.diff([d.time_s for d in repeats])
    assert np.all(gaps > 1.0) and np.all(gaps < 1.0 + 0.1 + 1e-9)       # again as soon as 1 s has passed
    assert len(list(pipe.stream(audio, hop_s=0.1, window_s=0.0, min_count=1, threshold=0.5, suppression_s=10.0))) == 1


# -- command line: predict, eval, bench, stream ------------------------------------------------------

def _cli(capsys, *argv):
    from edgesnn import cli

    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_stream_tells_on_note_once_why_it_runs_whole_windows():
    fe = es.frontend("kws")
    rng = np.random.default_rng(0)
    valid_in_time = es.Model([
        es.layers.InputConv2D(name="rows", weights=rng.integers(-8, 8, (3, 1, 1, 4)), weight_bits=4, padding="valid",
                              out_multiplier=1, out_shift=4, activation_bits=4),
        es.layers.Dense(name="head", weights=rng.integers(-8, 8, (47 * 10 * 4, 2)), neuron="none"),
    ], input_shape=fe.output_shape)
    audio = 0.1 * np.random.default_rng(1).standard_normal(3 * 16000).astype(np.float32)
    cases = [("cpu", []), ("reference", ["device 'reference' runs whole windows"])]
    for device, expected in cases:
        told = []
        pipe = es.Pipeline(fe, valid_in_time, labels=["a", "b"], device=device)
        list(pipe.stream(audio, hop_s=0.1, on_note=told.append))
        assert len(told) == len(expected) and all(text in note for text, note in zip(expected, told)), told
    told = []
    list(es.Pipeline(fe, _energy_model(fe, 0), labels=["a", "b"]).stream(audio, hop_s=0.1, on_note=told.append))
    assert len(told) == 1 and "layer 0 is dense" in told[0]


def test_cli_predict_and_eval(digits, template_model, tmp_path, capsys):
    _, _, x_test, y_test = digits
    path = tmp_path / "digits.esnn"
    es.Pipeline(es.frontend("image", size=(8, 8)), template_model, labels=DIGIT_LABELS).save(path)
    pngs = []
    for i in (0, 100, 300):
        pngs.append(tmp_path / f"d{i}.png")
        Image.fromarray(x_test[i, :, :, 0]).save(pngs[-1])
    status, out, _ = _cli(capsys, "predict", path, *pngs, "--json", "--top", "3")
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    expected = _numpy_potentials(template_model, x_test[[0, 100, 300]])
    assert [row["label"] for row in rows] == [DIGIT_LABELS[i] for i in expected.argmax(axis=1)]
    assert [len(row["top"]) for row in rows] == [3, 3, 3]
    np.save(tmp_path / "one.npy", x_test[100])
    status, out, _ = _cli(capsys, "predict", path, tmp_path / "one.npy")
    assert status == 0 and out.strip() == f"{tmp_path / 'one.npy'}: {rows[1]['label']} ({rows[1]['score']:.3f})"

    np.savez(tmp_path / "test.npz", x=x_test[:150], y=y_test[:150])
    status, out, _ = _cli(capsys, "eval", path, tmp_path / "test.npz", "--json", "--batch", "64",
                          "--plot", tmp_path / "confusion.png")
    assert status == 0
    result = json.loads(out.splitlines()[0])
    predicted = _numpy_potentials(template_model, x_test[:150]).argmax(axis=1)
    assert result["accuracy"] == pytest.approx(np.mean(predicted == y_test[:150]))
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (y_test[:150], predicted), 1)
    assert result["confusion"] == confusion.tolist()
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    status, out, _ = _cli(capsys, "eval", path, tmp_path / "test.npz")
    assert status == 0 and out.startswith(f"accuracy {np.mean(predicted == y_test[:150]):.4f}")


def test_cli_bench(template_model, tmp_path, capsys):
    path = tmp_path / "digits.esnn"
    template_model.save(path)
    status, out, _ = _cli(capsys, "bench", path, "--batch", "4", "--repeat", "3", "--json",
                          "--plot", tmp_path / "sparsity.png")
    assert status == 0
    result = json.loads(out.splitlines()[0])
    assert result["batch"] == 4 and result["samples_per_s"] > 0
    assert [layer["name"] for layer in result["layers"]] == ["templates"]
    assert result["layers"][0]["synaptic_ops"] > 0
    assert (tmp_path / "sparsity.png").read_bytes()[:4] == b"\x89PNG"
    status, out, _ = _cli(capsys, "bench", path, "--repeat", "2")
    assert status == 0 and "throughput" in out and "templates" in out


def test_cli_stream_and_errors(template_model, tmp_path, capsys):
    import soundfile

    fe = es.frontend("kws")
    silence_u8 = int(fe.quantize(fe.features(np.zeros(480, np.float32)))[0, 0])
    kws_path = tmp_path / "energy.esnn"
    es.Pipeline(fe, _energy_model(fe, threshold_c0=49 * silence_u8 + 400), labels=["_silence_", "loud"]).save(kws_path)
    audio = np.zeros(4 * 16000, np.float32)
    audio[32000:36800] = 0.3 * np.random.default_rng(3).standard_normal(4800)
    wav = tmp_path / "burst.wav"
    soundfile.write(wav, audio, 16000)
    status, out, err = _cli(capsys, "stream", kws_path, wav, "--json", "--window-s", "0", "--min-count", "1",
                            "--threshold", "0.5", "--hop-s", "0.1")
    assert status == 0
    detections = [json.loads(line) for line in out.splitlines()]
    assert [d["label"] for d in detections] == ["loud"] and 2.0 < detections[0]["time_s"] < 2.4
    # a dense first layer does not stream: the user is told once, on stderr, why every hop runs the window
    assert err.count("not the streaming executor") == 1 and "layer 0 is dense" in err, err

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"definitely not a png")
    image_path = tmp_path / "digits.esnn"
    es.Pipeline(es.frontend("image", size=(8, 8)), template_model).save(image_path)
    status, _, err = _cli(capsys, "predict", image_path, broken)
    assert status == 1 and "broken.png is not an image" in err and len(err.strip().splitlines()) == 1
    np.savez(tmp_path / "no_labels.npz", x=np.zeros((2, 8, 8, 1), np.uint8))
    status, _, err = _cli(capsys, "eval", image_path, tmp_path / "no_labels.npz")
    assert status == 1 and "needs arrays 'x' and 'y'" in err
    status, _, err = _cli(capsys, "stream", image_path, wav)
    assert status == 1 and "no streaming mode" in err
