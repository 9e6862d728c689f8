"""The batched alignment engine: a chunk of P pairs aligned in one call.

Same method and result as :func:`catpose.align.search.align_pair` (the per-pair reference the tests
compare against), organised for throughput:

1. **Per-video state, once** (:mod:`catpose.align.videos`: video_arrays on the CPU, upload_video on the
device; the
   Ray task keeps it for later chunks): the farthest-point subset of ``SearchConfig.vertices``
   vertices, normalised (centroid ``c``, scale ``d``), ``diam(V)``, the coarse and prefilter subsets and
   the map of every vertex to its nearest kept vertex, the visible (frame, vertex) features on the
   device with their squared norms. A chunk's videos are padded to its largest sizes
   (:func:`stack_videos`): padded vertices copy vertex 0 (so no nearest-neighbour minimum changes)
   with weight 0, padded feature rows have an infinite norm.
2. **Appearance distances** ``A[p, i, j] = min_{k,l} ||f_i^k − f̄_j^l||`` for all pairs in batched
   matmuls of the visible rows (``‖a‖² + ‖b‖² − 2abᵀ``) with a scatter-min onto the vertices, blocks
   sized to the device; float32 (fp16 products flip near-tied ψ on the GPU: measured, not exact enough).
3. **Pair terms** ``ψ, ψ̄, d_cycle, σ`` for all pairs at once (:func:`batched_terms`).
4. **Coarse search** of every pair × every grid rotation: ``D`` on the 64-vertex prefilter subsets for
   all rotations, then on the 128-vertex coarse subsets for each pair's best ``prefilter_keep`` (the
   squared distances of all rotations come from one GEMM, see :func:`batched_coarse_cost`, reduced
   with ``amin``); the ``top_k`` rotations kept per pair.
5. **Refinement** of all pairs × ``top_k`` hypotheses together: IRLS weighted Procrustes (Umeyama with
   scale, ``roma``, the 3×3 steps in float64) for a fixed number of iterations; a per-hypothesis
   "still improving" mask replaces the reference's ``break`` (a step is kept only while ``D`` decreases,
   and a hypothesis that failed to improve once stays frozen, exactly as the reference stops), with no
   Python-side synchronisation inside the loop on a GPU (on a CPU, where a sync is free, only the
   still-improving hypotheses are computed). The best hypothesis by ``D`` is returned per pair.

Shapes: P pairs, H hypotheses (rotations), N source / M reference vertices (padded), Q visible feature
rows per video, C channels. Plain torch: the same code runs on the CPU (demo, CI) and on CUDA.

On CUDA (with Triton), the hot loops run as the fused kernels of :mod:`catpose.align.fused` instead —
the appearance GEMM and minimum, the coarse cost, the refinement's nearest neighbours, FPS — and the
per-video state of many videos is prepared together on the device (:func:`prepare_states`, features in
a vertex-major layout); the weighted Procrustes fit is :func:`weighted_similarity`. The plain-torch
functions stay the CPU path and the reference these are tested against (``tests/align/test_fused.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import roma
import torch

from catpose.align import fused
from catpose.align.search import Alignment
from catpose.align.videos import (  # noqa: F401 (the per-video state; names kept importable from here)
    Subset,
    VideoBatch,
    VideoState,
    _sqdist,
    _stack_subset,
    farthest_points,
    prepare_states,
    prepare_videos,
    stack_videos,
    upload_video,
    video_arrays,
    video_arrays_many,
)
from catpose.config import SearchConfig
from catpose.features.surface import SurfaceFeatures
from catpose.geometry import so3_grid

# --------------------------------------------------------------------------------------------------
# batched pure functions


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[p, idx[p, ...]]`` for x [P, n, 3] and idx [P, ...] → [P, ..., 3]."""
    flat = idx.reshape(idx.shape[0], -1)
    out = torch.gather(x, 1, flat[..., None].expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


def batched_appearance_distance(vb: VideoBatch, ia: torch.Tensor, ib: torch.Tensor,
                                budget: int | None = None) -> torch.Tensor:
    """``A[p, i, j] = min_{k,l} ||f_i^k − f̄_j^l||`` for pairs (ia[p] → ib[p]) → [P, N, N] float32.

    ∞ where a vertex is never visible. Only visible (frame, vertex) rows are multiplied (``baddbmm``
    of [p, Q, C] × [p, C, Q]); the minimum over frames is a scatter-min onto the vertices. Blocks of
    pairs keep the [p, Q, Q] product near ``budget`` elements (default: 2^28 on a GPU, 2^22 on a CPU).
    """
    N = vb.V.shape[1]
    if vb.k:
        return _appearance_vertex_major(vb, ia, ib, budget)
    Q = vb.F.shape[1]
    if budget is None:
        budget = 2**28 if vb.F.device.type == "cuda" else 2**22
    step = max(1, budget // (Q * Q))
    out = torch.empty((len(ia), N, N), device=vb.F.device)
    for s in range(0, len(ia), step):
        a_i, b_i = ia[s:s + step], ib[s:s + step]
        p = len(a_i)
        fa, fb = vb.F[a_i], vb.F[b_i]
        if fa.dtype == torch.float16 and fa.device.type != "cuda":
            fa, fb = fa.float(), fb.float()
        d2 = torch.bmm(fa, fb.transpose(1, 2)).float()  # [p, Q, Q]
        d2.mul_(-2.0).add_(vb.f2[b_i][:, None, :]).add_(vb.f2[a_i][:, :, None])
        inf = torch.full((), float("inf"), device=d2.device)
        cols = (
            inf.expand(p, Q, N)
            .contiguous()
            .scatter_reduce_(2, vb.fv[b_i][:, None, :].expand(p, Q, Q), d2, "amin")
        )
        out[s:s + p] = inf.expand(p, N, N).contiguous().scatter_reduce_(
            1, vb.fv[a_i][:, :, None].expand(p, Q, N), cols, "amin")
    return out.clamp_min_(0).sqrt_()


def _appearance_vertex_major(vb: VideoBatch, ia: torch.Tensor, ib: torch.Tensor, budget: int | None = None
                             ) -> torch.Tensor:
    """:func:`batched_appearance_distance` for vertex-major features (``vb.k`` frames per vertex, rows
    i·k + frame): the fused kernel on CUDA (fp16 operands, fp32 accumulation), else a batched matmul and
    a minimum over the frame axes (the reference of the kernel's tests) → [P, N, N] float32."""
    N, K = vb.V.shape[1], vb.k
    if fused.available(vb.F.device) and vb.F.dtype == torch.float16 and K <= 128:
        return fused.appearance_min(vb.F, vb.f2, ia, ib, K, N)
    if budget is None:
        budget = 2**28 if vb.F.device.type == "cuda" else 2**22
    rows = N * K
    step = max(1, budget // (rows * rows))
    out = torch.empty((len(ia), N, N), device=vb.F.device)
    for s in range(0, len(ia), step):
        a_i, b_i = ia[s:s + step], ib[s:s + step]
        p = len(a_i)
        fa, fb = vb.F[a_i, :rows].float(), vb.F[b_i, :rows].float()
        d2 = torch.bmm(fa, fb.transpose(1, 2))
        d2.mul_(-2.0).add_(vb.f2[b_i, None, :rows]).add_(vb.f2[a_i, :rows, None])
        out[s:s + p] = d2.view(p, N, K, N, K).amin(dim=(2, 4))
    return out.clamp_min_(0).sqrt_()


@dataclass
class BatchTerms:
    """Everything about P pairs that does not depend on T (the batched :class:`PairTerms`)."""

    V: torch.Tensor  # [P, N, 3] source, normalised
    Vbar: torch.Tensor  # [P, M, 3] reference, normalised
    psi: torch.Tensor  # [P, N] long, ψ
    psi_bar: torch.Tensor  # [P, M] long, ψ̄
    w_geo: torch.Tensor  # [P, N] σ of the geometric terms (0 on padding)
    w_geo_bar: torch.Tensor  # [P, M]
    w_app: torch.Tensor  # [P, N] σ of the appearance terms (0 on padding)
    w_app_bar: torch.Tensor  # [P, M]
    diam_bar: torch.Tensor  # [P] diam(V̄)
    points: torch.Tensor  # [P] 2N + 2M with the real counts (the mean of D)

    def select(self, idx) -> BatchTerms:
        return BatchTerms(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def _cycle_weights(d_cycle: torch.Tensor, valid: torch.Tensor, tau: float) -> torch.Tensor:
    """``σ = exp(−d_cycle / τ)`` normalised to mean 1 over the real vertices [P, N] (1 if the mean is bad)."""
    w = torch.exp(-d_cycle / tau) if tau != float("inf") else torch.isfinite(d_cycle).to(d_cycle.dtype)
    w = torch.where(valid, w, torch.zeros_like(w))
    m = w.sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
    good = torch.isfinite(m) & (m > 0)
    return torch.where(good, w / torch.where(good, m, torch.ones_like(m)), torch.ones_like(w))


def batched_terms(vb: VideoBatch, ia: torch.Tensor, ib: torch.Tensor, A: torch.Tensor, tau_geo: float,
                  tau_app: float) -> BatchTerms:
    """ψ, ψ̄, cycle distances and σ for pairs (ia → ib) from their appearance distances A [P, N, M]."""
    V, Vbar = vb.V[ia], vb.V[ib]
    valid, valid_bar = vb.valid[ia], vb.valid[ib]
    psi, psi_bar = A.argmin(dim=2), A.argmin(dim=1)
    seen = torch.isfinite(A.amin(dim=2)) & valid
    seen_bar = torch.isfinite(A.amin(dim=1)) & valid_bar
    inf = torch.tensor(float("inf"), device=V.device)
    cyc = torch.gather(psi_bar, 1, psi)  # ψ̄(ψ(i))
    cyc_bar = torch.gather(psi, 1, psi_bar)  # ψ(ψ̄(j))
    d = (V - _gather(V, cyc)).norm(dim=-1) / vb.diam[ia][:, None]
    dbar = (Vbar - _gather(Vbar, cyc_bar)).norm(dim=-1) / vb.diam[ib][:, None]
    d, dbar = torch.where(seen, d, inf), torch.where(seen_bar, dbar, inf)
    app, app_bar = _cycle_weights(d, valid, tau_app), _cycle_weights(dbar, valid_bar, tau_app)
    one = torch.ones_like(d)
    geo = torch.where(seen, _cycle_weights(d, valid, tau_geo), one)
    geo_bar = torch.where(seen_bar, _cycle_weights(dbar, valid_bar, tau_geo), torch.ones_like(dbar))
    z, zb = torch.zeros_like(d), torch.zeros_like(dbar)
    return BatchTerms(V, Vbar, psi, psi_bar, torch.where(valid, geo, z), torch.where(valid_bar, geo_bar, zb),
                      torch.where(valid, app, z), torch.where(valid_bar, app_bar, zb), vb.diam[ib],
                      (2 * vb.count[ia] + 2 * vb.count[ib]).float())


def coarse_terms(
    vb: VideoBatch, ia: torch.Tensor, ib: torch.Tensor, t: BatchTerms, level: int = 0
) -> BatchTerms:
    """The pairs restricted to a subset (``level`` 0: the coarse subsets, 1: the prefilter's);
    correspondences follow each vertex to its nearest kept vertex (as the reference's ``_subset``)."""
    S = vb.subs[level]
    sa, sb = S.idx[ia], S.idx[ib]
    va, vbv = S.valid[ia], S.valid[ib]
    near_a, near_b = S.near[ia], S.near[ib]
    psi = torch.gather(near_b, 1, torch.gather(t.psi, 1, sa))
    psi_bar = torch.gather(near_a, 1, torch.gather(t.psi_bar, 1, sb))
    g = lambda w, s, m: torch.where(m, torch.gather(w, 1, s), torch.zeros_like(s, dtype=w.dtype))
    return BatchTerms(
        _gather(t.V, sa),
        _gather(t.Vbar, sb),
        psi,
        psi_bar,
        g(t.w_geo, sa, va),
        g(t.w_geo_bar, sb, vbv),
        g(t.w_app, sa, va),
        g(t.w_app_bar, sb, vbv),
        t.diam_bar,
        (2 * S.count[ia] + 2 * S.count[ib]).float(),
    )


def batched_cost(
    TV: torch.Tensor, t: BatchTerms, alpha: float, nearest: bool = False, budget: int | None = None
):
    """``D(T)`` for H transformed source clouds per pair: TV [P, H, N, 3] → [P, H].

    The mean over the 2N + 2M real points of ``(1 − α)·σ_geo·d_geo + α·σ_app·d_app``, distances in
    units of diam(V̄) (padding carries weight 0 and copies a real vertex, so it changes no minimum).
    With ``nearest=True`` also returns χ [P, H, N] (nearest reference vertex of each transformed source
    vertex) and the backward nearest source vertex of each reference vertex [P, H, M]. Pairs are taken
    in blocks whose [p, H, N, M] distances stay near ``budget`` elements (default: 2^28 on a GPU; 2^20
    on a CPU, where the distances then stay in cache: the nearest-neighbour passes are memory-bound).
    """
    P, H, N, _ = TV.shape
    M = t.Vbar.shape[1]
    if budget is None:
        budget = 2**28 if TV.device.type == "cuda" else 2**20
    pb = max(1, budget // (H * N * M))
    geo_f = TV.new_empty((P, H, N))
    geo_b = TV.new_empty((P, H, M))
    chi = torch.empty((P, H, N), dtype=torch.long, device=TV.device)
    chi_bar = torch.empty((P, H, M), dtype=torch.long, device=TV.device)
    on_cpu = TV.device.type == "cpu"
    if fused.available(TV.device):  # nearest neighbours both ways without the [P, H, N, M] distances
        d, i = fused.nearest(TV.reshape(P * H, N, 3), t.Vbar, 1, H)
        geo_f.copy_(d.view(P, H, N))
        chi.copy_(i.view(P, H, N))
        d, i = fused.nearest(t.Vbar, TV.reshape(P * H, N, 3), H, 1)
        geo_b.copy_(d.view(P, H, M))
        chi_bar.copy_(i.view(P, H, M))
    else:
        for p0 in range(0, P, pb):
            p1 = min(P, p0 + pb)
            d2 = _sqdist(TV[p0:p1].reshape(p1 - p0, H * N, 3), t.Vbar[p0:p1]).view(p1 - p0, H, N, M)
            if not nearest:
                torch.amin(d2, dim=3, out=geo_f[p0:p1])
                torch.amin(d2, dim=2, out=geo_b[p0:p1])
            elif on_cpu:
                # torch's CPU min-with-indices is ~7x slower than numpy's vectorised argmin over the last
                # axis, so both directions are laid out with the reduced axis last
                chi[p0:p1] = torch.from_numpy(np.argmin(d2.numpy(), axis=3))  # χ
                geo_f[p0:p1] = torch.gather(d2, 3, chi[p0:p1, ..., None])[..., 0]
                d2t = _sqdist(t.Vbar[p0:p1], TV[p0:p1].reshape(p1 - p0, H * N, 3)).view(p1 - p0, M, H, N)
                cb = torch.from_numpy(np.argmin(d2t.numpy(), axis=3))  # [p, M, H]
                chi_bar[p0:p1] = cb.transpose(1, 2)
                geo_b[p0:p1] = torch.gather(d2t, 3, cb[..., None])[..., 0].transpose(1, 2)
            else:
                torch.min(d2, dim=3, out=(geo_f[p0:p1], chi[p0:p1]))  # χ
                torch.min(d2, dim=2, out=(geo_b[p0:p1], chi_bar[p0:p1]))
    app_f = (TV - _gather(t.Vbar, t.psi)[:, None]).norm(dim=-1)  # [P, H, N]
    TVb = torch.gather(TV, 2, t.psi_bar[:, None, :, None].expand(P, H, M, 3))
    app_b = (t.Vbar[:, None] - TVb).norm(dim=-1)  # [P, H, M]
    D = _combine(geo_f.clamp_min_(0).sqrt_(), geo_b.clamp_min_(0).sqrt_(), app_f, app_b, t, alpha)
    return (D, chi, chi_bar) if nearest else D


def _combine(geo_f, geo_b, app_f, app_b, t: BatchTerms, alpha: float) -> torch.Tensor:
    """D from the four per-point distances ([P, H, N] or [P, H, M] each) and the pairs' weights."""
    geo = (t.w_geo[:, None] * geo_f).sum(-1) + (t.w_geo_bar[:, None] * geo_b).sum(-1)
    app = (t.w_app[:, None] * app_f).sum(-1) + (t.w_app_bar[:, None] * app_b).sum(-1)
    return ((1 - alpha) * geo + alpha * app) / (t.diam_bar * t.points)[:, None]


def batched_coarse_cost(
    t: BatchTerms,
    rotations: torch.Tensor,
    alpha: float,
    candidates: torch.Tensor | None = None,
    budget: int | None = None,
) -> torch.Tensor:
    """D of every pair for every rotation (scale 1, no translation) → [P, R], or for each pair's own
    ``candidates`` [P, Rc] (indices into ``rotations``) → [P, Rc].

    Every squared distance the cost needs — all (i, j) for χ and the backward nearest neighbours, and
    the (i, ψ(i)) and (ψ̄(j), j) pairs of the appearance terms — is ``‖Rx − y‖² = ‖x‖² + ‖y‖² −
    2·Σ_ab R_ab·y_a·x_b``: one GEMM of the rotations [R, 10] (R flattened, and a 1) with per-pair
    columns [10, Z] (−2·y xᵀ flattened, and ‖x‖² + ‖y‖²), Z = N·M + N + M. Blocks of pairs ×
    rotations keep the [p, r, Z] block near ``budget`` elements (default: 2^28 on a GPU, 2^19 on a
    CPU, where a cache-resident block measured fastest).
    """
    P, N, _ = t.V.shape
    M = t.Vbar.shape[1]
    dev = t.V.device
    if fused.available(dev) and max(N, M) <= 256:  # distances and their minima in registers
        return fused.coarse_cost(
            t.V,
            t.Vbar,
            _gather(t.Vbar, t.psi),
            _gather(t.V, t.psi_bar),
            t.w_geo,
            t.w_geo_bar,
            t.w_app,
            t.w_app_bar,
            1.0 / (t.diam_bar * t.points),
            rotations,
            alpha,
            candidates,
        )
    if budget is None:
        budget = 2**28 if dev.type == "cuda" else 2**19
    x = torch.cat([t.V[:, :, None].expand(P, N, M, 3).reshape(P, N * M, 3), t.V, _gather(t.V, t.psi_bar)], 1)
    y = torch.cat(
        [t.Vbar[:, None].expand(P, N, M, 3).reshape(P, N * M, 3), _gather(t.Vbar, t.psi), t.Vbar], 1
    )
    Z = x.shape[1]
    cols = torch.cat([(-2.0 * y[..., :, None] * x[..., None, :]).reshape(P, Z, 9),
                      (x.square().sum(-1) + y.square().sum(-1))[..., None]], -1).transpose(1, 2)  # [P, 10, Z]
    nr = len(rotations)
    Rm = torch.cat(
        [rotations.reshape(nr, 9).to(cols.dtype), torch.ones(nr, 1, device=dev, dtype=cols.dtype)], 1
    )
    if candidates is not None:
        Rm = Rm[candidates]  # [P, Rc, 10]: each pair its own rotations
    nc = Rm.shape[-2]
    geo_cols, app_cols = cols[..., :N * M].contiguous(), cols[..., N * M:].contiguous()
    rb = min(nc, max(1, budget // (N * M)))
    pb = max(1, budget // (rb * N * M))
    D = torch.empty((P, nc), device=dev)
    for p0 in range(0, P, pb):
        sel = t.select(slice(p0, p0 + pb))
        Rp = Rm if candidates is None else Rm[p0:p0 + pb]
        app = torch.matmul(Rp, app_cols[p0:p0 + pb]).clamp_min_(0).sqrt_()  # [p, R, N + M], all rotations
        for r0 in range(0, nc, rb):
            # [p, r, N, M]
            g = torch.matmul(Rp[..., r0:r0 + rb, :], geo_cols[p0:p0 + pb]).unflatten(-1, (N, M))
            a = app[:, r0:r0 + rb]
            D[p0 : p0 + pb, r0 : r0 + rb] = _combine(
                g.amin(3).clamp_min_(0).sqrt_(),
                g.amin(2).clamp_min_(0).sqrt_(),
                a[..., :N],
                a[..., N:],
                sel,
                alpha,
            )
    return D


def batched_coarse_search(t: BatchTerms, rotations: torch.Tensor, alpha: float, top_k: int,
                          budget: int | None = None, prefilter: BatchTerms | None = None, keep: int = 0
                          ) -> torch.Tensor:
    """Indices [P, top_k] of the rotations with the lowest coarse D per pair.

    With ``prefilter`` (the pairs on smaller subsets) and ``0 < keep < R``: D of all rotations on the
    prefilter subsets, then D of each pair's ``keep`` best of them on the coarse subsets ``t``.
    """
    nr = len(rotations)
    if prefilter is not None and 0 < keep < nr:
        cand = (
            batched_coarse_cost(prefilter, rotations, alpha, None, budget)
            .topk(keep, dim=1, largest=False)
            .indices
        )
        D = batched_coarse_cost(t, rotations, alpha, cand, budget)
        return torch.gather(cand, 1, D.topk(min(top_k, keep), dim=1, largest=False).indices)
    D = batched_coarse_cost(t, rotations, alpha, None, budget)
    return D.topk(min(top_k, nr), dim=1, largest=False).indices


def _apply(V: torch.Tensor, s: torch.Tensor, R: torch.Tensor, tr: torch.Tensor) -> torch.Tensor:
    """``s·R·v + t``: V [P, N, 3] (or [P, H, N, 3]), s [P, H], R [P, H, 3, 3], tr [P, H, 3] → [P, H, N, 3]."""
    if V.dim() == 3:
        V = V[:, None]
    # a batched matmul: einsum chose thousands of small GEMV kernels on the GPU (measured)
    return torch.matmul(V, R.transpose(-1, -2)).mul_(s[..., None, None]).add_(tr[:, :, None])


def weighted_similarity(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted Umeyama fit with scale: (R [B, 3, 3], t [B, 3], s [B]) minimising
    ``Σ w·‖s·R·src + t − dst‖²`` for src, dst [B, n, 3] and w [B, n] (any leading batch shape).

    The weighted means and the 3×3 cross-covariance are float32 batched reductions (matmuls over the
    points); the SVD and everything after it are float64. Same optimum as roma's Horn-quaternion
    solution (``roma.rigid_points_registration(..., compute_scaling=True)``, the CPU path)."""
    lead = src.shape[:-2]
    x, y, w = src.reshape(-1, *src.shape[-2:]), dst.reshape(-1, *dst.shape[-2:]), w.reshape(-1, w.shape[-1])
    wn = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
    mx = torch.bmm(wn[:, None], x)[:, 0]  # [B, 3]
    my = torch.bmm(wn[:, None], y)[:, 0]
    xc, yc = x - mx[:, None], y - my[:, None]
    cov = torch.bmm((yc * wn[..., None]).transpose(1, 2), xc).double()  # Σ w (y − ȳ)(x − x̄)ᵀ  [B, 3, 3]
    var = (wn * xc.square().sum(-1)).sum(-1).double()
    U, S, Vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(U) * torch.linalg.det(Vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    E = torch.ones_like(S)
    E[:, 2] = sign
    R = (U * E[:, None]) @ Vh
    s = (S * E).sum(-1) / var.clamp_min(1e-30)
    t = my.double() - s[:, None] * (R @ mx.double()[..., None])[..., 0]
    return R.reshape(*lead, 3, 3), t.reshape(*lead, 3), s.reshape(lead)


def _irls_step(t: BatchTerms, s, R, tr, chi, chi_bar, alpha: float):
    """One IRLS Procrustes step for hypotheses (s [P, H], R, tr) with current nearest neighbours
    χ [P, H, N] and χ̄ [P, H, M]: the weighted Umeyama fit (float64) of the four terms'
    correspondences, weights σ / max(residual, 10⁻³·diam(V̄)). Returns (s, R, t, D, χ, χ̄, usable)."""
    P, H = s.shape
    N, M = t.V.shape[1], t.Vbar.shape[1]
    w_base = torch.cat(
        [(1 - alpha) * t.w_geo, (1 - alpha) * t.w_geo_bar, alpha * t.w_app, alpha * t.w_app_bar], 1
    )
    Vh = t.V[:, None].expand(P, H, N, 3)
    Vbh = t.Vbar[:, None].expand(P, H, M, 3)
    src = torch.cat([Vh, torch.gather(Vh, 2, chi_bar[..., None].expand(P, H, M, 3)), Vh,
                     _gather(t.V, t.psi_bar)[:, None].expand(P, H, M, 3)], dim=2)
    dst = torch.cat([torch.gather(Vbh, 2, chi[..., None].expand(P, H, N, 3)), Vbh,
                     _gather(t.Vbar, t.psi)[:, None].expand(P, H, N, 3), Vbh], dim=2)
    resid = (_apply(src, s, R, tr) - dst).norm(dim=-1)
    w = w_base[:, None] / torch.maximum(resid, (1e-3 * t.diam_bar)[:, None, None])
    usable = w.sum(-1) > 0
    if src.device.type == "cuda":  # roma's einsums ran as thousands of GEMV kernels here (profiled)
        R_n, t_n, s_n = weighted_similarity(src, dst, w)
    else:
        R_n, t_n, s_n = roma.rigid_points_registration(src.double(), dst.double(), weights=w.double(),
                                                       compute_scaling=True)
    R_n, t_n, s_n = R_n.to(s.dtype), t_n.to(s.dtype), s_n.to(s.dtype)
    D_n, chi_n, chi_bar_n = batched_cost(_apply(t.V, s_n, R_n, t_n), t, alpha, nearest=True)
    return s_n, R_n, t_n, D_n, chi_n, chi_bar_n, usable


def batched_refine(
    t: BatchTerms, R0: torch.Tensor, alpha: float, iters: int = 15, compact: bool | None = None
):
    """IRLS weighted Procrustes from the rotations R0 [P, H, 3, 3], all hypotheses at once.

    Each iteration forms the four terms' correspondences (χ, backward nearest, ψ, ψ̄), weights them by
    σ divided by the current residual (so the squared-loss fit minimises D's sum of distances), fits
    (s, R, t) by weighted Umeyama in float64, and keeps the step only where D decreased; a hypothesis
    that did not improve stays frozen (the reference's ``break``). On a GPU every iteration runs on all
    hypotheses with masks (no host synchronisation); with ``compact`` (default on a CPU, where a sync
    is free) only the still-improving hypotheses are computed. Returns (s [P, H], R [P, H, 3, 3],
    t [P, H, 3], D [P, H]).
    """
    P, H = R0.shape[:2]
    dev, dt = t.V.device, t.V.dtype
    compact = dev.type != "cuda" if compact is None else compact
    s = torch.ones((P, H), device=dev, dtype=dt)
    R = R0.to(dt)
    tr = torch.zeros((P, H, 3), device=dev, dtype=dt)
    D, chi, chi_bar = batched_cost(_apply(t.V, s, R, tr), t, alpha, nearest=True)
    active = torch.ones((P, H), dtype=torch.bool, device=dev)
    for _ in range(iters):
        if compact:
            idx = active.nonzero()
            if len(idx) == 0:
                break
            pi, hi = idx[:, 0], idx[:, 1]
            s_n, R_n, t_n, D_n, chi_n, chi_bar_n, usable = _irls_step(
                t.select(pi),
                s[pi, hi][:, None],
                R[pi, hi][:, None],
                tr[pi, hi][:, None],
                chi[pi, hi][:, None],
                chi_bar[pi, hi][:, None],
                alpha,
            )
            acc = usable[:, 0] & torch.isfinite(D_n[:, 0]) & (D_n[:, 0] < D[pi, hi] - 1e-7)
            active = torch.zeros_like(active)
            pa, ha = pi[acc], hi[acc]
            active[pa, ha] = True
            s[pa, ha], R[pa, ha], tr[pa, ha], D[pa, ha] = s_n[acc, 0], R_n[acc, 0], t_n[acc, 0], D_n[acc, 0]
            chi[pa, ha], chi_bar[pa, ha] = chi_n[acc, 0], chi_bar_n[acc, 0]
            continue
        s_n, R_n, t_n, D_n, chi_n, chi_bar_n, usable = _irls_step(t, s, R, tr, chi, chi_bar, alpha)
        acc = active & usable & torch.isfinite(D_n) & (D_n < D - 1e-7)
        s = torch.where(acc, s_n, s)
        R = torch.where(acc[..., None, None], R_n, R)
        tr = torch.where(acc[..., None], t_n, tr)
        D = torch.where(acc, D_n, D)
        chi = torch.where(acc[..., None], chi_n, chi)
        chi_bar = torch.where(acc[..., None], chi_bar_n, chi_bar)
        active = acc
    return s, R, tr, D


# --------------------------------------------------------------------------------------------------
# the engine


def chunk_pairs_for_device(device: str | torch.device, cfg: SearchConfig | None = None) -> int:
    """Pairs per engine call that fit the device: hundreds on a GPU (from its free memory), 16 on a CPU."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return 16
    cfg = cfg or SearchConfig()
    free, _ = torch.cuda.mem_get_info(dev)
    # the refinement's [P, top_k, N, M] float32 distances (and a few tensors like it) dominate
    per_pair = 6 * cfg.top_k * cfg.vertices**2 * 4
    return int(max(32, min(1024, free * 0.5 // per_pair)))


def align_pairs(
    videos: list[SurfaceFeatures] | list[VideoState] | VideoBatch,
    pairs: list[tuple[str, str]],
    cfg: SearchConfig | None = None,
    device: str = "cpu",
    rotations: torch.Tensor | None = None,
    block: int | None = None,
) -> list[Alignment]:
    """Aligns every (source, reference) pair of ``pairs`` (names of ``videos``) — the batched
    equivalent of ``[align_pair(src, ref, cfg) for src, ref in pairs]``.

    ``videos`` may also be prepared :class:`VideoState` s (cached across calls) or a :class:`VideoBatch`.
    Pairs are processed
    ``block`` at a time (default: :func:`chunk_pairs_for_device`).
    """
    cfg = cfg or SearchConfig()
    if not pairs:
        return []
    if isinstance(videos, VideoBatch):
        vb = videos
    else:
        videos = list(videos)
        raw = [v for v in videos if not isinstance(v, VideoState)]
        if fused.available(device):  # FPS, normalisation and layout of all of them at once, on the GPU
            prepared = iter(prepare_states(raw, cfg, device))
        else:  # the CPU part of the unprepared videos, in threads
            prepared = (upload_video(a, device) for a in video_arrays_many(raw, cfg))
        vb = stack_videos([v if isinstance(v, VideoState) else next(prepared) for v in videos])
    dev = vb.V.device
    pos = {n: i for i, n in enumerate(vb.names)}
    missing = sorted({n for p in pairs for n in p} - set(pos))
    if missing:
        raise KeyError(f"pairs name videos that were not given: {missing[:5]}")
    if rotations is None:
        rotations = so3_grid(cfg.rotations, device=dev)
    rotations = rotations.to(dev)
    block = block or chunk_pairs_for_device(dev, cfg)
    out: list[Alignment] = []
    for b0 in range(0, len(pairs), block):
        blk = pairs[b0:b0 + block]
        ia = torch.as_tensor([pos[a] for a, _ in blk], device=dev)
        ib = torch.as_tensor([pos[b] for _, b in blk], device=dev)
        A = batched_appearance_distance(vb, ia, ib)
        terms = batched_terms(vb, ia, ib, A, cfg.tau, cfg.tau)
        del A
        nc = vb.subs[0].idx.shape[1]
        budget = cfg.batch * nc * nc if cfg.batch > 0 else None  # cfg.batch: rotations per block
        pre = coarse_terms(vb, ia, ib, terms, 1) if cfg.prefilter_vertices else None
        top = batched_coarse_search(coarse_terms(vb, ia, ib, terms), rotations, cfg.alpha, cfg.top_k, budget,
                                    pre, cfg.prefilter_keep)
        s, R, tr, D = batched_refine(terms, rotations[top], cfg.alpha, cfg.refine_iters)
        best = D.argmin(dim=1)
        ar = torch.arange(len(blk), device=dev)
        s, R, tr, D = s[ar, best], R[ar, best], tr[ar, best], D[ar, best]
        s, R, tr, D = (x.double().cpu().numpy() for x in (s, R, tr, D))
        ia_n, ib_n = ia.cpu().numpy(), ib.cpu().numpy()
        for p in range(len(blk)):
            c, d = vb.centre[ia_n[p]], vb.scale[ia_n[p]]
            cbar, dbar = vb.centre[ib_n[p]], vb.scale[ib_n[p]]
            # back to the videos' coordinates: x_ref = dbar·(s R (x − c)/d + t) + cbar
            scale = float(dbar * s[p] / d)
            Rp = R[p]
            out.append(Alignment(Rp, dbar * tr[p] + cbar - scale * Rp @ c, scale, float(D[p])))
    return out
