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
    a = fa.float().reshape(K * N, C)
    b = fb.float().reshape(L * M, C)
    a2 = (a * a).sum(-1)
    b2 = (b * b).sum(-1)
    inf = torch.tensor(float("inf"), device=a.device)
    b_invalid = ~vb.reshape(L * M)
    out = torch.full((N, M), float("inf"), device=a.device)
    # rows are (k, i) pairs; process all k of a block of vertices at once
    rows_per = max(1, chunk // K)
    for i0 in range(0, N, rows_per):
        i1 = min(N, i0 + rows_per)
        ai = fa[:, i0:i1].float().reshape(-1, C)  # [K*(i1-i0), C]
        d2 = (ai * ai).sum(-1)[:, None] + b2[None] - 2.0 * ai @ b.T  # [K*n, L*M]
        d2 = torch.where(b_invalid[None], inf, d2)
        d2 = torch.where(~va[:, i0:i1].reshape(-1)[:, None], inf, d2)
        d2 = d2.reshape(K, i1 - i0, L, M).amin(dim=(0, 2))
        out[i0:i1] = d2.clamp_min(0).sqrt()
    return out


def appearance_correspondences(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ψ`` [N] (source → reference) and ``ψ̄`` [M] (reference → source) from A [N, M]."""
    return A.argmin(dim=1), A.argmin(dim=0)
