"""The pose accuracy of a trained model, on the CPU: a car trained at the demo's settings (Ray Train, 2
workers,
64-px crops, a 300-vertex template; 12 videos and 40 epochs instead of the demo's 30 and 50, to fit a test
session) and scored on 60 synthetic in-the-wild images of unseen cars (clutter, occluders, other lights and
lenses) against their ground truth, with the nearest-training-view baseline of the same run
(``tests/trained_run.py``; the run is the session fixture ``trained_car``).

Measured (``python -m tests.trained_run --seed S``, the training seed; 2 cores: 131 s a run on an idle
machine,
748 and 1156 s while six other jobs shared it):

| seed | held-out matching: trained / untrained | catpose Acc@π/6 / π/18 / median | nearest view: same |
|---|---|---|---|
| 0 | 49.3 % / 5.1 % | 76.7 % / 35.0 % / 16.1° | 68.3 % / 21.7 % / 17.8° |
| 1 | 47.1 % / 5.7 % | 85.0 % / 43.3 % / 12.8° | 65.0 % / 23.3 % / 16.4° |
| 2 | 64.9 % / 3.7 % | 83.3 % / 45.0 % / 11.5° | 66.7 % / 20.0 % / 15.3° |

Chance for Acc@π/6 (a uniformly random rotation within 30° of the truth) is (π/6 − sin π/6)/π = 0.75 %.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from catpose.geometry import pose_metrics

pytestmark = pytest.mark.slow

METHOD = "catpose (features + render-and-compare)"
BASELINE = "nearest training view (same features)"
CHANCE_PI_6 = (np.pi / 6 - np.sin(np.pi / 6)) / np.pi


def test_trained_car_pose_beats_chance_and_the_nearest_view(trained_car):
    pose = trained_car["pose"]
    assert pose["frame"] == "gt" and pose["scored"] == 60 and pose["failed"] == 0
    # the table is what each image's error against its annotation says
    lines = [json.loads(ln) for ln in (Path(trained_car["base"]) / "pose" / "results.jsonl").open()]
    assert len(lines) == 60
    for key, label in (("error_deg", METHOD), ("baseline_error_deg", BASELINE)):
        assert pose["methods"][label] == pose_metrics(
            [np.nan if r.get(key) is None else r[key] for r in lines]
        )
    m, b = pose["methods"][METHOD], pose["methods"][BASELINE]
    print(f"\ncatpose {m}\nnearest view {b}")
    # measured 76.7 % and 85.0 % (seeds 0, 1; the fixture trains seed 0, but Ray Train's data order varies):
    # the threshold leaves 16.7 points (10 of 60 images) under the lowest, and is 79x chance
    assert m["acc_pi_6"] >= 0.60 > 75 * CHANCE_PI_6
    # Acc@π/6 against the nearest view, six runs: +8.4, +20.0, +16.6, +10.0, +8.4 and -1.7 points (80.0 % vs
    # 81.7 %: the baseline uses the same trained features, and Ray Train's data order varies): level with it
    # within 5 points (3 images). What the template adds is precision, by render-and-compare: Acc@π/18
    # 35.0/43.3/45.0/36.7/35.0/41.7 % against 21.7/23.3/20.0/23.3/23.3/21.7 % (11.7 points at the least)
    assert m["acc_pi_6"] >= b["acc_pi_6"] - 0.05
    assert m["acc_pi_18"] > b["acc_pi_18"]

