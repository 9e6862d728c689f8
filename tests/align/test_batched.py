"""The batched engine against the per-pair reference (catpose.align.search.align_pair), on CPU and
``--device cuda``; a chunk with an unreadable feature file fails that video's pairs only."""

import numpy as np
import pytest
import torch

from catpose.align.batched import (
    align_pairs,
    batched_appearance_distance,
    batched_coarse_search,
    batched_terms,
    coarse_terms,
    prepare_videos,
)
from catpose.align.cost import pair_terms
from catpose.align.search import (
    SearchConfig,
    _normalise,
    _subset,
    align_pair,
    coarse_search,
    subsample_vertices,
)
from catpose.data.co3d import Co3dCategory
from catpose.features.backbones import ColorSift
from catpose.features.matching import appearance_distance
from catpose.features.surface import SurfaceFeatures, compute_surface_features
from catpose.geometry import so3_grid


def angle_deg(A, B):
    return float(np.degrees(np.arccos(np.clip((np.trace(A.T @ B) - 1) / 2, -1, 1))))


@pytest.fixture(scope="module")
def videos(synth_root):
    out = []
    for c in ("car", "mug"):
        cat = Co3dCategory(synth_root, c)
        out += [
            compute_surface_features(cat[n], ColorSift(), n_vertices=300, n_frames=8)
            for n in cat.sequence_names
        ]
    return out


def cut(sf: SurfaceFeatures, n_vertices: int, n_frames: int) -> SurfaceFeatures:
    """A smaller video (fewer vertices and frames), to exercise the engine's padding."""
    return SurfaceFeatures(
        sf.sequence + f"_cut{n_vertices}",
        sf.vertices[:n_vertices],
        sf.features[:n_frames, :n_vertices],
        sf.visible[:n_frames, :n_vertices],
        sf.frame_numbers[:n_frames],
    )


CFG = SearchConfig(rotations=512, vertices=200)


def test_batched_matches_the_per_pair_reference(videos, device):
    vids = videos + [cut(videos[0], 150, 5), cut(videos[4], 120, 8)]  # unequal sizes in one chunk
    by = {v.sequence: v for v in vids}
    pairs = [(a.sequence, b.sequence) for a in vids for b in vids if a is not b][::3]
    batched = align_pairs(vids, pairs, CFG, device=device, block=7)  # several blocks
    for (a, b), T in zip(pairs, batched):
        ref = align_pair(by[a], by[b], CFG, device=device)
        assert angle_deg(ref.R, T.R) < 0.5, (a, b)
        assert T.scale == pytest.approx(ref.scale, rel=1e-3)
        assert T.cost == pytest.approx(ref.cost, rel=1e-3, abs=1e-6)
        np.testing.assert_allclose(T.t, ref.t, atol=2e-3 * np.ptp(by[b].vertices, axis=0).max())


