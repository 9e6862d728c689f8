"""The dense image encoder Φ, the neural template Θ and the vertex-contrastive loss.

Φ maps an image to unit-length features at stride 4 or 2: ``small``, a U-Net (optionally fed with a
frozen DINOv2's patch features when local weights exist); ``base``, a frozen DINOv2 ViT with a trainable
convolutional head; ``resnet``, a ResNet-18-style encoder with an FPN decoder, from scratch. The neural
template holds one learnable unit
feature θ_j per template vertex t_j and M background prototypes β_m. For a visible vertex j of a
training crop, at its target pixel p_j, the loss is a softmax over all vertices and prototypes::

    L_v = −log  exp(f(p_j)·θ_j / T) / ( Σ_{k ∉ nb(j)} exp(f(p_j)·θ_k / T) + Σ_m exp(f(p_j)·β_m / T) )

where nb(j) are the other vertices within ``exclude`` × template diameter of t_j (neighbours are not
negatives), and for background pixels b (outside the visible object) the prototypes are the positives::

    L_bg = −log  Σ_m exp(f(b)·β_m / T) / ( Σ_k exp(f(b)·θ_k / T) + Σ_m exp(f(b)·β_m / T) )

L = mean L_v + w_bg · mean L_bg (as in NeMo, with a learned template instead of a memory bank).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from catpose.config import TrainConfig
from catpose.features.backbones import load_dinov2, sample_features


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.GroupNorm(8, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.GroupNorm(8, cout),
        nn.ReLU(inplace=True),
    )


class FeatureNet(nn.Module):
    """Φ: image [B, 3, H, W] in [0, 1] → unit features [B, D, H/s, W/s], output stride s = 2 or 4.

    Encoder at strides 2/4/8 (widths w, 2w, 4w), decoder back to stride s with skip connections. With
    ``context`` (a frozen backbone, e.g. DINOv2 from local weights) its features are resized to stride 8
    and joined to the bottleneck.
    """

    def __init__(self, dim: int = 64, width: int = 32, context: nn.Module | None = None, context_dim: int = 0,
                 stride: int = 4):
        super().__init__()
        if stride not in (2, 4):
            raise ValueError(f"output stride must be 2 or 4, not {stride}")
        self.stride = stride
        w = width
        self.enc1, self.enc2, self.enc3 = _block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2)
        self.context = context
        if context is not None:
            for p in context.parameters():
                p.requires_grad_(False)
            self.ctx_proj = nn.Conv2d(context_dim, 4 * w, 1)
        self.mid = _block(4 * w, 4 * w)
        self.dec2 = _block(4 * w + 2 * w, 2 * w)
        self.dec1 = _block(2 * w + w, 2 * w) if stride == 2 else None
        self.head = nn.Conv2d(2 * w, dim, 1)
        self.dim = dim
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        if self.context is not None:
            with torch.no_grad():
                self.context.eval()
                c = self.context(images)
            e3 = e3 + self.ctx_proj(
                F.interpolate(c.float(), size=e3.shape[-2:], mode="bilinear", align_corners=False)
            )
        m = self.mid(e3)
        d2 = self.dec2(
            torch.cat([F.interpolate(m, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1)
        )
        if self.dec1 is not None:
            d2 = self.dec1(
                torch.cat(
                    [F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1
                )
            )
        return F.normalize(self.head(d2), dim=1)


class _Basic(nn.Module):
    """A ResNet basic block (two 3×3 convolutions and a shortcut) with GroupNorm, which keeps small
    per-GPU batches and DDP free of batch statistics. Hand-written: torchvision is no dependency of
    catpose, and its ResNet would bring BatchNorm and a stride-32 stem that a dense head must undo."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = nn.GroupNorm(min(32, cout // 4), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = nn.GroupNorm(min(32, cout // 4), cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(min(32, cout // 4), cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        y = F.relu(self.n1(self.conv1(x)), inplace=True)
        return F.relu(self.n2(self.conv2(y)) + self.short(x), inplace=True)


