"""A feature template rendered at known poses, shared by the pose-estimation tests: the template (a
car's surface with random unit features θ_j and background prototypes β), its feature image at a pose,
and stand-in encoders that return prepared feature images."""

import numpy as np
import torch
import torch.nn.functional as F

from catpose.geometry import farthest_point_sample, project
from catpose.pose.estimate import fit_translation
from tests.pose.reference import template_visibility

S = 96  # crop = image size
FOCAL = 110.0


def make_template():
    """(vertices [300, 3], θ [300, 16], β [2, 16]): a car's surface with random unit features."""
    from catpose.data.synth.shapes import make_instance

    mesh, _ = make_instance("car", np.random.default_rng(0)).merged()
    pts = mesh.sample(4000, return_index=False, seed=0)  # seeded: the same template in every run
    pts = np.asarray(pts, np.float32)
    V = pts[farthest_point_sample(pts, 300)]
    V -= (V.max(0) + V.min(0)) / 2
    g = torch.Generator().manual_seed(0)
    theta = F.normalize(torch.randn(len(V), 16, generator=g), dim=1)
    beta = F.normalize(torch.randn(2, 16, generator=g), dim=1)
    return torch.as_tensor(V), theta, beta


def render_features(V, theta, beta, R, T, size=S, grid=48, noise=0.3, seed=0, focal=FOCAL):
    """The feature image of the template at pose (R, T) seen by a camera of focal length ``focal``
    (pixels of the ``size`` image, principal point in its centre): each pixel of a ``grid``² map gets θ
    of the nearest visible projected vertex (within 1.5 cells), else β₀; plus noise. [1, D, grid, grid]."""
    r = grid / size
    f = torch.tensor([[focal * r, focal * r]])
    pp = torch.tensor([[size / 2 * r, size / 2 * r]])
    uv, z = project(V, R[None].float(), T[None].float(), f, pp)
    diam = float((V.amax(0) - V.amin(0)).norm())
    vis = template_visibility(uv, z, grid, diam, len(V))[0]
    pix = torch.stack(
        torch.meshgrid(torch.arange(grid) + 0.5, torch.arange(grid) + 0.5, indexing="xy"), -1
    ).view(-1, 2)
    d = torch.cdist(pix, uv[0][vis])
    dmin, j = d.min(1)
    feats = torch.where((dmin < 1.5)[:, None], theta[vis][j], beta[0].expand(len(pix), -1))
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(feats + noise * torch.randn(feats.shape, generator=g) / feats.shape[1] ** 0.5, dim=1)
    return feats.T.reshape(1, -1, grid, grid)


def background_features(beta, grid=24):
    """A feature image in which every pixel is the background prototype β₀: [1, D, grid, grid]."""
    return F.normalize(beta[0].view(1, -1, 1, 1).expand(1, -1, grid, grid), dim=1)


def object_pose(V, R, focal=FOCAL):
    """T [3] that puts the template at rotation R on the box of the whole crop (side S / 1.15)."""
    return fit_translation(
        V, R[None], focal, torch.tensor([S / 2, S / 2]), torch.tensor([S / 2, S / 2]), S / 1.15
    )[0]


class FixedFeatures(torch.nn.Module):
    """A stand-in encoder that returns one prepared feature image, whatever the crop."""

    def __init__(self, fmap):
        super().__init__()
        self.fmap = fmap

    def forward(self, images):
        return self.fmap.to(images.device).expand(len(images), -1, -1, -1)


class FeaturesByGrey(torch.nn.Module):
    """A stand-in encoder for batches of different images: images of one grey level g (any crop of
    them) get the prepared feature image ``fmaps[g]`` [1, D, h, w]."""

    def __init__(self, fmaps: dict[int, torch.Tensor]):
        super().__init__()
        self.fmaps = fmaps

    def forward(self, images):
        grey = (images[:, 0, images.shape[2] // 2, images.shape[3] // 2] * 255).round().long().tolist()
        return torch.cat([self.fmaps[g] for g in grey]).to(images.device)
