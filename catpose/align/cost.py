"""The one-to-one alignment cost, as pure batched torch functions.

Source video ``S = {V, F}`` (N vertices), reference video ``S̄ = {V̄, F̄}`` (M vertices). From the
appearance distances ``A[i, j] = min_{k,l} ||f_i^k − f̄_j^l||`` (:mod:`catpose.features.matching`):

* appearance correspondences ``ψ(i) = argmin_j A[i, j]`` and ``ψ̄(j) = argmin_i A[i, j]``;
* cycle distances ``d_cycle(i) = ||v_i − v_{ψ̄(ψ(i))}|| / diam(V)`` (source) and
  ``d̄_cycle(j) = ||v̄_j − v̄_{ψ(ψ̄(j))}|| / diam(V̄)`` (reference); ∞ for a vertex never seen;
* weights ``σ(i, τ) = exp(−d_cycle(i) / τ)``, divided by their mean over the points of their term
  (so they average 1; ``τ → ∞`` gives uniform weights; a NaN mean gives 1).

For a similarity ``T`` (scale s, rotation R, translation t) applied to V, with distances in units of
``diam(V̄)``, four per-point terms:

* geometric forward  ``d(T v_i, V̄)``  (nearest reference vertex ``χ(v_i)``),
* geometric backward ``d(v̄_j, T V)``,
* appearance forward ``||T v_i − v̄_{ψ(i)}||``,
* appearance backward ``||v̄_j − T v_{ψ̄(j)}||``,

and ``D(T) = mean over the 2N + 2M points of (1 − α)·σ_geo·d_geo + α·σ_app·d_app``. α = 0.2 (geometry
weighted 4× appearance) and a large τ (weak cycle weighting) are the defaults, as the method found best.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def diameter(V: torch.Tensor) -> torch.Tensor:
    """Largest pairwise distance in a cloud [N, 3] (exact; chunked for large N)."""
    best = V.new_zeros(())
    for s in range(0, len(V), 2048):
        best = torch.maximum(best, torch.cdist(V[s:s + 2048], V).max())
    return best


def cycle_distances(V: torch.Tensor, Vbar: torch.Tensor, psi: torch.Tensor, psi_bar: torch.Tensor,
                    seen: torch.Tensor, seen_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``d_cycle`` [N] and ``d̄_cycle`` [M], scale-free; ∞ where a vertex was never seen."""
    inf = torch.tensor(float("inf"), device=V.device, dtype=V.dtype)
    d = (V - V[psi_bar[psi]]).norm(dim=-1) / diameter(V)
    dbar = (Vbar - Vbar[psi[psi_bar]]).norm(dim=-1) / diameter(Vbar)
    return torch.where(seen, d, inf), torch.where(seen_bar, dbar, inf)


def cycle_weights(d_cycle: torch.Tensor, tau: float) -> torch.Tensor:
    """``σ = exp(−d_cycle / τ)`` normalised to mean 1 (``τ = inf``: uniform over seen vertices)."""
    w = torch.exp(-d_cycle / tau) if tau != float("inf") else torch.isfinite(d_cycle).to(d_cycle.dtype)
    m = w.mean()
    if not torch.isfinite(m) or m <= 0:
        return torch.ones_like(w)
    return w / m


@dataclass
class PairTerms:
    """Everything about a (source, reference) pair that does not depend on T."""

    V: torch.Tensor  # [N, 3]
    Vbar: torch.Tensor  # [M, 3]
    psi: torch.Tensor  # [N] long
    psi_bar: torch.Tensor  # [M] long
    w_geo: torch.Tensor  # [N] σ of the source vertices, geometric terms
    w_geo_bar: torch.Tensor  # [M]
    w_app: torch.Tensor  # [N] σ of the source vertices, appearance terms
    w_app_bar: torch.Tensor  # [M]
    diam_bar: torch.Tensor  # scalar: diam(V̄)

    def to(self, device) -> PairTerms:
        return PairTerms(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def pair_terms(V: torch.Tensor, Vbar: torch.Tensor, A: torch.Tensor, tau_geo: float = float("inf"),
               tau_app: float = float("inf")) -> PairTerms:
    """Correspondences and weights from the appearance distances ``A`` [N, M]."""
    psi, psi_bar = A.argmin(dim=1), A.argmin(dim=0)
    seen, seen_bar = torch.isfinite(A.min(dim=1).values), torch.isfinite(A.min(dim=0).values)
    d, dbar = cycle_distances(V, Vbar, psi, psi_bar, seen, seen_bar)
    app, app_bar = cycle_weights(d, tau_app), cycle_weights(dbar, tau_app)
    # geometric terms count every vertex; never-seen vertices have no cycle and get the mean weight 1
    geo = torch.where(seen, cycle_weights(d, tau_geo), torch.ones_like(d))
    geo_bar = torch.where(seen_bar, cycle_weights(dbar, tau_geo), torch.ones_like(dbar))
    return PairTerms(V, Vbar, psi, psi_bar, geo, geo_bar, app, app_bar, diameter(Vbar))


def alignment_cost(TV: torch.Tensor, terms: PairTerms, alpha: float = 0.2, parts: bool = False):
    """``D(T)`` for B transformed source clouds ``TV`` [B, N, 3] → [B].

    With ``parts=True`` also returns the four mean terms (geo fwd, geo bwd, app fwd, app bwd) [B, 4].
    """
    Vbar, scale = terms.Vbar, terms.diam_bar
    dist = torch.cdist(TV, Vbar[None].expand(TV.shape[0], -1, -1))  # [B, N, M]
    geo_f = dist.min(dim=2).values / scale  # χ
    geo_b = dist.min(dim=1).values / scale
    app_f = (TV - Vbar[terms.psi][None]).norm(dim=-1) / scale
    app_b = (Vbar[None] - TV[:, terms.psi_bar]).norm(dim=-1) / scale
    N, M = TV.shape[1], Vbar.shape[0]
    geo = (terms.w_geo * geo_f).sum(1) + (terms.w_geo_bar * geo_b).sum(1)
    app = (terms.w_app * app_f).sum(1) + (terms.w_app_bar * app_b).sum(1)
    D = ((1 - alpha) * geo + alpha * app) / (2 * N + 2 * M)
    if parts:
        return D, torch.stack([geo_f.mean(1), geo_b.mean(1), app_f.mean(1), app_b.mean(1)], dim=1)
    return D
