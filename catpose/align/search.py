"""Search for the similarity T = (s, R, t) that minimises the alignment cost D of one pair.

1. Normalise both clouds: centre (centroid) and scale (diameter) — the rotation is what is unknown.
2. Coarse: evaluate D over a uniform grid of rotations (super-Fibonacci spirals, Alexa 2022) in
   batches, on farthest-point subsamples of both clouds: all rotations on small subsets
   (``prefilter_vertices``), then the best ``prefilter_keep`` on larger ones (``coarse_vertices``).
3. Refine the best few: iteratively reweighted, weighted Procrustes (Umeyama with scale, ``roma``) on
   the four terms' correspondences (χ, ψ, ψ̄ and the backward nearest neighbours) with the cost's
   weights divided by the current distances (so the iterations minimise the sum of distances, as
   D does), keeping a step only when D decreases.
4. Return T in the videos' own coordinates: ``x_ref = s·R·x + t``.
"""

from __future__ import annotations

import numpy as np
import roma
import torch

from catpose.align.cost import PairTerms, alignment_cost, pair_terms
from catpose.align.table import Alignment
from catpose.config import SearchConfig
from catpose.features.matching import appearance_distance
from catpose.features.surface import SurfaceFeatures
from catpose.geometry import apply_similarity, farthest_point_sample, so3_grid


