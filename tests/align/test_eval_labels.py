"""``catpose eval-align --labels``: format-exact od3d stand-ins (torch.save of float32 4x4 tensors) for
synthetic sequences with known rotations, scored through the command line."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from catpose.align.evaluate_labels import pairwise_errors, score_alignments
from catpose.align.table import write_alignment
from catpose.cli import main
from catpose.geometry import Similarity, geodesic_deg

SEQS = [f"{100 + i}_{i}_{7 * i}" for i in range(5)]
TILT = 40.0  # degrees: the planted error of one video


def _save(path, T):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.from_numpy(np.asarray(T, np.float32)), path)


def _tform(R, s=1.0, t=(0, 0, 0)):
    T = np.eye(4)
    T[:3, :3] = s * R
    T[:3, 3] = t
    return T


@pytest.fixture
def stand_in(tmp_path):
    """Labels L_i (world -> canonical) of two categories in od3d's layout; alignments A_i = Qᵀ L_i (one
    unknown reference frame Q), the last video of 'car' turned by TILT degrees about its world z."""
    rng = np.random.default_rng(3)
    labels_root = tmp_path / "label3d" / "meta_mask" / "meta"
    od3d_root = tmp_path / "aligned_N_test" / "r0" / "meta_mask" / "meta"
    truth = {}
    for cat in ("car", "mug"):
        L = Rotation.random(len(SEQS), random_state=rng.integers(1 << 30)).as_matrix()
        Q = Rotation.random(random_state=rng.integers(1 << 30)).as_matrix()
        A = np.einsum("ji,njk->nik", Q, L)
        if cat == "car":
            A[-1] = A[-1] @ Rotation.from_euler("z", TILT, degrees=True).as_matrix()
        for s, l, a in zip(SEQS, L, A):
            _save(labels_root / cat / s / "tform_obj.pt", _tform(l))
            _save(
                od3d_root / cat / s / "tform_obj.pt", _tform(a, 0.6, rng.normal(size=3))
            )  # od3d: similarities
        (tmp_path / "catpose" / cat).mkdir(parents=True)
        write_alignment(tmp_path / "catpose" / cat / "alignment.parquet",
                        {s: Similarity(a, rng.normal(size=3), 1.3) for s, a in zip(SEQS, A)}, SEQS[0])
        truth[cat] = (L, A)
    return tmp_path, truth


def _expected_pair_errors(L, A):
    return {
        (r, s): float(geodesic_deg(A[r].T @ A[s], L[r].T @ L[s]))
        for r in range(len(L))
        for s in range(len(L))
        if r != s
    }


@pytest.mark.parametrize("source", ["catpose", "od3d"])
def test_eval_align_labels_recovers_known_rotations(stand_in, source, capsys):
    root, truth = stand_in
    out = root / f"scores_{source}.json"
    args = ["eval-align", "--labels", str(root / "label3d"), "--json-out", str(out)]
    args += ["--alignment", str(root / "catpose")] if source == "catpose" else \
        ["--od3d-aligned", str(root / "aligned_N_test" / "r0")]
    assert main(args) == 0
    res = json.loads(out.read_text())
    mug, car = res["categories"]["mug"], res["categories"]["car"]
    # exact alignment (mug): every pair within 0.1 deg, per-video errors too
    assert mug["pairs"] == 20 and mug["videos"] == 5
    assert max(mug["pair_errors"].values()) <= 0.1 and max(mug["video_errors"].values()) <= 0.1
    assert mug["acc30"] == mug["acc15"] == mug["acc10"] == 1.0
    # car: the pairs with the tilted video are off by TILT, the others exact (each within 0.1 deg)
    L, A = truth["car"]
    for (r, s), e in _expected_pair_errors(L, A).items():
        got = car["pair_errors"][f"{SEQS[r]}->{SEQS[s]}"]
        assert abs(got - (TILT if 4 in (r, s) else 0.0)) <= 0.1 and abs(got - e) <= 0.1
    assert car["acc30"] == pytest.approx(12 / 20) and car["acc15"] == pytest.approx(12 / 20)
    assert abs(car["video_errors"][SEQS[-1]] - TILT) <= 0.1  # one fitted rotation: only that video is off
    assert car["frame_acc30"] == pytest.approx(4 / 5)
    assert res["mean"]["acc30"] == pytest.approx((1.0 + 0.6) / 2)
    printed = capsys.readouterr().out
    assert "| car | 5 | 20 | 60.0 | 60.0 | 60.0 |" in printed


def test_shipped_labels_score_themselves():
    """The shipped co3d-paper labels as an alignment (after an arbitrary global rotation) score 100 %."""
    from catpose.data.labels import paper_labels

    G = Rotation.from_euler("xyz", [10, 70, -20], degrees=True).as_matrix()
    labels = paper_labels("co3d-paper")
    est = {c: {s: G @ R for s, R in seqs.items()} for c, seqs in labels.items()}
    res = score_alignments(est, "co3d-paper")
    assert len(res["categories"]) == 28
    assert all(
        r["acc10"] == 1.0 and max(r["pair_errors"].values()) <= 0.1 for r in res["categories"].values()
    )
    assert pairwise_errors({}, {}) == {}


def test_no_labelled_pair_is_an_error(stand_in, capsys):
    root, _ = stand_in
    assert main(["eval-align", "--labels", "co3d-paper", "--alignment", str(root / "catpose")]) == 2
    assert "no category has two videos" in capsys.readouterr().err
