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
        self.uri = str(self.uri).rstrip("/") if is_s3(self.uri) else str(Path(self.uri).absolute())
        self.endpoint_url = s3_endpoint(self.endpoint_url) if is_s3(self.uri) else None
        self._fs = None

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
    def _wrap(self, what: str, fn, *args):
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except Exception as e:  # botocore/aiohttp errors: unreachable endpoint, credentials, no bucket
            raise StorageError(self.uri, f"{what} failed: {type(e).__name__}: {e}") from e

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
        return bool(self._wrap("exists", self.fs.exists, self.path(*parts)))

    def makedirs(self, *parts: str) -> None:
        if not is_s3(self.uri):
            Path(self.path(*parts)).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        p = self.path(rel)
        if not is_s3(self.uri):
            atomic_write_bytes(p, data)
            return
        self._wrap(f"writing {p}", self.fs.pipe_file, p, data)  # an S3 put is atomic

    def read_bytes(self, rel: str) -> bytes:
        return self._wrap(f"reading {self.path(rel)}", self.fs.cat_file, self.path(rel))

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
        got = self._wrap("reading", self.fs.cat, paths, "return")
        n = len(self.root) + 1
        return {str(k)[n:] if str(k).startswith(self.root) else str(k): v for k, v in got.items()}

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm(self.path(rel))
        except FileNotFoundError:
            pass

    def glob(self, pattern: str) -> list[str]:
        """Paths (relative to the root) matching ``pattern``."""
        found = self._wrap("listing", self.fs.glob, self.path(pattern))
        n = len(self.root) + 1
        return sorted(str(f)[n:] for f in found)
