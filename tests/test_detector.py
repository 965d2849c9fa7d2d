"""The streaming detector (TFLite Micro's RecognizeCommands) on synthetic score sequences, exact times."""

import numpy as np
import pytest

from edgesnn.detector import Detection, Detector, DetectorSettings

LABELS = ["_silence_", "_unknown_", "yes", "no"]
HOP = 0.02


def _scores(n, hot=None, value=1.0):
    """n windows of scores: silence everywhere, `hot` = {window index: class} with `value` there."""
    s = np.zeros((n, len(LABELS)))
    s[:, 0] = 1.0
    for i, c in (hot or {}).items():
        s[i] = (1.0 - value) / (len(LABELS) - 1)
        s[i, c] = value
    return s


def _times(n, start=1.0):
    return start + HOP * np.arange(n)


def test_min_count_and_threshold_decide_the_first_time():
    # "yes" from window 10 on; window 1 s holds 51 results at a 20 ms hop; threshold 0.5: the
    # average passes 0.5 once more than half of the kept results are "yes".
    n = 100
    s = _scores(n, {i: 2 for i in range(10, n)})
    det = Detector(LABELS, window_s=1.0, threshold=0.5, min_count=3, suppression_s=1.5)
    found = det.run(_times(n), s)
    # Before k = 50 the queue holds all k + 1 windows: yes = k - 9 > (k + 1) / 2 -> k > 19 -> k = 20.
    # "yes" held on fires again once more than suppression_s (1.5 s = 75 hops) passed: k = 96.
    assert found == [Detection("yes", round(1.0 + 20 * HOP, 6), pytest.approx(11 / 21)),
                     Detection("yes", round(1.0 + 96 * HOP, 6), 1.0)]


def test_min_count_blocks_early_results():
    s = _scores(5, {0: 2, 1: 2, 2: 2, 3: 2, 4: 2})
    assert Detector(LABELS, min_count=3, threshold=0.5).run(_times(5), s)[0].time_s == round(1.0 + 2 * HOP, 6)
    assert Detector(LABELS, min_count=6, threshold=0.5).run(_times(5), s) == []


def test_window_drops_results_older_than_window_s_exactly():
    # Two results 1.0 s apart are both kept (a result exactly window_s old stays), 1.02 s apart not.
    det = Detector(LABELS, window_s=1.0, threshold=0.7, min_count=1, suppression_s=0.0)
    yes, silence = _scores(1, {0: 2})[0], _scores(1)[0]
    assert det.update(0.0, silence) is None                 # silence is a command, not reported
    assert det.update(1.0, yes) is None                     # average yes 0.5: below 0.7
    assert det.update(1.02, yes) == Detection("yes", 1.02, 1.0)   # 0.0 dropped: the average is all yes


def test_suppression_same_label_and_different_label():
    det = Detector(LABELS, window_s=0.0, threshold=0.5, min_count=1, suppression_s=1.5)
    yes, no = _scores(1, {0: 2})[0], _scores(1, {0: 3})[0]
    assert det.update(1.00, yes) == Detection("yes", 1.0, 1.0)
    assert det.update(1.50, yes) is None                    # same label within 1.5 s
    assert det.update(2.50, yes) is None                    # exactly 1.5 s: not more than
    assert det.update(2.52, yes) == Detection("yes", 2.52, 1.0)
    assert det.update(2.54, no) == Detection("no", 2.54, 1.0)    # a different label passes at once
    assert det.update(2.56, yes) == Detection("yes", 2.56, 1.0)  # and so does the first one again


def test_background_command_resets_previous_label_but_is_not_reported():
    det = Detector(LABELS, window_s=0.0, threshold=0.5, min_count=1, suppression_s=10.0)
    yes, silence = _scores(1, {0: 2})[0], _scores(1)[0]
    assert det.update(0.0, yes).label == "yes"
    assert det.update(0.1, silence) is None
    assert det.update(0.2, yes) == Detection("yes", 0.2, 1.0)


def test_smoothing_averages_a_short_spike_away():
    n = 80
    s = _scores(n, {40: 2, 41: 2})                          # two hot windows among 51: average 2/51
    assert Detector(LABELS, threshold=0.3).run(_times(n), s) == []
    s = _scores(n, {i: 2 for i in range(30, 60)}, value=0.9)
    found = Detector(LABELS, threshold=0.3, ignore=()).run(_times(n), s)
    # silence decides at the third result (min_count 3); yes once it is the best average and above
    # 0.3: with c of the 51 kept windows hot, 0.9 c > (51 - c) + 0.1 c / 3 -> c = 28 at k = 57
    assert [(d.label, d.time_s) for d in found] == [("_silence_", 1.04), ("yes", 2.14)]


def test_update_equals_run_and_reset():
    rng = np.random.default_rng(0)
    s = rng.dirichlet(np.ones(len(LABELS)) * 0.3, size=300)
    t = _times(300)
    det = Detector(LABELS, threshold=0.4, min_count=2, suppression_s=0.5)
    batch = det.run(t, s)
    det.reset()
    one_by_one = [d for d in (det.update(ti, si) for ti, si in zip(t, s)) if d is not None]
    assert batch == one_by_one and batch


def test_errors_and_settings_round_trip():
    det = Detector(LABELS)
    with pytest.raises(ValueError, match="4 labels"):
        det.update(0.0, [1.0, 0.0])
    det.update(1.0, _scores(1)[0])
    with pytest.raises(ValueError, match="time order"):
        det.update(0.5, _scores(1)[0])
    with pytest.raises(ValueError, match="threshold"):
        DetectorSettings(threshold=2.0)
    settings = DetectorSettings(hop_s=0.04, threshold=0.7)
    assert DetectorSettings.from_dict(settings.as_dict()) == settings
    assert settings.replace(threshold=None, min_count=5).min_count == 5
    with pytest.raises(ValueError, match="unknown keys"):
        DetectorSettings.from_dict({"treshold": 0.5})
