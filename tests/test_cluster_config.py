"""cluster.yaml passes Ray's own autoscaler config validation and says what the README promises."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_a_valid_ray_autoscaler_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg = prepare_config(raw)  # fills Ray's AWS defaults, as `ray up` does
    validate_config(cfg)  # Ray's JSON schema; raises on any unknown or malformed field
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0  # a CPU head
    gpu_types = {k: v for k, v in types.items() if v["resources"].get("GPU", 0) > 0}
    assert gpu_types and all(v["max_workers"] >= 1 and v["min_workers"] == 0 for v in gpu_types.values())
    assert sum(v["max_workers"] for v in types.values() if v is not head) <= cfg["max_workers"]
    # every node reaches S3 through an instance role, and gets catpose installed
    assert all("IamInstanceProfile" in v["node_config"] for v in types.values())
    assert "gpu" in cfg["docker"]["image"]
    assert any("pip install" in c and "catpose" in c for c in cfg["setup_commands"])
    assert any(src in (".", "./") for src in cfg["file_mounts"].values())


def test_the_cloud_example_config_loads():
    from catpose.run.config import load_config

    cfg = load_config(["--config", str(ROOT / "configs" / "cloud.yaml"), "--train.epochs", "3"])
    assert cfg.out.startswith("s3://")  # the run's store: data, shards, features, alignments, runs, report
    assert not (cfg.shard.out or cfg.features.out or cfg.train.out)  # nothing moved off the run's store
    assert cfg.train.epochs == 3 and cfg.train_categories == ("car",)
