"""Acc@π/6, Acc@π/18 and the median (catpose.geometry.metrics), as both the alignment and pose stages report
them."""

import numpy as np

from catpose.align.evaluate import summarise
from catpose.geometry import pose_metrics


def test_pose_metrics_count_failures_as_wrong():
    m = pose_metrics([5.0, 20.0, 40.0, np.nan])
    assert m == {"n": 4, "acc_pi_6": 0.5, "acc_pi_18": 0.25, "median_deg": 30.0}
    assert np.isnan(pose_metrics([])["acc_pi_6"]) and pose_metrics([])["n"] == 0


def test_thresholds_are_strict_and_the_alignment_summary_is_the_same_rule():
    errs = [9.999, 10.0, 29.999, 30.0, 1.0]
    m = pose_metrics(errs)
    assert m["acc_pi_18"] == 2 / 5 and m["acc_pi_6"] == 4 / 5 and m["median_deg"] == 10.0
    s = summarise({f"v{i}": e for i, e in enumerate(errs + [np.nan])})
    assert s == {"videos": 6, **{k: v for k, v in pose_metrics(errs + [np.nan]).items() if k != "n"}}
    assert s["acc_pi_6"] == 4 / 6  # a video without an estimate counts as wrong
