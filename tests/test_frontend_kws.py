"""The keyword-spotting frontend against direct librosa calls, streaming against offline, and its errors."""

import json
import shutil
import subprocess
import warnings

import librosa
import numpy as np
import pytest
import soundfile

import edgesnn as es

RATE = 16000


def _speak(path, text, *options):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    subprocess.run(["espeak-ng", *options, "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A real spoken keyword (espeak-ng, 22,050 Hz mono) and a longer sentence."""
    folder = tmp_path_factory.mktemp("speech")
    return {"yes": _speak(folder / "yes.wav", "yes"),
            "sentence": _speak(folder / "sentence.wav", "turn the lights on in the kitchen please")}


def _librosa_mfcc(y16k, n_mfcc=10):
    """The DS-CNN MFCC written directly against librosa: 30 ms frames, 20 ms hop, 40 mel bands 20..4000 Hz."""
    mel = librosa.feature.melspectrogram(y=y16k.astype(np.float64), sr=RATE, n_fft=480, hop_length=320,
                                         win_length=480, window="hann", center=False, power=2.0,
                                         n_mels=40, fmin=20.0, fmax=4000.0)
    return librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None), n_mfcc=n_mfcc).T


def _quantize(mfcc, low, high):
    return np.clip(np.floor((mfcc - low) / (high - low) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _read_16k(path):
    y, rate = soundfile.read(str(path), dtype="float32")
    return librosa.resample(y, orig_sr=rate, target_sr=RATE)


def test_registered_shape_and_config_round_trip():
    fe = es.frontend("kws")
    assert fe.output_shape == (49, 10, 1)
    again = es.frontend("kws", **json.loads(json.dumps(fe.config)))
    assert again.config == fe.config
    custom = es.frontend("kws", n_mfcc=13, hop_s=0.010, frame_s=0.025)
    assert custom.output_shape == (1 + (16000 - 400) // 160, 13, 1)


def test_offline_matches_librosa_on_real_speech(speech):
    y = _read_16k(speech["yes"])                            # 0.6 s: zero-padded at the end to 1 s
    clip = np.concatenate([y, np.zeros(RATE - y.size, np.float32)])
    fe = es.frontend("kws")
    expected_mfcc = _librosa_mfcc(clip)
    np.testing.assert_allclose(fe.features(fe.clip(fe.load(speech["yes"]))), expected_mfcc, rtol=1e-5, atol=1e-3)
    fe.calibrate([speech["yes"], speech["sentence"]], percentile=1.0)
    out = fe(speech["yes"])
    assert out.shape == (49, 10, 1) and out.dtype == np.uint8
    expected = _quantize(expected_mfcc, np.array(fe.config["low"]), np.array(fe.config["high"]))
    diff = np.abs(out[:, :, 0].astype(int) - expected)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float32 vs float64 MFCC: rare rounding ties


@pytest.mark.parametrize("rate, frame, n_mels, fmin, fmax", [
    (16000, 480, 40, 20.0, 4000.0), (16000, 640, 40, 20.0, 7600.0), (8000, 256, 32, 0.0, 4000.0),
    (22050, 1024, 128, 0.0, 11025.0), (16000, 400, 80, 125.0, 7500.0), (44100, 1101, 64, 50.0, 18000.0)])
def test_window_and_mel_filters_are_scipy_and_librosa_bit_for_bit(rate, frame, n_mels, fmin, fmax):
    """The frontend makes its Hann window and Slaney mel filters itself (importing scipy.signal and
    librosa.filters took ~1.5 s of CPU at the start of every stream): the same bits as theirs."""
    import scipy.signal

    fe = es.frontend("kws", sample_rate=rate, frame_s=frame / rate, hop_s=frame / 2 / rate, n_mels=n_mels,
                     fmin=fmin, fmax=fmax)
    assert fe.frame_samples == frame
    window, mel = fe._window_and_mel_basis()
    np.testing.assert_array_equal(window, scipy.signal.get_window("hann", frame, fftbins=True))
    np.testing.assert_array_equal(mel, librosa.filters.mel(sr=rate, n_fft=frame, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                                           dtype=np.float64))


def test_long_clip_is_center_cropped(speech):
    y = _read_16k(speech["sentence"])
    assert y.size > RATE
    start = (y.size - RATE) // 2
    fe = es.frontend("kws")
    np.testing.assert_allclose(fe.features(fe.clip(fe.load(speech["sentence"]))),
                               _librosa_mfcc(y[start:start + RATE]), rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="longer than the 16000-sample clip"):
        es.frontend("kws", crop="error")(speech["sentence"])


def test_calibrate_spans_the_uint8_range(speech):
    clips = [speech["yes"], speech["sentence"]]
    fe = es.frontend("kws").calibrate(clips, percentile=0.0)
    mfcc = np.concatenate([_librosa_mfcc(es.frontend("kws").clip(_read_16k(c))) for c in clips])
    np.testing.assert_allclose(fe.config["low"], mfcc.min(axis=0), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(fe.config["high"], mfcc.max(axis=0), rtol=1e-5, atol=1e-3)
    both = np.concatenate([fe(c)[:, :, 0] for c in clips])
    assert np.all(both.min(axis=0) == 0) and np.all(both.max(axis=0) == 255)


def test_streaming_equals_offline_bit_for_bit(speech):
    fe = es.frontend("kws")
    rng = np.random.default_rng(0)
    speech_16k = _read_16k(speech["sentence"])
    waveform = np.concatenate([speech_16k, 0.05 * rng.standard_normal(7919).astype(np.float32)])
    offline = fe.features(waveform)
    assert offline.shape == (1 + (waveform.size - 480) // 320, 10)
    for sizes in ([1, 7, 479, 0, 320, 1000, 33], [16000], [320], list(rng.integers(1, 2000, 50))):
        stream = fe.stream()
        frames, position, k = [], 0, 0
        while position < waveform.size:
            size = int(sizes[k % len(sizes)])
            frames.append(stream.push(waveform[position:position + size]))
            position, k = position + size, k + 1
        streamed = np.concatenate(frames)
        np.testing.assert_array_equal(streamed, offline)
        assert stream.frames_emitted == offline.shape[0]
        np.testing.assert_array_equal(fe.quantize(streamed), fe.quantize(offline))


def test_8khz_wav_is_resampled(speech, tmp_path):
    y8k = librosa.resample(_read_16k(speech["yes"]), orig_sr=RATE, target_sr=8000)
    path = tmp_path / "yes_8k.wav"
    soundfile.write(path, y8k, 8000, subtype="FLOAT")
    fe = es.frontend("kws")
    expected = _librosa_mfcc(fe.clip(librosa.resample(y8k, orig_sr=8000, target_sr=RATE)))
    np.testing.assert_allclose(fe.features(fe.clip(fe.load(path))), expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(fe(path), fe((y8k, 8000)))


def test_stereo_wav_is_mixed_down_with_a_warning(speech, tmp_path):
    y = _read_16k(speech["yes"])
    stereo = np.stack([y, 0.25 * y], axis=1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, RATE, subtype="FLOAT")
    fe = es.frontend("kws")
    with pytest.warns(UserWarning, match="2 channels; mixed down"):
        out = fe(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(out, fe(stereo.mean(axis=1)))


def test_int16_samples_are_scaled():
    rng = np.random.default_rng(1)
    pcm = rng.integers(-20000, 20000, RATE).astype(np.int16)
    fe = es.frontend("kws")
    np.testing.assert_array_equal(fe(pcm), fe(pcm.astype(np.float32) / 32768.0))


@pytest.mark.parametrize("bad, message", [
    (np.zeros(0, np.float32), "no samples"),
    (np.zeros(100, np.float32), "too short: 100 samples"),
    (np.array([0.1] * 8000 + [np.nan] * 10, np.float32), "NaN or infinite samples"),
    (np.zeros(16000, np.int32), "dtype int32"),
    (np.zeros((3, 4, 5), np.float32), "shape"),
])
def test_bad_waveforms(bad, message):
    with pytest.raises(ValueError, match=message):
        es.frontend("kws")(bad)


def test_files_that_are_not_audio(tmp_path):
    fake = tmp_path / "fake.wav"
    fake.write_text("RIFF but not really a wave file")
    with pytest.raises(ValueError, match="fake.wav is not an audio file"):
        es.frontend("kws")(fake)
    with pytest.raises(FileNotFoundError, match="no such audio file"):
        es.frontend("kws")(tmp_path / "missing.wav")
    silent = tmp_path / "empty.wav"
    soundfile.write(silent, np.zeros(0, np.float32), RATE)
    with pytest.raises(ValueError, match="no samples"):
        es.frontend("kws")(silent)


def test_stream_rejects_bad_chunks():
    stream = es.frontend("kws").stream()
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="1-D mono"):
        stream.push(np.zeros((10, 2), np.float32))


def test_bad_config():
    with pytest.raises(ValueError, match="hop"):
        es.frontend("kws", hop_s=0.05, frame_s=0.03)
    with pytest.raises(ValueError, match="n_mfcc"):
        es.frontend("kws", n_mfcc=50)
    with pytest.raises(ValueError, match="low < high"):
        es.frontend("kws", low=1.0, high=0.0)
