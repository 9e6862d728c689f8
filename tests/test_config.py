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
    # its own wins
    assert ctx.section(cfg.features).device == "cpu" and ctx.section(cfg.align).device == "cuda"
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


# Words two unrelated configs both use for a setting of their own (a stage's inputs and outputs, or another
# quantity of the same name): not a copy of one setting. Every other field is declared in one config only.
OWN_WORDS = {
    "out": "what each stage writes, each with its own default",
    "data": "each stage's input: a CO3D root, shards (train), or a local dataset folder (info, eval-align)",
    "category": "the categories a stage works on (a list for the per-category fan-out, one name otherwise)",
    "features": "a stage's feature store (a path), or the main job's features section",
    "alignment": "the alignment a stage reads (train: the align output folder; eval-align: one table)",
    "checkpoint": "the training run that estimate and evaluate each read",
    "frame": "estimate: a JSON file of the canonical frame; evaluate: how that frame is found (gt|fit|auto)",
    "frames": "synth: frames per video; ingest: the raw frames' folder; features: frames K per video; "
    "cleaning: frames its tests use",
    "seed": "each stage's own random seed",
    "size": "synth: image size; train: crop size",
    "width": "train: encoder width; synth-wild: image width",
    "supersample": "the ray-casting samples per pixel of each renderer (videos, in-the-wild images)",
    "videos": "synth: videos per category; tune: the subset of videos each trial aligns",
    "vertices": "features: vertices per video; search: the subsample each pair is aligned on; train: "
                "template",
    "batch": "features: frames per backbone batch; search: rotations per block; pose: images estimated "
             "together",
    "top_k": "search: coarse optima refined per pair; pose: coarse hypotheses refined per image",
    "backbone": "features: the backbone of the surface features; train: the frozen context backbone ('' "
                "none)",
    "weights": "the DINOv2 checkpoint of each stage's backbone",
    "search": "align: its pair search section; tune: grid or random sampling of alpha and tau",
}


def _declarations() -> dict[str, list[type]]:
    out: dict[str, list[type]] = {}
    for cls in dict.fromkeys(_config_classes()):
        for name in cls.__dict__.get("__annotations__", {}):
            out.setdefault(name, []).append(cls)
    return out


def test_no_setting_is_declared_in_two_configs():
    """A setting shared by two configs is a section both nest (``cleaning``, ``pose``) or a base both inherit
    (the run context), never a copied field: no field name is declared in two config classes that are not
    in an inheritance relation, except the words of OWN_WORDS, which name each stage's own setting."""
    import typing

    copies = {}
    for name, owners in _declarations().items():
        pairs = [(a, b) for i, a in enumerate(owners) for b in owners[i + 1:]
                 if not (issubclass(a, b) or issubclass(b, a))]
        sections = {typing.get_type_hints(c)[name] for c in owners}
        if pairs and not (len(sections) == 1 and dataclasses.is_dataclass(next(iter(sections)))):
            copies[name] = sorted({c.__name__ for p in pairs for c in p})
    assert set(copies) <= set(OWN_WORDS), {k: v for k, v in copies.items() if k not in OWN_WORDS}
    assert set(OWN_WORDS) <= set(copies), (
        f"no longer shared, drop from OWN_WORDS: {set(OWN_WORDS) - set(copies)}"
    )
    # the settings that were copied before (alignment search into AlignConfig and SweepConfig, cleaning
    # into IngestConfig and FeaturesConfig) are each declared once, in their section
    decl = _declarations()
    for section in (config.SearchConfig, config.CleaningConfig):
        for f in dataclasses.fields(section):
            others = [c.__name__ for c in decl[f.name] if c is not section]
            assert not others or f.name in OWN_WORDS, (section.__name__, f.name, others)
    assert not [n for n in decl if n.startswith("clean_")]


