"""Dense feature backbones behind one interface.

A backbone maps a batch of RGB frames ``[B, 3, H, W]`` (float in [0, 1]) to a feature map
``[B, C, h, w]`` whose cells tile the input image exactly (cell ``j`` covers columns
``[j·W/w, (j+1)·W/w)``), so features at any pixel position ``(u, v)`` (continuous, image spanning
``[0, W] × [0, H]``) are read by :func:`sample_features` with bilinear interpolation, at sub-patch
precision.

Backbones:

* ``dinov2_vits14`` / ``dinov2_vitb14`` / ``dinov2_vitl14``: DINOv2 (Oquab et al. 2023) ViTs, built by
  catpose and loaded from a local checkpoint in the official format (``dinov2_vits14_pretrain.pth``):
  ``--weights PATH``, ``$CATPOSE_DINOV2_WEIGHTS``, or the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/``). Nothing is downloaded. Choice of layer and facet (token, key,
  query, value).
* ``colorsift`` (the offline default): dense RootSIFT (kornia) at two scales plus CIE-Lab colour at
  three blur scales. Needs no weights. It matches parts by local colour and gradient pattern, so it
  is blind to semantics that are not visible in colour or texture, and not invariant to strong
  lighting changes; it is the floor any learned backbone must beat.
* ``random_cnn``: a randomly initialised CNN (fixed seed): the floor of the correspondence measure.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from catpose.errors import CatposeError


class Backbone(nn.Module):
    name: str = "backbone"
    dim: int = 0

    def describe(self) -> str:
        return self.name


def sample_features(fmap: torch.Tensor, uv: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear features at pixel positions.

    fmap: [B, C, h, w] tiling an image of ``image_size`` = (H, W); uv: [B, N, 2] pixel positions
    (u right, v down, continuous). Returns [B, N, C]; positions outside the image get border values.
    """
    H, W = image_size
    grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], dim=-1).to(fmap.dtype)
    out = F.grid_sample(fmap, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)


# --------------------------------------------------------------------------------------------------
# DINOv2


@dataclass(frozen=True)
class ViTSpec:
    dim: int
    depth: int
    heads: int


