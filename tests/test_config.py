"""One config tree: the run context (store endpoint, Ray fan-out, device) is declared once and every
stage config inherits the part it uses; flags keep their spelling; YAML values are type-checked with
errors naming the file and the field."""

from __future__ import annotations

import dataclasses

import pytest
import tyro
import yaml

from catpose import config
from catpose.cli import COMMANDS
from catpose.config import DeviceContext, IngestConfig, PoseConfig, StoreContext, TaskContext, TrainConfig
from catpose.errors import ConfigError

CONTEXT = {"endpoint_url": StoreContext, "workers": TaskContext, "device": DeviceContext}


def _config_classes():
    from catpose.run.config import PipelineConfig

    classes = [v for v in vars(config).values() if isinstance(v, type) and dataclasses.is_dataclass(v)]
    return classes + [cls for cls, _ in COMMANDS.values()] + [PipelineConfig]


def test_each_context_field_is_declared_in_one_place():
    owners = {name: [c.__name__ for c in _config_classes() if name in c.__dict__.get("__annotations__", {})]
              for name in CONTEXT}
    assert owners == {name: [cls.__name__] for name, cls in CONTEXT.items()}
    # the stages inherit it
    for cls, _ in COMMANDS.values():
        for name, base in CONTEXT.items():
            if any(f.name == name for f in dataclasses.fields(cls)):
                assert issubclass(cls, base), (cls.__name__, name)
    for name in ("synth", "ingest", "features", "align", "tune"):
        assert issubclass(COMMANDS[name][0], TaskContext)
    for name in ("shard", "train", "estimate", "evaluate"):
        assert issubclass(COMMANDS[name][0], StoreContext)
    # one device vocabulary: training and the pose estimator (a section of estimate/evaluate/the main job)
    # take the run context's device, auto by default
    assert issubclass(TrainConfig, DeviceContext) and issubclass(PoseConfig, DeviceContext)
    assert TrainConfig().device == PoseConfig().device == "auto"
    # Ray Train's training processes are another field, documented as such
    assert "num_workers" in COMMANDS["train"][0].__dict__["__annotations__"]


@pytest.mark.parametrize("stage", ["synth", "ingest", "shard", "features", "align", "tune", "train",
                                   "estimate", "evaluate"])
def test_every_stage_takes_the_shared_flags(stage):
    cls = COMMANDS[stage][0]
    args = ["--endpoint-url", "http://127.0.0.1:9"]
    if issubclass(cls, TaskContext):
        args += ["--workers", "5"]
    if issubclass(cls, DeviceContext):
        args += ["--device", "cpu"]
    cfg = tyro.cli(cls, args=args)
    assert cfg.endpoint_url == "http://127.0.0.1:9"
    assert getattr(cfg, "workers", 5) == 5 and getattr(cfg, "device", "cpu") == "cpu"


def test_the_main_job_hands_its_context_to_every_stage(tmp_path, monkeypatch):
    from catpose.run.config import PipelineConfig, load_config
    from catpose.run.graph import Ctx
    from catpose.storage import Store

    # a cluster is named (nothing connects to it here): `cuda` passes the device check on a GPU-less driver
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")

    cfg = load_config(["--out", str(tmp_path / "run"), "--workers", "3", "--endpoint-url", "http://127.0.0.1:9",
                       "--device", "cpu", "--align.device", "cuda"])
    ctx = Ctx(cfg, Store(str(tmp_path / "run")), tmp_path)
    for sec in ("synth", "ingest", "shard", "features", "align", "sweep", "train"):
        got = ctx.section(getattr(cfg, sec))
        assert got.endpoint_url == "http://127.0.0.1:9", sec
        assert getattr(got, "workers", 3) == 3, sec
    assert ctx.section(cfg.features).device == "cpu" and ctx.section(cfg.align).device == "cuda"  # its own wins
    assert PipelineConfig().workers == IngestConfig().workers == 2  # one default, the main job's


@pytest.mark.parametrize("text, expected", [
    ("features: {workers: 3}\n", "field 'features.workers': set by the run context for every stage: "
                                 "write 'workers: 3' at the top level instead"),
    ("ingest: {endpoint_url: http://x}\n", "field 'ingest.endpoint_url': set by the run context"),
    ("ingest: {workers: many}\n", "field 'ingest.workers': expected an integer, got 'many'"),
    ("endpoint_url: 9000\n", "field 'endpoint_url': expected a string, got 9000 (a int)"),
    ("sweep: {device: [cpu]}\n", "field 'sweep.device': expected a string, got ['cpu']"),
])
def test_yaml_context_fields_are_checked_and_name_file_and_field(tmp_path, text, expected):
    from catpose.run.config import load_config

    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(["--config", str(path)])
    assert str(path) in str(e.value) and expected in str(e.value), str(e.value)


def test_top_level_context_in_yaml_reaches_the_stages(tmp_path):
    from catpose.run.config import config_yaml, load_config

    path = tmp_path / "exp.yaml"
    path.write_text("workers: 0\nendpoint_url: http://127.0.0.1:9\ndevice: cpu\ningest: {out: s3://b/x}\n")
    cfg = load_config(["--config", str(path)])
    assert (cfg.workers, cfg.endpoint_url, cfg.device, cfg.ingest.out) == (0, "http://127.0.0.1:9", "cpu", "s3://b/x")
    saved = yaml.safe_load(config_yaml(cfg))  # the resolved config keeps the context at the top only
    assert saved["workers"] == 0 and saved["endpoint_url"] == "http://127.0.0.1:9"
    assert load_config(["--config", str(path), "--workers", "4"]).workers == 4  # flags override the file
