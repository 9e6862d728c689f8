"""The fused CUDA kernels (catpose.align.fused) against the plain-torch path they replace, and the
GPU-side preparation (prepare_states) against the CPU one (video_arrays + upload_video).

On the CPU these check the torch twins the kernels are compared with (vertex-major appearance
distances, FPS, the weighted Umeyama fit); with ``--device cuda`` the kernels themselves run."""

import numpy as np
import pytest
import roma
import torch

from catpose.align import batched as B
from catpose.align import fused
from catpose.align.search import SearchConfig
from catpose.features.surface import SurfaceFeatures
from catpose.geometry import farthest_point_sample, so3_grid


def fake_video(n, k, c, seed):
    rng = np.random.default_rng(seed)
    V = (rng.normal(size=(n, 3)) * [2.0, 1.0, 0.6]).astype(np.float32)
    vis = rng.random((k, n)) > 0.5
    F = (rng.normal(size=(k, n, c)) * vis[..., None]).astype(np.float16)
    return SurfaceFeatures(f"v{seed:04d}", V, F, vis, np.arange(k))


CFG = SearchConfig(rotations=256, vertices=120, coarse_vertices=48, prefilter_vertices=24, prefilter_keep=64)


@pytest.fixture
def torch_path(monkeypatch):
    monkeypatch.setattr(fused, "ENABLED", False)


@pytest.fixture(scope="module")
def videos():
    return [
        fake_video(150, 6, 32, 0),
        fake_video(90, 8, 32, 1),
        fake_video(200, 5, 32, 2),
        fake_video(130, 7, 32, 3),
    ]


def test_farthest_points_match_fpsample(device):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3, 300, 3)).astype(np.float32)
    count = torch.tensor([300, 250, 40], device=device)
    seq = B.farthest_points(torch.as_tensor(X, device=device), count, 32).cpu().numpy()
    for b in range(3):
        expect = farthest_point_sample(X[b, :int(count[b])], 32, exact=True)
        assert sorted(seq[b].tolist()) == sorted(expect.tolist())


def test_weighted_similarity_matches_roma(device):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(5, 40, 3, generator=g)
    R = roma.random_rotmat(5)
    dst = (
        1.7 * src @ R.transpose(1, 2)
        + torch.randn(5, 1, 3, generator=g)
        + 0.01 * torch.randn(5, 40, 3, generator=g)
    )
    w = torch.rand(5, 40, generator=g)
    R1, t1, s1 = B.weighted_similarity(src.to(device), dst.to(device), w.to(device))
    R2, t2, s2 = roma.rigid_points_registration(
        src.double(), dst.double(), weights=w.double(), compute_scaling=True
    )
    torch.testing.assert_close(R1.cpu(), R2, atol=1e-5, rtol=0)
    torch.testing.assert_close(t1.cpu(), t2, atol=1e-5, rtol=0)
    torch.testing.assert_close(s1.cpu(), s2, atol=1e-5, rtol=1e-5)


def test_device_preparation_matches_the_cpu_one(videos, device):
    """prepare_states (batched, vertex-major, FPS on the device) gives the same vertices, subsets and
    appearance distances as the per-video CPU preparation."""
    cpu = B.stack_videos([B.upload_video(B.video_arrays(sf, CFG, exact_fps=True), device)
                          for sf in videos])
    dev = B.stack_videos(B.prepare_states(videos, CFG, device))
    assert dev.k == 8 and cpu.k == 0
    torch.testing.assert_close(dev.V, cpu.V, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(dev.diam, cpu.diam, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(dev.centre, cpu.centre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dev.scale, cpu.scale, rtol=1e-5)
    for a, b in zip(dev.subs, cpu.subs):
        assert torch.equal(a.idx, b.idx) and torch.equal(a.valid, b.valid) and torch.equal(a.near, b.near)
    ia = torch.tensor([0, 1, 2, 3, 0], device=device)
    ib = torch.tensor([1, 2, 3, 0, 2], device=device)
    A_dev = B.batched_appearance_distance(dev, ia, ib)
    A_cpu = B.batched_appearance_distance(cpu, ia, ib)
    fin = torch.isfinite(A_cpu)
    assert torch.equal(fin, torch.isfinite(A_dev))
    torch.testing.assert_close(A_dev[fin], A_cpu[fin], atol=2e-3, rtol=1e-3)


def test_kernels_match_the_torch_path(videos, device, monkeypatch):
    """On CUDA: each fused kernel against the plain-torch function it replaces (on the CPU both sides
    are the torch path, so this checks the comparison itself)."""
    vb = B.stack_videos(B.prepare_states(videos, CFG, device))
    ia = torch.tensor([0, 1, 2, 3, 0, 2], device=device)
    ib = torch.tensor([1, 2, 3, 0, 2, 1], device=device)
    rot = so3_grid(CFG.rotations, device=device)

    def run():
        A = B.batched_appearance_distance(vb, ia, ib)
        t = B.batched_terms(vb, ia, ib, A, CFG.tau, CFG.tau)
        ct = B.coarse_terms(vb, ia, ib, t)
        D = B.batched_coarse_cost(ct, rot, CFG.alpha)
        cand = D.topk(16, dim=1, largest=False).indices
        Dc = B.batched_coarse_cost(ct, rot, CFG.alpha, cand)
        TV = B._apply(
            t.V,
            torch.ones(len(ia), 2, device=device),
            rot[cand[:, :2]],
            torch.zeros(len(ia), 2, 3, device=device),
        )
        Dn, chi, chi_bar = B.batched_cost(TV, t, CFG.alpha, nearest=True)
        return A, D, Dc, Dn, chi, chi_bar

    got = run()
    monkeypatch.setattr(fused, "ENABLED", False)
    want = run()
    A, D, Dc, Dn, chi, chi_bar = got
    fin = torch.isfinite(want[0])
    assert torch.equal(fin, torch.isfinite(A))
    torch.testing.assert_close(A[fin], want[0][fin], atol=2e-3, rtol=1e-3)
    for g, w in zip((D, Dc, Dn), want[1:4]):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    assert (chi == want[4]).float().mean() > 0.99 and (chi_bar == want[5]).float().mean() > 0.99


def test_batched_engine_agrees_with_and_without_the_kernels(videos, device, monkeypatch):
    pairs = [(a.sequence, b.sequence) for a in videos for b in videos if a is not b]
    got = B.align_pairs(videos, pairs, CFG, device)
    monkeypatch.setattr(fused, "ENABLED", False)
    want = B.align_pairs(videos, pairs, CFG, device)
    for g, w in zip(got, want):
        cos = (np.trace(g.R.T @ w.R) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 0.5
        assert g.cost == pytest.approx(w.cost, rel=1e-3, abs=1e-6)
