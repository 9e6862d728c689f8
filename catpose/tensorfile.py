"""Checkpoints, caches and training states as safetensors: tensors and JSON, never pickle.

``model.pt``, a training checkpoint's ``state.pt`` and ``retrieval_views.pt`` come from stores that
others can write to (a shared bucket, a copied run folder). ``torch.load`` of a pickle runs whatever the
pickle asks for, so none of them is a pickle: :func:`pack` writes a nested tree of dicts, lists,
tensors, numpy arrays and JSON scalars as one safetensors file (the tensors flat, under the tree
paths) with the tree's shape as JSON in the header's metadata; :func:`unpack` reads it back. The
safetensors format is a JSON header and raw little-endian buffers: reading it cannot execute code. A
file that is not such a file (a legacy pickle, a payload, a truncated write) is a
:class:`~catpose.errors.DataFormatError` naming it, and it is never handed to a pickle loader.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from catpose.errors import DataFormatError

FORMAT = "catpose.tensorfile/1"
_META_KEY = "catpose"


def pack(tree, kind: str = "") -> bytes:
    """The safetensors bytes of ``tree`` (dicts with str or int keys, lists, tuples, tensors, numpy
    arrays, str/int/float/bool/None); ``kind`` ("model", "state", ...) is recorded and checked by
    :func:`unpack`."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}

    def enc(x, path: str):
        if isinstance(x, torch.Tensor):
            key = path or "."
            tensors[key] = x.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            if x.dtype == object:
                raise TypeError(f"{path}: an object array cannot be stored without pickle")
            key = path or "."
            tensors[key] = torch.from_numpy(np.ascontiguousarray(x))
            return {"__ndarray__": key}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {"__dict__": {k: enc(v, f"{path}/{k}") for k, v in x.items()}}
            if all(isinstance(k, int) for k in x):
                return {"__intdict__": [[k, enc(v, f"{path}/{k}")] for k, v in x.items()]}
            raise TypeError(f"{path}: dict keys must be all str or all int")
        if isinstance(x, (list, tuple)):
            return {"__tuple__" if isinstance(x, tuple) else "__list__":
                    [enc(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if x is None or isinstance(x, (str, bool, int, float)):
            return x
        raise TypeError(f"{path or '.'}: a {type(x).__name__} cannot be stored without pickle")

    tree_json = enc(tree, "")
    meta = json.dumps({"format": FORMAT, "kind": kind, "tree": tree_json}, allow_nan=True)
    return save(tensors, metadata={_META_KEY: meta})


def unpack(data: bytes, where: str, kind: str = ""):
    """The tree that :func:`pack` stored in ``data`` (read from ``where``, which errors name).

    Raises :class:`~catpose.errors.DataFormatError` for anything else: a pickle-based file (an older
    catpose's, or a planted one) is refused without being unpickled."""
    from safetensors.torch import load

    try:
        tensors = load(bytes(data))
        meta = _metadata(data)
    except Exception as e:  # noqa: BLE001  (safetensors raises its own SafetensorError, and others)
        if data[:2] == b"PK" or data[:1] == b"\x80":  # a torch.save zip or a bare pickle
            raise DataFormatError(where, "a pickle-based file (torch.save); catpose does not load pickles "
                                         "from stores, since a pickle can run code on the machine that reads "
                                         "it. Retrain the run with this catpose, or convert a trusted file "
                                         "with `python -m catpose.tensorfile convert FILE`") from None
        raise DataFormatError(where, f"not a safetensors file ({type(e).__name__}: {e}); truncated or "
                                     "not written by catpose") from None
    info = meta.get(_META_KEY)
    if info is None:
        raise DataFormatError(where, "a safetensors file without catpose's metadata", field="__metadata__")
    try:
        info = json.loads(info)
    except ValueError as e:
        raise DataFormatError(where, f"metadata is not JSON ({e})", field="__metadata__.catpose") from None
    if info.get("format") != FORMAT:
        raise DataFormatError(where, f"format {info.get('format')!r}, expected {FORMAT!r}", field="format")
    if kind and info.get("kind") != kind:
        raise DataFormatError(where, f"holds a {info.get('kind')!r}, expected a {kind!r}", field="kind")

    def dec(x, path: str):
        if isinstance(x, dict):
            if len(x) != 1:
                raise DataFormatError(where, "malformed tree node", field=path or ".")
            (tag, v), = x.items()
            if tag in ("__tensor__", "__ndarray__"):
                if v not in tensors:
                    raise DataFormatError(where, f"tensor {v!r} missing", field=path or ".")
                return tensors[v] if tag == "__tensor__" else tensors[v].numpy()
            if tag == "__dict__":
                return {k: dec(e, f"{path}/{k}") for k, e in v.items()}
            if tag == "__intdict__":
                return {int(k): dec(e, f"{path}/{k}") for k, e in v}
            if tag == "__list__":
                return [dec(e, f"{path}/{i}") for i, e in enumerate(v)]
            if tag == "__tuple__":
                return tuple(dec(e, f"{path}/{i}") for i, e in enumerate(v))
            raise DataFormatError(where, f"unknown tree node {tag!r}", field=path or ".")
        return x

    return dec(info.get("tree"), "")


def _metadata(data: bytes) -> dict:
    """The header's ``__metadata__`` of safetensors ``data`` (the header is 8 bytes of length + JSON)."""
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("header length out of range")
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def require(tree, keys: tuple[str, ...], where: str) -> dict:
    """``tree`` when it is a dict holding ``keys``; else a DataFormatError naming ``where`` and the key."""
    if not isinstance(tree, dict):
        raise DataFormatError(where, f"holds a {type(tree).__name__}, expected a mapping")
    for k in keys:
        if k not in tree:
            raise DataFormatError(where, "missing", field=k)
    return tree


def _convert(path: str, kind: str) -> None:
    """Rewrites a legacy ``torch.save`` file of an older catpose as a tensorfile. It is read with
    ``weights_only=True`` (torch's restricted unpickler: tensors, containers, scalars) plus numpy's
    array reconstruction, which the legacy ``model.pt`` (its vertices) and ``retrieval_views.pt`` need;
    anything else in it is refused by torch."""
    from pathlib import Path

    core = getattr(np, "_core", None) or np.core
    safe = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.float32)),
            type(np.dtype(np.float64)), type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(safe):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    Path(path).write_bytes(pack(obj, kind))
    print(f"{path}: converted to {FORMAT} ({kind})")


if __name__ == "__main__":  # python -m catpose.tensorfile convert FILE [KIND]
    import sys

    if len(sys.argv) < 3 or sys.argv[1] != "convert":
        sys.exit("usage: python -m catpose.tensorfile convert FILE [model|state|retrieval_views]")
    name = sys.argv[2].rsplit("/", 1)[-1]
    _convert(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else name.split(".")[0])
