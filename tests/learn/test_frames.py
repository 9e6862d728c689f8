"""Per-frame targets, crops and compositional augmentation, checked against geometry written out."""

import numpy as np
import torch

from catpose.data.camera import Camera, look_at_rotation
from catpose.learn.frames import colour_jitter, composite, frame_targets


def _sphere(n, seed=0):
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def test_frame_targets_project_and_hide_the_far_side():
    eye = np.array([0.0, -5.0, 0.5])
    R = look_at_rotation(eye, np.zeros(3))
    cam = Camera(R, -eye @ R, (3.0, 3.0), (0.0, 0.0), (96, 128), "ndc_isotropic")
    pts, dense = _sphere(400, 1), _sphere(4000, 2)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)
    uv, vis = frame_targets(
        t(pts),
        torch.ones(400, dtype=torch.bool),
        t(dense),
        t(cam.R)[None],
        t(cam.T)[None],
        t(cam.focal_px)[None],
        t(cam.principal_point_px)[None],
        cam.image_size,
    )
    uv_ref, _ = cam.project(pts)
    assert np.allclose(uv[0].numpy(), uv_ref, atol=1e-3)
    facing = (pts @ (eye / np.linalg.norm(eye)))  # cosine between the normal and the direction to the camera
    v = vis[0].numpy()
    assert v[facing > 0.35].mean() > 0.95  # the near side is visible
    assert not v[facing < -0.1].any()  # the far side never is


def test_composite_replaces_background_and_occludes_targets():
    g = torch.Generator().manual_seed(0)
    B, S = 4, 48
    img = torch.linspace(0.1, 0.7, B).view(B, 1, 1, 1).expand(B, 3, S, S).clone()  # a different frame each
    mask = torch.zeros(B, S, S)
    mask[:, 12:36, 12:36] = 1
    ys, xs = torch.meshgrid(torch.arange(12, 36), torch.arange(12, 36), indexing="ij")
    uv = torch.stack([xs.flatten(), ys.flatten()], -1).float().expand(B, -1, -1) + 0.5
    vis = torch.ones(B, uv.shape[1], dtype=torch.bool)
    out, fg, vis2 = composite(img, mask, uv, vis, g, p_background=1.0, p_occluder=1.0)
    for b in range(B):
        occluded = (mask[b] > 0.5) & (fg[b] < 0.5)
        assert occluded.any()  # every sample got an occluder over the object
        # vertices under the occluder are invisible, the others stay visible
        under = occluded[uv[b, :, 1].long(), uv[b, :, 0].long()]
        assert not vis2[b][under].any() and vis2[b][~under].all()
        # object pixels outside the occluder are untouched; the background changed
        keep = (mask[b] > 0.5) & ~occluded
        assert torch.allclose(out[b][:, keep], img[b][:, keep])
        assert (out[b][:, mask[b] < 0.5] - img[b][:, mask[b] < 0.5]).abs().mean() > 0.05
    jit = colour_jitter(out, g, p=1.0)
    assert jit.min() >= 0 and jit.max() <= 1 and not torch.allclose(jit, out)


def test_targets_agree_with_rendered_depth(synth_root):
    """Visibility from the sparse vertices' z-buffer and the mask, against the renderer's depth maps."""
    from catpose.data.co3d import Co3dCategory
    from catpose.features.surface import sequence_vertices
    from catpose.geometry import project

    agree = []
    for seq in Co3dCategory(synth_root, "car"):
        V, _, _ = sequence_vertices(seq.load_point_cloud(), 1000)
        Vt = torch.as_tensor(V)
        diam = float(np.linalg.norm(V.max(0) - V.min(0)))
        for fr in seq.frames[::2]:
            c = fr.camera
            t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)
            m = t(fr.load_mask())[None]
            args = (t(c.R)[None], t(c.T)[None], t(c.focal_px)[None], t(c.principal_point_px)[None])
            uv, vis = frame_targets(Vt, torch.ones(len(V), dtype=torch.bool), Vt, *args, c.image_size, m)
            _, z = project(Vt, *args)
            H, W = c.image_size
            u, v = uv[0, :, 0].floor().long().clamp(0, W - 1), uv[0, :, 1].floor().long().clamp(0, H - 1)
            depth = torch.as_tensor(fr.load_depth())[v, u]
            truth = (depth > 0) & ((z[0] - depth).abs() < 0.05 * diam) & (m[0][v, u] > 0.5)
            agree.append((vis[0] == truth).float().mean().item())
    print(f"\nvisibility vs rendered depth: {np.mean(agree):.1%} of vertex-frame pairs agree")
    assert np.mean(agree) > 0.85


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def _iou(a, b):
    return float((a & b).sum() / max((a | b).sum(), 1))


