"""Synthetic object-centric video categories written in the CO3D v2 layout.

Every video shows a new instance of the category, filmed by a camera that orbits it with varying
elevation, distance and a little hand-held roll. Every video gets its own random world frame
(rotation, translation, scale): the ambiguity that SfM leaves and that catpose's alignment resolves.
The similarity from each sequence's world frame to the canonical category frame,
``x_canonical = scale · R · x_world + translation``, goes to ``<root>/catpose_gt.json``, which the
pipeline reads only to evaluate.

Everything is written through a :class:`~catpose.storage.Store` (a local folder or ``s3://``): the Ray
tasks that render the videos get the store's URI and write their files there, never to a node's disk.

Realistic videos (``--realistic`` or the single options of :class:`~catpose.config.SynthConfig`) come
out the way real captures do: some orbit only part of the object, the cloud holds everything the
cameras saw (ground, background) plus outliers, masks are eroded, dilated or holed, and the cameras
carry SfM-level noise. Which cloud points lie on the object goes to
``<root>/catpose_gt_points/<category>/<sequence>.npy`` (evaluation only). The realistic perturbations
draw from their own random stream, so the same seed gives the same instances and orbits with and
without them (a partial orbit only shortens the sweep).
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from catpose import fingerprint as fp
from catpose.config import SynthConfig
from catpose.data.camera import Camera, look_at_rotation
from catpose.data.groundtruth import GT_FILE, GT_POINTS_DIR, load_ground_truth  # noqa: F401 (part of this module's API)
from catpose.data.pointcloud import PointCloud, ply_bytes
from catpose.data.synth.render import SceneRenderer
from catpose.data.synth.shapes import make_instance
from catpose.data.types import (
    DepthAnnotation,
    FrameAnnotation,
    ImageAnnotation,
    MaskAnnotation,
    PointCloudAnnotation,
    SequenceAnnotation,
    jgz_bytes,
    parse_frame_annotation,
    parse_sequence_annotation,
    to_jsonable,
)
from catpose.geometry import Similarity
from catpose.manifest import Manifest
from catpose.parallel import map_items
from catpose.storage import Store, key, safe_name

FILE_INDEX_STRIDE = 3  # image file numbers differ from frame_number, as in CO3D


@dataclass(frozen=True)
class Realism:
    """The realistic-capture settings in effect (``SynthConfig`` with the ``--realistic`` preset applied)."""

    partial_share: float = 0.0
    partial_sweep: tuple[float, float] = (150.0, 200.0)
    cloud_background: bool = False
    outliers: float = 0.0
    mask_noise: bool = False
    camera_noise: tuple[float, float] = (0.0, 0.0)

    @property
    def any(self) -> bool:
        return self != Realism(partial_sweep=self.partial_sweep)


REALISTIC = Realism(0.4, (150.0, 200.0), True, 0.05, True, (0.3, 0.005))


def realism(cfg: SynthConfig) -> Realism:
    """The options of ``cfg`` in effect: each unset one from the preset when ``cfg.realistic``, else off."""
    base = REALISTIC if cfg.realistic else Realism()
    pick = lambda v, d: d if v is None else v
    return Realism(
        partial_share=float(pick(cfg.partial_share, base.partial_share)),
        partial_sweep=tuple(float(x) for x in cfg.partial_sweep),
        cloud_background=bool(pick(cfg.cloud_background, base.cloud_background)),
        outliers=float(pick(cfg.outliers, base.outliers)),
        mask_noise=bool(pick(cfg.mask_noise, base.mask_noise)),
        camera_noise=tuple(float(x) for x in pick(cfg.camera_noise, base.camera_noise)),
    )


def realism_rng(seed: int, category: str, index: int) -> np.random.Generator:
    """The realistic perturbations' own stream: instances and orbits stay those of the clean videos."""
    return np.random.default_rng([seed, zlib.crc32(category.encode()), index, 7])


def sequence_rng(seed: int, category: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(category.encode()), index])


def sequence_name(category: str, index: int) -> str:
    return f"{category}_{index:04d}"


