"""Content-addressed resume: what an output was made from, recorded with it and compared on a rerun.

Every resumable output (a synthetic video, a shard, a video's surface features, a chunk of pair
alignments, a training run, a stage of the main job) records a **fingerprint**: a digest of the settings
that change it and one digest per named input (an annotation file's records, the files of a video, an
upstream manifest, ...). A rerun keeps the output only when both match (:func:`change` is None) and
recomputes it otherwise, and the stage says so in one line (:class:`ResumeLog`), e.g.
``features car: 3 of 4 kept (inputs and settings unchanged), 1 recomputed (source changed:
frame_annotations.jgz)``. An output recorded without a fingerprint (made by an older catpose) is
recomputed: it cannot be checked.

Files are fingerprinted cheaply, without reading them: one listing per prefix (:func:`file_tokens`)
gives each file's S3 ETag, or locally its size and modification time (nanoseconds).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from catpose.storage import Store

UNCHANGED = "inputs and settings unchanged"
NO_FINGERPRINT = "made before fingerprints were recorded"


def digest(obj: Any) -> str:
    """A short (20 hex digits) SHA-256 digest of a JSON-able object (canonical: sorted keys) or of bytes."""
    h = hashlib.sha256()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        h.update(bytes(obj))
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def digest_rows(rows: Iterable[dict]) -> str:
    """The digest of table rows (dicts of JSON-able values and bytes), every field of every row, bytes
    included (image and mask bytes of shard rows: SHA-256 runs at about 1 GB/s)."""
    h = hashlib.sha256()
    for row in rows:
        for k in sorted(row):
            v = row[k]
            h.update(k.encode() + b"\0")
            if isinstance(v, (bytes, bytearray, memoryview)):
                h.update(b"b%d:" % len(v) + bytes(v))
            else:
                h.update(json.dumps(v, sort_keys=True, default=str).encode())
            h.update(b"\1")
    return h.hexdigest()[:20]


def info_token(info: dict) -> str:
    """A file's change token from a listing entry: the S3 ETag, else ``size:mtime``."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    return f"{info.get('size')}:{info.get('mtime', info.get('LastModified'))}"


def file_tokens(store: Store, prefix: str = "") -> dict[str, str]:
    """``{key: token}`` of every file under ``prefix`` of ``store`` (keys relative to the store's root),
    from one listing (one paginated request on S3, a directory walk locally); {} when nothing is there."""
    path = store.path(prefix) if prefix else store.root
    try:
        found = store._wrap("listing", lambda: store.fs.find(path, detail=True), key=prefix or None)
    except FileNotFoundError:
        return {}
    n = len(store.root) + 1
    return {
        str(p)[n:]: info_token(i) for p, i in sorted(found.items()) if i.get("type", "file") != "directory"
    }


def file_token(store: Store, rel: str) -> str | None:
    """The change token of one file (None when it does not exist)."""
    try:
        return info_token(store._wrap("reading", store.fs.info, store.path(rel), key=rel))
    except FileNotFoundError:
        return None


def make(settings: Any, inputs: dict[str, Any] | None = None) -> dict:
    """A fingerprint: ``{"settings": digest, "inputs": {name: digest}}``. ``inputs`` maps a name that
    says what the input is (a file name, ``files under car/car_0001``) to its content (any JSON-able
    object or bytes; a digest string is kept as given)."""
    ins = {}
    for k, v in (inputs or {}).items():
        ins[k] = v if isinstance(v, str) and len(v) == 20 else digest(v)
    return {"settings": digest(settings), "inputs": ins}


def change(old: Any, new: dict) -> str | None:
    """None when ``old`` (a stored fingerprint, or None) equals ``new``; else why not, in words."""
    if not isinstance(old, dict) or "settings" not in old:
        return NO_FINGERPRINT
    parts = []
    if old.get("settings") != new["settings"]:
        parts.append("settings changed")
    o, n = old.get("inputs") or {}, new.get("inputs") or {}
    changed = [k for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]
    if changed:
        parts.append("source changed: " + ", ".join(changed[:3]) + (f" and {len(changed) - 3} more"
                                                                     if len(changed) > 3 else ""))
    return "; ".join(parts) or None


class ResumeLog:
    """What a rerun of one stage did with each of its outputs, said in one line (:meth:`line`)."""

    def __init__(self, what: str, unit: str = ""):
        self.what, self.unit = what, unit
        self.kept = 0
        self.new = 0
        self.redone: Counter = Counter()

    def keep(self) -> None:
        self.kept += 1

    def redo(self, why: str | None) -> None:
        """An output to be made: ``why`` None or "missing" for one never made, else the change."""
        if why in (None, "missing"):
            self.new += 1
        else:
            self.redone[why] += 1

    @property
    def total(self) -> int:
        return self.kept + self.new + sum(self.redone.values())

    def line(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        out = f"{self.what}: {self.kept} of {self.total}{unit} kept ({UNCHANGED})"
        n = sum(self.redone.values())
        if n:
            reasons = "; ".join(f"{why}" + (f" ×{c}" if c > 1 and len(self.redone) > 1 else "")
                                for why, c in self.redone.most_common())
            out += f", {n} recomputed ({reasons})"
        if self.new:
            out += f", {self.new} new"
        return out

    def say(self) -> str:
        line = self.line()
        print(line, flush=True)
        return line
