"""The held-out matching score: a vertex's best pixel is where its feature is (the naive per-pixel search
kept here as the reference), and accuracy counts only visible vertices."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from catpose.learn.evaluate import accuracy, match_vertices


def test_match_vertices_finds_the_planted_pixel_of_each_vertex():
    torch.manual_seed(0)
    B, D, S, N = 2, 8, 16, 5
    theta = F.normalize(torch.randn(N, D), dim=1)
    fmap = F.normalize(torch.randn(B, D, S, S), dim=1) * 0.1
    where = torch.randint(0, S, (B, N, 2))
    for b in range(B):
        for j in range(N):
            fmap[b, :, where[b, j, 1], where[b, j, 0]] = theta[j] * 10
    uv = match_vertices(fmap, theta, S)
    assert uv.shape == (B, N, 2)
    torch.testing.assert_close(uv, where.float() + 0.5)  # pixel centres


def test_match_vertices_agrees_with_the_naive_search_on_random_features():
    torch.manual_seed(1)
    B, D, h, S, N = 2, 6, 8, 16, 7
    theta, fmap = torch.randn(N, D), torch.randn(B, D, h, h)
    uv = match_vertices(fmap, theta, S)
    up = F.normalize(F.interpolate(fmap, size=(S, S), mode="bilinear", align_corners=False), dim=1)
    th = F.normalize(theta, dim=1)
    for b in range(B):
        for j in range(N):
            best = max(
                ((x, y) for y in range(S) for x in range(S)),
                key=lambda p: float(th[j] @ up[b, :, p[1], p[0]]),
            )
            assert tuple(uv[b, j].tolist()) == (best[0] + 0.5, best[1] + 0.5)


def test_accuracy_counts_visible_vertices_only():
    E = np.array([[1.0, 5.0, np.inf], [3.9, np.inf, 4.1]])
    assert accuracy(E, 4.0) == 2 / 4
    assert np.isnan(accuracy(np.full((2, 2), np.inf), 4.0))
