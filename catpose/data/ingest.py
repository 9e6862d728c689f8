"""Raw frames (or a video) per sequence → Structure-from-Motion with pycolmap → CO3D-layout sequences.

Input: ``FRAMES/<sequence>/`` holding images (optionally ``FRAMES/<sequence>/masks/`` with masks of
the same file names), or ``FRAMES/<sequence>.<mp4|mov|avi|mkv|webm>``. For each sequence: frames are
evenly subsampled and downscaled, SIFT features extracted and matched, and the incremental mapper
recovers cameras and a sparse point cloud (largest model). Cameras are written in CO3D's convention
(``ndc_isotropic``), frames that SfM could not register are left out, and the point cloud is cropped
to the object the cameras look at (or to the masks, when given). A sequence whose SfM fails is
reported by name in the manifest and skipped; the others go on.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from catpose.config import IngestConfig
from catpose.data.camera import Camera
from catpose.data.co3d import decode_image
from catpose.data.pointcloud import PointCloud, write_ply
from catpose.data.types import (
    FrameAnnotation,
    ImageAnnotation,
    MaskAnnotation,
    PointCloudAnnotation,
    SequenceAnnotation,
    dump_annotations,
    load_frame_annotations,
    load_sequence_annotations,
)
from catpose.errors import DataFormatError, MissingFileError, SfMError
from catpose.manifest import Manifest
from catpose.parallel import map_items

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


def find_sequences(frames_root: Path) -> dict[str, Path]:
    """Sequence name → folder of frames or video file."""
    if not frames_root.is_dir():
        raise MissingFileError(str(frames_root), "frames folder")
    out = {}
    for p in sorted(frames_root.iterdir()):
        if p.is_dir() and any(q.suffix.lower() in IMAGE_EXT for q in p.iterdir()):
            out[p.name] = p
        elif p.is_file() and p.suffix.lower() in VIDEO_EXT:
            out[p.stem] = p
    return out


def read_video_frames(path: Path, max_frames: int) -> list[np.ndarray]:
    """Decodes a video (PyAV) and returns ``max_frames`` frames spread evenly over it."""
    import av

    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except Exception as e:  # av.error.* for unreadable files
        raise DataFormatError(str(path), f"cannot decode video ({type(e).__name__}: {e})") from e
    if not frames:
        raise DataFormatError(str(path), "video has no frames")
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    return [frames[i] for i in idx]


def _select(items: list, k: int) -> list[int]:
    if len(items) <= k:
        return list(range(len(items)))
    return list(np.unique(np.linspace(0, len(items) - 1, k).round().astype(int)))


def _fit_size(hw: tuple[int, int], max_size: int) -> tuple[int, int]:
    h, w = hw
    s = min(1.0, max_size / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def focus_point(cameras: list[Camera]) -> np.ndarray:
    """The point closest (least squares) to all optical axes: what an object-centric video films."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c in cameras:
        d = c.R[:, 2]  # viewing direction (camera +Z) in world coordinates
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c.center
    return np.linalg.lstsq(A, b, rcond=None)[0]


def prepare_frames(name: str, src: Path, cfg: IngestConfig, seq_dir: Path) -> tuple[list[str], list[str | None]]:
    """Writes the chosen frames (and masks) as JPEG/PNG into the CO3D sequence folder."""
    (seq_dir / "images").mkdir(parents=True, exist_ok=True)
    images: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    stems: list[str] = []  # frame file names are kept, so frames can be traced to their source
    if src.is_file():
        images = read_video_frames(src, cfg.max_frames)
        masks = [None] * len(images)
        stems = [f"frame{i:06d}" for i in range(1, len(images) + 1)]
    else:
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXT)
        for i in _select(files, cfg.max_frames):
            f = files[i]
            images.append(decode_image(f.read_bytes(), str(f)))
            mp = next((m for m in (src / "masks").glob(f.stem + ".*")), None) if (src / "masks").is_dir() else None
            masks.append(None if mp is None else decode_image(mp.read_bytes(), str(mp), mode="L"))
            stems.append(f.stem)
    if len(images) < 3:
        raise SfMError(name, f"only {len(images)} frames; SfM needs at least 3")
    names, mask_names = [], []
    for img, m, stem in zip(images, masks, stems):
        h, w = _fit_size(img.shape[:2], cfg.max_size)
        fn = f"{stem}.jpg"
        Image.fromarray(img).resize((w, h), Image.BILINEAR).save(seq_dir / "images" / fn, quality=95)
        names.append(fn)
        if m is not None:
            (seq_dir / "masks").mkdir(exist_ok=True)
            Image.fromarray(m).resize((w, h), Image.NEAREST).save(seq_dir / "masks" / f"{stem}.png")
            mask_names.append(f"{stem}.png")
        else:
            mask_names.append(None)
    return names, mask_names