def _imperfect_frames(root, cat, seed):
    """Every frame of the category's videos with its true mask and an imperfect one (as the realistic
    synthesis makes them): (vertices [1000, 3], frame, truth, noisy, camera args [R, T, focal, pp], each
    repeated for 3 masks)."""
    from catpose.data.co3d import Co3dCategory
    from catpose.data.synth.generate import imperfect_mask
    from catpose.features.surface import sequence_vertices

    rng = np.random.default_rng(seed)
    for seq in Co3dCategory(root, cat):
        V = _t(sequence_vertices(seq.load_point_cloud(), 1000)[0])
        for fr in seq.frames:
            c = fr.camera
            truth = fr.load_mask() > 0.5
            noisy = imperfect_mask(truth.astype(np.float32), rng)
            args = [a.expand(3, *a.shape[1:]) for a in (_t(c.R)[None], _t(c.T)[None], _t(c.focal_px)[None],
                                                        _t(c.principal_point_px)[None])]
            yield V, fr, truth, noisy, args


def test_refine_masks_fills_imperfect_masks_from_the_video_geometry(synth_root):
    """Eroded, dilated and holed masks (as the realistic synthesis makes them) come out closer to the
    true mask after filling from the video's vertices, and never lose a pixel; true masks stay as they
    are; a cloud missing the object's bottom (cleaned away with the ground) costs the mask nothing there;
    a cloud that disagrees with the mask, and a frame without a mask, keep what they were given."""
    from catpose.learn.frames import refine_masks

    t, iou = _t, _iou
    for cat in ("car", "mug"):
        before, after, kept = [], [], []
        for V, fr, truth, noisy, args in _imperfect_frames(synth_root, cat, 0):
            out = refine_masks(t(np.stack([noisy, truth, np.ones_like(truth)])), V, *args)
            assert bool((out[0] >= t(noisy)).all())  # only adds
            before.append(iou(noisy, truth))
            after.append(iou(out[0].numpy() > 0.5, truth))
            kept.append(iou(out[1].numpy() > 0.5, truth))
            assert bool((out[2] == 1).all())  # no mask given: nothing to refine
        print(f"\n{cat}: mask IoU {np.mean(before):.3f} -> {np.mean(after):.3f} (true masks "
              f"{np.mean(kept):.3f})")
        assert np.mean(after) > np.mean(before) + 0.03 and min(after) > min(before)
        assert np.mean(kept) > 0.98
    # the last mug: its cloud without the lowest quarter along the camera's up axis keeps the true mask
    up = -t(fr.camera.R)[:, 1]  # world direction of the image's up (CO3D: camera y points down)
    h = V @ up
    top = V[h > torch.quantile(h, 0.25)]
    out = refine_masks(t(truth)[None], top, *(a[:1] for a in args))[0] > 0.5
    assert bool(out[truth].all()) and iou(out.numpy(), truth) > 0.97
    # a cloud three times too large (a bad camera or scale): the mask is kept as given
    big = refine_masks(t(noisy)[None], V.mean(0) + 3 * (V - V.mean(0)), *(a[:1] for a in args))
    assert torch.equal(big[0], t(noisy))


def test_snap_masks_moves_boundaries_to_the_object_edges(synth_root):
    """Masks 1-3 px too wide or too narrow (and holed, as the realistic synthesis makes them), filled from
    the geometry and then snapped, come out closer to the true masks than filled alone; true masks stay
    (nearly all) as they are; pixels outside the band never change, and frames without a mask are left
    alone."""
    import cv2

    from catpose.learn.frames import refine_masks, snap_masks

    t, iou = _t, _iou
    share = 0.025
    for cat in ("car", "mug"):
        filled, snapped, kept = [], [], []
        for V, fr, truth, noisy, args in _imperfect_frames(synth_root, cat, 1):
            image = torch.from_numpy(fr.load_image().copy()).permute(2, 0, 1)
            fill = refine_masks(t(np.stack([noisy, truth, np.ones_like(truth)])), V, *args)
            out = snap_masks(image[None].expand(3, -1, -1, -1), fill, share)
            assert bool((out[2] == 1).all())  # no mask given: nothing to snap
            band = max(1, round(share * min(truth.shape)))
            disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
            h = (fill[0].numpy() > 0.5).astype(np.uint8)
            outside = (cv2.dilate(h, disk) == 0) | (cv2.erode(h, disk, borderType=cv2.BORDER_REPLICATE) > 0)
            assert torch.equal(out[0][torch.from_numpy(outside)], fill[0][torch.from_numpy(outside)])
            filled.append(iou(fill[0].numpy() > 0.5, truth))
            snapped.append(iou(out[0].numpy() > 0.5, truth))
            kept.append(iou(out[1].numpy() > 0.5, truth))
        print(f"\n{cat}: mask IoU filled {np.mean(filled):.3f} -> snapped {np.mean(snapped):.3f} "
              f"(true masks {np.mean(kept):.3f})")
        assert np.mean(snapped) > np.mean(filled) + 0.02
        assert np.mean(kept) > 0.98  # exact masks are left alone unless GrabCut moves them by much
