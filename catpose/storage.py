"""Stores: a local folder or an ``s3://bucket/prefix`` URI, through one interface.

S3 goes through s3fs (botocore refreshes credentials; instance roles work), wrapped for pyarrow and
Ray as ``PyFileSystem(FSSpecHandler(s3fs))`` with prefix-less paths. The endpoint of S3-compatible
stores (MinIO, moto, Ceph) comes from the argument, ``$CATPOSE_S3_ENDPOINT``, ``$AWS_ENDPOINT_URL_S3``
or ``$AWS_ENDPOINT_URL``, in that order.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catpose.errors import DataFormatError, StorageError


NAME_MAX_BYTES = 200
"""The longest name (UTF-8 bytes) a category or sequence may have: a key's component with a suffix
(``<sequence>.npz``, a manifest record) stays under the 255 bytes of a file name."""

_GLOB_CHARS = set("*?[]")


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain path component (None when it is one).

    A plain name is a non-empty string of at most :data:`NAME_MAX_BYTES` UTF-8 bytes with no path
    separator (``/``, ``\\``), no control character, no glob character (``* ? [ ]``: stores list keys
    by pattern, and a category ``*`` would match, and remove, the others' shards), that is neither
    ``.`` nor ``..`` and does not start with a dot (hidden and temporary files start with one)."""
    if not isinstance(name, str):
        return f"not a string ({type(name).__name__})"
    if not name or not name.strip():
        return "empty"
    if name in (".", ".."):
        return "a relative folder"
    if name.startswith("."):
        return "starts with a dot"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if _GLOB_CHARS & set(name):
        return "contains a glob character (* ? [ ])"
    if len(name.encode("utf8", "surrogatepass")) > NAME_MAX_BYTES:
        return f"longer than {NAME_MAX_BYTES} bytes"
    return None


def shown_name(name: object) -> str:
    """``name`` as it can be printed and used as a manifest entry: itself when plain, else a short
    ASCII rendering (control characters escaped, long names cut)."""
    if isinstance(name, str) and name_problem(name) is None:
        return name
    text = ascii(name)
    return text if len(text) <= 60 else f"{text[:40]}...({len(str(name))} chars)"


def safe_name(name: object, what: str = "name", source: str | None = None, field: str | None = None) -> str:
    """``name`` when it is a plain path component (:func:`name_problem`), else a
    :class:`DataFormatError` naming ``source`` (the file or flag it came from) and ``field``. Every
    category or sequence name passes here before it becomes part of a key or path."""
    why = name_problem(name)
    if why is not None:
        raise DataFormatError(source or "<input>", f"{what} {shown_name(name)} is not a plain name ({why})",
                              field=field)
    return name  # type: ignore[return-value]


def key(*names: str, source: str | None = None) -> str:
    """The store key ``a/b/c`` from components that are each a plain name (raises
    :class:`DataFormatError` otherwise): a name read from data can never climb out of the store."""
    return "/".join(safe_name(n, "key component", source) for n in names)


def safe_rel(path: object, what: str = "path", source: str | None = None, field: str | None = None) -> str:
    """A relative path read from data (``car/seq/images/frame01.jpg``) when each of its components is a
    plain name, else a :class:`DataFormatError` naming ``source`` and ``field``."""
    if not isinstance(path, str) or not path:
        raise DataFormatError(
            source or "<input>", f"{what} {shown_name(path)} is not a relative path", field=field
        )
    for part in path.split("/"):
        why = name_problem(part)
        if why is not None:
            raise DataFormatError(
                source or "<input>",
                f"{what} {shown_name(path)} is not a plain relative path "
                f"(component {shown_name(part)}: {why})",
                field=field,
            )
    return path