class ResNetFeatureNet(nn.Module):
    """Φ from scratch at GPU size: a ResNet-18-style encoder (stages of widths w, 2w, 4w, 8w at strides
    4, 8, 16, 32, two basic blocks each) and an FPN decoder (lateral 1×1, top-down sum) back to stride 4:
    image [B, 3, H, W] in [0, 1] → unit features [B, D, H/4, W/4]."""

    def __init__(self, dim: int = 128, width: int = 64, fpn: int = 128):
        super().__init__()
        self.stride, self.dim = 4, dim
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.GroupNorm(min(32, w // 4), w),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        chans = [w, 2 * w, 4 * w, 8 * w]
        self.stages = nn.ModuleList()
        cin = w
        for i, c in enumerate(chans):
            self.stages.append(nn.Sequential(_Basic(cin, c, 1 if i == 0 else 2), _Basic(c, c)))
            cin = c
        self.lateral = nn.ModuleList(nn.Conv2d(c, fpn, 1) for c in chans)
        self.smooth = nn.Sequential(
            nn.Conv2d(fpn, fpn, 3, 1, 1, bias=False), nn.GroupNorm(8, fpn), nn.ReLU(inplace=True)
        )
        self.head = nn.Conv2d(fpn, dim, 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem((images - self.mean) / self.std)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        y = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            y = lat(f) + F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False)
        return F.normalize(self.head(self.smooth(y)), dim=1)


class DinoFeatureNet(nn.Module):
    """Φ of the base model: a frozen DINOv2 ViT (patch tokens on a grid of S/8 × S/8, i.e. the crop
    resized to 14·S/8 px) and a trainable head: the tokens projected to ``2w`` channels, upsampled to
    stride 4 and fused with a small convolutional stem of the image at stride 4 (detail the 14-px
    patches lack), then two blocks → unit features [B, D, H/4, W/4]."""

    def __init__(self, vit: nn.Module, dim: int = 128, width: int = 64):
        super().__init__()
        self.stride, self.dim = 4, dim
        self.vit = vit
        for p in vit.parameters():
            p.requires_grad_(False)
        w = width
        self.proj = nn.Sequential(nn.Conv2d(vit.dim, 2 * w, 1), nn.GroupNorm(8, 2 * w), nn.ReLU(inplace=True))
        self.stem = nn.Sequential(_block(3, w // 2, 2), _block(w // 2, w, 2))
        self.fuse = nn.Sequential(_block(3 * w, 2 * w), _block(2 * w, 2 * w))
        self.head = nn.Conv2d(2 * w, dim, 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        super().train(mode)
        self.vit.eval()  # frozen: always in inference mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tokens = self.vit(images)
        s = self.stem((images - self.mean) / self.std)
        t = F.interpolate(
            self.proj(tokens.to(s.dtype)), size=s.shape[-2:], mode="bilinear", align_corners=False
        )
        return F.normalize(self.head(self.fuse(torch.cat([s, t], 1))), dim=1)


class NeuralTemplate(nn.Module):
    """Θ: unit features θ_j [N, D] of the template vertices and β_m [M, D] of the background."""

    def __init__(self, n_vertices: int, dim: int, n_background: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.theta = nn.Parameter(F.normalize(torch.randn(n_vertices, dim, generator=g), dim=1))
        self.beta = nn.Parameter(F.normalize(torch.randn(n_background, dim, generator=g), dim=1))

    def vertex_features(self) -> torch.Tensor:
        return F.normalize(self.theta, dim=1)

    def background_features(self) -> torch.Tensor:
        return F.normalize(self.beta, dim=1)


def neighbour_mask(vertices: torch.Tensor, radius: float) -> torch.Tensor:
    """[N, N] bool: other vertices closer than ``radius`` (excluded from the negatives)."""
    d = torch.cdist(vertices, vertices)
    return (d < radius) & ~torch.eye(len(vertices), dtype=torch.bool, device=vertices.device)


def sample_background(
    fg: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random pixel centres per image outside the visible object (fg < 0.5): uv [B, n, 2] and
    valid [B, n] (false where an image has no background at all)."""
    B, S, _ = fg.shape
    score = torch.rand(fg.shape, generator=generator, device="cpu").to(fg.device) + (fg >= 0.5).float() * 2
    idx = score.view(B, -1).topk(n, dim=1, largest=False).indices
    uv = torch.stack([idx % S, idx // S], -1).float() + 0.5
    valid = torch.gather((fg < 0.5).view(B, -1), 1, idx)
    return uv, valid


def vertex_contrastive_loss(fmap: torch.Tensor, uv: torch.Tensor, vis: torch.Tensor, theta: torch.Tensor,
                            beta: torch.Tensor, image_size: tuple[int, int], exclude: torch.Tensor,
                            bg_uv: torch.Tensor, bg_valid: torch.Tensor, temperature: float = 0.07,
                            w_bg: float = 0.5) -> tuple[torch.Tensor, dict]:
    """L = mean L_v + w_bg · mean L_bg (see the module docstring).

    fmap [B, D, h, w] (unit features tiling ``image_size``), uv [B, N, 2] target pixels, vis [B, N],
    theta [N, D], beta [M, D] (unit), exclude [N, N] bool, bg_uv [B, n, 2], bg_valid [B, n].
    """
    N = theta.shape[0]
    f = F.normalize(sample_features(fmap, uv, image_size).float(), dim=-1)  # [B, N, D]
    protos = torch.cat([theta, beta]).float()  # [N + M, D]
    logits = f @ protos.T / temperature  # [B, N, N + M]
    logits[..., :N] = logits[..., :N].masked_fill(exclude[None], float("-inf"))
    target = torch.arange(N, device=fmap.device).expand(uv.shape[0], N)
    lv = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(vis)
    n_vis = vis.sum().clamp_min(1)
    loss_v = (lv * vis).sum() / n_vis
    fb = F.normalize(sample_features(fmap, bg_uv, image_size).float(), dim=-1)
    lb_logits = fb @ protos.T / temperature
    loss_bg_each = torch.logsumexp(lb_logits, -1) - torch.logsumexp(lb_logits[..., N:], -1)
    loss_bg = (loss_bg_each * bg_valid).sum() / bg_valid.sum().clamp_min(1)
    with torch.no_grad():
        acc = ((logits.argmax(-1) == target) & vis).sum() / n_vis
    return loss_v + w_bg * loss_bg, {"loss_vertex": loss_v.detach(), "loss_background": loss_bg.detach(),
                                     "vertex_acc": acc.detach()}


class ContrastiveModel(nn.Module):
    """Φ and Θ in one module, so that DDP averages the gradients of both."""

    def __init__(self, encoder: FeatureNet, template: NeuralTemplate, vertices: torch.Tensor,
                 exclude_radius: float = 0.05, temperature: float = 0.07, w_bg: float = 0.5, n_bg: int = 64):
        super().__init__()
        self.encoder, self.template = encoder, template
        diam = (vertices.max(0).values - vertices.min(0).values).norm().item()
        self.register_buffer("exclude", neighbour_mask(vertices.float(), exclude_radius * diam))
        self.temperature, self.w_bg, self.n_bg = temperature, w_bg, n_bg

    def forward(self, images: torch.Tensor, uv: torch.Tensor, vis: torch.Tensor, fg: torch.Tensor):
        fmap = self.encoder(images)
        bg_uv, bg_valid = sample_background(fg, self.n_bg)
        return vertex_contrastive_loss(fmap, uv, vis, self.template.vertex_features(),
                                       self.template.background_features(), images.shape[-2:], self.exclude,
                                       bg_uv, bg_valid, self.temperature, self.w_bg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


MODELS = ("small", "base", "resnet")


def build_encoder(cfg: TrainConfig, backbone_weights: bool = True) -> nn.Module:
    """Φ of ``cfg.model`` (see :class:`~catpose.config.TrainConfig`), seeded by ``cfg.seed``.

    ``backbone_weights`` False builds the frozen DINOv2 without reading its weights file (a trained
    model's state holds them; benchmarks of speed alone)."""
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose from {list(MODELS)}")
    grid = max(1, cfg.size // 8)
    if cfg.model == "base":
        arch = cfg.backbone or "dinov2_vits14"
        # a named weights file also fixes the ViT's size (a trained model's state must fit into it)
        if backbone_weights or (cfg.weights is not None and Path(cfg.weights).is_file()):
            vit = load_dinov2(arch, cfg.weights, input_size=14 * grid)
        else:
            from catpose.features.backbones import DinoV2

            vit = DinoV2(arch, input_size=14 * grid).eval()
        torch.manual_seed(cfg.seed)
        return DinoFeatureNet(vit, cfg.dim, cfg.width)
    if cfg.model == "resnet":
        torch.manual_seed(cfg.seed)
        return ResNetFeatureNet(cfg.dim, cfg.width)
    context, cdim = None, 0
    if cfg.backbone:
        context = load_dinov2(cfg.backbone, cfg.weights, input_size=14 * grid)
        cdim = context.dim
    torch.manual_seed(cfg.seed)
    return FeatureNet(cfg.dim, cfg.width, context, cdim, cfg.stride)


def build_model(cfg: TrainConfig, vertices: torch.Tensor, backbone_weights: bool = True) -> ContrastiveModel:
    """Φ (``cfg.model``; the frozen DINOv2 of ``cfg.backbone`` when set) and Θ for template vertices
    [N, 3], seeded by ``cfg.seed``."""
    enc = build_encoder(cfg, backbone_weights)
    tpl = NeuralTemplate(len(vertices), cfg.dim, seed=cfg.seed)
    return ContrastiveModel(enc, tpl, vertices, cfg.exclude, cfg.temperature, cfg.background_weight)
