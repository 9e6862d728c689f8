"""``catpose`` command line: one subcommand per stage, generated from the dataclass configs.

    catpose synth   --category car mug --videos 40 --frames 24 --size 128 --out DIR
    catpose ingest  --frames RAW --category cup --out DIR
    catpose shard   --data DIR --out s3://bucket/shards
    catpose features --data DIR --category car --out STORE [--backbone dinov2_vits14 --weights PATH]
    catpose info    --data DIR
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from catpose.config import FeaturesConfig, IngestConfig, ShardConfig, SynthConfig
from catpose.errors import CatposeError


@dataclass
class InfoConfig:
    """Summarise and validate a CO3D-layout dataset."""

    data: Path = Path("data/synth")
    """Dataset root."""
    category: tuple[str, ...] = ()
    """Categories (default: all)."""
    check_files: bool = False
    """Also decode every image and mask and read every point cloud (slow on large data)."""


def run_synth(cfg: SynthConfig) -> int:
    from catpose.data.synth.generate import generate

    manifests = generate(cfg)
    failed = 0
    for cat, man in manifests.items():
        s = man.summary()
        failed += s.get("failed", 0)
        print(f"{cat}: {s} -> {Path(cfg.out) / cat}")
        for k, err in man.failed.items():
            print(f"  FAILED {k}: {err}")
    print(f"ground truth (evaluation only): {Path(cfg.out) / 'catpose_gt.json'}")
    return 1 if failed else 0


def run_ingest(cfg: IngestConfig) -> int:
    from catpose.data.ingest import ingest

    man = ingest(cfg)
    print(f"{cfg.category}: {man.summary()} -> {Path(cfg.out) / cfg.category}")
    for k, err in man.failed.items():
        print(f"  FAILED {k}: {err}")
    return 0 if man.keys_with("ok") else 1


def run_shard(cfg: ShardConfig) -> int:
    from catpose.data.shards import MANIFEST, write_shards

    man = write_shards(cfg)
    for cat, info in man["categories"].items():
        print(f"{cat}: {info['frames']} frames in {info['shards']} shards, {info['skipped']} skipped")
    for k, err in man["skipped"].items():
        print(f"  SKIPPED {k}: {err}")
    print(f"manifest: {cfg.out.rstrip('/')}/{MANIFEST}")
    return 0


def run_features(cfg: FeaturesConfig) -> int:
    from catpose.features.runner import run_features as run

    failed = 0
    for cat, man in run(cfg).items():
        s = man.summary()
        failed += s.get("failed", 0)
        print(f"{cat}: {s}, backbone: {man.info.get('backbone')}, mean visible fraction "
              f"{man.info.get('mean_visible')} -> {cfg.out.rstrip('/')}/{cat}/")
        for k, err in man.failed.items():
            print(f"  FAILED {k}: {err}")
    return 1 if failed else 0


def run_info(cfg: InfoConfig) -> int:
    from catpose.data.co3d import Co3dCategory, list_categories

    cats = list(cfg.category) or list_categories(cfg.data)
    problems = 0
    for c in cats:
        cat = Co3dCategory(cfg.data, c)
        n_frames = sum(len(v) for v in cat.frame_annotations.values())
        print(f"{c}: {len(cat)} sequences, {n_frames} frames, set lists: {cat.set_list_names or 'none'}")
        if cfg.check_files:
            for seq in cat:
                for fr in seq.frames:
                    try:
                        fr.load_image()
                        if fr.mask_path is not None:
                            fr.load_mask()
                    except (CatposeError, OSError) as e:
                        problems += 1
                        print(f"  {e}")
                try:
                    seq.load_point_cloud()
                except (CatposeError, OSError) as e:
                    problems += 1
                    print(f"  {e}")
    if cfg.check_files:
        print(json.dumps({"problems": problems}))
    return 1 if problems else 0


COMMANDS = {
    "synth": (SynthConfig, run_synth),
    "ingest": (IngestConfig, run_ingest),
    "shard": (ShardConfig, run_shard),
    "features": (FeaturesConfig, run_features),
    "info": (InfoConfig, run_info),
}


def main(argv: list[str] | None = None) -> int:
    import tyro

    cfg = tyro.extras.subcommand_cli_from_dict({k: v[0] for k, v in COMMANDS.items()}, args=argv,
                                               prog="catpose")
    runner = next(run for cls, run in COMMANDS.values() if isinstance(cfg, cls))
    try:
        return runner(cfg)
    except CatposeError as e:
        print(f"catpose: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