def temp_name(path: str | Path) -> Path:
    """A unique temporary name next to ``path`` (hidden, ``.tmp``): concurrent writers never collide."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes a local file atomically (unique temporary name in the same folder, then a rename). A
    failed write (full disk, file size limit, read-only folder) leaves no temporary file behind and
    raises :class:`StorageError` naming the file."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StorageError(str(path), f"cannot write: {e.strerror or e}") from e


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def s3_endpoint(endpoint_url: str | None = None) -> str | None:
    return (endpoint_url or os.environ.get("CATPOSE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or None)


@dataclass
class Store:
    """A root URI and the filesystems to reach it: ``fs`` (fsspec) and ``arrow_fs`` (pyarrow)."""

    uri: str
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.uri, Store):  # a Store given where a URI is expected: the same store
            self.endpoint_url = self.endpoint_url or self.uri.endpoint_url
            self.uri = self.uri.uri
        self.uri = str(self.uri).rstrip("/") if is_s3(self.uri) else str(Path(self.uri).absolute())
        self.endpoint_url = s3_endpoint(self.endpoint_url) if is_s3(self.uri) else None
        self._fs = None

    def __getstate__(self) -> dict:
        """Sent to Ray tasks as its URI and endpoint only; each process opens its own connection."""
        return {"uri": self.uri, "endpoint_url": self.endpoint_url, "_fs": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __str__(self) -> str:
        return self.uri

    @property
    def is_s3(self) -> bool:
        return is_s3(self.uri)

    def sub(self, *parts: str) -> Store:
        """The store rooted at ``parts`` under this one (same endpoint)."""
        return Store(self.url(*parts), self.endpoint_url)

    def rel(self, uri: str | os.PathLike) -> str | None:
        """The key of ``uri`` inside this store, or None when it lies elsewhere."""
        u = str(uri).rstrip("/") if is_s3(uri) else str(Path(uri).absolute())
        if u == self.uri:
            return ""
        return u[len(self.uri) + 1:] if u.startswith(self.uri + "/") else None

    @property
    def fs(self):
        """fsspec filesystem (``s3fs.S3FileSystem`` or local)."""
        if self._fs is None:
            if is_s3(self.uri):
                import s3fs

                self._fs = s3fs.S3FileSystem(
                    endpoint_url=self.endpoint_url, skip_instance_cache=True,
                    config_kwargs={"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}},
                )
            else:
                import fsspec

                self._fs = fsspec.filesystem("file")
        return self._fs

    @property
    def arrow_fs(self):
        """pyarrow filesystem for ``pyarrow.parquet`` and ``ray.data.read_parquet``."""
        from pyarrow import fs as pafs

        if is_s3(self.uri):
            return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        return pafs.LocalFileSystem()

    @property
    def root(self) -> str:
        """The root as a path for ``fs``/``arrow_fs`` (no ``s3://``)."""
        return self.uri[len("s3://"):] if is_s3(self.uri) else self.uri

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def url(self, *parts: str) -> str:
        """A full URI (with ``s3://`` where the store is on S3)."""
        p = self.path(*parts)
        return "s3://" + p if is_s3(self.uri) else p

    # ---------------------------------------------------------------- small-object helpers
    def _wrap(self, what: str, fn, *args, key: str | None = None):
        """``fn(*args)``; any failure but a missing file becomes a :class:`StorageError` naming the
        key's full URI (``key``) and what was done."""
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except Exception as e:  # botocore/aiohttp errors: unreachable endpoint, credentials, no bucket
            where = self.url(key) if key is not None else self.uri
            ep = f" (endpoint {self.endpoint_url})" if self.endpoint_url else ""
            raise StorageError(where, f"{what} failed{ep}: {type(e).__name__}: {e}") from e

    def check(self) -> None:
        """Makes sure the store can be reached and written; raises :class:`StorageError` otherwise."""
        if is_s3(self.uri):
            bucket = self.root.split("/", 1)[0]
            try:
                self.fs.ls(bucket, refresh=True)
            except FileNotFoundError as e:
                raise StorageError(self.uri, f"bucket '{bucket}' does not exist") from e
            except Exception as e:
                ep = self.endpoint_url or "AWS"
                raise StorageError(self.uri, f"cannot reach S3 at {ep}: {type(e).__name__}: {e}") from e
            probe = self.path(f".catpose-write-check-{uuid.uuid4().hex[:8]}")
            try:
                self.fs.pipe_file(probe, b"")
                self.fs.rm(probe)
            except Exception as e:
                raise StorageError(self.uri, f"cannot write here: {type(e).__name__}: {e}") from e
        else:
            root = Path(self.root)
            if root.exists() and not root.is_dir():
                raise StorageError(self.uri, "is a file, not a folder")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(self.uri, f"cannot create the folder: {e.strerror or e}") from e
            probe = temp_name(root / "catpose-write-check")
            try:
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as e:
                raise StorageError(self.uri, f"cannot write here: {e.strerror or e}") from e

    def exists(self, *parts: str) -> bool:
        return bool(self._wrap("checking", self.fs.exists, self.path(*parts), key="/".join(parts)))

    def makedirs(self, *parts: str) -> None:
        if not is_s3(self.uri):
            Path(self.path(*parts)).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        p = self.path(rel)
        if not is_s3(self.uri):
            atomic_write_bytes(p, data)
            return
        self._wrap("writing", self.fs.pipe_file, p, data, key=rel)  # an S3 put is atomic

    def open(self, rel: str, block_size: int = 8 << 20):
        """``rel`` opened for reading as a seekable binary file (on S3, ranged reads of ``block_size``
        bytes: what a reader that needs part of a large object takes; FileNotFoundError when absent)."""
        if not is_s3(self.uri):
            return open(self.path(rel), "rb")
        return self._wrap("reading", lambda: self.fs.open(self.path(rel), "rb", block_size=block_size,
                                                          cache_type="readahead"), key=rel)

    def read_bytes(self, rel: str) -> bytes:
        return self._wrap("reading", self.fs.cat_file, self.path(rel), key=rel)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def upload_dir(self, local: str | os.PathLike, rel: str) -> list[str]:
        """Copies every file under the local folder ``local`` to ``rel/...``; returns the keys."""
        keys = []
        for p in sorted(Path(local).rglob("*")):
            if p.is_file():
                k = f"{rel}/{p.relative_to(local).as_posix()}"
                self.write_bytes(k, p.read_bytes())
                keys.append(k)
        return keys

    def is_dir(self, rel: str = "") -> bool:
        if not is_s3(self.uri):
            return Path(self.path(rel)).is_dir()
        return bool(self._wrap("checking", self.fs.isdir, self.path(rel), key=rel))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=1).encode())

    def read_json(self, rel: str, default: Any = None) -> Any:
        """The JSON object at ``rel`` (``default`` when absent); a truncated or corrupt file raises
        :class:`DataFormatError` naming it."""
        if not self.exists(rel):
            return default
        data = self.read_bytes(rel)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise DataFormatError(self.url(rel), f"not valid JSON ({len(data)} bytes; {e})") from e

    def cat_many(self, rels: list[str]) -> dict[str, bytes | Exception]:
        """The bytes of many small files at once (concurrent requests on S3); a file that cannot be
        read maps to its exception."""
        if not rels:
            return {}
        paths = [self.path(r) for r in rels]
        got = self._wrap("reading", self.fs.cat, paths, "return", key=rels[0])
        n = len(self.root) + 1
        return {str(k)[n:] if str(k).startswith(self.root) else str(k): v for k, v in got.items()}

    def remove(self, rel: str, recursive: bool = False) -> None:
        """Removes ``rel`` (with ``recursive``, a folder and everything under it), if there."""
        try:
            self.fs.rm(self.path(rel), recursive=recursive)
        except FileNotFoundError:
            pass

    def files(self, prefix: str) -> list[str]:
        """Every file under ``prefix`` (one listing request on S3), as keys relative to the root."""
        found = self._wrap("listing", self.fs.find, self.path(prefix), key=prefix)
        n = len(self.root) + 1
        return sorted(str(f)[n:] for f in found)

    def glob(self, pattern: str) -> list[str]:
        """Paths (relative to the root) matching ``pattern``."""
        found = self._wrap("listing", self.fs.glob, self.path(pattern), key=pattern)
        n = len(self.root) + 1
        return sorted(str(f)[n:] for f in found)


