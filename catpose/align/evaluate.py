"""``catpose eval-align``: alignment rotations against ground truth, up to one global rotation.

Each estimated ``R_i`` maps video i's world frame into the reference frame, each ground-truth ``G_i``
maps it into the canonical frame, so ``G_i R_iᵀ`` should be one and the same rotation Q (reference →
canonical) for every video. Q is estimated robustly (the candidate ``G_i R_iᵀ`` with the most videos
within π/6, then the chordal mean of those inliers), and the per-video error is the geodesic angle
between ``Q R_i`` and ``G_i``. Reported: Acc@π/6, Acc@π/18, the median error, and a histogram.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from catpose.align.table import read_alignment
from catpose.data.groundtruth import load_ground_truth
from catpose.geometry import fit_frame, geodesic_deg, pose_metrics
from catpose.storage import write_uri


def rotation_errors(est: dict[str, np.ndarray], gt: dict[str, np.ndarray]) -> dict[str, float]:
    names = sorted(set(est) & set(gt))
    E = np.stack([est[n] for n in names])
    G = np.stack([gt[n] for n in names])
    return dict(zip(names, geodesic_deg(fit_frame(E, G) @ E, G).tolist()))


def summarise(errors: dict[str, float]) -> dict:
    """Acc@π/6, Acc@π/18 and the median error of per-video errors (:func:`catpose.geometry.pose_metrics`)."""
    m = pose_metrics(list(errors.values()))
    return {"videos": m.pop("n"), **m}


def evaluate_alignment(alignment: str | Path, data_root: str | Path, category: str,
                       plot: str | Path | None = None, endpoint_url: str | None = None) -> dict:
    """Rotation errors of an alignment table against the synthetic ground truth; every location may be
    a local path or an ``s3://`` URI (``plot``: where the error histogram goes)."""
    est = {k: T.R for k, T in read_alignment(alignment, endpoint_url)[0].items()}
    gt = {k: g.R for k, g in load_ground_truth(data_root, category, endpoint_url).items()}
    errs = rotation_errors(est, gt)
    res = summarise(errs)
    res["errors"] = errs
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(list(errs.values()), bins=np.arange(0, 181, 5), color="tab:blue")
        ax.axvline(30, color="k", ls="--", lw=0.8)
        ax.axvline(10, color="k", ls=":", lw=0.8)
        ax.set_xlabel("rotation error (degrees)")
        ax.set_ylabel("videos")
        ax.set_title(f"{category}: Acc@π/6 {res['acc_pi_6']:.0%}, Acc@π/18 {res['acc_pi_18']:.0%}, "
                     f"median {res['median_deg']:.1f}°", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, dpi=110)
        plt.close(fig)
        write_uri(plot, buf.getvalue(), endpoint_url)
    return res
