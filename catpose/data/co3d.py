"""Reader of CO3D v2 category folders (real CO3D, ``catpose synth`` and ``catpose ingest`` output).

Layout (paths inside annotations are relative to the dataset root and start with ``<category>/``)::

    ROOT/<category>/frame_annotations.jgz
    ROOT/<category>/sequence_annotations.jgz
    ROOT/<category>/set_lists/set_lists_<subset>.json
    ROOT/<category>/<sequence>/{images,masks,depths,depth_masks}/...  and pointcloud.ply

Annotations are read when first needed; images, masks, depths and point clouds only when asked for,
so opening a category of thousands of videos is cheap. Every error names the file (and field).

The root may be a local folder or an ``s3://bucket/prefix`` (a :class:`~catpose.storage.Store`): on S3
the annotation files are fetched when first parsed and every image, mask, depth map and cloud when it
is loaded, one object at a time, so Ray tasks open a category by its URI and read only what they use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from catpose.data.camera import Camera
from catpose.data.images import decode_image  # the one decoder (stages also import it from here)
from catpose.data.pointcloud import MAX_POINTS, PointCloud, read_ply, read_ply_stream
from catpose.data.types import (
    FrameAnnotation,
    SequenceAnnotation,
    read_frame_annotations,
    read_sequence_annotations,
)
from catpose.errors import DataFormatError, MissingFileError
from catpose.storage import Store, is_s3, name_problem, safe_name, shown_name


def read_file_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise MissingFileError(str(path), what)
    return path.read_bytes()


def data_store(root: str | Path | Store, endpoint_url: str | None = None) -> Store | None:
    """The store of an ``s3://`` dataset root (None for a local folder, read through ``pathlib``)."""
    if isinstance(root, Store):
        return root if root.is_s3 else None
    return Store(str(root), endpoint_url) if is_s3(root) else None


def _root_of(root: str | Path | Store):
    """A local root as a :class:`Path`, an S3 root as its URI string."""
    if isinstance(root, Store):
        return root.uri if root.is_s3 else Path(root.uri)
    return str(root).rstrip("/") if is_s3(root) else Path(root)


def _file(root, store: Store | None, rel: str):
    """Where ``rel`` lies: a :class:`Path` under a local root, a URI string on S3."""
    return store.url(rel) if store is not None else Path(root) / rel


def _bytes(root, store: Store | None, rel: str, what: str) -> bytes:
    if store is None:
        return read_file_bytes(Path(root) / rel, what)
    try:
        return store.read_bytes(rel)
    except FileNotFoundError as e:
        raise MissingFileError(store.url(rel), what) from e


