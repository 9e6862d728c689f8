"""The CO3D v2 annotation data model, torch-free.

Field names and meanings follow CO3D v2's ``frame_annotations.jgz`` and ``sequence_annotations.jgz``
(gzip-compressed JSON lists). Parsing validates every field it reads and raises
:class:`~catpose.errors.DataFormatError` naming the file, the record and the field.

Cameras are stored as CO3D stores them (PyTorch3D convention, NDC intrinsics); see
:mod:`catpose.data.camera` for the maths.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catpose.errors import DataFormatError, MissingFileError
from catpose.storage import atomic_write_bytes, safe_rel

INTRINSICS_FORMATS = ("ndc_norm_image_bounds", "ndc_isotropic")


@dataclass
class ImageAnnotation:
    path: str  # relative to the dataset root, starts with "<category>/"
    size: tuple[int, int]  # (H, W)


@dataclass
class DepthAnnotation:
    path: str
    scale_adjustment: float
    mask_path: str | None = None


@dataclass
class MaskAnnotation:
    path: str
    mass: float | None = None  # soft foreground pixel count


@dataclass
class ViewpointAnnotation:
    R: tuple[tuple[float, float, float], ...]  # 3x3, row-vector convention: X_cam = X_world @ R + T
    T: tuple[float, float, float]
    focal_length: tuple[float, float]  # NDC
    principal_point: tuple[float, float]  # NDC
    intrinsics_format: str = "ndc_norm_image_bounds"


@dataclass
class FrameAnnotation:
    sequence_name: str
    frame_number: int
    frame_timestamp: float
    image: ImageAnnotation
    depth: DepthAnnotation | None = None
    mask: MaskAnnotation | None = None
    viewpoint: ViewpointAnnotation | None = None
    meta: dict[str, Any] | None = None


@dataclass
class VideoAnnotation:
    path: str
    length: float | None  # optional metadata


@dataclass
class PointCloudAnnotation:
    path: str  # "<category>/<sequence>/pointcloud.ply"
    quality_score: float | None
    n_points: int | None


@dataclass
class SequenceAnnotation:
    sequence_name: str
    category: str
    video: VideoAnnotation | None = None
    point_cloud: PointCloudAnnotation | None = None
    viewpoint_quality_score: float | None = None
    meta: dict[str, Any] | None = field(default=None)


# --------------------------------------------------------------------------------------------------
# parsing with validation


class _Fields:
    """Reads typed fields from one JSON record; errors name file and dotted field."""

    def __init__(self, path: str, prefix: str):
        self.path = path
        self.prefix = prefix

    def fail(self, name: str, message: str) -> DataFormatError:
        return DataFormatError(self.path, message, field=f"{self.prefix}.{name}" if name else self.prefix)

    def get(self, d: Any, name: str, required: bool = True) -> Any:
        if not isinstance(d, dict):
            raise self.fail(
                name.rsplit(".", 1)[0] if "." in name else "", f"expected an object, got {type(d).__name__}"
            )
        key = name.rsplit(".", 1)[-1]
        if key not in d or d[key] is None:
            if required:
                raise self.fail(name, "missing")
            return None
        return d[key]

    def string(self, d: Any, name: str, required: bool = True) -> str | None:
        v = self.get(d, name, required)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise self.fail(name, f"expected a non-empty string, got {v!r}")
        return v

    def rel_path(self, d: Any, name: str, required: bool = True) -> str | None:
        """A relative path inside the dataset, each component a plain name: a record can never point a
        reader outside the dataset root (``../../etc/passwd``, ``/abs``)."""
        v = self.string(d, name, required)
        if v is None:
            return None
        return safe_rel(v, "path", self.path, f"{self.prefix}.{name}")

    def number(self, d: Any, name: str, required: bool = True, integer: bool = False) -> float | None:
        v = self.get(d, name, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(name, f"expected a finite number, got {v!r}")
        if integer:
            if int(v) != v:
                raise self.fail(name, f"expected an integer, got {v!r}")
            return int(v)
        return float(v)

    def vector(self, d: Any, name: str, n: int, required: bool = True) -> tuple[float, ...] | None:
        v = self.get(d, name, required)
        if v is None:
            return None
        if not isinstance(v, (list, tuple)) or len(v) != n:
            raise self.fail(name, f"expected {n} numbers, got {v!r}")
        out = []
        for x in v:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise self.fail(name, f"expected {n} finite numbers, got {v!r}")
            out.append(float(x))
        return tuple(out)

    def matrix3(self, d: Any, name: str) -> tuple[tuple[float, float, float], ...]:
        v = self.get(d, name)
        if not isinstance(v, (list, tuple)) or len(v) != 3:
            raise self.fail(name, f"expected a 3x3 matrix, got {v!r}")
        rows = []
        for row in v:
            if not isinstance(row, (list, tuple)) or len(row) != 3:
                raise self.fail(name, f"expected a 3x3 matrix, got {v!r}")
            if any(
                isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in row
            ):
                raise self.fail(name, f"expected finite numbers, got {v!r}")
            rows.append(tuple(float(x) for x in row))
        return tuple(rows)


ROTATION_TOL = 1e-2  # max |R Rᵀ − I| and |det R − 1| of a camera rotation (CO3D's are float32-exact)


def check_rotation(R: tuple[tuple[float, float, float], ...], f: _Fields) -> None:
    """The camera sanity check: ``R`` must be a rotation (orthonormal, determinant +1)."""
    import numpy as np

    m = np.asarray(R, dtype=np.float64)
    err = float(np.abs(m @ m.T - np.eye(3)).max())
    if err > ROTATION_TOL:
        raise f.fail(
            "viewpoint.R", f"not a rotation matrix (|R Rᵀ − I| = {err:.3g}), got {[list(r) for r in R]}"
        )
    det = float(np.linalg.det(m))
    if abs(det - 1.0) > ROTATION_TOL:
        raise f.fail("viewpoint.R", f"not a rotation matrix (determinant {det:.3g}, a reflection?)")


def _optional(warnings: list[str] | None, fn, *args, **kw):
    """``fn(*args, **kw)``, or None with a note in ``warnings`` when the (optional) field is malformed."""
    try:
        return fn(*args, **kw)
    except DataFormatError as e:
        if warnings is not None:
            warnings.append(f"{e}; ignored (optional metadata)")
        return None


def parse_frame_annotation(
    d: Any, path: str, index: int, warnings: list[str] | None = None
) -> FrameAnnotation:
    """One record of ``frame_annotations.jgz``; ``index`` is its position in the file (for errors).
    Optional metadata (``frame_timestamp``, ``mask.mass``, ``meta``) never blocks: a malformed value is
    dropped, with a note in ``warnings``."""
    f = _Fields(path, f"frame_annotations[{index}]")
    seq = f.string(d, "sequence_name")
    f.prefix = f"frame_annotations[{index}] (sequence '{seq}')"
    frame_number = f.number(d, "frame_number", integer=True)
    ts = _optional(warnings, f.number, d, "frame_timestamp", required=False)
    img = f.get(d, "image")
    size = f.vector(img, "image.size", 2)
    if size[0] <= 0 or size[1] <= 0 or int(size[0]) != size[0] or int(size[1]) != size[1]:
        raise f.fail("image.size", f"expected positive integer (H, W), got {list(size)}")
    image = ImageAnnotation(path=f.rel_path(img, "image.path"), size=(int(size[0]), int(size[1])))
    depth = None
    if d.get("depth") is not None:
        dd = d["depth"]
        depth = DepthAnnotation(
            path=f.rel_path(dd, "depth.path"),
            scale_adjustment=f.number(dd, "depth.scale_adjustment"),
            mask_path=f.rel_path(dd, "depth.mask_path", required=False),
        )
    mask = None
    if d.get("mask") is not None:
        md = d["mask"]
        mask = MaskAnnotation(path=f.rel_path(md, "mask.path"),
                              mass=_optional(warnings, f.number, md, "mask.mass", required=False))
    viewpoint = None
    if d.get("viewpoint") is not None:
        vd = d["viewpoint"]
        fmt = f.get(vd, "viewpoint.intrinsics_format", required=False) or "ndc_norm_image_bounds"
        if fmt not in INTRINSICS_FORMATS:
            raise f.fail("viewpoint.intrinsics_format", f"expected one of {INTRINSICS_FORMATS}, got {fmt!r}")
        focal = f.vector(vd, "viewpoint.focal_length", 2)
        if focal[0] <= 0 or focal[1] <= 0:
            raise f.fail("viewpoint.focal_length", f"must be positive, got {list(focal)}")
        R = f.matrix3(vd, "viewpoint.R")
        check_rotation(R, f)
        viewpoint = ViewpointAnnotation(
            R=R,
            T=f.vector(vd, "viewpoint.T", 3),
            focal_length=focal,
            principal_point=f.vector(vd, "viewpoint.principal_point", 2),
            intrinsics_format=fmt,
        )
    meta = d.get("meta")
    return FrameAnnotation(
        sequence_name=seq,
        frame_number=int(frame_number),
        frame_timestamp=-1.0 if ts is None else ts,
        image=image,
        depth=depth,
        mask=mask,
        viewpoint=viewpoint,
        meta=meta if isinstance(meta, dict) else None,
    )


def parse_sequence_annotation(d: Any, path: str, index: int,
                              warnings: list[str] | None = None) -> SequenceAnnotation:
    """One record of ``sequence_annotations.jgz``. Optional metadata catpose never uses (``video``,
    quality scores, ``meta``) never blocks: a malformed value is dropped, with a note in ``warnings``."""
    f = _Fields(path, f"sequence_annotations[{index}]")
    seq = f.string(d, "sequence_name")
    f.prefix = f"sequence_annotations[{index}] (sequence '{seq}')"

    def optional(fn, *args, **kw):
        return _optional(warnings, fn, *args, **kw)

    video = None
    if d.get("video") is not None:
        vpath = optional(f.string, d["video"], "video.path")
        length = optional(f.number, d["video"], "video.length", required=False)
        video = VideoAnnotation(path=vpath, length=length) if vpath else None
    pc = None
    if d.get("point_cloud") is not None:
        pd_ = d["point_cloud"]
        n = optional(f.number, pd_, "point_cloud.n_points", required=False, integer=True)
        pc = PointCloudAnnotation(
            path=f.rel_path(pd_, "point_cloud.path"),
            quality_score=optional(f.number, pd_, "point_cloud.quality_score", required=False),
            n_points=None if n is None else int(n),
        )
    return SequenceAnnotation(
        sequence_name=seq,
        category=f.string(d, "category"),
        video=video,
        point_cloud=pc,
        viewpoint_quality_score=optional(f.number, d, "viewpoint_quality_score", required=False),
        meta=d.get("meta") if isinstance(d.get("meta"), dict) else None,
    )


# --------------------------------------------------------------------------------------------------
# jgz I/O


def load_jgz(path: str | Path, data: bytes | None = None) -> Any:
    """Reads a gzip-compressed JSON file (or its bytes ``data``, fetched from a store; ``path`` then
    names it); errors name the file."""
    import io

    if data is None:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(str(path), "annotation file")
    try:
        with gzip.open(io.BytesIO(data) if data is not None else path, "rt", encoding="utf8") as fh:
            return json.load(fh)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(str(path), f"not a gzip-compressed JSON file ({e})") from e


def dump_jgz(path: str | Path, obj: Any) -> None:
    """Writes ``obj`` (dataclasses allowed) as gzip-compressed JSON, atomically (a unique temporary
    name, then a rename; a failed write names the file and leaves nothing behind)."""
    import io


    buf = io.BytesIO()
    # mtime=0 keeps the bytes reproducible for the same content
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(json.dumps(to_jsonable(obj)).encode("utf8"))
    atomic_write_bytes(path, buf.getvalue())


def to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def load_frame_annotations(path: str | Path) -> list[FrameAnnotation]:
    data = load_jgz(path)
    if not isinstance(data, list):
        raise DataFormatError(str(path), f"expected a list of frame annotations, got {type(data).__name__}")
    return [parse_frame_annotation(d, str(path), i) for i, d in enumerate(data)]


def load_sequence_annotations(path: str | Path) -> list[SequenceAnnotation]:
    data = load_jgz(path)
    if not isinstance(data, list):
        raise DataFormatError(str(path), "expected a list of sequence annotations, got "
                                         f"{type(data).__name__}")
    return [parse_sequence_annotation(d, str(path), i) for i, d in enumerate(data)]


@dataclass
class BadRecord:
    """A record of an annotation file that could not be parsed: the error names file, record and field."""

    index: int
    sequence_name: str | None  # when the record names one (a string), else None
    frame_number: int | None
    error: str


def _record_ids(d: Any) -> tuple[str | None, int | None]:
    seq = d.get("sequence_name") if isinstance(d, dict) else None
    fn = d.get("frame_number") if isinstance(d, dict) else None
    return (seq if isinstance(seq, str) and seq else None,
            int(fn) if isinstance(fn, (int, float)) and not isinstance(fn, bool) and math.isfinite(fn)
            and int(fn) == fn else None)


def read_frame_annotations(path: str | Path, warnings: list[str] | None = None, data: bytes | None = None
                           ) -> tuple[list[tuple[int, FrameAnnotation]], list[BadRecord]]:
    """(index, record) of every parseable record of ``frame_annotations.jgz`` and the records that are
    not (a bad record costs itself only); dropped optional metadata is noted in ``warnings``. A file
    that cannot be read at all raises :class:`DataFormatError`. ``data``: the file's bytes (from a store)."""
    data = load_jgz(path, data)
    if not isinstance(data, list):
        raise DataFormatError(str(path), f"expected a list of frame annotations, got {type(data).__name__}")
    good, bad = [], []
    for i, d in enumerate(data):
        try:
            good.append((i, parse_frame_annotation(d, str(path), i, warnings)))
        except DataFormatError as e:
            bad.append(BadRecord(i, *_record_ids(d), str(e)))
    return good, bad


def read_sequence_annotations(path: str | Path, data: bytes | None = None
                              ) -> tuple[list[tuple[int, SequenceAnnotation]], list[BadRecord], list[str]]:
    """(index, record) of every parseable record of ``sequence_annotations.jgz``, the records that are
    not, and warnings about dropped optional metadata. ``data``: the file's bytes (from a store)."""
    data = load_jgz(path, data)
    if not isinstance(data, list):
        raise DataFormatError(str(path), "expected a list of sequence annotations, got "
                                         f"{type(data).__name__}")
    good, bad, warnings = [], [], []
    for i, d in enumerate(data):
        try:
            good.append((i, parse_sequence_annotation(d, str(path), i, warnings)))
        except DataFormatError as e:
            bad.append(BadRecord(i, _record_ids(d)[0], None, str(e)))
    return good, bad, warnings


def jgz_bytes(obj: Any) -> bytes:
    """``obj`` (dataclasses allowed) as gzip-compressed JSON bytes (the same bytes for the same content)."""
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(json.dumps(to_jsonable(obj)).encode("utf8"))
    return buf.getvalue()


def dump_annotations(path: str | Path, annotations: Sequence[Any]) -> None:
    dump_jgz(path, list(annotations))
