"""Backbones: bilinear sampling, the DINOv2 loading code (on a small ViT it saves), offline backbones."""

import pytest
import torch

from catpose.errors import CatposeError
from catpose.features.backbones import (
    ColorSift,
    DinoV2,
    RandomCNN,
    ViTSpec,
    build_backbone,
    load_dinov2,
    sample_features,
)


def test_sample_features_is_bilinear_at_sub_patch_positions(device):
    H, W, h, w = 28, 42, 2, 3  # cells of 14 px, as DINOv2 patches
    # a feature map whose channels are the pixel coordinates of the cell centres
    cu = (torch.arange(w) + 0.5) * W / w
    cv = (torch.arange(h) + 0.5) * H / h
    fmap = torch.stack([cu[None].expand(h, w), cv[:, None].expand(h, w)])[None].to(device)
    uv = torch.tensor([[[7.0, 7.0], [10.5, 7.0], [21.0, 14.0], [30.0, 17.5]]], device=device)
    out = sample_features(fmap, uv, (H, W))
    torch.testing.assert_close(out, uv)  # between cell centres, bilinear = exact for a linear ramp


def tiny_vit(tmp_path, registers=0):
    torch.manual_seed(0)
    model = DinoV2("dinov2_vits14", input_size=56, spec=ViTSpec(128, 2, 2), num_register_tokens=registers)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(model.state_dict(), path)  # the official checkpoint's parameter names
    return model.eval(), path


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_loads_a_local_checkpoint(tmp_path, registers, device):
    model, path = tiny_vit(tmp_path, registers)
    loaded = load_dinov2("dinov2_vits14", weights=path, input_size=56).to(device)
    assert loaded.spec == ViTSpec(128, 2, 2)  # heads: DINOv2 heads are 64 wide
    x = torch.rand(2, 3, 70, 90, device=device)
    out = loaded(x)
    assert out.shape == (2, 128, 4, 4)
    torch.testing.assert_close(out, model.to(device)(x))
    # other layers and facets come from the same weights
    key = load_dinov2("dinov2_vits14", weights=path, input_size=56, layer=0, facet="key").to(device)(x)
    assert key.shape == (2, 128, 4, 4) and not torch.allclose(key, out)


def test_dinov2_weights_from_environment_and_torch_hub_cache(tmp_path, monkeypatch):
    _, path = tiny_vit(tmp_path)
    monkeypatch.setenv("CATPOSE_DINOV2_WEIGHTS", str(path))
    assert load_dinov2("dinov2_vits14", input_size=56).spec.dim == 128
    monkeypatch.delenv("CATPOSE_DINOV2_WEIGHTS")
    hub = tmp_path / "torchhome" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    path.rename(hub / path.name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    assert load_dinov2("dinov2_vits14", input_size=56).spec.depth == 2


def test_missing_or_broken_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("CATPOSE_DINOV2_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(CatposeError) as e:
        build_backbone("dinov2_vitb14")
    msg = str(e.value)
    assert "never downloads" in msg and "dinov2_vitb14_pretrain.pth" in msg and "--backbone colorsift" in msg
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CatposeError, match="bad.pth: not a readable torch checkpoint"):
        load_dinov2("dinov2_vits14", weights=bad)


@pytest.mark.parametrize("cls", [ColorSift, RandomCNN])
def test_offline_backbones(cls, device):
    bb = cls().to(device).eval()
    x = torch.rand(2, 3, 64, 80, device=device)
    with torch.no_grad():
        f1, f2 = bb(x), bb(x)
    assert f1.shape[:2] == (2, bb.dim) and f1.shape[-2:] == (16, 20)  # both at stride 4
    torch.testing.assert_close(f1, f2)
    assert torch.isfinite(f1).all()
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet")


def test_colorsift_features_sit_where_they_are_sampled(device):
    """Shift an image by 8 px: features sampled at the shifted positions stay the same, so the
    feature grid is registered to the pixels (no half-cell offsets)."""
    torch.manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 24), size=(96, 96), mode="bilinear").to(device)
    shifted = torch.roll(img, shifts=(8, 8), dims=(2, 3))
    bb = ColorSift().to(device)
    uv = torch.cartesian_prod(torch.arange(30.0, 60.0, 3.3), torch.arange(30.0, 60.0, 3.3))[None].to(device)
    with torch.no_grad():
        a = sample_features(bb(img), uv, (96, 96))
        b = sample_features(bb(shifted), uv + 8, (96, 96))
        c = sample_features(bb(shifted), uv, (96, 96))
    err_aligned = (a - b).norm(dim=-1).mean()
    assert err_aligned < 0.35 * (a - c).norm(dim=-1).mean()