@dataclass
class Co3dFrame:
    annotation: FrameAnnotation
    root: Path | str
    source: str  # the annotation file, for errors
    store: Store | None = None  # set for an s3:// root

    @property
    def sequence_name(self) -> str:
        return self.annotation.sequence_name

    @property
    def frame_number(self) -> int:
        return self.annotation.frame_number

    @property
    def image_size(self) -> tuple[int, int]:
        return self.annotation.image.size

    @property
    def image_path(self) -> Path | str:
        return _file(self.root, self.store, self.annotation.image.path)

    @property
    def mask_path(self) -> Path | str | None:
        return (
            None if self.annotation.mask is None else _file(self.root, self.store, self.annotation.mask.path)
        )

    @property
    def depth_path(self) -> Path | str | None:
        return (
            None
            if self.annotation.depth is None
            else _file(self.root, self.store, self.annotation.depth.path)
        )

    def _field(self, name: str) -> str:
        return f"frame '{self.sequence_name}'/{self.frame_number}: {name}"

    @property
    def camera(self) -> Camera:
        vp = self.annotation.viewpoint
        if vp is None:
            raise DataFormatError(self.source, "frame has no camera", field=self._field("viewpoint"))
        return Camera.from_viewpoint(vp, self.image_size)

    def image_bytes(self) -> bytes:
        return _bytes(self.root, self.store, self.annotation.image.path, "image")

    def mask_bytes(self) -> bytes | None:
        return (
            None
            if self.mask_path is None
            else _bytes(self.root, self.store, self.annotation.mask.path, "mask")
        )

    def load_image(self) -> np.ndarray:
        """(H, W, 3) uint8; checks the size against the annotation."""
        img = decode_image(self.image_bytes(), str(self.image_path))
        if img.shape[:2] != tuple(self.image_size):
            raise DataFormatError(self.source, f"annotated size {self.image_size} but {self.image_path} is "
                                  f"{img.shape[:2]}", field=self._field("image.size"))
        return img

    def load_mask(self) -> np.ndarray:
        """(H, W) float32 foreground probability in [0, 1]."""
        if self.mask_path is None:
            raise DataFormatError(self.source, "frame has no mask", field=self._field("mask"))
        m = decode_image(self.mask_bytes(), str(self.mask_path), mode="L")
        if m.shape != tuple(self.image_size):
            raise DataFormatError(str(self.mask_path), f"mask is {m.shape}, image is {self.image_size}")
        return m.astype(np.float32) / 255.0

    def load_depth(self) -> np.ndarray:
        """(H, W) float32 depth (camera Z): PNG float16 bits × ``scale_adjustment``; 0 = unknown."""
        dep = self.annotation.depth
        if dep is None:
            raise DataFormatError(self.source, "frame has no depth", field=self._field("depth"))
        dpath = str(_file(self.root, self.store, dep.path))
        raw = decode_image(_bytes(self.root, self.store, dep.path, "depth map"), dpath, mode="")
        if raw.dtype not in (np.uint16, np.int32, np.uint32) and raw.dtype != np.dtype(">u2"):
            raise DataFormatError(dpath, f"expected a 16-bit PNG, got {raw.dtype}")
        d = raw.astype(np.uint16).view(np.float16).astype(np.float32) * dep.scale_adjustment
        d[~np.isfinite(d)] = 0.0
        if dep.mask_path:
            dm = decode_image(_bytes(self.root, self.store, dep.mask_path, "depth mask"),
                              str(_file(self.root, self.store, dep.mask_path)), "L")
            d[dm == 0] = 0.0
        return d


_DEPTH_CLOUDS: dict[tuple, PointCloud] = {}  # the last few clouds made from depth maps, in this process


def _cloud_source(has_file: bool, frames) -> str | None:
    if has_file:
        return "file"
    return "depth" if any(getattr(f, "annotation", f).depth is not None for f in frames) else None


@dataclass
class Co3dSequence:
    name: str
    category: str
    annotation: SequenceAnnotation | None
    frames: list[Co3dFrame]
    root: Path | str
    source: str = ""
    store: Store | None = None  # set for an s3:// root
    max_points: int = MAX_POINTS  # the point cap (catpose.data.pointcloud.read_ply); 0: none

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def _cloud_rel(self) -> str:
        if self.annotation is not None and self.annotation.point_cloud is not None:
            return self.annotation.point_cloud.path
        return f"{self.category}/{self.name}/pointcloud.ply"

    @property
    def point_cloud_path(self) -> Path | str:
        return _file(self.root, self.store, self._cloud_rel)

    @property
    def has_cloud_file(self) -> bool:
        return (
            self.store.exists(self._cloud_rel)
            if self.store is not None
            else Path(self.point_cloud_path).is_file()
        )

    @property
    def cloud_source(self) -> str | None:
        """Where the cloud comes from: ``"file"`` (its ``pointcloud.ply``), ``"depth"`` (no file, made from
        the depth maps and cameras: :func:`catpose.data.quality.cloud_from_depth`) or None (neither)."""
        return _cloud_source(self.has_cloud_file, self.frames)

    def load_point_cloud(self) -> PointCloud:
        """The sequence's point cloud in its world frame; an empty cloud is an error, and so is a missing
        one unless the frames have depth maps to make it from (CO3D has videos without ``pointcloud.ply``)."""
        if not self.has_cloud_file:
            if _cloud_source(False, self.frames) is None:
                raise MissingFileError(str(self.point_cloud_path), "point cloud (and no depth maps to make "
                                                                   "one from)")
            from catpose.data.quality import cloud_from_depth

            k = (str(self.root), self.category, self.name, len(self.frames))
            if k not in _DEPTH_CLOUDS:
                while len(_DEPTH_CLOUDS) >= 4:
                    _DEPTH_CLOUDS.pop(next(iter(_DEPTH_CLOUDS)))
                _DEPTH_CLOUDS[k] = cloud_from_depth(self)
            return _DEPTH_CLOUDS[k]
        if self.store is None:
            return read_ply(self.point_cloud_path, max_points=self.max_points)
        try:  # streamed from the store: the header, then the vertex rows block by block (read_ply_stream)
            with self.store.open(self._cloud_rel) as fh:
                return read_ply_stream(fh, self.point_cloud_path, max_points=self.max_points)
        except FileNotFoundError as e:
            raise MissingFileError(str(self.point_cloud_path), "point cloud") from e

    def subsample(self, k: int) -> list[Co3dFrame]:
        """``k`` frames evenly spread over the video (all of them if it has fewer)."""
        if k <= 0 or k >= len(self.frames):
            return list(self.frames)
        idx = np.unique(np.linspace(0, len(self.frames) - 1, k).round().astype(int))
        return [self.frames[i] for i in idx]


