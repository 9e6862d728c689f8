"""Manifests: the per-item status of a batch stage (ok / failed / skipped, with the reason and timing).

A batch job records every item it processes here, so a failed sequence is named with its error and
the job can resume by skipping the items already done.

Storage (a local folder or any :class:`~catpose.storage.Store`, S3 included): every item is its own
small record file, ``<stem>.items/<key>.json`` next to the manifest file ``<stem>.json``, written
atomically when the item is recorded. Two runs writing to one manifest therefore never lose each
other's entries, and a run killed half-way leaves every record it finished readable. ``<stem>.json``
holds the stage's ``info`` and a merged copy of all items (for people and older readers); on load the
record files win over it. A record or manifest file that cannot be parsed (a truncated write) is named
in a warning and ignored: its item simply counts as not done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from catpose.storage import Store


def _records_prefix(key: str) -> str:
    stem = key[:-5] if key.endswith(".json") else key
    return f"{stem}.items"


@dataclass
class Manifest:
    path: Path | str  # a local file, or a key inside ``store``
    stage: str
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    store: Any = None  # a catpose.storage.Store (local folder or s3://) holding ``path``
    warnings: list[str] = field(default_factory=list)  # unreadable manifest or record files, by name

    def __post_init__(self) -> None:
        self._written: set[str] = set()  # keys recorded by this instance (they win over the store's)
        self._dirty: set[str] = set()  # recorded with save=False, written by save()

    # ---------------------------------------------------------------- where it lives
    def _loc(self):
        """(store, key of the manifest file inside it)."""

        if self.store is not None:
            return self.store, str(self.path)
        p = Path(self.path)
        return Store(str(p.parent)), p.name

    def _record_key(self, item: str) -> str:
        _, key = self._loc()
        return f"{_records_prefix(key)}/{quote(item, safe='')}.json"

    @classmethod
    def load_or_new(cls, path: str | Path, stage: str, store: Any = None) -> Manifest:
        man = cls(path, stage, store=store)
        st, key = man._loc()
        try:
            data = st.read_json(key, default=None)
        except ValueError as e:  # DataFormatError: a truncated manifest file; the records still count
            man.warnings.append(f"{e}; ignored (its items are read from their record files)")
            data = None
        if isinstance(data, dict):
            man.stage = data.get("stage", stage)
            man.items = dict(data.get("items", {}))
            man.info = dict(data.get("info", {}))
        man.items.update(man._read_records())
        for w in man.warnings:
            print(f"manifest: {w}", flush=True)
        return man

    def _read_records(self) -> dict[str, dict[str, Any]]:
        st, key = self._loc()
        prefix = _records_prefix(key)
        try:
            rels = st.glob(f"{prefix}/*.json")
        except FileNotFoundError:
            return {}
        out = {}
        for rel, data in sorted(st.cat_many(rels).items()):
            try:
                if isinstance(data, Exception):
                    raise data
                entry = json.loads(data)
                if not isinstance(entry, dict) or "status" not in entry:
                    raise ValueError("not a manifest record")
            except (ValueError, OSError, UnicodeDecodeError) as e:
                self.warnings.append(f"{st.url(rel)}: unreadable record ({type(e).__name__}: {e}); "
                                     "the item counts as not done")
                continue
            out[unquote(rel.rsplit("/", 1)[1][:-5])] = entry
        return out

    # ---------------------------------------------------------------- items
    def record(self, key: str, status: str, error: str | None = None, seconds: float | None = None,
               save: bool = True, **extra: Any) -> None:
        entry: dict[str, Any] = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if error is not None:
            entry["error"] = error
        if seconds is not None:
            entry["seconds"] = round(float(seconds), 3)
        entry.update(extra)
        self.items[key] = entry
        self._written.add(key)
        if save:
            st, mkey = self._loc()
            st.write_json(self._record_key(key), entry)  # the record: never lost to another writer
            self._dirty.discard(key)
            # the merged copy, as this writer sees it (save() merges other writers' records in)
            st.write_json(mkey, {"stage": self.stage, "info": self.info, "items": self.items})
        else:
            self._dirty.add(key)

    def status(self, key: str) -> str | None:
        return self.items.get(key, {}).get("status")

    def keys_with(self, status: str) -> list[str]:
        return sorted(k for k, v in self.items.items() if v.get("status") == status)

    @property
    def failed(self) -> dict[str, str]:
        return {k: v.get("error", "") for k, v in self.items.items() if v.get("status") == "failed"}

    @property
    def skipped(self) -> dict[str, str]:
        return {k: v.get("error", "") for k, v in self.items.items() if v.get("status") == "skipped"}

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.items.values():
            out[v["status"]] = out.get(v["status"], 0) + 1
        return out

    def save(self) -> None:
        """Writes the records not written yet, then the merged manifest file (with the entries other
        writers recorded meanwhile)."""
        st, key = self._loc()
        for k in sorted(self._dirty):
            st.write_json(self._record_key(k), self.items[k])
        self._dirty.clear()
        for k, v in self._read_records().items():
            if k not in self._written:
                self.items[k] = v
        st.write_json(key, {"stage": self.stage, "info": self.info, "items": self.items})
