"""Pose evaluation sets: PASCAL3D+ and ObjectNet3D annotations (``.mat``), CO3D held-out frames.

Every loader returns :class:`PoseSample` s — an image, its object box, the ground-truth camera rotation
``R`` in catpose's convention (``X_cam = X @ R + T``, :mod:`catpose.pose.viewpoint`) in the dataset's
canonical frame — and a list of problems (unreadable annotation files, objects without a fine
viewpoint), so that a batch skips bad items and says which.

PASCAL3D+ (``Annotations/<cat>_<source>/<id>.mat``, ``Images/<cat>_<source>/<id>.jpg``) and ObjectNet3D
(``Annotations/<id>.mat``, ``Images/<id>.JPEG``, ``Image_sets/<split>.txt``) store one MATLAB struct
``record`` per image with ``objects(k).class``, ``.bbox`` (1-based ``[x1 y1 x2 y2]``) and
``.viewpoint`` (``azimuth``, ``elevation``, ``theta`` in degrees, ``distance``, ``focal``, ``viewport``,
``px``, ``py``); ``distance == 0`` marks objects with only a coarse viewpoint (skipped). MATLAB pixel
``i`` has its centre at ``i``; catpose's at ``i − 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catpose.data.co3d import Co3dCategory
from catpose.data.groundtruth import GT_FILE, load_ground_truth
from catpose.errors import DataFormatError
from catpose.pose.viewpoint import viewpoint_to_rotation
from catpose.storage import name_problem, safe_name, shown_name


@dataclass
class PoseSample:
    """One object in one image with its ground-truth rotation."""

    name: str
    image: str  # path
    bbox: np.ndarray | None  # [x0, y0, x1, y1] continuous pixels, or None (whole image)
    R: np.ndarray  # [3, 3] ground truth, dataset canonical frame
    mask: str | None = None
    focal_px: float | None = None  # a real camera when known (synthetic set, CO3D); else None
    principal_px: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def _field(s, name, default=None):
    v = getattr(s, name, default)
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    return v


def read_record(path: Path) -> tuple[str, list]:
    """The image file name and the objects of one annotation file (scipy.io.loadmat)."""
    import scipy.io

    try:
        rec = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)["record"]
    except Exception as e:  # scipy raises several types for truncated or foreign files
        raise DataFormatError(str(path), f"not a PASCAL3D+/ObjectNet3D annotation file ({type(e).__name__}: "
                                         f"{e})") from e
    objs = _field(rec, "objects")
    if objs is None:
        raise DataFormatError(str(path), "no objects", "record.objects")
    objs = list(np.atleast_1d(objs))
    return str(_field(rec, "filename", "")), objs


def _sample_from(obj, name: str, image: Path, path: Path, k: int, real_camera: bool) -> PoseSample:
    vp = _field(obj, "viewpoint")
    if vp is None:
        raise DataFormatError(str(path), "no viewpoint", f"record.objects({k + 1}).viewpoint")
    az, el, th = (_field(vp, n) for n in ("azimuth", "elevation", "theta"))
    dist = float(_field(vp, "distance", 0) or 0)
    if dist == 0 or az is None or el is None:
        raise DataFormatError(str(path), "only a coarse viewpoint (distance "
                                         "0)", f"record.objects({k + 1}).viewpoint")
    th = 0.0 if th is None else float(th)
    bb = np.asarray(_field(obj, "bbox"), np.float64).ravel()
    if bb.size != 4 or not np.isfinite(bb).all():
        raise DataFormatError(str(path), "bbox must have 4 numbers, got "
                                         f"{bb.tolist()}", f"record.objects({k + 1}).bbox")
    bbox = np.array([bb[0] - 1, bb[1] - 1, bb[2], bb[3]])
    meta = {
        "azimuth": float(az),
        "elevation": float(el),
        "theta": th,
        "distance": dist,
        "occluded": int(_field(obj, "occluded", 0) or 0),
        "truncated": int(_field(obj, "truncated", 0) or 0),
        "difficult": int(_field(obj, "difficult", 0) or 0),
        "annotation": str(path),
    }
    f = float(_field(vp, "focal", 0) or 0) * float(_field(vp, "viewport", 0) or 0)
    pp = np.array([float(_field(vp, "px", 0) or 0) - 0.5, float(_field(vp, "py", 0) or 0) - 0.5])
    return PoseSample(name, str(image), bbox, viewpoint_to_rotation(float(az), float(el), th), None,
                      f if real_camera and f > 0 else None, pp if real_camera and f > 0 else None, meta)


def _objects(path: Path, image_dir: Path, category: str, name: str, real_camera: bool, samples: list,
             problems: list, exts=(".jpg", ".JPEG", ".png")) -> None:
    try:
        fname, objs = read_record(path)
    except DataFormatError as e:
        problems.append({"item": name, "error": str(e)})
        return
    if fname and name_problem(fname) is not None:  # a file name read from the record stays in image_dir
        problems.append({"item": name, "error": str(DataFormatError(
            str(path), f"image file name {shown_name(fname)} is not a plain name ({name_problem(fname)})",
            "record.filename"))})
        return
    image = image_dir / fname if fname else None
    if image is None or not image.is_file():
        image = next(
            (image_dir / f"{name}{x}" for x in exts if (image_dir / f"{name}{x}").is_file()),
            image_dir / f"{name}.jpg",
        )
    for k, obj in enumerate(objs):
        if str(_field(obj, "class", "")).lower() != category.lower():
            continue
        item = f"{name}#{k}"
        try:
            s = _sample_from(obj, item, image, path, k, real_camera)
        except DataFormatError as e:
            problems.append({"item": item, "error": str(e)})
            continue
        mask = image_dir.parent.parent / "Masks" / image_dir.name / f"{name}.png"
        if mask.is_file():
            s.mask = str(mask)
        samples.append(s)


def _read_list(path: Path) -> list[str]:
    return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]


def load_pascal3d(root: str | Path, category: str, sources: tuple[str, ...] | None = None,
                  split: str | None = None, real_camera: bool = False,
                  include_occluded: bool = True) -> tuple[list[PoseSample], list[dict]]:
    """Objects of ``category`` in a PASCAL3D+-layout folder (``Annotations/<cat>_<source>/``).

    ``sources``: e.g. ``("pascal", "imagenet")`` (default: every ``<cat>_*`` folder); ``split``: a list
    file name in ``Image_sets/`` (e.g. ``car_imagenet_val.txt``) to restrict to; ``real_camera``: pass
    the annotated focal length and principal point to the estimator (PASCAL3D+'s own ``viewport``
    = 3000 is not a real camera; catpose's synthetic set writes real ones).
    """
    root = Path(root)
    safe_name(category, "category", "flags", "category")  # a glob pattern and folder names below
    for s in sources or ():
        safe_name(s, "source", "flags", "sources")
    if split:
        safe_name(split, "image set", "flags", "split")
    ann_root = root / "Annotations"
    if not ann_root.is_dir():
        raise FileNotFoundError(f"{ann_root}: not a PASCAL3D+ folder (no Annotations/)")
    dirs = (
        sorted(ann_root.glob(f"{category}_*"))
        if sources is None
        else [ann_root / f"{category}_{s}" for s in sources]
    )
    dirs = [d for d in dirs if d.is_dir()]
    if not dirs:
        raise FileNotFoundError(f"{ann_root}: no {category}_* annotation folders")
    keep = set(_read_list(root / "Image_sets" / split)) if split else None
    samples: list[PoseSample] = []
    problems: list[dict] = []
    for d in dirs:
        for path in sorted(d.glob("*.mat")):
            if keep is not None and path.stem not in keep:
                continue
            _objects(path, root / "Images" / d.name, category, path.stem, real_camera, samples, problems)
    if not include_occluded:
        samples = [s for s in samples if not s.meta["occluded"] and not s.meta["truncated"]]
    return samples, problems


def load_objectnet3d(
    root: str | Path, category: str, split: str | None = "val"
) -> tuple[list[PoseSample], list[dict]]:
    """Objects of ``category`` in an ObjectNet3D folder (``Annotations/<id>.mat``, ``Images/<id>.JPEG``,
    ``Image_sets/<split>.txt``; ``split=None``: every annotation file)."""
    root = Path(root)
    safe_name(category, "category", "flags", "category")
    if split:
        safe_name(split, "image set", "flags", "split")
    ann = root / "Annotations"
    if not ann.is_dir():
        raise FileNotFoundError(f"{ann}: not an ObjectNet3D folder (no Annotations/)")
    if split:
        lst = root / "Image_sets" / f"{split}.txt"
        if not lst.is_file():
            raise FileNotFoundError(f"{lst}: no such image set")
        names = _read_list(lst)
    else:
        names = sorted(p.stem for p in ann.glob("*.mat"))
    samples: list[PoseSample] = []
    problems: list[dict] = []
    for n in names:
        if name_problem(n) is not None:  # a line of the image set that would point outside Annotations/
            problems.append({"item": shown_name(n), "error": str(DataFormatError(
                str(lst if split else ann), f"annotation name {shown_name(n)} is not a plain name "
                                            f"({name_problem(n)})"))})
            continue
        path = ann / f"{n}.mat"
        if not path.is_file():
            problems.append({"item": n, "error": f"annotation not found: {path}"})
            continue
        _objects(path, root / "Images", category, n, False, samples, problems)
    return samples, problems


def load_co3d(root: str | Path, category: str, sequences: list[str], every: int = 1,
              to_reference: dict | None = None) -> tuple[list[PoseSample], list[dict], str]:
    """Frames of ``sequences`` of a CO3D-layout category, with their rotation in a common frame.

    With catpose's synthetic ground truth (``catpose_gt.json`` in ``root``) the rotation is in the
    category's canonical frame (returns ``"canonical"``); otherwise ``to_reference`` (sequence →
    similarity to the run's reference frame, e.g. its alignment) gives a pseudo ground truth in the
    template's frame (``"template"``).
    """

    root = Path(root)
    cat = Co3dCategory(root, category)
    if (root / GT_FILE).is_file():
        transforms, frame = load_ground_truth(root, category), "canonical"
    elif to_reference is not None:
        transforms, frame = to_reference, "template"
    else:
        raise FileNotFoundError(f"{root}: no {GT_FILE} and no alignment given: CO3D frames have no pose to "
                                "compare with")
    samples, problems = [], []
    for name in sequences:
        if name not in transforms:
            problems.append({"item": name, "error": f"sequence '{name}' has no ground truth / alignment"})
            continue
        try:
            seq = cat[name]
        except (KeyError, ValueError, OSError) as e:
            problems.append({"item": name, "error": str(e)})
            continue
        for fr in seq.frames[::every]:
            cam = fr.camera
            mask = fr.mask_path
            samples.append(PoseSample(f"{name}/{fr.frame_number}", str(fr.image_path), None,
                                      np.asarray(transforms[name].R) @ cam.R,
                                      str(mask) if mask is not None and Path(mask).is_file() else None,
                                      float(cam.focal_px[0]), cam.principal_point_px, {"sequence": name}))
    return samples, problems, frame
