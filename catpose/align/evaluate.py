"""``catpose eval-align``: alignment rotations against ground truth, up to one global rotation.

Each estimated ``R_i`` maps video i's world frame into the reference frame, each ground-truth ``G_i``
maps it into the canonical frame, so ``G_i R_iᵀ`` should be one and the same rotation Q (reference →
canonical) for every video. Q is estimated robustly (the candidate ``G_i R_iᵀ`` with the most videos
within π/6, then the chordal mean of those inliers), and the per-video error is the geodesic angle
between ``Q R_i`` and ``G_i``. Reported: Acc@π/6, Acc@π/18, the median error, and a histogram.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catpose.align.reference import project_so3


def geodesic_deg(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Angles in degrees between rotation stacks [..., 3, 3]."""
    tr = np.einsum("...ij,...ij->...", R1, R2)  # trace(R1ᵀ R2)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))


def fit_frame(E: np.ndarray, G: np.ndarray, inlier_deg: float = 30.0) -> np.ndarray:
    """The rotation ``Q`` with ``G ≈ Q · E`` for most pairs of rotation stacks [n, 3, 3] (robust): the
    candidate ``G_i E_iᵀ`` that most pairs agree with to ``inlier_deg``, refined as the chordal mean of
    its inliers.

    Relates a frame found without labels (the alignment's reference, a learned template) to an annotated
    canonical frame: one rotation for the whole category, as label-free methods need before scoring.
    """
    E, G = np.asarray(E, np.float64), np.asarray(G, np.float64)
    cands = G @ np.transpose(E, (0, 2, 1))  # Q candidates
    inl = [(geodesic_deg(q @ E, G) < inlier_deg).sum() for q in cands]
    q0 = cands[int(np.argmax(inl))]
    mask = geodesic_deg(q0 @ E, G) < inlier_deg
    return project_so3((G[mask] @ np.transpose(E[mask], (0, 2, 1))).sum(0))


def rotation_errors(est: dict[str, np.ndarray], gt: dict[str, np.ndarray]) -> dict[str, float]:
    names = sorted(set(est) & set(gt))
    E = np.stack([est[n] for n in names])
    G = np.stack([gt[n] for n in names])
    return dict(zip(names, geodesic_deg(fit_frame(E, G) @ E, G).tolist()))


def summarise(errors: dict[str, float]) -> dict:
    e = np.array(list(errors.values()))
    return {"videos": len(e), "acc_pi_6": float((e < 30).mean()), "acc_pi_18": float((e < 10).mean()),
            "median_deg": float(np.median(e))}


def evaluate_alignment(alignment: str | Path, data_root: str | Path, category: str,
                       plot: str | Path | None = None) -> dict:
    from catpose.align.run import read_alignment
    from catpose.data.synth.generate import load_ground_truth

    est = {k: T.R for k, T in read_alignment(alignment).items()}
    gt = {k: g.R for k, g in load_ground_truth(data_root, category).items()}
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
        fig.savefig(plot, dpi=110)
        plt.close(fig)
    return res
