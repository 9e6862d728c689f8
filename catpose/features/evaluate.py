"""How well appearance alone finds corresponding points across instances (needs ground truth).

For a pair of videos (a, b) of different instances, each vertex ``v_i`` of a gets its appearance
correspondence ``ψ(i)`` in b (nearest feature over all frame pairs, ``min_{k,l}``). The ground-truth
corresponding point is where ``v_i`` sits on the other instance: both clouds are mapped into the
canonical category frame with the ground truth and normalised to their bounding boxes ([-1, 1]³, so
instances of different proportions line up). A match is correct when ``ψ(i)`` lies within
``threshold`` × the object size (the normalised box diagonal, 2√3) of ``v_i``. Vertices never seen in
any frame are left out.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from catpose.features.matching import appearance_correspondences, appearance_distance
from catpose.features.surface import SurfaceFeatures
from catpose.geometry import Similarity


def normalised_canonical(sf: SurfaceFeatures, gt: Similarity) -> np.ndarray:
    p = gt.apply(sf.vertices.astype(np.float64))
    lo, hi = p.min(0), p.max(0)
    return (p - (lo + hi) / 2) / np.maximum((hi - lo) / 2, 1e-12)


def pair_accuracy(sa: SurfaceFeatures, sb: SurfaceFeatures, gta: Similarity, gtb: Similarity,
                  threshold: float = 0.1, device: str = "cpu") -> tuple[float, float]:
    """(accuracy of ψ, accuracy of a uniformly random match) for source a and reference b."""
    t = lambda a: torch.as_tensor(a, device=device)
    A = appearance_distance(t(sa.features), t(sa.visible), t(sb.features), t(sb.visible))
    psi, _ = appearance_correspondences(A)
    seen = torch.isfinite(A.min(dim=1).values).cpu().numpy()
    pa, pb = normalised_canonical(sa, gta), normalised_canonical(sb, gtb)
    tol = threshold * 2 * np.sqrt(3)
    hit = np.linalg.norm(pb[psi.cpu().numpy()] - pa, axis=1) < tol
    # chance: the fraction of b's vertices within tol of the right place, averaged over a's vertices
    d = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
    chance = (d < tol).mean(1)
    return float(hit[seen].mean()), float(chance[seen].mean())


def correspondence_accuracy(features: dict[str, SurfaceFeatures], gts: dict[str, Similarity],
                            threshold: float = 0.1, max_pairs: int = 200, seed: int = 0) -> dict:
    """Mean :func:`pair_accuracy` over ordered pairs of different videos (at most ``max_pairs``)."""
    names = sorted(features)
    pairs = list(itertools.permutations(names, 2))
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in rng.choice(len(pairs), max_pairs, replace=False)]
    res = [pair_accuracy(features[a], features[b], gts[a], gts[b], threshold) for a, b in pairs]
    acc = np.array(res)
    return {"pairs": len(pairs), "accuracy": float(acc[:, 0].mean()), "chance": float(acc[:, 1].mean()),
            "threshold": threshold}


def off_object_share(vertices: np.ndarray, cloud_points: np.ndarray, on_object: np.ndarray) -> float:
    """Share of a video's feature vertices that are not on the object (ground, background, outliers).

    The vertices are points of the video's cloud, so each takes the ground-truth label (``on_object``
    [P] bool, from the synthetic generator) of the nearest cloud point.
    """
    from scipy.spatial import cKDTree

    _, idx = cKDTree(np.asarray(cloud_points, np.float64)).query(np.asarray(vertices, np.float64))
    return float(1.0 - np.asarray(on_object)[idx].mean()) if len(idx) else 0.0


def cleaning_summary(
    data_root, category: str, manifest, store_uri: str, endpoint_url: str | None = None
) -> dict:
    """What the cleaning removed over a category's finished videos (mean share, from the features
    manifest) and, for synthetic data with point labels, the mean share of feature vertices off the
    object (ground truth, evaluation only)."""
    from catpose.data.co3d import Co3dCategory
    from catpose.data.groundtruth import load_point_labels
    from catpose.features.runner import load_surface_features

    ok = manifest.keys_with("ok")
    removed = [manifest.items[n]["cleaning"]["removed_share"] for n in ok
               if isinstance(manifest.items[n].get("cleaning"), dict)]
    out = {"cleaned away": float(np.mean(removed)) if removed else float("nan")}
    offs = []
    cat = Co3dCategory(data_root, category)
    for n in ok:
        labels = load_point_labels(data_root, category, n)
        if labels is None:
            continue
        sf = load_surface_features(store_uri, category, n, endpoint_url)
        offs.append(off_object_share(sf.vertices, cat[n].load_point_cloud().points, labels))
    if offs:
        out["vertices off object"] = float(np.mean(offs))
    return out
