"""What a stage of the main job is, and the graph of them: the layer the stage packages declare their
stages with (``catpose/<package>/stage.py``) and the runner (:mod:`catpose.run.runner`) executes.

A :class:`Stage` names the artifacts it needs, the artifact it provides (a typed dataclass, kept in the
store as ``stages/<name>.json``), the settings that decide its result besides its inputs (hashed: an
unchanged stage is skipped), the function that runs it and its report renderers. Every module
``catpose/<package>/stage.py`` lists its declarations in ``STAGES``; :func:`declared` collects them all
and :func:`graph` orders those a config includes, each after the stages providing what it needs. Adding
a stage is one declaration in its package; nothing here or in the runner names a stage.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catpose.config import RunContext
from catpose.storage import Store

# set on every stage's section from the run context (where the section inherits the field)
CONTEXT_FIELDS = tuple(f.name for f in dataclasses.fields(RunContext))
# how, not what: changing them never reruns a stage (data, features, alignment and ground_truth are set by
# the job from the input artifacts, which are hashed themselves)
RUNTIME_FIELDS = {
    "workers",
    "endpoint_url",
    "data",
    "features",
    "alignment",
    "ground_truth",
    "config",
    "num_workers",
    "cpus_per_worker",
    "gpus_per_worker",
    "wait_for_resources",
    "max_failures",
    "batch",
    "chunk",
}


def what(obj) -> dict:
    """A config section without its runtime fields (how and where, not what): a stage's settings."""
    def what(d):  # nested sections too (align.search.batch)
        return {k: what(v) if isinstance(v, dict) else v for k, v in d.items() if k not in RUNTIME_FIELDS}

    return what(json.loads(json.dumps(dataclasses.asdict(obj), default=str)))


class Artifact:
    """Base of the stages' typed artifacts (dataclasses; their fields are ``stages/<name>.json``). What
    the runner and the report need to know of an artifact, it says through these methods."""

    def manifest_extra(self) -> dict:
        """Extra fields of the stage's entry in ``pipeline_manifest.json``."""
        return {}

    def lost_categories(self) -> dict[str, str]:
        """Categories this stage lost (left out of every later stage), with why."""
        return {}

    def run_categories(self) -> list[str] | None:
        """The categories still in the run after this stage (None: unchanged by it)."""
        return None


@dataclass
class Ctx:
    """What a running stage sees: the config, the run's store, a node-local scratch folder."""

    cfg: Any  # catpose.run.config.PipelineConfig
    store: Store
    scratch: Path
    # artifacts of the stages run or skipped so far, by name
    arts: dict[str, Any] = field(default_factory=dict)

    def section(self, obj, **overrides):
        """A copy of a stage's config section with the run context applied (where it has the field)."""
        names = {f.name for f in dataclasses.fields(obj)}
        ctx = {k: getattr(self.cfg, k) for k in CONTEXT_FIELDS if k in names}
        if "device" in ctx and getattr(obj, "device", "auto") != "auto":
            ctx.pop("device")  # a section's own device wins over the run's
        return dataclasses.replace(obj, **{**ctx, **overrides})

    def plot(self, name: str, png: bytes) -> str:
        self.store.write_bytes(f"plots/{name}", png)
        return f"plots/{name}"

    @property
    def categories(self) -> list[str]:
        """The categories still in the run: those of the latest artifact that says (data, validation,
        features)."""
        for art in reversed(list(self.arts.values())):
            cats = art.run_categories() if isinstance(art, Artifact) else None
            if cats is not None:
                return list(cats)
        return []


def _none(*_a) -> None:
    return None


def _nothing(*_a) -> list:
    return []


def _no_results(_a) -> dict:
    return {}


@dataclass
class Stage:
    """One node of the graph.

    ``run(ctx)`` returns its artifact, of type ``artifact``, kept under ``provides`` (default: its
    name) for the stages that ``needs`` it; ``settings(cfg)`` is what, besides its inputs, decides its
    result (hashed to skip it when unchanged). ``included(cfg)``: whether a config has this stage at
    all; ``applies(ctx)``: whether it has anything to do once its inputs exist. A stage that is not
    ``recorded`` runs every time, silently, with no manifest entry (the data a run is given).

    Renderers: ``section`` its report section (None: none), ``table`` its console table with a one-line
    reading, ``headline`` its summary line, ``summary(artifact, arts)`` facts of the summary's head,
    ``results`` its entries in the report dict that :func:`catpose.run.runner.run` returns.
    """

    name: str
    needs: tuple[str, ...]
    artifact: type
    settings: Callable[[Any], Any]
    run: Callable[[Ctx], Any]
    section: Callable[[Any], list[str]] | None = None
    table: Callable[[Any], list[str]] = _nothing
    headline: Callable[[Any], str | None] = _none
    summary: Callable[[Any, dict], list[str]] = _nothing
    results: Callable[[Any], dict] = _no_results
    provides: str = ""
    included: Callable[[Any], bool] = lambda cfg: True
    applies: Callable[[Ctx], bool] = lambda ctx: True
    recorded: bool = True

    @property
    def key(self) -> str:
        """The name its artifact is kept under."""
        return self.provides or self.name


def stage_modules() -> list[str]:
    """The modules that declare stages: ``catpose.<package>.stage`` of every package that has one."""
    root = Path(__file__).resolve().parents[1]
    return [f"catpose.{p.parent.name}.stage" for p in sorted(root.glob("*/stage.py"))]


EXTRA: list[Stage] = []  # declared outside the packages (tests); appended to theirs


def declared() -> list[Stage]:
    """Every stage declared by a package (``STAGES`` of its ``stage`` module), in package order."""
    out: list[Stage] = []
    for m in stage_modules():
        out += list(getattr(importlib.import_module(m), "STAGES", ()))
    return out + EXTRA


def graph(cfg, stages: list[Stage] | None = None) -> list[Stage]:
    """The stages ``cfg`` includes, in order: each after the stages providing what it needs (a need no
    included stage provides is optional, e.g. the sweep before the alignment), ties in declaration order."""
    todo = [s for s in (declared() if stages is None else stages) if s.included(cfg)]
    provided = {s.key for s in todo}
    names = [s.name for s in todo]
    if len(set(names)) != len(names):
        raise ValueError(f"two stages of one name among {names}")
    out: list[Stage] = []
    have: set[str] = set()
    while todo:
        ready = next((s for s in todo if all(n in have or n not in provided for n in s.needs)), None)
        if ready is None:
            raise ValueError(f"stages {[s.name for s in todo]} need each other ({[s.needs for s in todo]})")
        todo.remove(ready)
        out.append(ready)
        have.add(ready.key)
    return out
