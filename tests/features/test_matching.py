"""Appearance distances and correspondences against a direct loop."""

import numpy as np
import torch

from catpose.features.matching import appearance_correspondences, appearance_distance


def test_appearance_distance_matches_a_loop(device):
    rng = np.random.default_rng(0)
    K, N, L, M, C = 3, 7, 2, 5, 4
    fa, fb = rng.normal(size=(K, N, C)), rng.normal(size=(L, M, C))
    va, vb = rng.random((K, N)) > 0.3, rng.random((L, M)) > 0.3
    va[:, 0] = False  # never visible
    ref = np.full((N, M), np.inf)
    for i in range(N):
        for j in range(M):
            for k in range(K):
                for l in range(L):
                    if va[k, i] and vb[l, j]:
                        ref[i, j] = min(ref[i, j], np.linalg.norm(fa[k, i] - fb[l, j]))
    t = lambda a: torch.tensor(a, device=device)
    A = appearance_distance(t(fa).float(), t(va), t(fb).float(), t(vb), chunk=4).cpu().numpy()
    np.testing.assert_allclose(A, ref, rtol=1e-4, atol=1e-4)
    psi, psi_bar = appearance_correspondences(torch.tensor(A))
    fin = np.isfinite(ref).any(1)
    np.testing.assert_array_equal(psi.numpy()[fin], ref.argmin(1)[fin])
    np.testing.assert_array_equal(psi_bar.numpy(), np.where(np.isfinite(ref).any(0), ref.argmin(0), 0))
