"""Shared by the bench scripts: print a result and write it as JSON under bench/results/."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(res: dict, out: str | None, default_name: str) -> Path:
    """Prints ``res`` and writes it to ``out`` (default: ``bench/results/<default_name>``)."""
    print(json.dumps(res, indent=1))
    path = Path(out or Path(__file__).parent / "results" / default_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    return path
