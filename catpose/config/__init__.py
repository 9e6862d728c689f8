"""Typed configs of every stage, with their defaults in one place. The CLI is generated from them
(catpose <stage> --help), and jobs/full_pipeline.py reads the same fields from YAML.

One module per part: the run context (context), the data stages and the features (data), the
alignment (align), training (train), pose estimation (pose) and the checks of values
(checks); every name is importable from catpose.config."""

from catpose.config.align import AlignConfig, SearchConfig, SweepConfig
from catpose.config.checks import SETTING_RANGES, apply_dict, check_device, check_settings
from catpose.config.context import DeviceContext, RunContext, StoreContext, TaskContext
from catpose.config.data import CleaningConfig, FeaturesConfig, IngestConfig, ShardConfig, SynthConfig
from catpose.config.pose import EstimateConfig, PoseConfig, PoseEvalConfig, WildConfig
from catpose.config.train import TrainConfig

__all__ = [
    "SETTING_RANGES", "AlignConfig", "CleaningConfig", "DeviceContext", "EstimateConfig",
    "FeaturesConfig", "IngestConfig", "PoseConfig", "PoseEvalConfig", "RunContext", "SearchConfig",
    "ShardConfig", "StoreContext", "SweepConfig", "SynthConfig", "TaskContext", "TrainConfig",
    "WildConfig", "apply_dict", "check_device", "check_settings",
]
