"""Raw frames (or a video) per sequence → Structure-from-Motion with pycolmap → CO3D-layout sequences.

Input: ``FRAMES/<sequence>/`` holding images (optionally ``FRAMES/<sequence>/masks/`` with masks of
the same file names), or ``FRAMES/<sequence>.<mp4|mov|avi|mkv|webm>``. For each sequence: frames are
evenly subsampled and downscaled, SIFT features extracted and matched, and the incremental mapper
recovers cameras and a sparse point cloud (largest model). Cameras are written in CO3D's convention
(``ndc_isotropic``), frames that SfM could not register are left out, and the point cloud is cleaned
to the object (:func:`catpose.data.cleaning.clean_object_points`: a vote of the masks when every frame
has one; else the supporting plane and what lies outside the common view removed). Frames without a
mask get one (``--masks grabcut``): the cleaned cloud projected into the frame seeds OpenCV's GrabCut
(:func:`grabcut_mask`), written to ``masks/`` as in CO3D. When every frame has a mask, the cloud
written is the object's visual hull carved from them (:func:`dense_object_cloud`; the GrabCut masks
are then made once more, seeded by the hull, and carved again): sparse SfM leaves a few dozen points
on a weakly textured object. A sequence whose SfM fails is reported by name in the manifest and
skipped; the others go on.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from catpose import fingerprint as fp
from catpose.config import IngestConfig
from catpose.data.camera import Camera
from catpose.data.cleaning import clean_object_points, focus_point, settings_from, view_size
from catpose.data.images import decode_image
from catpose.data.masks import grabcut
from catpose.data.pointcloud import PointCloud, write_ply
from catpose.data.types import (
    FrameAnnotation,
    ImageAnnotation,
    MaskAnnotation,
    PointCloudAnnotation,
    SequenceAnnotation,
    jgz_bytes,
    load_jgz,
    parse_frame_annotation,
    parse_sequence_annotation,
)
from catpose.errors import DataFormatError, MissingFileError, SfMError
from catpose.manifest import Manifest
from catpose.parallel import map_items
from catpose.storage import Store, is_s3, key, name_problem, safe_name, shown_name

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}


def find_sequences(frames_root: str | Path, endpoint_url: str | None = None) -> dict[str, str]:
    """Sequence name → its folder of frames or its video file, as a path or, under an ``s3://`` root,
    a URI (listed here; each ingest task downloads its own sequence)."""
    if is_s3(frames_root):
        store = Store(str(frames_root), endpoint_url)
        if not store.is_dir():
            raise MissingFileError(store.uri, "frames prefix")
        out = {}
        for key in store.files(""):  # one listing: <sequence>.<video> or <sequence>/<frame>.<image>
            parts = key.split("/")
            if len(parts) == 1 and Path(key).suffix.lower() in VIDEO_EXT:
                out[Path(key).stem] = store.url(key)
            elif len(parts) == 2 and Path(parts[1]).suffix.lower() in IMAGE_EXT:
                out[parts[0]] = store.url(parts[0])
        return dict(sorted(out.items()))
    root = Path(frames_root)
    if not root.is_dir():
        raise MissingFileError(str(root), "frames folder")
    out = {}
    for p in sorted(root.iterdir()):
        if p.is_dir() and any(q.suffix.lower() in IMAGE_EXT for q in p.iterdir()):
            out[p.name] = str(p)
        elif p.is_file() and p.suffix.lower() in VIDEO_EXT:
            out[p.stem] = str(p)
    return out


def fetch_source(src: str, endpoint_url: str | None, scratch: Path) -> Path:
    """The sequence ``src`` (an ``s3://`` folder of frames, with its ``masks/``, or a video file) copied
    into the local folder ``scratch``: what SfM reads. A local ``src`` is returned as it is."""
    if not is_s3(src):
        return Path(src)
    parent, name = src.rstrip("/").rsplit("/", 1)
    up = Store(parent, endpoint_url)
    local = scratch / name
    if Path(name).suffix.lower() in VIDEO_EXT:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(up.read_bytes(name))
        return local
    for k, data in up.cat_many(up.files(name)).items():
        if isinstance(data, Exception):
            raise MissingFileError(up.url(k), f"frame of sequence {name} ({data})")
        dest = scratch / k
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return local


def _video_frame_count(path: Path) -> int:
    """Frames of the first video stream: the header's count, else its packets counted (no decoding)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for p in container.demux(stream) if p.size)


def read_video_frames(path: Path, max_frames: int) -> list[np.ndarray]:
    """``max_frames`` frames spread evenly over a video (PyAV), decoded streaming: the indices are
    chosen from the stream's frame count first, frames are decoded one at a time and only the chosen
    ones are kept, so memory holds ``max_frames`` frames whatever the video's length (a 2-minute 1080p
    video held whole would need about 20 GB)."""
    import av

    try:
        n = _video_frame_count(path)
        if n <= 0:
            raise DataFormatError(str(path), "video has no frames")
        want = {int(i) for i in np.unique(np.linspace(0, n - 1, min(max_frames, n)).round().astype(int))}
        kept, last = [], None
        with av.open(str(path)) as container:
            for i, f in enumerate(container.decode(video=0)):
                if i in want:
                    kept.append(f.to_ndarray(format="rgb24"))
                    if len(kept) == len(want):
                        break
                last = f
        if len(kept) < len(want) and last is not None and len(kept) < max_frames:
            kept.append(last.to_ndarray(format="rgb24"))  # a header that overstated the count: the last frame
    except DataFormatError:
        raise
    except Exception as e:  # av.error.* for unreadable files
        raise DataFormatError(str(path), f"cannot decode video ({type(e).__name__}: {e})") from e
    if not kept:
        raise DataFormatError(str(path), "video has no frames")
    return kept


def _select(items: list, k: int) -> list[int]:
    if len(items) <= k:
        return list(range(len(items)))
    return list(np.unique(np.linspace(0, len(items) - 1, k).round().astype(int)))


def _fit_size(hw: tuple[int, int], max_size: int) -> tuple[int, int]:
    h, w = hw
    s = min(1.0, max_size / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def prepare_frames(
    name: str, src: Path, cfg: IngestConfig, seq_dir: Path
) -> tuple[list[str], list[str | None]]:
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
            mp = (
                next((m for m in (src / "masks").glob(f.stem + ".*")), None)
                if (src / "masks").is_dir()
                else None
            )
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


def run_sfm(name: str, image_dir: Path, work: Path, matcher: str = "exhaustive", robust: bool = False,
            peak_threshold: float | None = None, max_features: int | None = None):
    """pycolmap SIFT + matching + incremental mapping; returns the largest reconstruction.

    ``robust``: the settings for sparse captures (about 20 frames over 360°, 18° apart): twice the
    SIFT features at a lower peak threshold (more points on weakly textured objects too), guided matching,
    and a relaxed mapper (initial pair from
    50 inliers and 8° of triangulation angle, frames registered from 15 inliers at 15 %, and COLMAP's
    structure-less fallback). On synthetic sparse orbits (6 videos, 160 px) they register 120 of 120
    frames against 90 with COLMAP's defaults.

    ``peak_threshold``/``max_features``: SIFT's (default: COLMAP's, 0.0067 and 4096); the robust
    settings take the lower threshold and the larger count of theirs and these.
    """
    import pycolmap

    db = work / "database.db"
    ext = pycolmap.FeatureExtractionOptions()
    ext.sift.max_num_features = max(8192 if robust else 0, max_features or 4096)
    if robust or peak_threshold is not None:
        ext.sift.peak_threshold = min(0.004 if robust else 1.0, peak_threshold or 1.0)
    pycolmap.extract_features(db, image_dir, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=pycolmap.ImageReaderOptions(camera_model="SIMPLE_PINHOLE"),
                              extraction_options=ext, device=pycolmap.Device.cpu)
    mopt = pycolmap.FeatureMatchingOptions()
    mopt.guided_matching = robust
    if matcher == "sequential":
        pycolmap.match_sequential(db, matching_options=mopt, device=pycolmap.Device.cpu)
    elif matcher == "exhaustive":
        pycolmap.match_exhaustive(db, matching_options=mopt, device=pycolmap.Device.cpu)
    else:
        raise ValueError(f"matcher must be 'exhaustive' or 'sequential', got {matcher!r}")
    opts = pycolmap.IncrementalPipelineOptions()
    opts.min_model_size = 3
    opts.random_seed = 0
    if robust:
        opts.mapper.init_min_num_inliers = 50
        opts.mapper.init_min_tri_angle = 8.0
        opts.mapper.abs_pose_min_num_inliers = 15
        opts.mapper.abs_pose_min_inlier_ratio = 0.15
        opts.min_num_matches = 10
        opts.structure_less_registration_fallback = True
    (work / "sparse").mkdir(exist_ok=True)
    recs = pycolmap.incremental_mapping(db, image_dir, work / "sparse", options=opts)
    if not recs:
        raise SfMError(name, "the mapper found no model (too few matches between frames)")
    return max(recs.values(), key=lambda r: r.num_reg_images())


def sfm_with_retry(name: str, image_dir: Path, n_frames: int, cfg: IngestConfig):
    """:func:`run_sfm` with COLMAP's settings, then, when fewer than ``cfg.sfm_retry`` of the frames
    register (or no model is found), again with the robust settings; the model registering more wins
    (the robust one on a tie: it has more points). ``cfg.sfm_retry`` above 1 always uses the robust
    settings. Returns ``(reconstruction, "default" | "robust")``."""
    first, err = None, None
    with tempfile.TemporaryDirectory(prefix=f"catpose_sfm_{name}_") as tmp:
        try:
            first = run_sfm(name, image_dir, Path(tmp), cfg.matcher, peak_threshold=cfg.sift_peak_threshold,
                            max_features=cfg.sift_max_features)
        except SfMError as e:
            err = e
    if first is not None and (cfg.sfm_retry <= 0 or first.num_reg_images() >= cfg.sfm_retry * n_frames):
        return first, "default"
    if cfg.sfm_retry <= 0:
        raise err
    with tempfile.TemporaryDirectory(prefix=f"catpose_sfm_{name}_robust_") as tmp:
        try:
            second = run_sfm(name, image_dir, Path(tmp), cfg.matcher, robust=True,
                             peak_threshold=cfg.sift_peak_threshold, max_features=cfg.sift_max_features)
        except SfMError:
            if first is None:
                raise
            return first, "default"
    if first is not None and first.num_reg_images() > second.num_reg_images():
        return first, "default"
    return second, "robust"  # as many frames and more points


def ingest_sequence(name: str, src: Path, cfg: IngestConfig) -> dict:
    """Runs one sequence end to end; returns its annotations as dataclasses (or raises)."""
    root = Path(cfg.out)
    seq_dir = root / key(cfg.category, name)
    if seq_dir.exists():
        shutil.rmtree(seq_dir)
    names, mask_names = prepare_frames(name, src, cfg, seq_dir)
    rec, sfm_settings = sfm_with_retry(name, seq_dir / "images", len(names), cfg)
    by_name = {img.name: img for img in rec.images.values()}
    registered = [n for n in names if n in by_name]
    frac = len(registered) / len(names)
    if frac < cfg.min_registered:
        raise SfMError(name, f"registered {len(registered)} of {len(names)} frames "
                             f"({frac:.0%} < min_registered {cfg.min_registered:.0%})")
    frames: list[FrameAnnotation] = []
    cams: list[Camera] = []
    masks: list[np.ndarray | None] = []
    rel = key(cfg.category, name)
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
            mp = seq_dir / "masks" / mn
            m = decode_image(mp.read_bytes(), str(mp), mode="L").astype(np.float32) / 255
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
    given = masks if all(m is not None for m in masks) else None
    cleaning = clean_object_points(pts, cams, given, settings_from(cfg), source=f"sequence '{name}' (SfM "
                                                                                "cloud)")
    keep = cleaning.keep
    cloud = PointCloud(pts[keep].astype(np.float32), cols[keep])
    write_ply(seq_dir / "pointcloud.ply", cloud)
    images = [decode_image((root / fr.image.path).read_bytes(), str(root / fr.image.path)) for fr in frames]
    if cfg.masks not in ("grabcut", "none"):
        raise ValueError(f"masks must be 'grabcut' or 'none', got {cfg.masks!r}")
    made = [i for i, m in enumerate(masks) if m is None] if cfg.masks == "grabcut" else []

    def grabcut_all(seed_points: np.ndarray) -> None:
        for i in made:
            gm = grabcut_mask(images[i], cams[i], seed_points, cleaning.plane)
            stem = Path(frames[i].image.path).stem
            (seq_dir / "masks").mkdir(exist_ok=True)
            Image.fromarray((gm * 255).astype(np.uint8)).save(seq_dir / "masks" / f"{stem}.png")
            frames[i] = dataclasses.replace(
                frames[i], mask=MaskAnnotation(f"{rel}/masks/{stem}.png", float(gm.sum()))
            )
            masks[i] = gm.astype(np.float32)

    grabcut_all(cloud.points)
    dense = {"cloud": "sfm", "sfm_object_points": int(keep.sum())}
    n_points = int(keep.sum())
    if cfg.hull_voxels > 0 and all(m is not None for m in masks):
        hull = dense_object_cloud(cams, masks, images, cleaning.plane, cfg)
        if made and cfg.hull_refine_masks and len(hull.points):
            # GrabCut again, seeded by the hull: its projection outlines the whole object, where the
            # sparse cloud's left gaps that GrabCut filled with ground of the object's colour; carving
            # the refined masks tightens the hull in turn (synthetic car: mask IoU 0.79 -> 0.92)
            grabcut_all(hull.points)
            hull = dense_object_cloud(cams, masks, images, cleaning.plane, cfg)
        if len(hull.points) >= max(cfg.cleaning.min_points, n_points):
            write_ply(seq_dir / "pointcloud.ply", hull)
            dense.update(cloud="visual hull", points=len(hull.points))
            n_points = len(hull.points)
    seq = SequenceAnnotation(name, cfg.category, point_cloud=PointCloudAnnotation(
        f"{rel}/pointcloud.ply", None, n_points))
    return {"frames": frames, "sequence": seq, "registered": len(registered), "total": len(names),
            "cleaning": cleaning.summary(), "masks_made": len(made), "sfm": sfm_settings, "dense": dense}


def dense_object_cloud(cams: list[Camera], masks: list[np.ndarray], images: list[np.ndarray],
                       plane: list[float] | None, cfg: IngestConfig) -> PointCloud:
    """The object's visual hull (:func:`catpose.data.carving.visual_hull`) from the registered cameras
    and the frames' masks, as a coloured cloud: SfM's sparse cloud has few points on weakly textured
    objects (a few dozen on the synthetic car at 256 px), too few to sample surface features from.
    The carved cube is centred on the point all cameras look at, ``cfg.hull_half_size`` × their view
    size to each side, and stops at the supporting plane when the cleaning found one."""
    from catpose.data.carving import HullSettings, point_colors, visual_hull

    hs = HullSettings(cfg.hull_voxels, cfg.hull_vote, cfg.hull_view_share, cfg.hull_half_size)
    pts = visual_hull(cams, masks, focus_point(cams), hs.half_size * view_size(cams), plane, hs)
    cols = point_colors(pts, cams, images) if len(pts) else np.zeros((0, 3), np.uint8)
    return PointCloud(pts.astype(np.float32), cols)


def grabcut_mask(image: np.ndarray, camera: Camera, points: np.ndarray, plane: list[float] | None = None,
                 iters: int = 5) -> np.ndarray:
    """The object's mask in one frame ([H, W] bool) from its cleaned cloud, refined by OpenCV's GrabCut.

    The points projected into the frame are splatted (disc radius from their density) and closed
    into a silhouette; its convex hull, grown by 10 % of its size, bounds the object (outside:
    background for sure); the hull is probably object, the silhouette's core (eroded) object for sure.
    GrabCut's colour models then move the boundary to the image's edges. With the supporting plane
    (``[nx, ny, nz, d]``, from the cleaning) the points dropped onto it join the hull: SfM finds few
    points low on an object (dark, shadowed), and the object reaches down to the plane. Without points
    in view the mask is empty.
    """
    import cv2

    H, W = image.shape[:2]
    points = np.asarray(points, np.float64)
    if plane is not None and len(points):
        n, d = np.asarray(plane[:3]), float(plane[3])
        foot = points - (points @ n + d)[:, None] * n[None]
        fuv, fz = camera.project(foot)
        fok = (fz > 0) & np.isfinite(fuv).all(1)
        fuv = np.clip(fuv[fok], 0, [W - 1, H - 1])
    else:
        fuv = np.zeros((0, 2))
    uv, z = camera.project(points)
    ok = (
        (z > 0) & np.isfinite(uv).all(1) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    )
    uv = uv[ok]
    if len(uv) < 3:
        return np.zeros((H, W), bool)
    hull = cv2.convexHull(np.concatenate([uv, fuv]).astype(np.float32)).astype(np.int32)
    hull_mask = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(hull_mask, hull, 1)
    area = max(int(hull_mask.sum()), 1)
    r = int(np.clip(np.sqrt(area / len(uv)), 1, 0.05 * max(H, W)))  # about the spacing of the points
    splat = np.zeros((H, W), np.uint8)
    for x, y in uv.astype(int):
        cv2.circle(splat, (int(x), int(y)), r, 1, -1)
    disk = lambda k: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    silhouette = cv2.morphologyEx(splat, cv2.MORPH_CLOSE, disk(2 * r))
    size = int(np.sqrt(area))
    outer = cv2.dilate(hull_mask, disk(max(2, size // 10)))
    core = cv2.erode(silhouette, disk(max(2, size // 12)))
    gc = np.full((H, W), cv2.GC_BGD, np.uint8)
    gc[outer > 0] = cv2.GC_PR_BGD
    gc[(hull_mask > 0) | (silhouette > 0)] = cv2.GC_PR_FGD
    gc[core > 0] = cv2.GC_FGD
    if not (gc == cv2.GC_BGD).any() or not ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).any():
        return silhouette > 0  # nothing to learn a background from: the projected silhouette
    fg = grabcut(image, gc, iters).astype(np.uint8)
    # the object is one piece: keep the largest connected component
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n > 2:
        fg = (lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    return fg > 0


def _ingest_task(args: tuple[str, str, IngestConfig]) -> dict:
    """One sequence. Frames under an ``s3://`` root are first copied to this node's scratch folder. A
    local ``cfg.out`` is written in place; for an ``s3://`` store SfM works in the scratch folder and the
    finished sequence is uploaded (the task is handed URIs, never a folder of the driver)."""
    name, src, cfg = args
    scratch = Path(tempfile.mkdtemp(prefix="catpose-ingest-"))
    try:
        src = fetch_source(str(src), cfg.endpoint_url, scratch / "frames")  # frames on S3: this node's copy
        if not is_s3(cfg.out):
            return ingest_sequence(name, src, cfg)
        res = ingest_sequence(name, src, dataclasses.replace(cfg, out=str(scratch / "out")))
        store, rel = Store(cfg.out, cfg.endpoint_url), f"{cfg.category}/{name}"
        store.remove(rel, recursive=True)  # files of an earlier attempt (other frames may have registered)
        store.upload_dir(scratch / "out" / rel, rel)
        return res
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# IngestConfig fields that do not change what a sequence's ingest makes (where it comes from and goes, and
# how the work is spread): a rerun across changes of these keeps the sequences
_INGEST_OPERATIONAL = ("frames", "out", "workers", "endpoint_url")


def sequence_fingerprints(cfg: IngestConfig, seqs: dict[str, str]) -> dict[str, dict]:
    """Each sequence's fingerprint (:mod:`catpose.fingerprint`): the settings that change its ingest and
    the change tokens (size and modification time, or the S3 ETag) of its source files, its frames and
    masks or its video file, from one listing of ``cfg.frames``."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _INGEST_OPERATIONAL}
    tokens = fp.file_tokens(Store(str(cfg.frames), cfg.endpoint_url))
    out = {}
    for name, src in seqs.items():
        rel = str(src).rstrip("/").rsplit("/", 1)[-1]
        mine = {k: v for k, v in tokens.items() if k == rel or k.startswith(rel + "/")}
        out[name] = fp.make(settings, {f"files of {rel}": mine})
    return out


def ingest(cfg: IngestConfig) -> Manifest:
    """Ingests every sequence under ``cfg.frames`` into the store ``cfg.out`` (a folder or ``s3://``);
    failures are recorded, the rest go on. The annotation files and the manifest are rewritten in the
    store after every finished sequence, so a rerun resumes with the sequences not yet done."""
    store = Store(str(cfg.out), cfg.endpoint_url)
    store.check()
    cat = safe_name(cfg.category, "category", "--category", "category")
    man = Manifest.load_or_new(f"{cat}/catpose_manifest_ingest.json", "ingest", store=store)
    seqs = find_sequences(cfg.frames, cfg.endpoint_url)
    for name in [n for n in seqs if name_problem(n) is not None]:  # a folder or video name that is no
        src = seqs.pop(name)  # plain name never becomes a path in the store: that sequence fails, named
        err = DataFormatError(src, f"sequence name {shown_name(name)} is not a plain name "
                                   f"({name_problem(name)})")
        print(f"ingest: {err}; sequence skipped", flush=True)
        man.record(shown_name(name), "failed", error=f"DataFormatError: {err}", save=False)
    fa_key, sa_key = f"{cat}/frame_annotations.jgz", f"{cat}/sequence_annotations.jgz"
    frames, seq_anns = [], {}
    if store.exists(fa_key) and store.exists(sa_key):
        frames = [parse_frame_annotation(d, store.url(fa_key), i)
                  for i, d in enumerate(load_jgz(store.url(fa_key), store.read_bytes(fa_key)))]
        seq_anns = {
            s.sequence_name: s
            for s in (
                parse_sequence_annotation(d, store.url(sa_key), i)
                for i, d in enumerate(load_jgz(store.url(sa_key), store.read_bytes(sa_key)))
            )
        }
    fps = sequence_fingerprints(cfg, seqs)
    log = fp.ResumeLog(f"ingest {cat}", "sequences")
    todo = []
    for n, p in seqs.items():
        why = (
            "missing"
            if man.status(n) != "ok" or n not in seq_anns
            else fp.change(man.items[n].get("fingerprint"), fps[n])
        )
        if why is None:
            log.keep()
            continue
        log.redo(why)
        todo.append((n, p, cfg))
    log.say()
    t0 = time.perf_counter()
    for (name, _, _), res, err, sec in map_items(
        _ingest_task, todo, workers=cfg.workers, desc="ingest (SfM)"
    ):
        if err:  # a video whose cleaning leaves too little of the cloud is skipped with that reason
            man.record(
                name, "skipped" if err.startswith("CleaningError") else "failed", error=err, seconds=sec
            )
            store.remove(f"{cat}/{name}", recursive=True)
            continue
        frames = [f for f in frames if f.sequence_name != name] + res["frames"]
        seq_anns[name] = res["sequence"]
        man.record(
            name,
            "ok",
            seconds=sec,
            fingerprint=fps[name],
            registered=res["registered"],
            frames=res["total"],
            cleaning=res["cleaning"],
            masks_made=res["masks_made"],
            sfm=res["sfm"],
            dense=res["dense"],
        )
        store.write_bytes(fa_key, jgz_bytes(frames))
        store.write_bytes(sa_key, jgz_bytes(list(seq_anns.values())))
    man.info["seconds"] = round(time.perf_counter() - t0, 2)
    man.save()
    return man
