"""Many-to-one: from pairwise alignments to every video in one category reference frame.

* Graph: all pairs for small categories, ``partners`` random partners per video (plus a ring, so the
  graph is connected) for large ones. An edge (a, b) holds ``T_ab``: a's frame into b's frame.
* Reference: the medoid, the video with the lowest mean cost over its edges.
* Initial absolute transforms ``T_a`` (a's frame into the reference frame): composed along the
  cheapest path to the reference (Dijkstra on the costs); for a direct edge that is the pair itself.
* Rotation synchronisation: ``R_a = R_b · R_ab`` should hold on every edge; iteratively reweighted
  chordal averaging (a few equally weighted sweeps, then weights ``1 / ||R_a − R_b R_ab||_F``, i.e. an
  L1 fit that discounts wrong edges), the reference fixed to the identity. Scale and translation follow the path estimate, re-centred so
  the video's centroid lands where the path puts it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np

from catpose.align.search import PairAlignment


@dataclass
class Edge:
    a: str
    b: str
    T: PairAlignment  # a's frame → b's frame


def pair_graph(names: list[str], partners: int = 0, seed: int = 0) -> list[tuple[str, str]]:
    """Unordered pairs (a < b) to align: all of them, or about ``partners`` per video."""
    names = sorted(names)
    n = len(names)
    if partners <= 0 or partners >= n - 1:
        return list(itertools.combinations(names, 2))
    rng = np.random.default_rng(seed)
    pairs = {tuple(sorted((names[i], names[(i + 1) % n]))) for i in range(n)}  # a ring keeps it connected
    for i in range(n):
        others = [j for j in rng.permutation(n) if j != i]
        for j in others[: max(0, partners - 2)]:
            pairs.add(tuple(sorted((names[i], names[j]))))
    return sorted(pairs)


def _compose(T2: PairAlignment, T1: PairAlignment) -> PairAlignment:
    """T2 ∘ T1 (first T1, then T2)."""
    return PairAlignment(T2.R @ T1.R, T2.scale * T2.R @ T1.t + T2.t, T2.scale * T1.scale, T1.cost + T2.cost)


def _adjacency(edges: list[Edge]) -> dict[str, list[tuple[str, PairAlignment]]]:
    adj: dict[str, list[tuple[str, PairAlignment]]] = {}
    for e in edges:
        adj.setdefault(e.a, []).append((e.b, e.T))
        adj.setdefault(e.b, []).append((e.a, e.T.inverse()))
    return adj


def choose_reference(edges: list[Edge]) -> str:
    """The medoid: the video with the lowest mean cost over its edges."""
    costs: dict[str, list[float]] = {}
    for e in edges:
        costs.setdefault(e.a, []).append(e.T.cost)
        costs.setdefault(e.b, []).append(e.T.cost)
    return min(sorted(costs), key=lambda k: np.mean(costs[k]))


def path_transforms(edges: list[Edge], ref: str) -> dict[str, PairAlignment]:
    """Every video's transform into the reference frame along its cheapest path (Dijkstra)."""
    adj = _adjacency(edges)
    out = {ref: PairAlignment(np.eye(3), np.zeros(3), 1.0, 0.0)}
    heap = [(0.0, ref)]
    dist = {ref: 0.0}
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        for v, T_uv in adj.get(u, []):
            nd = d + T_uv.cost
            if nd < dist.get(v, float("inf")):
                dist[v] = nd
                out[v] = _compose(out[u], T_uv.inverse())  # v → u → ref
                heapq.heappush(heap, (nd, v))
    return out


def project_so3(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def synchronise_rotations(edges: list[Edge], init: dict[str, np.ndarray], ref: str, iters: int = 50,
                          eps: float = 0.05, l2_iters: int = 5) -> dict[str, np.ndarray]:
    """Robust rotation synchronisation, starting from ``init``.

    The first ``l2_iters`` sweeps are plain chordal averaging (equal weights), so that edges that agree
    with a wrong initial estimate cannot anchor it; then IRLS with weights ``1 / max(eps, residual)``.
    """
    R = {k: v.copy() for k, v in init.items()}
    R[ref] = np.eye(3)
    for it in range(iters):
        acc = {k: np.zeros((3, 3)) for k in R}
        for e in edges:
            if e.a not in R or e.b not in R:
                continue
            Rab = e.T.R
            w = 1.0 if it < l2_iters else 1.0 / max(eps, np.linalg.norm(R[e.a] - R[e.b] @ Rab))
            acc[e.a] += w * (R[e.b] @ Rab)
            acc[e.b] += w * (R[e.a] @ Rab.T)
        new = {k: (project_so3(acc[k]) if k != ref and np.abs(acc[k]).sum() > 0 else R[k]) for k in R}
        change = max(np.linalg.norm(new[k] - R[k]) for k in R)
        R = new
        if it >= l2_iters and change < 1e-6:
            break
    return R


def reduce_to_reference(edges: list[Edge], centroids: dict[str, np.ndarray], sync: bool = True,
                        ref: str | None = None) -> tuple[str, dict[str, PairAlignment], dict[str, PairAlignment]]:
    """(reference, synchronised transforms, path-only transforms) of every connected video."""
    ref = ref or choose_reference(edges)
    paths = path_transforms(edges, ref)
    if not sync:
        return ref, paths, paths
    Rs = synchronise_rotations(edges, {k: T.R for k, T in paths.items()}, ref)
    out = {}
    for k, T in paths.items():
        c = centroids[k]
        target = T.scale * T.R @ c + T.t  # keep the centroid where the path puts it
        out[k] = PairAlignment(Rs[k], target - T.scale * Rs[k] @ c, T.scale, T.cost)
    return ref, out, paths
