"""Manifests: the per-item status of a batch stage (ok / failed / skipped, with the reason and timing).

A batch job records every item it processes here, so a failed sequence is named with its error and
the job can resume by skipping the items already done. Written atomically after each update.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Manifest:
    path: Path | str  # a local file, or a key inside ``store``
    stage: str
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    store: Any = None  # a catpose.storage.Store (local folder or s3://) holding ``path``

    @classmethod
    def load_or_new(cls, path: str | Path, stage: str, store: Any = None) -> Manifest:
        if store is not None:
            data = store.read_json(str(path), default=None)
        else:
            path = Path(path)
            data = json.loads(path.read_text()) if path.is_file() else None
        if data:
            return cls(path, data.get("stage", stage), data.get("items", {}), data.get("info", {}), store)
        return cls(path, stage, store=store)

    def record(self, key: str, status: str, error: str | None = None, seconds: float | None = None,
               save: bool = True, **extra: Any) -> None:
        entry: dict[str, Any] = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if error is not None:
            entry["error"] = error
        if seconds is not None:
            entry["seconds"] = round(float(seconds), 3)
        entry.update(extra)
        self.items[key] = entry
        if save:
            self.save()

    def status(self, key: str) -> str | None:
        return self.items.get(key, {}).get("status")

    def keys_with(self, status: str) -> list[str]:
        return sorted(k for k, v in self.items.items() if v.get("status") == status)

    @property
    def failed(self) -> dict[str, str]:
        return {k: v.get("error", "") for k, v in self.items.items() if v.get("status") == "failed"}

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.items.values():
            out[v["status"]] = out.get(v["status"], 0) + 1
        return out

    def save(self) -> None:
        if self.store is not None:
            self.store.write_json(str(self.path), {"stage": self.stage, "info": self.info, "items": self.items})
            return
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"stage": self.stage, "info": self.info, "items": self.items}, indent=1))
        tmp.replace(self.path)