def _normalise(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = V.mean(0)
    d = (V - c).norm(dim=-1).max() * 2
    return (V - c) / d, c, d


def _subset(terms: PairTerms, n: int) -> PairTerms:
    """The pair restricted to FPS subsets; correspondences follow each vertex to its nearest kept one."""
    i_src = torch.as_tensor(
        farthest_point_sample(terms.V.cpu().numpy(), n).astype(np.int64), device=terms.V.device
    )
    i_ref = torch.as_tensor(
        farthest_point_sample(terms.Vbar.cpu().numpy(), n).astype(np.int64), device=terms.V.device
    )
    near_ref = torch.cdist(terms.Vbar, terms.Vbar[i_ref]).argmin(1)  # full ref index -> subset index
    near_src = torch.cdist(terms.V, terms.V[i_src]).argmin(1)
    return PairTerms(
        terms.V[i_src],
        terms.Vbar[i_ref],
        near_ref[terms.psi[i_src]],
        near_src[terms.psi_bar[i_ref]],
        terms.w_geo[i_src],
        terms.w_geo_bar[i_ref],
        terms.w_app[i_src],
        terms.w_app_bar[i_ref],
        terms.diam_bar,
    )


def coarse_search(terms: PairTerms, rotations: torch.Tensor, alpha: float, batch: int = 0) -> torch.Tensor:
    """D for every rotation (scale 1, no translation: both clouds are normalised) → [n_rot].

    ``batch=0`` sizes the batches to the device: the [B, N, M] distance tensor stays near 8 MB on a CPU
    (cache-resident; measured best here) and near 1 GB on a GPU.
    """
    if batch <= 0:
        budget = 2**28 if terms.V.device.type == "cuda" else 2**21
        batch = max(1, budget // (len(terms.V) * len(terms.Vbar)))
    out = []
    one = torch.ones(1, device=terms.V.device)
    zero = torch.zeros(1, 3, device=terms.V.device)
    for s in range(0, len(rotations), batch):
        Rb = rotations[s:s + batch]
        TV = apply_similarity(terms.V, one.expand(len(Rb)), Rb, zero.expand(len(Rb), 3))
        out.append(alignment_cost(TV, terms, alpha))
    return torch.cat(out)


def refine(terms: PairTerms, R: torch.Tensor, alpha: float, iters: int = 15) -> tuple[torch.Tensor, ...]:
    """IRLS weighted Procrustes from rotation R; returns (s, R, t, D)."""
    V, Vbar = terms.V, terms.Vbar
    s = torch.ones((), device=V.device)
    t = torch.zeros(3, device=V.device)
    best = (s, R, t, alignment_cost(apply_similarity(V, s[None], R[None], t[None]), terms, alpha)[0])
    for _ in range(iters):
        TV = s * V @ R.T + t
        d = torch.cdist(TV, Vbar)
        chi = d.argmin(1)  # nearest reference vertex of each source vertex
        chi_bar = d.argmin(0)  # nearest source vertex of each reference vertex
        src = torch.cat([V, V[chi_bar], V, V[terms.psi_bar]])
        dst = torch.cat([Vbar[chi], Vbar, Vbar[terms.psi], Vbar])
        w = torch.cat([(1 - alpha) * terms.w_geo, (1 - alpha) * terms.w_geo_bar,
                       alpha * terms.w_app, alpha * terms.w_app_bar])
        resid = (s * src @ R.T + t - dst).norm(dim=-1)
        w = w / resid.clamp_min(1e-3 * terms.diam_bar)  # IRLS: squared loss reweighted to the L1 of D
        if w.sum() <= 0:
            break
        R_new, t_new, s_new = roma.rigid_points_registration(src, dst, weights=w, compute_scaling=True)
        D = alignment_cost(apply_similarity(V, s_new[None], R_new[None], t_new[None]), terms, alpha)[0]
        if D >= best[3] - 1e-7:
            break
        s, R, t = s_new, R_new, t_new
        best = (s, R, t, D)
    return best


def subsample_vertices(sf: SurfaceFeatures, n: int, exact: bool = False) -> np.ndarray:
    """Indices of at most ``n`` of a video's vertices (farthest point sampling, deterministic; ``exact``:
    the greedy sequence the GPU preparation computes, see ``farthest_point_sample``)."""
    if n <= 0 or len(sf.vertices) <= n:
        return np.arange(len(sf.vertices))
    return np.asarray(farthest_point_sample(sf.vertices, n, exact=exact), dtype=np.int64)


def align_pair(src: SurfaceFeatures, ref: SurfaceFeatures, cfg: SearchConfig | None = None,
               device: str = "cpu", rotations: torch.Tensor | None = None) -> Alignment:
    """Aligns the source video to the reference video (see the module docstring)."""
    cfg = cfg or SearchConfig()
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    i, j = subsample_vertices(src, cfg.vertices), subsample_vertices(ref, cfg.vertices)
    A = appearance_distance(
        t(src.features[:, i]), t(src.visible[:, i]), t(ref.features[:, j]), t(ref.visible[:, j])
    )
    V, c, d = _normalise(t(src.vertices[i]).float())
    Vbar, cbar, dbar = _normalise(t(ref.vertices[j]).float())
    terms = pair_terms(V, Vbar, A, cfg.tau, cfg.tau)
    coarse = _subset(terms, cfg.coarse_vertices) if cfg.coarse_vertices < max(len(V), len(Vbar)) else terms
    if rotations is None:
        rotations = so3_grid(cfg.rotations, device=device)
    rotations = rotations.to(device)
    if cfg.prefilter_vertices and 0 < cfg.prefilter_keep < len(rotations):
        # a first pass over all rotations on smaller subsets; the best prefilter_keep are scored again
        pre = _subset(terms, cfg.prefilter_vertices)
        keep = (
            coarse_search(pre, rotations, cfg.alpha, cfg.batch)
            .topk(cfg.prefilter_keep, largest=False)
            .indices
        )
        D = torch.full((len(rotations),), float("inf"), device=device)
        D[keep] = coarse_search(coarse, rotations[keep], cfg.alpha, cfg.batch)
    else:
        D = coarse_search(coarse, rotations, cfg.alpha, cfg.batch)
    cands = rotations[D.topk(min(cfg.top_k, len(D)), largest=False).indices]
    best = None
    for R0 in cands:
        res = refine(terms, R0, cfg.alpha, cfg.refine_iters)
        if best is None or res[3] < best[3]:
            best = res
    s_n, R_n, t_n, cost = best
    # back to the videos' coordinates: x_ref = dbar·(s_n R_n (x − c)/d + t_n) + cbar
    scale = float(dbar * s_n / d)
    R = R_n.double().cpu().numpy()
    tt = (dbar * t_n + cbar).double().cpu().numpy() - scale * R @ c.double().cpu().numpy()
    return Alignment(R, tt, scale, float(cost))
