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

    if data is None:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(str(path), "point cloud")
    return _cloud(
        _plyfile_vertices(io.BytesIO(data) if data is not None else str(path), path, max_points),
        path,
        require_points,
    )


def read_ply_stream(fh, path: str | Path, require_points: bool = True, max_points: int | None = MAX_POINTS
                    ) -> PointCloud:
    """:func:`read_ply` of an open binary file ``fh`` (a store's object, read in ranges): for a binary PLY
    whose first element is the vertices (catpose's and CO3D's files) only the header and then the vertex
    rows, one block of about 64 MB at a time, are read, and only the subset under the cap is kept, so a
    reader holds at most the cap's rows plus one block; any other layout (ascii, other elements first) is
    read whole."""
    import io

    try:
        v = _stream_vertices(fh, str(path), max_points)
    except DataFormatError:
        raise
    except Exception as e:
        raise DataFormatError(str(path), f"not a readable PLY file ({type(e).__name__}: {e})") from e
    if v is None:
        fh.seek(0)
        v = _plyfile_vertices(io.BytesIO(fh.read()), path, max_points)
    return _cloud(v, path, require_points)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _stream_vertices(fh, path: str, max_points: int | None, block: int = 64 << 20) -> np.ndarray | None:
    """The vertex rows (at most ``max_points`` of them) of a binary PLY read from ``fh`` block by block,
    or None when the file's layout is not one this reads (then the caller reads it whole)."""
    header = b""
    while not header.endswith(b"end_header\n"):
        line = fh.readline()
        if not line or len(header) > 1 << 16:
            raise DataFormatError(path, "not a readable PLY file (no end_header line in its first 64 KB)")
        header += line.replace(b"\r\n", b"\n")
    lines = header.decode("ascii", "replace").splitlines()
    if lines[0].strip() != "ply":
        raise DataFormatError(path, "not a readable PLY file (it does not start with 'ply')")
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format ")), "")
    order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
    elements = [ln.split() for ln in lines if ln.startswith("element ")]
    if order is None or not elements or elements[0][1] != "vertex":
        return None  # ascii, or the vertices are not the first element
    fields = []
    for ln in lines[lines.index(" ".join(elements[0])) + 1:]:
        if not ln.startswith("property "):
            break
        parts = ln.split()
        if parts[1] == "list" or parts[1] not in _PLY_TYPES:
            return None
        fields.append((parts[2], order + _PLY_TYPES[parts[1]]))
    dtype = np.dtype(fields)
    n = int(elements[0][2])
    idx = _subset(n, max_points, path)
    rows_per_block = max(1, block // max(dtype.itemsize, 1))
    out = np.empty(n if idx is None else len(idx), dtype)
    got = 0
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        raw = fh.read((stop - start) * dtype.itemsize)
        if len(raw) < (stop - start) * dtype.itemsize:
            raise DataFormatError(path, "the file ends within its vertices (row "
                                        f"{start + len(raw) // dtype.itemsize}"
                                        f" of {n})", field="vertex")
        rows = np.frombuffer(raw, dtype)
        if idx is None:
            out[start:stop] = rows
            continue
        lo, hi = np.searchsorted(idx, [start, stop])
        out[got:got + hi - lo] = rows[idx[lo:hi] - start]
        got += hi - lo
    return out


def _plyfile_vertices(src, path, max_points: int | None) -> np.ndarray:
    """The vertex rows (at most ``max_points``) of a PLY file read by ``plyfile`` (a local file
    memory-mapped)."""
    from plyfile import PlyData

    try:
        # a local binary file is memory-mapped: only the subset's rows are ever copied out of it
        ply = PlyData.read(src, mmap="r")
    except Exception as e:  # plyfile raises several types for corrupt files
        raise DataFormatError(str(path), f"not a readable PLY file ({type(e).__name__}: {e})") from e
    if "vertex" not in ply:
        raise DataFormatError(str(path), "PLY file has no 'vertex' element", field="vertex")
    v = ply["vertex"].data
    idx = _subset(len(v), max_points, str(path))
    if idx is not None:
        v = v[idx]  # a copy of the chosen rows only (a memmap stays on disk)
    return v


def _cloud(v: np.ndarray, path, require_points: bool) -> PointCloud:
    """A :class:`PointCloud` of PLY vertex rows ``v``, checked (errors name ``path`` and the field)."""
    names = v.dtype.names or ()
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