def published_pos_embed(
    pos_embed: torch.Tensor, rows: int, cols: int, offset: float, antialias: bool
) -> torch.Tensor:
    """The published DINOv2 rule (``interpolate_pos_encoding`` of facebookresearch/dinov2), written out:
    unchanged for the trained grid; else bicubic over the M × M grid with scale factors
    ``(grid + offset) / M`` when ``offset`` is non-zero, or the target size when it is zero (the register
    models), with ``antialias`` as the hub sets it."""
    N = pos_embed.shape[1] - 1
    M = int(N**0.5)
    if rows * cols == N and rows == cols:
        return pos_embed
    patch = pos_embed[:, 1:].float().reshape(1, M, M, -1).permute(0, 3, 1, 2)
    if offset:
        out = torch.nn.functional.interpolate(patch, scale_factor=((rows + offset) / M, (cols + offset) / M),
                                              mode="bicubic", antialias=antialias)
    else:
        out = torch.nn.functional.interpolate(patch, size=(rows, cols), mode="bicubic", antialias=antialias)
    assert out.shape[-2:] == (rows, cols)
    return torch.cat([pos_embed[:, :1], out.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)


@pytest.mark.parametrize("registers, offset, antialias", [(0, 0.1, False), (4, 0.0, True)])
def test_dinov2_position_embeddings_follow_the_published_rule(registers, offset, antialias, device):
    torch.manual_seed(1)
    model = DinoV2("dinov2_vits14", spec=ViTSpec(64, 1, 1), num_register_tokens=registers).to(device)
    # the hub's settings
    assert (model.interpolate_offset, model.interpolate_antialias) == (offset, antialias)
    with torch.no_grad():
        model.pos_embed.normal_()
    for grid in (4, 16, 32, 37, 40):  # 56 … 560 px inputs, the trained 518 px among them
        ours = model._pos_embed(grid, grid)
        ref = published_pos_embed(model.pos_embed, grid, grid, offset, antialias)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # sizing by the target grid alone (what catpose did before) is measurably different at 448 px
    if offset:
        by_size = published_pos_embed(model.pos_embed, 32, 32, 0.0, False)
        assert (model._pos_embed(32, 32) - by_size).abs().max() > 1e-3


def published_patch_tokens(
    state: dict, images: torch.Tensor, heads: int, offset: float, antialias: bool
) -> torch.Tensor:
    """The published DINOv2 forward pass (facebookresearch/dinov2's ``forward_features``:
    ``x_norm_patchtokens``), written out functionally from its description over a checkpoint's tensors,
    in float64: stride-14 patch embedding; the class token, plus position embeddings resampled by
    :func:`published_pos_embed`; register tokens after the class token; pre-norm blocks
    ``x + γ₁·Attn(LN(x))``, ``x + γ₂·MLP(LN(x))`` (LayerNorm eps 1e-6, softmax(q kᵀ/√d) v, exact GELU);
    the final LayerNorm; the tokens after the class and register tokens. [B, 3, H, W] normalised
    images (H, W multiples of 14) → [B, h·w, C]."""
    S = {k: v.double() for k, v in state.items()}
    x = images.double()
    B = x.shape[0]
    h, w = x.shape[2] // 14, x.shape[3] // 14
    t = torch.nn.functional.conv2d(x, S["patch_embed.proj.weight"], S["patch_embed.proj.bias"], stride=14)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([S["cls_token"].expand(B, -1, -1), t], 1) + published_pos_embed(
        S["pos_embed"], h, w, offset, antialias
    )
    R = S["register_tokens"].shape[1] if "register_tokens" in S else 0
    if R:
        t = torch.cat([t[:, :1], S["register_tokens"].expand(B, -1, -1), t[:, 1:]], 1)
    C = t.shape[-1]
    ln = lambda z, p: torch.nn.functional.layer_norm(z, (C,), S[p + ".weight"], S[p + ".bias"], 1e-6)
    lin = lambda z, p: z @ S[p + ".weight"].T + S[p + ".bias"]
    depth = 1 + max(int(k.split(".")[1]) for k in S if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}"
        q, k, v = (
            lin(ln(t, p + ".norm1"), p + ".attn.qkv")
            .reshape(B, -1, 3, heads, C // heads)
            .permute(2, 0, 3, 1, 4)
        )
        a = torch.softmax(q @ k.transpose(-1, -2) / (C // heads) ** 0.5, -1) @ v
        t = t + S[p + ".ls1.gamma"] * lin(a.transpose(1, 2).reshape(B, -1, C), p + ".attn.proj")
        m = lin(torch.nn.functional.gelu(lin(ln(t, p + ".norm2"), p + ".mlp.fc1")), p + ".mlp.fc2")
        t = t + S[p + ".ls2.gamma"] * m
    return ln(t, "norm")[:, 1 + R:]


@pytest.mark.parametrize("registers, offset, antialias", [(0, 0.1, False), (4, 0.0, True)])
def test_dinov2_patch_tokens_match_the_published_forward_pass(registers, offset, antialias):
    # random weights in the official checkpoint's names; frames of a size that is no multiple of 14
    # (catpose resizes them to input_size first, the published model takes the resized frames); input
    # sizes below, at (518: the trained 37 x 37 grid, no resampling) and above the trained one
    torch.manual_seed(2)
    model = DinoV2("dinov2_vits14", spec=ViTSpec(64, 2, 1), num_register_tokens=registers).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    frames = torch.rand(2, 3, 83, 61)
    for size in (56, 210, 448, 518, 560):
        model.input_size = size
        with torch.no_grad():
            ours = model(frames)  # [B, C, h, w]
        x = torch.nn.functional.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True)
        x = (x - model.mean) / model.std
        ref = published_patch_tokens(model.state_dict(), x, heads=1, offset=offset, antialias=antialias)
        assert ours.shape == (2, 64, size // 14, size // 14)
        torch.testing.assert_close(ours.flatten(2).transpose(1, 2).double(), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 14"):
        DinoV2("dinov2_vits14", input_size=500, spec=ViTSpec(64, 2, 1))
