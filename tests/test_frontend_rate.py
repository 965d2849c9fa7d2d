"""The rate-coding frontend against a spike-by-spike construction written here."""

import json

import numpy as np
import pytest

import edgesnn as es


def _evenly_spaced_reference(x, timesteps, max_spikes):
    """n = round-half-up(x * max_spikes) spikes; the k-th (k = 1..n) at step ceil(k * T / n) - 1."""
    out = np.zeros((timesteps, x.size), dtype=np.uint8)
    for i, value in enumerate(x.ravel()):
        n = int(np.floor(value * max_spikes + 0.5))
        for k in range(1, n + 1):
            out[-(-k * timesteps // n) - 1, i] = 1
    return out.reshape((timesteps, *x.shape))


def test_registered_and_config_rebuilds_it():
    fe = es.frontend("rate", timesteps=12, max_spikes=5, mode="poisson", seed=3, shape=(4, 4, 1))
    assert fe.output_shape == (12, 4, 4, 1)
    again = es.frontend("rate", **json.loads(json.dumps(fe.config)))
    assert again.config == fe.config
    np.testing.assert_array_equal(again(np.full(16, 0.5)), es.frontend("rate", **fe.config)(np.full(16, 0.5)))


@pytest.mark.parametrize("timesteps, max_spikes", [(20, 6), (20, 20), (7, 3), (1, 1), (16, 0)])
def test_deterministic_matches_reference(timesteps, max_spikes):
    rng = np.random.default_rng(timesteps * 100 + max_spikes)
    x = rng.random((5, 6, 2))
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    spikes = es.frontend("rate", timesteps=timesteps, max_spikes=max_spikes)(x)
    assert spikes.dtype == np.uint8 and spikes.shape == (timesteps, 5, 6, 2)
    np.testing.assert_array_equal(spikes, _evenly_spaced_reference(x, timesteps, max_spikes))


def test_neuroaikit_setting_on_mnist_pixels():
    # transform_rate(x / 255, Ns=20, max_rate_spikes=6): a full pixel fires 6 times, a blank one never
    pixels = np.array([[0, 128, 255]], dtype=np.uint8)
    spikes = es.frontend("rate", timesteps=20, max_spikes=6)(pixels)
    assert spikes.shape == (20, 1, 3, 1)  # (H, W) input gets a channel axis
    assert spikes.sum(axis=0).ravel().tolist() == [0, round(128 / 255 * 6), 6]
    np.testing.assert_array_equal(spikes, es.frontend("rate", timesteps=20, max_spikes=6)(pixels / 255.0))


def test_poisson_is_seeded_and_has_the_right_rate():
    x = np.full((100, 100), 0.5)
    a = es.frontend("rate", timesteps=20, max_spikes=10, mode="poisson", seed=7)(x)
    b = es.frontend("rate", timesteps=20, max_spikes=10, mode="poisson", seed=7)(x)
    c = es.frontend("rate", timesteps=20, max_spikes=10, mode="poisson", seed=8)(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a).tolist()) <= {0, 1}
    # per step p = 0.5 * 10 / 20 = 0.25 over 200,000 draws: the standard error is ~0.001
    assert abs(a.mean() - 0.25) < 0.005
    assert not np.any(es.frontend("rate", mode="poisson")(np.zeros((10, 10))))


def test_shape_reshapes_flat_input():
    fe = es.frontend("rate", timesteps=4, shape=(2, 3, 1))
    flat = np.linspace(0, 1, 6)
    np.testing.assert_array_equal(fe(flat), fe(flat.reshape(2, 3, 1)))
    with pytest.raises(ValueError, match=r"does not fit the configured sample shape \(2, 3, 1\)"):
        fe(np.zeros(7))


@pytest.mark.parametrize("bad, message", [
    (np.array([0.5, np.nan]), "NaN"),
    (np.array([0.5, 1.5]), r"\[0, 1\]"),
    (np.array([1, 2], dtype=np.int32), "dtype int32"),
    (np.zeros(0), "empty"),
])
def test_bad_inputs(bad, message):
    with pytest.raises(ValueError, match=message):
        es.frontend("rate")(bad)


def test_bad_config():
    with pytest.raises(ValueError, match="max_spikes"):
        es.frontend("rate", timesteps=5, max_spikes=6)
    with pytest.raises(ValueError, match="mode"):
        es.frontend("rate", mode="burst")
    with pytest.raises(ValueError, match="timesteps"):
        es.frontend("rate", timesteps=0)