def test_short_alignment_and_cleaning_flags_still_work():
    from catpose.cli import expand_short_flags

    assert expand_short_flags(["align", "--alpha", "0.5", "--coarse-vertices=64", "--partners", "2"]) == [
        "align", "--search.alpha", "0.5", "--search.coarse-vertices=64", "--partners", "2"]
    assert expand_short_flags(["features", "--clean-mode", "off", "--vertices", "9"]) == [
        "features", "--cleaning.mode", "off", "--vertices", "9"]
    assert expand_short_flags(["tune", "--rotations", "256", "--search", "random"]) == [
        "tune", "--trial.rotations", "256", "--search", "random"]
    cls = COMMANDS["align"][0]
    cfg = tyro.cli(cls, args=expand_short_flags(["align", "--alpha", "0.5", "--search.tau", "2"])[1:])
    assert (cfg.search.alpha, cfg.search.tau) == (0.5, 2.0)


def test_a_field_of_an_older_yaml_says_where_it_went(tmp_path):
    from catpose.run.config import PipelineConfig

    with pytest.raises(ConfigError, match=r"field 'align.alpha': unknown field \(now in the section search: "
                                          r"write search: \{alpha: ...\}\)"):
        config.apply_dict(PipelineConfig(), {"align": {"alpha": 0.5}}, "old.yaml")
    with pytest.raises(ConfigError, match=r"now in the section cleaning: write cleaning: \{mode: ...\}"):
        config.apply_dict(PipelineConfig(), {"features": {"clean_mode": "off"}}, "old.yaml")
    cfg = config.apply_dict(PipelineConfig(), {"align": {"search": {"alpha": 0.5}}}, "new.yaml")
    assert cfg.align.search.alpha == 0.5 and cfg.align.search.tau == config.SearchConfig.tau


CHOICES = [  # (command, flag, a bad value, the allowed values the error lists)
    (
        "features",
        "--backbone",
        "dino",
        ["colorsift", "random_cnn", "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14"],
    ),
    ("features", "--cleaning.mode", "masked", ["auto", "masks", "geometry", "off"]),
    ("train", "--model", "big", ["small", "base", "resnet"]),
    ("tune", "--search", "bayes", ["grid", "random"]),
    ("synth", "--category", "cup", ["car", "mug"]),
    ("evaluate", "--dataset", "imagenet", ["synth-wild", "pascal3d", "objectnet3d", "co3d"]),
    ("estimate", "--pose.translation", "fixed", ["free", "box"]),
]


@pytest.mark.parametrize("command, flag, bad, allowed", CHOICES, ids=[f"{c[0]} {c[1]}" for c in CHOICES])
def test_a_bad_choice_in_flags_lists_the_allowed_values(command, flag, bad, allowed, capsys):
    from catpose.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, flag, bad])
    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert f"invalid choice '{bad}'" in err and all(f"'{a}'" in err for a in allowed), err


YAML_CHOICES = [  # (section: {field: bad}, the dotted field, the allowed values)
    ({"features": {"backbone": "dino"}}, "features.backbone", CHOICES[0][3]),
    ({"features": {"cleaning": {"mode": "masked"}}}, "features.cleaning.mode", CHOICES[1][3]),
    ({"train": {"model": "big"}}, "train.model", CHOICES[2][3]),
    ({"sweep": {"search": "bayes"}}, "sweep.search", CHOICES[3][3]),
    ({"synth": {"category": ["car", "cup"]}}, "synth.category[1]", CHOICES[4][3]),
    ({"pose": {"translation": "fixed"}}, "pose.translation", CHOICES[6][3]),
    ({"ingest": {"matcher": "vocab"}}, "ingest.matcher", ["exhaustive", "sequential"]),
]


@pytest.mark.parametrize("values, field, allowed", YAML_CHOICES, ids=[c[1] for c in YAML_CHOICES])
def test_a_bad_choice_in_yaml_lists_the_allowed_values(values, field, allowed):
    from catpose.run.config import PipelineConfig

    with pytest.raises(ConfigError) as e:
        config.apply_dict(PipelineConfig(), values, "exp.yaml")
    msg = str(e.value)
    assert msg.startswith(f"exp.yaml: field '{field}': expected one of "), msg
    assert all(repr(a) in msg for a in allowed), msg


def test_the_synthetic_category_choices_are_the_generators_shapes():
    """The CLI's and YAML's allowed synthetic categories are exactly the shapes catpose can generate."""
    import typing

    from catpose.config.context import SynthCategory
    from catpose.data.synth.shapes import CATEGORIES

    assert set(typing.get_args(SynthCategory)) == set(CATEGORIES)
