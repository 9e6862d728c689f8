"""Φ, Θ and the vertex-contrastive loss: shapes, the loss against a loop written out, learning."""

import math

import pytest
import torch
import torch.nn.functional as F

from catpose.learn.model import (
    ContrastiveModel,
    FeatureNet,
    NeuralTemplate,
    neighbour_mask,
    sample_background,
    vertex_contrastive_loss,
)


@pytest.mark.parametrize("stride", [2, 4])
def test_feature_net_shapes_and_unit_features(stride, device):
    net = FeatureNet(dim=24, width=8, stride=stride).to(device)
    f = net(torch.rand(2, 3, 64, 48, device=device))
    assert f.shape == (2, 24, 64 // stride, 48 // stride)
    assert torch.allclose(f.norm(dim=1), torch.ones(()), atol=1e-4)


def test_loss_matches_the_definition_written_out():
    torch.manual_seed(0)
    N, M, D, S = 5, 2, 4, 8
    fmap = F.normalize(torch.randn(1, D, S, S), dim=1)
    theta, beta = F.normalize(torch.randn(N, D), dim=1), F.normalize(torch.randn(M, D), dim=1)
    uv = torch.tensor([[[1.5, 2.5], [6.5, 0.5], [3.5, 3.5], [0.5, 7.5], [5.5, 5.5]]])
    vis = torch.tensor([[True, True, False, True, False]])
    vertices = torch.tensor([[0.0, 0, 0], [0.01, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    excl = neighbour_mask(vertices, 0.05)
    assert excl[0, 1] and excl[1, 0] and excl.sum() == 2
    bg_uv, bg_valid = torch.tensor([[[7.5, 7.5], [0.5, 0.5]]]), torch.tensor([[True, True]])
    T, w = 0.1, 0.5
    loss, parts = vertex_contrastive_loss(fmap, uv, vis, theta, beta, (S, S), excl, bg_uv, bg_valid, T, w)
    # the same, one pixel centre at a time (uv at pixel centres: bilinear sampling returns that pixel)
    f_at = lambda u, v: fmap[0, :, int(v), int(u)]
    lv = []
    for j in range(N):
        if not vis[0, j]:
            continue
        f = f_at(*uv[0, j])
        den = sum(math.exp(f @ theta[k] / T) for k in range(N) if not excl[j, k]) + sum(
            math.exp(f @ b / T) for b in beta
        )
        lv.append(-math.log(math.exp(f @ theta[j] / T) / den))
    lb = []
    for u, v in bg_uv[0]:
        f = f_at(u, v)
        pos = sum(math.exp(f @ b / T) for b in beta)
        lb.append(-math.log(pos / (pos + sum(math.exp(f @ t / T) for t in theta))))
    expect = sum(lv) / len(lv) + w * sum(lb) / len(lb)
    assert abs(loss.item() - expect) < 1e-4
    assert abs(parts["loss_vertex"].item() - sum(lv) / len(lv)) < 1e-4


def test_background_samples_avoid_the_object():
    fg = torch.zeros(2, 16, 16)
    fg[0, 4:12, 4:12] = 1
    fg[1] = 1  # no background at all
    uv, valid = sample_background(fg, 20, torch.Generator().manual_seed(0))
    u, v = uv[0, :, 0].long(), uv[0, :, 1].long()
    assert valid[0].all() and (fg[0, v, u] == 0).all()
    assert not valid[1].any()


def test_one_batch_is_learned(device):
    """A few steps on one fixed batch: the loss falls and the targets become the best matches."""
    torch.manual_seed(0)
    N, S = 30, 32
    vertices = torch.rand(N, 3)
    model = ContrastiveModel(FeatureNet(16, 8), NeuralTemplate(N, 16), vertices, exclude_radius=0.0).to(
        device
    )
    images = torch.rand(4, 3, S, S, device=device)
    uv = (torch.rand(4, N, 2, device=device) * (S - 8) + 4).floor() + 0.5
    vis = torch.rand(4, N, device=device) > 0.3
    fg = torch.zeros(4, S, S, device=device)
    fg[:, 4:28, 4:28] = 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss, parts = model(images, uv, vis, fg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert parts["vertex_acc"].item() > 0.8
