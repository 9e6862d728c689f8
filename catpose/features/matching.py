"""Appearance correspondences between two videos' surface features (pure batched torch).

For source features ``f_i^k`` (K frames, N vertices) and reference features ``f̄_j^l`` (L frames,
M vertices), the appearance distance is ``A[i, j] = min_{k,l} ||f_i^k − f̄_j^l||`` over the frames in
which each vertex is visible (∞ where a vertex is never visible), and the appearance correspondence
is ``ψ(i) = argmin_j A[i, j]`` (and ``ψ̄(j) = argmin_i A[i, j]`` the other way).
"""

from __future__ import annotations

import torch


def appearance_distance(fa: torch.Tensor, va: torch.Tensor, fb: torch.Tensor, vb: torch.Tensor,
                        chunk: int = 4096) -> torch.Tensor:
    """``A[i, j] = min_{k,l} ||f_i^k − f̄_j^l||``.

    fa [K, N, C], va [K, N] bool; fb [L, M, C], vb [L, M] bool. Returns A [N, M] (float32, ∞ where
    vertex i or j is never visible). One matmul over all frame pairs, in chunks of rows.
    """
    K, N, C = fa.shape
    L, M, _ = fb.shape
    b = fb.float().reshape(L * M, C)
    # invisible entries get an infinite squared norm, so every distance involving them is infinite
    b2 = torch.where(vb.reshape(L * M), (b * b).sum(-1), torch.tensor(float("inf"), device=b.device))
    out = torch.empty((N, M), device=b.device)
    rows_per = max(1, chunk // K)  # all K frames of a block of vertices at once
    for i0 in range(0, N, rows_per):
        i1 = min(N, i0 + rows_per)
        ai = fa[:, i0:i1].float().reshape(-1, C)  # [K*n, C]
        a2 = torch.where(
            va[:, i0:i1].reshape(-1), (ai * ai).sum(-1), torch.tensor(float("inf"), device=b.device)
        )
        d2 = torch.addmm(b2[None], ai, b.T, alpha=-2.0)  # |b|^2 - 2 a.b  [K*n, L*M]
        d2.add_(a2[:, None])
        out[i0:i1] = d2.view(K, i1 - i0, L, M).amin(dim=(0, 2))
    return out.clamp_min_(0).sqrt_()


def appearance_correspondences(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ψ`` [N] (source → reference) and ``ψ̄`` [M] (reference → source) from A [N, M]."""
    return A.argmin(dim=1), A.argmin(dim=0)