def orbit_cameras(rng: np.random.Generator, extent: float, center: np.ndarray, n_frames: int,
                  size: int, sweep_deg: float | None = None) -> list[Camera]:
    """Cameras in the canonical frame, circling the object like a person filming it (over 320-360°,
    or ``sweep_deg`` for a partial orbit: the same start and direction, a shorter sweep)."""
    fov = np.deg2rad(rng.uniform(40, 55))
    f_ndc = 1.0 / np.tan(fov / 2)
    radius = extent / 2
    dist0 = radius / np.tan(fov / 2) / rng.uniform(0.9, 1.05)
    az0 = rng.uniform(0, 2 * np.pi)
    sweep = np.deg2rad(rng.uniform(320, 360)) * rng.choice([-1, 1])
    if sweep_deg is not None:
        sweep = np.deg2rad(sweep_deg) * np.sign(sweep)
    el0, el1 = np.deg2rad(rng.uniform(15, 35)), np.deg2rad(rng.uniform(5, 15))
    el_freq, el_phase = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
    cams = []
    for k in range(n_frames):
        s = k / n_frames
        az = az0 + sweep * s
        el = el0 + el1 * np.sin(2 * np.pi * el_freq * s + el_phase)
        dist = dist0 * (1 + 0.05 * np.sin(2 * np.pi * s * 1.3 + el_phase))
        eye = center + dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        target = center + rng.normal(0, 0.03 * radius, 3)
        Rc = look_at_rotation(eye, target)
        roll = Rotation.from_rotvec([0, 0, np.deg2rad(rng.normal(0, 3))]).as_matrix()
        Rc = Rc @ roll.T  # roll about the viewing axis
        T = -eye @ Rc
        cams.append(Camera(Rc, T, (f_ndc, f_ndc), (0.0, 0.0), (size, size), "ndc_isotropic"))
    return cams


def random_world_frame(rng: np.random.Generator, extent: float) -> Similarity:
    """The ground truth of one video: world → canonical. The world frame is random, as after SfM."""
    R_w = Rotation.random(random_state=rng).as_matrix()  # world_from_canonical rotation
    s_w = float(np.exp(rng.uniform(np.log(0.3), np.log(3.0)))) / extent  # SfM scale is arbitrary
    t_w = rng.normal(0, 1.0, 3)
    return Similarity(R_w, t_w, s_w).inverse()


def camera_in_world(cam_c: Camera, gt: Similarity) -> Camera:
    """Re-expresses a canonical-frame camera in the world frame ``x_c = s R x_w + t``.

    ``X_cam = x_c Rc + Tc = s·x_w Rᵀ Rc + t Rc + Tc``; dividing the camera coordinates by ``s`` (which
    does not change the image) gives a rigid camera ``R = Rᵀ Rc``, ``T = (t Rc + Tc) / s``.
    """
    R = gt.R.T @ cam_c.R
    T = (gt.t @ cam_c.R + cam_c.T) / gt.scale
    return Camera(R, T, cam_c.focal_length, cam_c.principal_point, cam_c.image_size, cam_c.intrinsics_format)


def noisy_camera(cam: Camera, rng: np.random.Generator, rot_deg: float, pos_share: float,
                 center: np.ndarray) -> Camera:
    """``cam`` with SfM-level errors: its position moved by N(0, ``pos_share`` · distance to ``center``)
    per axis and its orientation turned by a rotation vector of N(0, ``rot_deg``) per axis."""
    c = cam.center
    dist = float(np.linalg.norm(c - center))
    c2 = c + rng.normal(0, pos_share * dist, 3)
    R2 = cam.R @ Rotation.from_rotvec(np.deg2rad(rng.normal(0, rot_deg, 3))).as_matrix()
    return Camera(R2, -c2 @ R2, cam.focal_length, cam.principal_point, cam.image_size, cam.intrinsics_format)