def test_same_terms_and_coarse_candidates_as_the_reference(videos, device):
    """Appearance distances, σ weights and the coarse top-k rotations agree pair by pair."""
    vids = videos[:4] + [cut(videos[1], 170, 6)]
    vb = prepare_videos(vids, CFG, device)
    pairs = [(0, 1), (2, 3), (4, 0), (1, 4)]
    ia = torch.tensor([p[0] for p in pairs], device=device)
    ib = torch.tensor([p[1] for p in pairs], device=device)
    A = batched_appearance_distance(vb, ia, ib)
    terms = batched_terms(vb, ia, ib, A, CFG.tau, CFG.tau)
    rot = so3_grid(CFG.rotations, device=device)
    top = batched_coarse_search(coarse_terms(vb, ia, ib, terms), rot, CFG.alpha, CFG.top_k)
    for p, (a, b) in enumerate(pairs):
        src, ref = vids[a], vids[b]
        t = lambda x: torch.as_tensor(x, device=device)  # noqa: E731
        i, j = subsample_vertices(src, CFG.vertices), subsample_vertices(ref, CFG.vertices)
        A_ref = appearance_distance(t(src.features[:, i]), t(src.visible[:, i]), t(ref.features[:, j]),
                                    t(ref.visible[:, j]))
        n, m = A_ref.shape
        # the square root magnifies rounding near 0 (identical features: ‖a‖² + ‖b‖² − 2ab ≈ 2e-6 with the
        # GPU kernel's summation order), hence atol 2e-3 on distances of order 0.1–1
        np.testing.assert_allclose(A[p, :n, :m].cpu().numpy(), A_ref.cpu().numpy(), rtol=1e-3, atol=2e-3)
        assert torch.isinf(A[p, n:]).all() and torch.isinf(A[p, :, m:]).all()
        V, _, _ = _normalise(t(src.vertices[i]).float())
        Vbar, _, _ = _normalise(t(ref.vertices[j]).float())
        pt = pair_terms(V, Vbar, A_ref, CFG.tau, CFG.tau)
        # the two matmuls round differently, so an exact near-tie of ψ may go either way on a GPU
        assert (terms.psi[p, :n] == pt.psi).float().mean() > 0.98
        assert (terms.psi_bar[p, :m] == pt.psi_bar).float().mean() > 0.98
        for mine, theirs in ((terms.w_geo[p, :n], pt.w_geo), (terms.w_app_bar[p, :m], pt.w_app_bar)):
            close = torch.isclose(mine.cpu(), theirs.cpu(), rtol=1e-3, atol=1e-4)
            assert close.float().mean() > 0.98
        assert (terms.w_geo[p, n:] == 0).all() and (terms.w_app_bar[p, m:] == 0).all()
        D = coarse_search(_subset(pt, CFG.coarse_vertices), rot, CFG.alpha)
        expect = set(D.topk(CFG.top_k, largest=False).indices.tolist())
        got = set(top[p].tolist())
        assert len(expect & got) >= CFG.top_k - 1, (expect, got)  # near-ties may swap the last one
        assert D.argmin().item() in got  # the best coarse candidate is always the same


def test_a_known_similarity_is_recovered_in_a_batch(videos, device):
    from scipy.spatial.transform import Rotation

    src, pairs, truth, vids = videos[0], [], [], [videos[0]]
    for seed in range(4):
        R = Rotation.random(random_state=seed).as_matrix()
        s, tr = (
            float(np.exp(np.random.default_rng(seed).uniform(-1, 1))),
            np.random.default_rng(seed).normal(0, 3, 3),
        )
        copy = SurfaceFeatures(
            f"copy{seed}",
            (s * src.vertices.astype(np.float64) @ R.T + tr).astype(np.float32),
            src.features,
            src.visible,
            src.frame_numbers,
        )
        vids.append(copy)
        pairs.append((src.sequence, copy.sequence))
        truth.append((s, R, tr))
    for (s, R, tr), T in zip(truth, align_pairs(vids, pairs, SearchConfig(rotations=1024), device=device)):
        assert angle_deg(T.R, R) < 0.5 and T.scale == pytest.approx(s, rel=1e-3) and T.cost < 1e-3


def test_an_unreadable_feature_file_fails_only_its_pairs(videos, tmp_path, device):
    from catpose.align.run import _CACHE, _chunk_task
    from catpose.features.runner import feature_key

    store = tmp_path / "features"
    cars = videos[:3]
    for v in cars:
        (store / feature_key("car", v.sequence)).parent.mkdir(parents=True, exist_ok=True)
        (store / feature_key("car", v.sequence)).write_bytes(v.to_bytes())
    broken = cars[2].sequence
    data = (store / feature_key("car", broken)).read_bytes()
    (store / feature_key("car", broken)).write_bytes(data[: len(data) // 3])  # a truncated upload
    _CACHE.clear()
    pairs = [(cars[0].sequence, cars[1].sequence), (cars[0].sequence, broken), (broken, cars[1].sequence)]
    res = _chunk_task((0, str(store), "car", pairs, CFG, device, None))
    assert [(r["seq_i"], r["seq_j"]) for r in res["results"]] == pairs[:1]
    assert [(f["seq_i"], f["seq_j"]) for f in res["failed"]] == pairs[1:]
    for f in res["failed"]:
        assert broken in f["error"] and str(store) in f["error"]
    good = align_pair(cars[0], cars[1], CFG, device=device)
    assert angle_deg(np.reshape(res["results"][0]["rotation"], (3, 3)), good.R) < 0.5