def run_sfm(name: str, image_dir: Path, work: Path, matcher: str = "exhaustive"):
    """pycolmap SIFT + matching + incremental mapping; returns the largest reconstruction."""
    import pycolmap

    db = work / "database.db"
    ext = pycolmap.FeatureExtractionOptions()
    ext.sift.max_num_features = 4096
    pycolmap.extract_features(db, image_dir, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=pycolmap.ImageReaderOptions(camera_model="SIMPLE_PINHOLE"),
                              extraction_options=ext, device=pycolmap.Device.cpu)
    if matcher == "sequential":
        pycolmap.match_sequential(db, device=pycolmap.Device.cpu)
    elif matcher == "exhaustive":
        pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    else:
        raise ValueError(f"matcher must be 'exhaustive' or 'sequential', got {matcher!r}")
    opts = pycolmap.IncrementalPipelineOptions()
    opts.min_model_size = 3
    opts.random_seed = 0
    (work / "sparse").mkdir(exist_ok=True)
    recs = pycolmap.incremental_mapping(db, image_dir, work / "sparse", options=opts)
    if not recs:
        raise SfMError(name, "the mapper found no model (too few matches between frames)")
    return max(recs.values(), key=lambda r: r.num_reg_images())


def ingest_sequence(name: str, src: Path, cfg: IngestConfig) -> dict:
    """Runs one sequence end to end; returns its annotations as dataclasses (or raises)."""
    root = Path(cfg.out)
    seq_dir = root / cfg.category / name
    if seq_dir.exists():
        shutil.rmtree(seq_dir)
    names, mask_names = prepare_frames(name, src, cfg, seq_dir)
    with tempfile.TemporaryDirectory(prefix=f"catpose_sfm_{name}_") as tmp:
        rec = run_sfm(name, seq_dir / "images", Path(tmp), cfg.matcher)
    by_name = {img.name: img for img in rec.images.values()}
    registered = [n for n in names if n in by_name]
    frac = len(registered) / len(names)
    if frac < cfg.min_registered:
        raise SfMError(name, f"registered {len(registered)} of {len(names)} frames "
                             f"({frac:.0%} < min_registered {cfg.min_registered:.0%})")
    frames: list[FrameAnnotation] = []
    cams: list[Camera] = []
    masks: list[np.ndarray | None] = []
    rel = f"{cfg.category}/{name}"
    k = 0
    for fn, mn in zip(names, mask_names):
        if fn not in by_name:
            continue
        img = by_name[fn]
        cam = img.camera
        pose = img.cam_from_world()
        size = (int(cam.height), int(cam.width))
        c = Camera.from_opencv(cam.calibration_matrix(), pose.rotation.matrix(), pose.translation, size)
        cams.append(c)
        mask_ann = None
        m = None
        if mn is not None:
            m = np.asarray(Image.open(seq_dir / "masks" / mn).convert("L"), dtype=np.float32) / 255
            mask_ann = MaskAnnotation(f"{rel}/masks/{mn}", float(m.sum()))
        masks.append(m)
        frames.append(FrameAnnotation(
            sequence_name=name, frame_number=k, frame_timestamp=-1.0,
            image=ImageAnnotation(f"{rel}/images/{fn}", size), mask=mask_ann, viewpoint=c.to_viewpoint(),
            meta={"sfm_reprojection_error": float(rec.compute_mean_reprojection_error())} if k == 0 else None,
        ))
        k += 1
    for fn in names:  # unregistered frames are not part of the sequence
        if fn not in by_name:
            (seq_dir / "images" / fn).unlink(missing_ok=True)
    pts = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3)
    cols = np.array([p.color for p in rec.points3D.values()], dtype=np.uint8).reshape(-1, 3)
    keep = crop_to_object(pts, cams, masks)
    if keep.sum() == 0:
        raise SfMError(name, "no SfM point lies on the object")
    cloud = PointCloud(pts[keep].astype(np.float32), cols[keep])
    write_ply(seq_dir / "pointcloud.ply", cloud)
    seq = SequenceAnnotation(name, cfg.category, point_cloud=PointCloudAnnotation(
        f"{rel}/pointcloud.ply", None, int(keep.sum())))
    return {"frames": frames, "sequence": seq, "registered": len(registered), "total": len(names)}


