"""The main job's stage graph: stages come from their packages' declarations, in the order their needs
give, and the runner and the report name none of them; a stage declared in a package is run, recorded,
skipped when unchanged and said to run again when its settings change, with nothing in the runner
knowing it."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import catpose
from catpose.run.config import PipelineConfig
from catpose.run.graph import Artifact, Stage, declared, graph, stage_modules

RUN = Path(catpose.__file__).parent / "run"


def _literals(path: Path) -> set[str]:
    """Every string literal of a module (f-strings' constant parts included)."""
    return {n.value for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_the_runner_and_the_report_name_no_stage():
    names = {s.name for s in declared()} | {s.key for s in declared()}
    assert {
        "synth",
        "ingest",
        "data",
        "validate",
        "shard",
        "features",
        "tune",
        "align",
        "train",
        "pose",
    } <= names
    for module in ("runner.py", "report.py"):
        named = sorted(_literals(RUN / module) & names)
        assert not named, f"catpose/run/{module} names the stages {named}"


def test_every_package_declares_its_own_stages_and_the_graph_orders_them_by_their_needs():
    assert stage_modules() == [f"catpose.{p}.stage" for p in ("align", "data", "features", "learn", "pose")]
    by_module = {s.name: s.run.__module__ for s in declared()}
    assert by_module["synth"] == by_module["validate"] == by_module["shard"] == "catpose.data.stage"
    assert by_module["tune"] == by_module["align"] == "catpose.align.stage"
    assert by_module["train"] == "catpose.learn.stage" and by_module["pose"] == "catpose.pose.stage"
    assert [s.name for s in graph(PipelineConfig())] == [
        "synth",
        "validate",
        "shard",
        "features",
        "align",
        "train",
        "pose",
    ]
    cfg = PipelineConfig(raw_frames="raw", tune=True, train_categories=())
    order = graph(cfg)
    assert [s.name for s in order] == ["ingest", "validate", "shard", "features", "tune", "align"]
    # synth and ingest both provide the run's data, declared, not special-cased by the runner
    assert {s.key for s in declared() if s.name in ("synth", "ingest")} == {"data"}


@dataclass
class CountArtifact(Artifact):
    videos: int
    note: str = ""

    def manifest_extra(self) -> dict:
        return {"note": self.note} if self.note else {}


def _count(ctx) -> CountArtifact:
    from catpose.data.co3d import Co3dCategory

    data = ctx.arts["data"]
    return CountArtifact(
        sum(len(Co3dCategory(data.uri, c)) for c in data.categories), f"eval_pairs {ctx.cfg.eval_pairs}"
    )


def test_a_stage_declared_in_a_package_is_picked_up_run_recorded_and_skipped(
    tmp_path, synth_root, monkeypatch, capsys
):
    import catpose.align.stage as align_stage
    import catpose.data.stage as data_stage
    # one declaration added to a package's list; the other stages of that run are left out (fast)
    count = Stage(
        "count",
        ("data",),
        CountArtifact,
        lambda c: {"pairs": c.eval_pairs},
        _count,
        section=lambda a: ["## Count", "", f"{a.videos} videos"],
        table=lambda a: [f"count: {a.videos}"],
        headline=lambda a: f"videos counted: {a.videos}",
        results=lambda a: {"count": a.videos},
    )
    monkeypatch.setattr(align_stage, "STAGES", [*align_stage.STAGES, count])
    assert "count" in [s.name for s in graph(PipelineConfig(data=str(synth_root)))]
    given = next(s for s in data_stage.STAGES if not s.recorded)
    monkeypatch.setattr(data_stage, "STAGES", [given])
    monkeypatch.setattr(align_stage, "STAGES", [count])
    for module in ("catpose.features.stage", "catpose.learn.stage", "catpose.pose.stage"):
        monkeypatch.setattr(module + ".STAGES", [])

    from catpose.run.runner import run

    out = tmp_path / "run"
    cfg = PipelineConfig(out=str(out), data=str(synth_root), workers=0, eval_pairs=3)
    first = run(cfg)
    printed = capsys.readouterr().out
    assert list(first["stages"]) == ["count"] and first["skipped"] == [] and first["count"] > 0
    assert "== count\n" in printed and f"count: {first['count']}" in printed
    man = json.loads((out / "pipeline_manifest.json").read_text())["items"]
    assert (
        man["count"]["status"] == "ok" and man["count"]["note"] == "eval_pairs 3"
    )  # the artifact's manifest extra
    assert json.loads((out / "stages" / "count.json").read_text())["artifact"] == {
        "videos": first["count"],
        "note": "eval_pairs 3",
    }
    report = (out / "report.md").read_text()
    assert "## Count" in report and f"- videos counted: {first['count']}" in report
    again = run(cfg)
    assert again["skipped"] == ["count"]
    assert "== count: done before with the same settings and inputs (skipped)" in capsys.readouterr().out
    cfg.eval_pairs = 4
    run(cfg)
    assert "== count (settings changed)" in capsys.readouterr().out


def test_two_stages_of_one_name_or_a_cycle_are_errors():
    a = Stage("a", ("b",), CountArtifact, lambda c: {}, _count)
    b = Stage("b", ("a",), CountArtifact, lambda c: {}, _count)
    with pytest.raises(ValueError, match="need each other"):
        graph(PipelineConfig(), [a, b])
    with pytest.raises(ValueError, match="two stages of one name"):
        graph(PipelineConfig(), [a, a])