def imperfect_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A binary mask as segmentation gives them: eroded or dilated by 1-3 px (or left), and in a third
    of the frames 1-3 holes (discs of 3-8 % of the image size) cut into it. [H, W] → [H, W] bool."""
    from scipy import ndimage

    m = mask > 0.5
    r = int(rng.integers(1, 4))
    op = rng.choice(["erode", "dilate", "keep"], p=[0.4, 0.4, 0.2])
    disk = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r
    if op == "erode":
        m = ndimage.binary_erosion(m, disk)
    elif op == "dilate":
        m = ndimage.binary_dilation(m, disk)
    if rng.uniform() < 1 / 3 and m.any():
        H, W = m.shape
        vv, uu = np.nonzero(m)
        yy, xx = np.mgrid[:H, :W]
        for _ in range(int(rng.integers(1, 4))):
            i = rng.integers(len(vv))
            rad = rng.uniform(0.03, 0.08) * max(H, W)
            m &= np.hypot(yy - vv[i], xx - uu[i]) > rad
    return m


def _outliers(rng: np.random.Generator, n: int, obj: np.ndarray, scene: np.ndarray) -> np.ndarray:
    """``n`` outliers: half spread over 1.5 × the object's box (where no camera test removes them),
    half over the whole scene's box."""
    def box(p, grow):
        lo, hi = p.min(0), p.max(0)
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * grow
        return mid - half, mid + half

    n_near = n // 2
    lo, hi = box(obj if len(obj) else scene, 1.5)
    lo2, hi2 = box(scene, 1.0)
    return np.concatenate([rng.uniform(lo, hi, (n_near, 3)), rng.uniform(lo2, hi2, (n - n_near, 3))])