def write_uri(uri: str | os.PathLike, data: bytes, endpoint_url: str | None = None) -> None:
    """Writes one object at a full URI (a local path or ``s3://bucket/key``), atomically."""
    uri = str(uri)
    if is_s3(uri):
        bucket_key = uri[len("s3://"):]
        Store("s3://" + bucket_key.rsplit("/", 1)[0], endpoint_url).write_bytes(
            bucket_key.rsplit("/", 1)[1], data
        )
    else:
        atomic_write_bytes(uri, data)


def read_uri(uri: str | os.PathLike, endpoint_url: str | None = None) -> bytes:
    """The bytes of one object at a full URI (a local path or ``s3://bucket/key``)."""
    uri = str(uri)
    if is_s3(uri):
        bucket_key = uri[len("s3://"):]
        return Store("s3://" + bucket_key.rsplit("/", 1)[0], endpoint_url).read_bytes(
            bucket_key.rsplit("/", 1)[1]
        )
    return Path(uri).read_bytes()


def join_uri(root: str | os.PathLike, *parts: str) -> str:
    """``root/parts`` for a local path or an ``s3://`` URI (never through :class:`pathlib.Path`, which
    would fold ``s3://`` into ``s3:/``)."""
    root = str(root).rstrip("/") if is_s3(root) else str(root)
    return "/".join([root, *[p.strip("/") for p in parts if p]]) if is_s3(root) else str(Path(root, *parts))
