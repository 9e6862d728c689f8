"""Point clouds in PLY files (CO3D's ``pointcloud.ply``), read and written with ``plyfile``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catpose.errors import DataFormatError, MissingFileError


@dataclass
class PointCloud:
    points: np.ndarray  # (N, 3) float32
    colors: np.ndarray | None = None  # (N, 3) uint8
    normals: np.ndarray | None = None  # (N, 3) float32

    def __len__(self) -> int:
        return len(self.points)


MAX_POINTS = 1_000_000
"""The most points a cloud is read with: a larger one is subsampled while read (a seeded random subset,
in file order), so a 10 M-point cloud costs what a 1 M one does. The features, cleaning and alignment
sample a few thousand vertices from it: a million is plenty."""


def _subset(n: int, cap: int | None, path: str) -> np.ndarray | None:
    """Sorted indices of at most ``cap`` of ``n`` points (None: all), the same for the same file."""
    if cap is None or cap <= 0 or n <= cap:
        return None
    import zlib

    rng = np.random.default_rng([zlib.crc32(str(path).encode()), n])
    return np.sort(rng.choice(n, cap, replace=False))


def read_ply(path: str | Path, require_points: bool = True, data: bytes | None = None,
             max_points: int | None = MAX_POINTS) -> PointCloud:
    """Reads the vertices of a PLY file (ascii or binary; or its bytes ``data``, fetched from a store,
    with ``path`` naming it); errors name the file.

    Raises :class:`DataFormatError` for an unreadable file, a file with no vertex element or
    x/y/z properties, non-finite coordinates, or (``require_points``) an empty cloud.
    """
    import io

    from plyfile import PlyData

    if data is None:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(str(path), "point cloud")
    try:
        # a local binary file is memory-mapped: only the subset's rows are ever copied out of it
        ply = PlyData.read(io.BytesIO(data) if data is not None else str(path), mmap="r")
    except Exception as e:  # plyfile raises several types for corrupt files
        raise DataFormatError(str(path), f"not a readable PLY file ({type(e).__name__}: {e})") from e
    if "vertex" not in ply:
        raise DataFormatError(str(path), "PLY file has no 'vertex' element", field="vertex")
    v = ply["vertex"].data
    names = v.dtype.names or ()
    idx = _subset(len(v), max_points, str(path))
    if idx is not None:
        v = v[idx]  # a copy of the chosen rows only (a memmap stays on disk)
    for k in ("x", "y", "z"):
        if k not in names:
            raise DataFormatError(str(path), "missing vertex property", field=f"vertex.{k}")
    pts = np.stack([v["x"], v["y"], v["z"]], axis=-1).astype(np.float32)
    if require_points and len(pts) == 0:
        raise DataFormatError(str(path), "the point cloud is empty (0 vertices)", field="vertex")
    if not np.isfinite(pts).all():
        bad = int((~np.isfinite(pts).all(axis=1)).sum())
        raise DataFormatError(str(path), f"{bad} vertices have non-finite coordinates", field="vertex.x/y/z")
    colors = None
    if all(k in names for k in ("red", "green", "blue")):
        colors = np.stack([v["red"], v["green"], v["blue"]], axis=-1).astype(np.uint8)
    normals = None
    if all(k in names for k in ("nx", "ny", "nz")):
        normals = np.stack([v["nx"], v["ny"], v["nz"]], axis=-1).astype(np.float32)
    return PointCloud(pts, colors, normals)


def write_ply(path: str | Path, cloud: PointCloud) -> None:
    """Writes a binary little-endian PLY (x, y, z [, nx, ny, nz] [, red, green, blue])."""
    from plyfile import PlyData

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".ply.tmp")
    PlyData([_vertex_element(cloud)], text=False, byte_order="<").write(str(tmp))
    tmp.replace(path)


def ply_bytes(cloud: PointCloud) -> bytes:
    """The bytes of :func:`write_ply`'s file (for a store)."""
    import io

    from plyfile import PlyData

    buf = io.BytesIO()
    PlyData([_vertex_element(cloud)], text=False, byte_order="<").write(buf)
    return buf.getvalue()


def _vertex_element(cloud: PointCloud):
    from plyfile import PlyElement

    n = len(cloud.points)
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if cloud.normals is not None:
        fields += [("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
    if cloud.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    arr = np.empty(n, dtype=fields)
    for i, k in enumerate("xyz"):
        arr[k] = cloud.points[:, i]
    if cloud.normals is not None:
        for i, k in enumerate(("nx", "ny", "nz")):
            arr[k] = cloud.normals[:, i]
    if cloud.colors is not None:
        for i, k in enumerate(("red", "green", "blue")):
            arr[k] = cloud.colors[:, i]
    return PlyElement.describe(arr, "vertex")
