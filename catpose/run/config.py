"""The main job's config: :class:`PipelineConfig` (the run context at the top, one section per stage),
read from defaults, then ``--config FILE.yaml``, then flags (:func:`load_config`), checked before any
work (:func:`check_config`) and written back as the run's ``config.yaml`` (:func:`config_yaml`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from catpose.config import (
    AlignConfig,
    FeaturesConfig,
    IngestConfig,
    PoseConfig,
    RunContext,
    ShardConfig,
    SweepConfig,
    SynthConfig,
    TrainConfig,
    apply_dict,
)
from catpose.errors import ConfigError, MissingFileError
from catpose.run.graph import CONTEXT_FIELDS
from catpose.storage import is_s3


@dataclass
class PipelineConfig(RunContext):
    """The whole pipeline, one config. Values come from the defaults, then --config YAML, then flags.
    Its top-level out (the store) and the inherited run context (endpoint_url, workers, device:
    catpose.config.RunContext) hold for every stage; a stage section's own out (e.g. shard.out) only moves
    that stage's outputs elsewhere."""

    out: str = "runs/demo"
    """The run's store: a folder or s3://bucket/prefix. Data, shards, features, alignments, training runs,
    pose results, manifests, config.yaml, report.md and plots/ all go here."""

    data: str | None = None
    """An existing CO3D-layout dataset root (folder or s3:// prefix, read lazily); default: generate the
    synthetic categories into the store."""
    raw_frames: str | None = None
    """A folder or s3:// prefix of raw frames/videos per sequence to run SfM on first (catpose ingest)."""
    config: Path | None = None
    """YAML file with any of these fields (nested sections: synth, ingest, shard, ...)."""
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(category=("car", "mug"), videos=30))
    ingest: IngestConfig = field(default_factory=IngestConfig)
    shard: ShardConfig = field(default_factory=lambda: ShardConfig(out=""))
    features: FeaturesConfig = field(default_factory=lambda: FeaturesConfig(out="", category=()))
    eval_pairs: int = 20
    """Pairs of videos per category on which appearance correspondences are scored (synthetic data)."""
    align: AlignConfig = field(default_factory=lambda: AlignConfig(partners=10))
    """Alignment settings (data, category, out and features are set per category by the job)."""
    tune: bool = False
    """Sweep alpha and tau per category with Ray Tune (label-free objective) and align with the best."""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    """Sweep settings for --tune (data, category, out and features are set per category by the job)."""
    train_categories: tuple[str, ...] = ("car",)
    """Categories whose template features are learned with Ray Train (empty: no training stage)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            data="",
            out="",
            epochs=50,
            size=64,
            vertices=300,
            batch_size=8,
            cpus_per_worker=0.5,
            eval_frames=64,
        )
    )
    """Training settings (data, alignment, features, category and out are set by the job). The demo's
    defaults fit 2 CPU cores: 64 px crops and a template of 300 vertices (a step costs about 1/7 of one
    with 1000 vertices, whose [B, N, N] contrastive logits dominate on a CPU), 50 epochs from the
    workers' frame caches in steps of 2 × 8 crops (twice the steps of 2 × 16 for the same crops); on GPU
    clusters use larger crops and templates (see README)."""
    pose_images: int = 60
    """Synthetic in-the-wild images per trained synthetic category, scored by the pose stage (0: no stage)."""
    pose: PoseConfig = field(default_factory=lambda: PoseConfig(prior_weight=1.0))
    """Pose estimation settings of the pose stage (with the retrieval prior of the run's training views)."""


def read_yaml_config(path: Path) -> dict:
    """The mapping in a YAML config file; a missing or malformed file is an error naming it."""

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(str(path), "config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "not valid YAML: "
                                     "" + " ".join(str(e).replace('"<unicode string>", ', "").split()))
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not a text file ({e})")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping of config fields, got {type(data).__name__}")
    return data


def check_config(cfg: PipelineConfig, source: str = "flags") -> None:
    """Checks before any work: every setting's range and the device (:func:`catpose.config.check_settings`),
    then what needs several fields: names of training categories."""
    from catpose.config import check_settings
    from catpose.data.co3d import list_categories

    check_settings(cfg, source)

    known: list[str] | None = None
    if cfg.shard.category:
        known = list(cfg.shard.category)
    elif cfg.raw_frames is not None:
        known = None if cfg.data is not None else [cfg.ingest.category]
    elif cfg.data is None:
        known = list(cfg.synth.category)
    elif not is_s3(cfg.data) and Path(cfg.data).is_dir():
        known = list_categories(cfg.data)
    # the run context is set once, at the top: a section's own copy would be silently overridden
    for sec in ("synth", "ingest", "shard", "features", "align", "sweep", "train"):
        obj, default = getattr(cfg, sec), getattr(PipelineConfig(), sec)
        for k in CONTEXT_FIELDS:
            if k != "device" and hasattr(obj, k) and getattr(obj, k) != getattr(default, k):
                raise ConfigError(source, f"set by the run context for every stage: write '{k}: "
                                  f"{getattr(obj, k)}' at the top level instead", field=f"{sec}.{k}")
    unknown = [c for c in cfg.train_categories if known is not None and c not in known]
    if unknown and tuple(cfg.train_categories) != PipelineConfig().train_categories:  # named by the user
        raise ConfigError(source, f"{unknown} are not among the run's categories "
                                  f"{known}", field="train_categories")


def load_config(argv: list[str] | None = None) -> PipelineConfig:
    """Defaults, overridden by ``--config FILE.yaml`` (e.g. a run's own ``config.yaml``), overridden by
    flags. The YAML values become the defaults of tyro's parser (``tyro.cli(default=...)``), so flags and
    ``--help`` show and override them; every YAML value is checked against its field's type first."""
    import sys

    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = PipelineConfig()
    source = "flags"
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        path = Path(argv[argv.index("--config") + 1])
        cfg = apply_dict(cfg, read_yaml_config(path), str(path))
        source = f"{path} (or its flags)"
    cfg = tyro.cli(PipelineConfig, args=argv, default=cfg, prog="full_pipeline")
    check_config(cfg, source)
    return cfg


def config_yaml(cfg: PipelineConfig) -> str:
    """The resolved config as YAML: ``catpose run --config`` with this file repeats the run."""
    d = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    d.pop("config", None)
    return yaml.safe_dump(d, sort_keys=False)
