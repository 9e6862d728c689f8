"""The alignment cost against direct loops; the rotation grid."""


import numpy as np
import pytest
import torch

from catpose.align.cost import alignment_cost, cycle_weights, pair_terms
from catpose.geometry import apply_similarity


def loop_cost(TV, Vbar, psi, psi_bar, wg, wgb, wa, wab, alpha, diam):
    N, M = len(TV), len(Vbar)
    total = 0.0
    for i in range(N):
        total += (1 - alpha) * wg[i] * min(np.linalg.norm(TV[i] - Vbar[j]) for j in range(M)) / diam
        total += alpha * wa[i] * np.linalg.norm(TV[i] - Vbar[psi[i]]) / diam
    for j in range(M):
        total += (1 - alpha) * wgb[j] * min(np.linalg.norm(Vbar[j] - TV[i]) for i in range(N)) / diam
        total += alpha * wab[j] * np.linalg.norm(Vbar[j] - TV[psi_bar[j]]) / diam
    return total / (2 * N + 2 * M)


def test_cost_matches_a_loop(device):
    rng = np.random.default_rng(0)
    N, M = 7, 5
    V, Vbar = rng.normal(size=(N, 3)), rng.normal(size=(M, 3))
    A = rng.random((N, M))
    A[2] = np.inf  # a source vertex never seen
    t = lambda a: torch.tensor(a, dtype=torch.float64, device=device)  # noqa: E731
    terms = pair_terms(t(V), t(Vbar), t(A), tau_geo=0.3, tau_app=0.1)
    s = t([1.0, 0.7, 1.3])
    R = t(np.stack([np.eye(3), *[np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(2)]]))
    R[1:] *= torch.sign(torch.det(R[1:]))[:, None, None]
    tr = t(rng.normal(size=(3, 3)))
    D = alignment_cost(apply_similarity(terms.V, s, R, tr), terms, alpha=0.3).cpu().numpy()
    # direct loops, with the correspondences and weights written out by hand
    psi, psi_bar = A.argmin(1), A.argmin(0)
    diam = max(np.linalg.norm(a - b) for a in Vbar for b in Vbar)
    dV = max(np.linalg.norm(a - b) for a in V for b in V)
    d = np.array([np.linalg.norm(V[i] - V[psi_bar[psi[i]]]) / dV for i in range(N)])
    d[2] = np.inf
    dbar = np.array([np.linalg.norm(Vbar[j] - Vbar[psi[psi_bar[j]]]) / diam for j in range(M)])
    norm = lambda w: w / w.mean()  # noqa: E731
    wa, wab = norm(np.exp(-d / 0.1)), norm(np.exp(-dbar / 0.1))
    wg = norm(np.exp(-d / 0.3))
    wg[2] = 1.0  # never seen: mean weight in the geometric terms
    wgb = norm(np.exp(-dbar / 0.3))
    for b in range(3):
        TV = s[b].item() * V @ R[b].cpu().numpy().T + tr[b].cpu().numpy()
        assert D[b] == pytest.approx(loop_cost(TV, Vbar, psi, psi_bar, wg, wgb, wa, wab, 0.3, diam), rel=1e-9)


def test_cycle_weights_limits():
    d = torch.tensor([0.0, 0.1, 0.5, float("inf")])
    uni = cycle_weights(d, float("inf"))
    torch.testing.assert_close(uni, torch.tensor([4 / 3, 4 / 3, 4 / 3, 0.0]))  # large tau: uniform
    sharp = cycle_weights(d, 0.05)
    assert sharp[0] > sharp[1] > sharp[2] > sharp[3] == 0 and sharp.mean() == pytest.approx(1.0)
    torch.testing.assert_close(cycle_weights(torch.full((3,), float("inf")), 1.0), torch.ones(3))  # NaN -> 1