DINOV2_SPECS = {
    "dinov2_vits14": ViTSpec(384, 12, 6),
    "dinov2_vitb14": ViTSpec(768, 12, 12),
    "dinov2_vitl14": ViTSpec(1024, 24, 16),
}


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, facets: dict | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if facets is not None:
            for name, t in (("query", q), ("key", k), ("value", v)):
                facets[name] = t.transpose(1, 2).reshape(B, N, C)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim)
        self.ls2 = _LayerScale(dim)

    def forward(self, x, facets=None):
        x = x + self.ls1(self.attn(self.norm1(x), facets))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(Backbone):
    """A DINOv2 ViT with the official checkpoint's parameter names (``blocks.{i}.attn.qkv`` ...).

    ``layer``: which block's output (negative counts from the end; -1 = last, after the final norm);
    ``facet``: ``token`` (block output) or ``key``/``query``/``value`` of that block's attention.
    Frames are resized to ``input_size`` (a multiple of 14) and normalised with ImageNet statistics.

    The position embeddings (trained on a 37 × 37 grid, 518 px) are resampled to other grids exactly as
    the published model does: bicubic with a scale factor of ``(grid + interpolate_offset) / 37`` — the
    offset of 0.1 that DINO kept for backward compatibility — and, for the models with register tokens,
    with antialiasing and no offset (the official hub's settings). Resampling to the target size
    instead differs by 0.4–0.6 % in the patch tokens at 448 px.
    """

    patch = 14

    def __init__(
        self,
        arch: str = "dinov2_vits14",
        layer: int = -1,
        facet: str = "token",
        input_size: int = 448,
        num_register_tokens: int = 0,
        spec: ViTSpec | None = None,
        interpolate_offset: float | None = None,
        interpolate_antialias: bool | None = None,
    ):
        super().__init__()
        if spec is None and arch not in DINOV2_SPECS:
            raise ValueError(f"unknown DINOv2 architecture {arch!r}; choose from {sorted(DINOV2_SPECS)}")
        if facet not in ("token", "key", "query", "value"):
            raise ValueError(f"facet must be token, key, query or value, got {facet!r}")
        if input_size % self.patch:
            raise ValueError(f"input_size must be a multiple of 14, got {input_size}")
        spec = spec or DINOV2_SPECS[arch]
        self.name, self.dim, self.spec = arch, spec.dim, spec
        self.layer, self.facet, self.input_size = layer, facet, input_size
        # the official hub's settings: plain models 0.1 / no antialias, register models 0.0 / antialias
        self.interpolate_offset = (0.0 if num_register_tokens else 0.1) if interpolate_offset is None \
            else interpolate_offset
        self.interpolate_antialias = bool(num_register_tokens) if interpolate_antialias is None \
            else interpolate_antialias
        self.patch_embed = _PatchEmbed(spec.dim, self.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + 37 * 37, spec.dim))  # trained at 518 px
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, spec.dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, spec.dim))
        self.blocks = nn.ModuleList(_Block(spec.dim, spec.heads) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(spec.dim, eps=1e-6)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def describe(self) -> str:
        return f"{self.name} (layer {self.layer}, facet {self.facet}, {self.input_size} px)"

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings [1, 1 + h·w, dim] for an h × w patch grid (see the class docstring)."""
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        n = int(math.sqrt(grid.shape[1]))
        if (h, w) != (n, n):
            grid = grid.reshape(1, n, n, -1).permute(0, 3, 1, 2).float()
            if self.interpolate_offset:
                kw = {"scale_factor": ((h + self.interpolate_offset) / n, (w + self.interpolate_offset) / n)}
            else:
                kw = {"size": (h, w)}
            grid = F.interpolate(grid, mode="bicubic", antialias=self.interpolate_antialias, **kw).to(
                cls.dtype
            )
            grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls, grid], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B = images.shape[0]
        x = F.interpolate(
            images,
            size=(self.input_size, self.input_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        x = (x - self.mean) / self.std
        h = w = self.input_size // self.patch
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1) + self._pos_embed(h, w)
        n_prefix = 1
        if self.register_tokens is not None:
            t = torch.cat([t[:, :1], self.register_tokens.expand(B, -1, -1), t[:, 1:]], dim=1)
            n_prefix += self.register_tokens.shape[1]
        last = self.layer % len(self.blocks)
        facets: dict = {}
        for i, blk in enumerate(self.blocks[: last + 1]):
            t = blk(t, facets if (i == last and self.facet != "token") else None)
        if self.facet != "token":
            t = facets[self.facet]
        elif last == len(self.blocks) - 1:
            t = self.norm(t)
        return t[:, n_prefix:].transpose(1, 2).reshape(B, self.dim, h, w)


def dinov2_weight_candidates(arch: str, weights: str | Path | None = None) -> list[Path]:
    """Where catpose looks for DINOv2 weights, in order."""
    cands = []
    if weights:
        cands.append(Path(weights))
    if os.environ.get("CATPOSE_DINOV2_WEIGHTS"):
        cands.append(Path(os.environ["CATPOSE_DINOV2_WEIGHTS"]))
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    cands.append(torch_home / "hub" / "checkpoints" / f"{arch}_pretrain.pth")
    return cands


def _spec_from_state(state: dict, arch: str) -> ViTSpec:
    """The ViT size of a checkpoint, read off its tensors (heads from the named architecture)."""
    dim = int(state["cls_token"].shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    known = DINOV2_SPECS.get(arch)
    heads = known.heads if known and known.dim == dim else max(1, dim // 64)
    return ViTSpec(dim, depth, heads)


def load_dinov2(arch: str = "dinov2_vits14", weights: str | Path | None = None, layer: int = -1,
                facet: str = "token", input_size: int = 448) -> DinoV2:
    """Builds a DINOv2 ViT and loads the official checkpoint from a local file (never downloads)."""
    cands = dinov2_weight_candidates(arch, weights)
    path = next((p for p in cands if p.is_file()), None)
    if path is None:
        tried = "\n  ".join(str(p) for p in cands)
        raise CatposeError(
            f"DINOv2 weights for {arch} not found; catpose never downloads at run time. Put the official "
            f"checkpoint ({arch}_pretrain.pth) at one of:\n  {tried}\n(or pass --weights PATH, or set "
            f"CATPOSE_DINOV2_WEIGHTS), or use the offline backbone: --backbone colorsift")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CatposeError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        spec = _spec_from_state(state, arch)
    except (KeyError, AttributeError, IndexError) as e:
        raise CatposeError(f"{path}: not a DINOv2 checkpoint (no {e})") from e
    n_reg = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    model = DinoV2(
        arch, layer=layer, facet=facet, input_size=input_size, num_register_tokens=n_reg, spec=spec
    )
    if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
        model.pos_embed = nn.Parameter(torch.zeros_like(state["pos_embed"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CatposeError(f"{path}: does not match {arch} (missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]})")
    return model.eval()


# --------------------------------------------------------------------------------------------------
# offline backbones


class ColorSift(Backbone):
    """Dense RootSIFT at two scales + Lab colour at three blur scales; no learned weights.

    Each part is L2-normalised per pixel and weighted (``w_sift``, ``w_color``), so distances mix
    gradient pattern and colour in a fixed proportion.
    """

    name = "colorsift"

    def __init__(self, w_sift: float = 1.0, w_color: float = 0.5, blur: tuple[float, ...] = (1.0, 3.0, 8.0),
                 sift_scales: tuple[int, ...] = (1, 2, 3), bin_size: int = 8, stride: int = 4):
        super().__init__()
        from kornia.feature import DenseSIFTDescriptor

        # larger windows = the same descriptor on a downscaled image (a pyramid); every level is
        # computed on a grid of about ``stride`` pixels and resampled to one grid of H/stride x W/stride
        self.bin_size, self.sift_scales, self.blur, self.stride = bin_size, sift_scales, blur, stride
        self.sift = nn.ModuleDict(
            {
                str(s): DenseSIFTDescriptor(
                    spatial_bin_size=bin_size, padding=0, stride=max(1, round(stride / s))
                )
                for s in sift_scales
            }
        )
        n = 8 * bin_size + 16
        probe = DenseSIFTDescriptor(spatial_bin_size=bin_size, padding=0, stride=1)(torch.zeros(1, 1, n, n))
        self.window = n - probe.shape[-1] + 1  # pixels under one descriptor
        self.w_sift, self.w_color = w_sift, w_color
        self.dim = 128 * len(sift_scales) + 3 * len(blur)

    def describe(self) -> str:
        bins = [self.bin_size * s for s in self.sift_scales]
        return (f"colorsift (offline: dense RootSIFT, bins {bins} px, + Lab colour at blur "
                f"{list(self.blur)} px, weights {self.w_sift}/{self.w_color}, stride {self.stride} px)")

    def _sift_level(self, gray: torch.Tensor, s: int, out_hw: tuple[int, int]) -> torch.Tensor:
        H, W = gray.shape[-2:]
        g = gray if s == 1 else F.interpolate(gray, size=(max(1, round(H / s)), max(1, round(W / s))),
                                              mode="bilinear", antialias=True, align_corners=False)
        h, w = g.shape[-2:]
        t = max(1, round(self.stride / s))
        k = self.window
        # pad so that descriptor j is centred on cell j of a grid of t-pixel cells tiling the image
        pl = max(0, (k - t) // 2)
        need_h = t * math.ceil(h / t) - t + k - h
        need_w = t * math.ceil(w / t) - t + k - w
        pad = (pl, max(0, need_w - pl), pl, max(0, need_h - pl))
        mode = "reflect" if max(pad) < min(h, w) else "replicate"
        d = self.sift[str(s)](F.pad(g, pad, mode=mode))[..., : math.ceil(h / t), : math.ceil(w / t)]
        if d.shape[-2:] != out_hw:
            d = F.interpolate(d, size=out_hw, mode="bilinear", align_corners=False)
        return d

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        import kornia

        H, W = images.shape[-2:]
        out_hw = (max(1, round(H / self.stride)), max(1, round(W / self.stride)))
        gray = kornia.color.rgb_to_grayscale(images)
        feats = [
            self.w_sift
            * F.normalize(self._sift_level(gray, s, out_hw), dim=1)
            / math.sqrt(len(self.sift_scales))
            for s in self.sift_scales
        ]
        lab = kornia.color.rgb_to_lab(images) / torch.tensor(
            [100.0, 128.0, 128.0], device=images.device
        ).view(1, 3, 1, 1)
        cols = []
        for s in self.blur:
            ks = int(2 * math.ceil(3 * s) + 1)
            c = kornia.filters.gaussian_blur2d(lab, (ks, ks), (s, s), border_type="replicate")
            cols.append(F.interpolate(c, size=out_hw, mode="area"))
        feats.append(self.w_color * torch.cat(cols, dim=1) / math.sqrt(len(self.blur)))
        return torch.cat(feats, dim=1)


class RandomCNN(Backbone):
    """A randomly initialised 4-layer CNN (stride 4, fixed seed): the floor for learned features."""

    name = "random_cnn"

    def __init__(self, dim: int = 128, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        chans = [3, 32, 64, 128, dim]
        layers: list[nn.Module] = []
        for i in range(4):
            conv = nn.Conv2d(chans[i], chans[i + 1], 3, stride=2 if i < 2 else 1, padding=1)
            with torch.no_grad():
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=g) * math.sqrt(2.0 / (9 * chans[i]))
                )
                conv.bias.zero_()
            layers += [conv, nn.ReLU()] if i < 3 else [conv]
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


BACKBONES = ("colorsift", "random_cnn", *DINOV2_SPECS)


def build_backbone(name: str = "colorsift", weights: str | Path | None = None, layer: int = -1,
                   facet: str = "token", input_size: int = 448) -> Backbone:
    if name == "colorsift":
        return ColorSift().eval()
    if name == "random_cnn":
        return RandomCNN().eval()
    if name in DINOV2_SPECS:
        return load_dinov2(name, weights, layer, facet, input_size)
    raise ValueError(f"unknown backbone {name!r}; choose from {list(BACKBONES)}")