def crop_to_object(points: np.ndarray, cams: list[Camera], masks: list[np.ndarray | None]) -> np.ndarray:
    """Keeps the points on the filmed object: inside the masks in most views where masks exist,
    otherwise within half the median camera distance of the cameras' focus point."""
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    if any(m is not None for m in masks):
        votes = np.zeros(len(points))
        seen = np.zeros(len(points))
        for c, m in zip(cams, masks):
            if m is None:
                continue
            uv, z = c.project(points)
            H, W = m.shape
            ok = np.isfinite(uv).all(1) & (z > 0)
            u = np.floor(np.nan_to_num(uv[:, 0])).astype(int)
            v = np.floor(np.nan_to_num(uv[:, 1])).astype(int)
            ok &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
            seen += ok
            votes[ok] += m[v[ok], u[ok]] > 0.5
        return (seen > 0) & (votes >= 0.8 * seen)
    f = focus_point(cams)
    r = 0.5 * np.median([np.linalg.norm(c.center - f) for c in cams])
    return np.linalg.norm(points - f, axis=1) < r


def _ingest_task(args: tuple[str, Path, IngestConfig]) -> dict:
    name, src, cfg = args
    return ingest_sequence(name, src, cfg)


def ingest(cfg: IngestConfig) -> Manifest:
    """Ingests every sequence under ``cfg.frames``; failures are recorded, the rest go on."""
    root = Path(cfg.out)
    cat_dir = root / cfg.category
    cat_dir.mkdir(parents=True, exist_ok=True)
    man = Manifest.load_or_new(cat_dir / "catpose_manifest_ingest.json", "ingest")
    seqs = find_sequences(Path(cfg.frames))
    fa_path, sa_path = cat_dir / "frame_annotations.jgz", cat_dir / "sequence_annotations.jgz"
    frames = [f for f in load_frame_annotations(fa_path)] if fa_path.is_file() else []
    seq_anns = {s.sequence_name: s for s in load_sequence_annotations(sa_path)} if sa_path.is_file() else {}
    todo = [(n, p, cfg) for n, p in seqs.items() if man.status(n) != "ok" or n not in seq_anns]
    t0 = time.perf_counter()
    for (name, _, _), res, err, sec in map_items(_ingest_task, todo, workers=cfg.workers, desc="ingest (SfM)"):
        if err:
            man.record(name, "failed", error=err, seconds=sec)
            shutil.rmtree(cat_dir / name, ignore_errors=True)
            continue
        frames = [f for f in frames if f.sequence_name != name] + res["frames"]
        seq_anns[name] = res["sequence"]
        man.record(name, "ok", seconds=sec, registered=res["registered"], frames=res["total"])
        dump_annotations(fa_path, frames)
        dump_annotations(sa_path, list(seq_anns.values()))
    man.info["seconds"] = round(time.perf_counter() - t0, 2)
    man.save()
    return man