@dataclass
class Co3dCategory:
    """One category folder; annotation files are parsed on first use, media files on demand."""

    root: Path | str | Store
    category: str
    endpoint_url: str | None = None
    """S3 endpoint of an ``s3://`` root."""
    max_points: int = MAX_POINTS
    """The most points a sequence's point cloud is read with (larger ones subsampled while read; 0: all)."""
    _frames: dict[str, list[FrameAnnotation]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.store = data_store(self.root, self.endpoint_url)
        self.root = _root_of(self.root)
        safe_name(self.category, "category", str(self.root), "category")  # it becomes keys in every store
        if self.store is None:
            d = self.root / self.category
            if not d.is_dir():
                raise MissingFileError(str(d), f"category folder '{self.category}'")
            if not self.frame_annotations_path.is_file():
                raise MissingFileError(str(self.frame_annotations_path), "frame annotations")
        elif not self.store.exists(f"{self.category}/frame_annotations.jgz"):
            raise MissingFileError(str(self.frame_annotations_path), "frame annotations")

    @property
    def frame_annotations_path(self) -> Path | str:
        return _file(self.root, self.store, f"{self.category}/frame_annotations.jgz")

    @property
    def sequence_annotations_path(self) -> Path | str:
        return _file(self.root, self.store, f"{self.category}/sequence_annotations.jgz")

    def _annotation_bytes(self, name: str) -> bytes | None:
        """An annotation file's bytes from an S3 root (None: read the local file)."""
        if self.store is None:
            return None
        return _bytes(self.root, self.store, f"{self.category}/{name}", "annotation file")

    @cached_property
    def _index(self) -> dict:
        """Both annotation files parsed record by record. A bad frame record costs its frame; a bad or
        duplicated sequence record, duplicated frame numbers, or a video left with no usable frame
        cost that video; optional metadata never blocks. Every loss is kept with its reason."""
        fpath = str(self.frame_annotations_path)
        excluded: dict[str, str] = {}  # sequence -> reason (the whole video is left out)
        skipped: dict[str, str] = {}  # "<sequence>/<frame_number>" (or record) -> reason
        warnings: list[str] = []
        good, bad = read_frame_annotations(self.frame_annotations_path, warnings,
                                           data=self._annotation_bytes("frame_annotations.jgz"))
        by_seq: dict[str, list[tuple[int, FrameAnnotation]]] = {}
        for i, fa in good:
            why = name_problem(fa.sequence_name)
            if why is not None:  # a name that is no plain path component never becomes a key: video excluded
                excluded.setdefault(shown_name(fa.sequence_name), str(DataFormatError(
                    fpath, f"{shown_name(fa.sequence_name)} is not a plain name ({why}); video excluded",
                    field=f"frame_annotations[{i}].sequence_name")))
                continue
            by_seq.setdefault(fa.sequence_name, []).append((i, fa))
        bad_by_seq: dict[str, list[str]] = {}
        for b in bad:
            if b.sequence_name is None:
                skipped[f"frame_annotations[{b.index}]"] = b.error
                continue
            b.sequence_name = shown_name(b.sequence_name)
            where = f"{b.sequence_name}/{b.frame_number}" if b.frame_number is not None else \
                f"{b.sequence_name}/frame_annotations[{b.index}]"
            skipped[where] = b.error
            bad_by_seq.setdefault(b.sequence_name, []).append(b.error)
        for name, errs in bad_by_seq.items():
            if name not in by_seq:
                excluded[name] = f"no usable frame record ({len(errs)} bad; first: {errs[0]})"
        for name, recs in by_seq.items():
            seen: dict[int, int] = {}
            for i, fa in recs:
                if fa.frame_number in seen:
                    excluded[name] = str(DataFormatError(
                        fpath, f"records [{seen[fa.frame_number]}] and [{i}] are both frame "
                               f"{fa.frame_number} of "
                        f"sequence '{name}'; video excluded", field="frame_number"))
                    break
                seen[fa.frame_number] = i
            with_mask = [fa for _, fa in recs if fa.mask is not None]
            if with_mask and len(with_mask) < len(recs):
                for i, fa in recs:  # a mask-less frame would let the background into the video's features
                    if fa.mask is None:
                        skipped[f"{name}/{fa.frame_number}"] = str(DataFormatError(
                            fpath, f"null while {len(with_mask)} other frames of sequence '{name}' have "
                                   "masks; "
                            "frame skipped", field=f"frame_annotations[{i}].mask"))
                by_seq[name] = [(i, fa) for i, fa in recs if fa.mask is not None]
        seq_anns: dict[str, SequenceAnnotation] = {}
        spath = self.sequence_annotations_path
        if (self.store.exists(f"{self.category}/sequence_annotations.jgz") if self.store is not None
                else spath.is_file()):
            sgood, sbad, swarn = read_sequence_annotations(
                spath, data=self._annotation_bytes("sequence_annotations.jgz")
            )
            warnings += swarn
            first: dict[str, int] = {}
            for i, sa in sgood:
                name = sa.sequence_name
                if name_problem(name) is not None:  # never matches a usable video; named, not used
                    warnings.append(str(DataFormatError(str(spath), f"{shown_name(name)} is not a plain name "
                                    f"({name_problem(name)}); record "
                                    "ignored", field=f"sequence_annotations[{i}].sequence_name")))
                    continue
                if name in first:
                    excluded[name] = str(DataFormatError(
                        str(spath), f"records [{first[name]}] and [{i}] both name sequence '{name}'; video "
                                    "excluded "
                        "(neither record is trusted)", field="sequence_name"))
                    continue
                first[name] = i
                seq_anns[name] = sa
            for b in sbad:
                if b.sequence_name is None or name_problem(b.sequence_name) is not None:
                    warnings.append(f"{b.error}; record ignored")
                else:
                    excluded[b.sequence_name] = f"{b.error}; video excluded"
        for name in excluded:
            by_seq.pop(name, None)
            seq_anns.pop(name, None)
        frames = {
            n: [fa for _, fa in sorted(v, key=lambda r: r[1].frame_number)] for n, v in by_seq.items() if v
        }
        return {"frames": frames, "sequences": seq_anns, "excluded": excluded, "skipped": skipped,
                "warnings": warnings}

    def _cloud_rel(self, name: str) -> str:
        sa = self._index["sequences"].get(name)
        if sa is not None and sa.point_cloud is not None:
            return sa.point_cloud.path
        return f"{self.category}/{name}/pointcloud.ply"

    @cached_property
    def _clouds(self) -> dict[str, str | None]:
        """Each video's cloud source (see :attr:`Co3dSequence.cloud_source`): one existence check per
        video (on S3 one listing of the category's ``*/pointcloud.ply``, then a check of other paths)."""
        names = list(self._index["frames"])
        if self.store is not None:
            listed = set(self.store.glob(f"{self.category}/*/pointcloud.ply"))
            has = {
                n: (self._cloud_rel(n) in listed)
                or (
                    not self._cloud_rel(n).endswith(f"/{n}/pointcloud.ply")
                    and self.store.exists(self._cloud_rel(n))
                )
                for n in names
            }
        else:
            has = {n: (Path(self.root) / self._cloud_rel(n)).is_file() for n in names}
        return {n: _cloud_source(has[n], self._index["frames"][n]) for n in names}

    @property
    def clouds_from_depth(self) -> list[str]:
        """Videos without ``pointcloud.ply`` whose cloud is made from their depth maps."""
        return sorted(n for n, s in self._clouds.items() if s == "depth")

    @property
    def no_cloud(self) -> dict[str, str]:
        """Videos excluded for having neither a point cloud nor depth maps: name -> reason."""
        return {n: f"{_file(self.root, self.store, self._cloud_rel(n))}: no point cloud and no depth maps to "
                   "make "
                   "one from; video excluded" for n, s in self._clouds.items() if s is None}

    def cloud_summary(self) -> str:
        """One line: clouds made from depth maps and videos without any (empty when none)."""
        parts = []
        if self.clouds_from_depth:
            parts.append(f"{len(self.clouds_from_depth)} videos without pointcloud.ply, their clouds made "
                         "from depth "
                         f"maps ({', '.join(self.clouds_from_depth)})")
        if self.no_cloud:
            parts.append(f"{len(self.no_cloud)} videos excluded: no point cloud nor depth maps "
                         f"({', '.join(sorted(self.no_cloud))})")
        return f"{self.category}: " + "; ".join(parts) if parts else ""

    @property
    def sequence_annotations(self) -> dict[str, SequenceAnnotation]:
        """Usable sequence records by name (absent file: empty)."""
        return self._index["sequences"]

    @property
    def frame_annotations(self) -> dict[str, list[FrameAnnotation]]:
        """Usable frame records of the usable videos, by sequence, sorted by frame number (a video with
        neither a point cloud nor depth maps is not usable: :attr:`no_cloud`)."""
        gone = self.no_cloud
        return (
            {n: v for n, v in self._index["frames"].items() if n not in gone}
            if gone
            else self._index["frames"]
        )

    @property
    def excluded(self) -> dict[str, str]:
        """Videos left out because of their annotation records, or for having no point cloud nor depth
        maps: sequence name -> reason."""
        return {**self._index["excluded"], **self.no_cloud}

    @property
    def skipped_frames(self) -> dict[str, str]:
        """Frames (``<sequence>/<frame_number>``, or the record) left out of usable videos -> reason."""
        return self._index["skipped"]

    @property
    def annotation_warnings(self) -> list[str]:
        """Optional metadata that was dropped (never blocks)."""
        return self._index["warnings"]

    def annotation_summary(self) -> str:
        """One line: what the annotation records cost (empty when nothing)."""
        parts = []
        if self._index["excluded"]:
            parts.append(f"{len(self._index['excluded'])} videos excluded "
                         f"({', '.join(sorted(self._index['excluded']))})")
        if self.skipped_frames:
            parts.append(f"{len(self.skipped_frames)} frame records skipped")
        if self.annotation_warnings:
            parts.append(f"{len(self.annotation_warnings)} optional fields ignored")
        return f"{self.category}: bad annotation records: " + "; ".join(parts) if parts else ""

    @property
    def sequence_names(self) -> list[str]:
        return sorted(self.frame_annotations)

    def __len__(self) -> int:
        return len(self.frame_annotations)

    def __iter__(self):
        for name in self.sequence_names:
            yield self[name]

    def __getitem__(self, name: str) -> Co3dSequence:
        # the annotation index only: opening one video never checks every video's cloud (Ray tasks open
        # their video by name); a video without cloud nor depth fails when its cloud is loaded, naming it
        if name in self._index["excluded"]:
            raise KeyError(f"sequence '{name}' is excluded: {self._index['excluded'][name]}")
        if name not in self._index["frames"]:
            raise KeyError(f"sequence '{name}' is not in {self.frame_annotations_path}")
        src = str(self.frame_annotations_path)
        frames = [Co3dFrame(fa, self.root, src, self.store) for fa in self._index["frames"][name]]
        ann = self.sequence_annotations.get(name)
        return Co3dSequence(name, self.category, ann, frames, self.root, src, self.store, self.max_points)

    @property
    def set_list_names(self) -> list[str]:
        if self.store is not None:
            return sorted(k.rsplit("/", 1)[1][len("set_lists_"):-5]
                          for k in self.store.glob(f"{self.category}/set_lists/set_lists_*.json"))
        d = self.root / self.category / "set_lists"
        return sorted(p.name[len("set_lists_"):-5] for p in d.glob("set_lists_*.json")) if d.is_dir() else []


def list_categories(root: str | Path | Store, endpoint_url: str | None = None) -> list[str]:
    """Category folders under a dataset root, local or ``s3://`` (those with a frame_annotations.jgz)."""
    store = data_store(root, endpoint_url)
    if store is not None:
        found = sorted(k.split("/")[0] for k in store.glob("*/frame_annotations.jgz"))
        if not found and not store.is_dir():
            raise MissingFileError(store.uri, "dataset root")
        return found
    root = Path(_root_of(root))
    if not root.is_dir():
        raise MissingFileError(str(root), "dataset root")
    return sorted(p.parent.name for p in root.glob("*/frame_annotations.jgz"))
