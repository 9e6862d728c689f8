"""Reader of od3d's label and alignment files (``tform_obj.pt``, ``axis.pt``) that runs no pickle code.

od3d (GenIntel/uns-obj-pose3d, the paper's code) stores each per-sequence transform as ``torch.save`` of
one float32 tensor: a zip holding ``<name>/data.pkl`` (a pickle that rebuilds the tensor),
``<name>/data/<key>`` (the raw storage bytes) and, from newer torch, ``<name>/byteorder``.

Why this is safe: a pickle can only run code by calling an object it got from ``find_class`` (the
GLOBAL / STACK_GLOBAL / INST / OBJ opcodes) or from ``persistent_load``; every other opcode builds
numbers, strings, tuples, lists and dicts. :class:`_TensorUnpickler` answers ``find_class`` with inert
stand-ins of our own for exactly three names (``torch._utils._rebuild_tensor_v2``, a ``torch.<X>Storage``
type, ``collections.OrderedDict``) and refuses every other name, and ``persistent_load`` returns a plain
tuple. The stand-ins only record their arguments, so no torch (or any other) code runs; the result is a
description (storage key, dtype, offset, shape, strides) from which numpy reads the little-endian bytes.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catpose.errors import DataFormatError

MAX_FILE_BYTES = 1 << 20  # a 4x4 transform is ~800 bytes; refuse anything absurd before unzipping
MAX_PICKLE_BYTES = 1 << 16

_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
           "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
           "BoolStorage": "?"}


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _TensorRef:
    """What ``_rebuild_tensor_v2`` was asked to build: storage (key, dtype, numel), offset, size, stride."""

    key: str
    dtype: str
    numel: int
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_rest):
    if not (isinstance(storage, tuple) and len(storage) == 3):
        raise pickle.UnpicklingError("tensor storage is not a persistent storage record")
    key, dtype, numel = storage
    return _TensorRef(key, dtype, numel, int(storage_offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


def _ordered_dict(*args):
    return dict(*args)


class _TensorUnpickler(pickle.Unpickler):
    """Resolves only the names a saved plain tensor uses, to inert stand-ins (see the module docstring)."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return _ordered_dict
        if module == "torch" and name in _DTYPES:
            return _StorageType(_DTYPES[name])
        raise pickle.UnpicklingError(f"refused global '{module}.{name}' (only a saved plain tensor is read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        return (pid[2], pid[1].dtype, pid[4])


def read_torch_tensor(data: bytes, source: str) -> np.ndarray:
    """The tensor of a ``torch.save`` zip file as a numpy array, without running pickle code.

    ``source`` names the file in errors. Raises :class:`DataFormatError` for anything that is not one
    saved plain tensor (another pickled object, a refused global, a storage out of bounds).
    """
    if len(data) > MAX_FILE_BYTES:
        raise DataFormatError(source, f"{len(data)} bytes; a label file is under {MAX_FILE_BYTES}")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise DataFormatError(source, f"not a torch zip file ({e}); legacy torch pickles are not read") from e
    with zf:
        pkls = [i for i in zf.infolist() if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
        if len(pkls) != 1:
            raise DataFormatError(source, "expected exactly one '<name>/data.pkl' in the zip")
        prefix = pkls[0].filename[: -len("data.pkl")]
        if pkls[0].file_size > MAX_PICKLE_BYTES:
            raise DataFormatError(source, f"{pkls[0].filename} is {pkls[0].file_size} "
                                          "bytes", field="data.pkl")
        names = set(zf.namelist())
        if f"{prefix}byteorder" in names and zf.read(f"{prefix}byteorder").strip() != b"little":
            raise DataFormatError(source, "big-endian tensor files are not supported", field="byteorder")
        try:
            ref = _TensorUnpickler(io.BytesIO(zf.read(pkls[0]))).load()
        except Exception as e:  # any failure of the restricted reader is a format error
            raise DataFormatError(source, f"not a saved plain tensor: {e}", field="data.pkl") from e
        if not isinstance(ref, _TensorRef):
            raise DataFormatError(source, f"pickle holds a {type(ref).__name__}, not a "
                                          "tensor", field="data.pkl")
        skey = f"{prefix}data/{ref.key}"
        if "/" in ref.key or ".." in ref.key or skey not in names:
            raise DataFormatError(source, f"storage '{ref.key}' is not in the zip", field="data.pkl")
        raw = zf.read(skey)
    dt = np.dtype(ref.dtype)
    if len(raw) != ref.numel * dt.itemsize:
        raise DataFormatError(source, f"storage has {len(raw)} bytes, expected {ref.numel} x {dt.itemsize}")
    flat = np.frombuffer(raw, dt)
    if any(s < 0 for s in ref.size + ref.stride) or len(ref.size) != len(ref.stride):
        raise DataFormatError(source, f"bad shape {ref.size} / strides {ref.stride}", field="data.pkl")
    last = (
        ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if all(ref.size)
        else ref.offset - 1
    )
    if ref.offset < 0 or last >= len(flat):
        raise DataFormatError(source, f"tensor {ref.size} at offset {ref.offset} exceeds its "
                                      "storage", field="data.pkl")
    out = np.lib.stride_tricks.as_strided(flat[ref.offset:], ref.size, [s * dt.itemsize for s in ref.stride])
    return np.array(out, dtype=dt.newbyteorder("="))


def read_tensor_file(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        from catpose.errors import MissingFileError

        raise MissingFileError(str(path), "od3d tensor file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataFormatError(str(path), f"{path.stat().st_size} bytes; a label file is under "
                                         f"{MAX_FILE_BYTES}")
    return read_torch_tensor(path.read_bytes(), str(path))


def read_transform(path: str | Path) -> np.ndarray:
    """A 4x4 ``tform_obj.pt`` (canonical <- sequence world) as float64 [4, 4]; checks shape and finiteness."""
    T = read_tensor_file(path)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise DataFormatError(str(path), f"expected a finite 4x4 transform, got shape {T.shape}")
    return T.astype(np.float64)


def transform_rotation(T: np.ndarray) -> np.ndarray:
    """The rotation of a (similarity) transform [..., 4, 4] -> [..., 3, 3]: scale divided out, then
    projected onto SO(3) (od3d's aligned transforms carry a scale; its labels are rotations)."""
    from catpose.geometry import project_so3

    return project_so3(np.asarray(T, np.float64)[..., :3, :3])


def scan_od3d_folder(root: str | Path, name: str = "tform_obj.pt") -> dict[str, dict[str, Path]]:
    """``{category: {sequence: file}}`` of an od3d folder laid out ``[...]/<category>/<sequence>/<name>``.

    ``root`` may be the folder holding the categories, or any folder above it that has a single
    ``meta_mask/meta`` (e.g. ``data/co3d/label3d`` or ``data/co3d/aligned_N_alpha500_dinov2s/r0``).
    """
    root = Path(root)
    if not root.is_dir():
        from catpose.errors import MissingFileError

        raise MissingFileError(str(root), "od3d folder")
    metas = [p for p in root.glob("**/meta_mask/meta") if p.is_dir()]
    base = metas[0] if len(metas) == 1 else root
    out: dict[str, dict[str, Path]] = {}
    for f in sorted(base.glob(f"*/*/{name}")):
        out.setdefault(f.parent.parent.name, {})[f.parent.name] = f
    return out
