"""Stores: a local folder or an ``s3://bucket/prefix`` URI, through one interface.

S3 goes through s3fs (botocore refreshes credentials; instance roles work), wrapped for pyarrow and
Ray as ``PyFileSystem(FSSpecHandler(s3fs))`` with prefix-less paths. The endpoint of S3-compatible
stores (MinIO, moto, Ceph) comes from the argument, ``$CATPOSE_S3_ENDPOINT``, ``$AWS_ENDPOINT_URL_S3``
or ``$AWS_ENDPOINT_URL``, in that order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catpose.errors import StorageError


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
        else:
            try:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(self.uri, f"cannot create the folder: {e}") from e

    def exists(self, *parts: str) -> bool:
        return bool(self._wrap("exists", self.fs.exists, self.path(*parts)))

    def makedirs(self, *parts: str) -> None:
        if not is_s3(self.uri):
            Path(self.path(*parts)).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        p = self.path(rel)
        if not is_s3(self.uri):
            Path(p).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(p).with_name(f".{Path(p).name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(p)
            return
        self._wrap(f"writing {p}", self.fs.pipe_file, p, data)

    def read_bytes(self, rel: str) -> bytes:
        return self._wrap(f"reading {self.path(rel)}", self.fs.cat_file, self.path(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=1).encode())

    def read_json(self, rel: str, default: Any = None) -> Any:
        if not self.exists(rel):
            return default
        return json.loads(self.read_bytes(rel))

    def glob(self, pattern: str) -> list[str]:
        """Paths (relative to the root) matching ``pattern``."""
        found = self._wrap("listing", self.fs.glob, self.path(pattern))
        n = len(self.root) + 1
        return sorted(str(f)[n:] for f in found)