def _voxel_downsample(points: np.ndarray, voxel: float) -> np.ndarray:
    keys = np.floor(points / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _depth_png(depth: np.ndarray) -> bytes:
    """CO3D depth: the uint16 bit pattern of float16 values, in a 16-bit PNG."""
    bits = depth.astype(np.float16).view(np.uint16)
    return _png(Image.fromarray(bits))


def sequence_fingerprint(cfg: SynthConfig, category: str, index: int) -> dict:
    """What a video is made from: the settings that change it (no inputs: it is generated)."""
    return fp.make(
        {
            "category": category,
            "index": index,
            "seed": cfg.seed,
            "frames": cfg.frames,
            "size": cfg.size,
            "depth": cfg.depth,
            "supersample": cfg.supersample,
            "max_points": cfg.max_points,
            "realism": to_jsonable(realism(cfg)),
        }
    )


def synth_store(cfg: SynthConfig) -> Store:
    return Store(str(cfg.out), cfg.endpoint_url)


def generate_sequence(cfg: SynthConfig, category: str, index: int) -> dict:
    """Renders and writes one video; returns its annotations and ground truth (as JSON dicts)."""
    root = synth_store(cfg)
    rng = sequence_rng(cfg.seed, category, index)
    seq = sequence_name(category, index)
    inst = make_instance(category, rng)
    renderer = SceneRenderer(inst, rng)
    mesh, _ = inst.merged()
    center = mesh.bounds.mean(axis=0)
    real = realism(cfg)
    rr = realism_rng(cfg.seed, category, index)
    sweep_deg = float(rr.uniform(*real.partial_sweep)) if rr.uniform() < real.partial_share else None
    cams_c = orbit_cameras(rng, inst.extent, center, cfg.frames, cfg.size, sweep_deg)
    gt = random_world_frame(rng, inst.extent)
    center_w = gt.inverse().apply(center[None])[0]
    frames, pts, cols, nrms, on_obj = [], [], [], [], []
    for k, cam_c in enumerate(cams_c):
        out = renderer.render(cam_c, supersample=cfg.supersample)
        cam_w = camera_in_world(cam_c, gt)
        fid = 1 + FILE_INDEX_STRIDE * k
        rel = key(category, seq)
        img_rel = f"{rel}/images/frame{fid:06d}.jpg"
        mask_rel = f"{rel}/masks/frame{fid:06d}.png"
        root.write_bytes(img_rel, _png(Image.fromarray(out.image), format="JPEG", quality=95))
        mask_out = imperfect_mask(out.mask, rr).astype(np.float32) if real.mask_noise else out.mask
        root.write_bytes(mask_rel, _png(Image.fromarray((mask_out * 255 + 0.5).astype(np.uint8))))
        depth_w = out.depth / gt.scale  # camera coordinates were divided by s
        depth_ann = None
        if cfg.depth:
            d_rel = f"{rel}/depths/frame{fid:06d}.jpg.geometric.png"
            dm_rel = f"{rel}/depth_masks/frame{fid:06d}.png"
            root.write_bytes(d_rel, _depth_png(np.where(out.mask > 0, depth_w, 0.0)))
            root.write_bytes(dm_rel, _png(Image.fromarray(((out.mask > 0) * 255).astype(np.uint8))))
            depth_ann = DepthAnnotation(d_rel, 1.0, dm_rel)
        cam_written = (
            noisy_camera(cam_w, rr, *real.camera_noise, center_w) if any(real.camera_noise) else cam_w
        )
        frames.append(FrameAnnotation(
            sequence_name=seq, frame_number=k, frame_timestamp=round(k / 10.0, 3),
            image=ImageAnnotation(img_rel, (cfg.size, cfg.size)), depth=depth_ann,
            mask=MaskAnnotation(mask_rel, float(mask_out.sum())), viewpoint=cam_written.to_viewpoint(),
        ))
        # points of fully covered pixels (the object's; with cloud_background also of everything else
        # hit), unprojected in the sequence's world frame with the true camera
        full = out.mask > 0.99
        take = full | ((out.mask == 0) & (out.depth > 0)) if real.cloud_background else full
        if take.any():
            v, u = np.nonzero(take)
            uv = np.stack([u + 0.5, v + 0.5], axis=-1)
            pts.append(cam_w.unproject(uv, depth_w[take]))
            cols.append(out.image[take])
            nrms.append(out.normals[take] @ gt.R)  # canonical → world direction: Rᵀ n (row form)
            on_obj.append(full[take])
    points = np.concatenate(pts) if pts else np.zeros((0, 3))
    labels = np.concatenate(on_obj) if on_obj else np.zeros(0, bool)
    keep = (
        _voxel_downsample(points, voxel=inst.extent / gt.scale / 150.0) if len(points) else np.zeros(0, int)
    )
    if len(keep) > cfg.max_points:
        keep = np.sort(rng.choice(keep, cfg.max_points, replace=False))
    points, labels = points[keep], labels[keep]
    colors = np.concatenate(cols)[keep] if cols else None
    normals = np.concatenate(nrms)[keep].astype(np.float32) if nrms else None
    if real.cloud_background or real.outliers > 0:
        normals = None  # SfM clouds have no normals
    if real.outliers > 0 and len(points):
        n_out = round(real.outliers * len(points) / (1 - real.outliers))
        extra = _outliers(rr, n_out, points[labels], points)
        points = np.concatenate([points, extra])
        labels = np.concatenate([labels, np.zeros(n_out, bool)])
        if colors is not None:
            colors = np.concatenate([colors, rr.integers(0, 256, (n_out, 3)).astype(np.uint8)])
    cloud = PointCloud(points.astype(np.float32), colors, normals)
    buf = io.BytesIO()
    np.save(buf, labels)
    root.write_bytes(f"{GT_POINTS_DIR}/{category}/{seq}.npy", buf.getvalue())
    ply_rel = f"{category}/{seq}/pointcloud.ply"
    root.write_bytes(ply_rel, ply_bytes(cloud))
    seq_ann = SequenceAnnotation(
        sequence_name=seq, category=category,
        point_cloud=PointCloudAnnotation(ply_rel, 1.0, len(points)), viewpoint_quality_score=1.0,
    )
    record = {
        "frames": to_jsonable(frames),
        "sequence": to_jsonable(seq_ann),
        "fingerprint": sequence_fingerprint(cfg, category, index),
        "gt": {**gt.to_json(), "instance": {k: float(v) for k, v in inst.params.items()},
               "orbit_deg": round(float(sweep_deg), 1) if sweep_deg is not None else 360.0,
               "object_points": int(labels.sum()), "cloud_points": len(labels)},
    }
    # written last: a staged record means every file of the video is in the store
    root.write_bytes(_staged(category, seq), json.dumps(record).encode())
    return record


def _staged(category: str, seq: str) -> str:
    return f"{category}/.synth/{seq}.json"


def _generate_task(args: tuple[SynthConfig, str, int]) -> dict:
    cfg, category, index = args
    return generate_sequence(cfg, category, index)


def generate(cfg: SynthConfig) -> dict[str, Manifest]:
    """Generates every category of ``cfg`` into its store (``cfg.out``, a folder or ``s3://``); resumes
    where sequences are already written."""
    root = synth_store(cfg)
    root.check()
    manifests = {}
    gt_all = root.read_json(GT_FILE, default=None) or {"categories": {}}
    gt_all["convention"] = ("x_canonical = scale * R @ x_world + translation; rotation row-major 3x3; "
                            "canonical frame: x front, y left, z up, object on z = 0")
    for category in cfg.category:
        safe_name(category, "category", "--category", "category")  # it becomes every key below
        man = Manifest.load_or_new(f"{category}/catpose_manifest_synth.json", "synth", store=root)
        man.info.update({"videos": cfg.videos, "frames": cfg.frames, "size": cfg.size, "seed": cfg.seed,
                         "realism": to_jsonable(realism(cfg))})
        # a staged video is kept only when it was made with this run's settings (its recorded fingerprint)
        staged = set(root.glob(f"{category}/.synth/*.json"))
        names = {i: sequence_name(category, i) for i in range(cfg.videos)}
        old = root.cat_many(sorted(staged & {_staged(category, n) for n in names.values()}))
        log = fp.ResumeLog(f"synth {category}", "videos")
        todo = []
        for i, name in names.items():
            raw = old.get(_staged(category, name))
            why = "missing"
            if raw is not None and not isinstance(raw, Exception):
                try:
                    why = fp.change(
                        json.loads(raw).get("fingerprint"), sequence_fingerprint(cfg, category, i)
                    )
                except ValueError:
                    why = "unreadable record"
            if why is None:
                log.keep()
                continue
            log.redo(why)
            if why != "missing":  # its old files go first: a failed rerun must not leave the old video listed
                root.remove(_staged(category, name))
                root.remove(f"{category}/{name}", recursive=True)
                man.items.pop(name, None)
            todo.append((cfg, category, i))
        log.say()
        for (_, _, i), _, err, sec in map_items(
            _generate_task, todo, workers=cfg.workers, desc=f"synth {category}"
        ):
            man.record(
                sequence_name(category, i),
                "failed" if err else "ok",
                error=err,
                seconds=sec,
                save=False,
                **({} if err else {"fingerprint": sequence_fingerprint(cfg, category, i)}),
            )
        man.save()
        # assemble the category's annotation files from the per-sequence records
        frames, seqs, gts = [], [], {}
        keys = {
            sequence_name(category, i): _staged(category, sequence_name(category, i))
            for i in range(cfg.videos)
        }
        got = root.cat_many(sorted(set(root.glob(f"{category}/.synth/*.json")) & set(keys.values())))
        for name, staged in keys.items():
            data = got.get(staged)
            if data is None or isinstance(data, Exception):
                continue
            rec = json.loads(data)
            src = root.url(staged)
            frames += [parse_frame_annotation(d, src, j) for j, d in enumerate(rec["frames"])]
            seqs.append(parse_sequence_annotation(rec["sequence"], src, 0))
            gts[name] = rec["gt"]
            if man.status(name) is None:
                man.record(name, "ok", save=False, fingerprint=rec.get("fingerprint"))
        man.save()
        root.write_bytes(f"{category}/frame_annotations.jgz", jgz_bytes(frames))
        root.write_bytes(f"{category}/sequence_annotations.jgz", jgz_bytes(seqs))
        names = sorted(gts)
        val = set(names[::10])
        set_list = {
            "train": [
                [f.sequence_name, f.frame_number, f.image.path] for f in frames if f.sequence_name not in val
            ],
            "val": [
                [f.sequence_name, f.frame_number, f.image.path] for f in frames if f.sequence_name in val
            ],
            "test": [],
        }
        root.write_bytes(f"{category}/set_lists/set_lists_fewview_dev.json", json.dumps(set_list).encode())
        gt_all["categories"][category] = {"sequences": gts}
        manifests[category] = man
    root.write_bytes(GT_FILE, json.dumps(gt_all, indent=1).encode())
    return manifests
