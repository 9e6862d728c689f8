"""Ray Tune sweep of the alignment weights α and τ (label-free objective): the same as ``catpose tune``.

    python tuning/sweep_alpha_tau.py --data data/synth --category car --out runs/tune-car
    python tuning/sweep_alpha_tau.py --search random --num-samples 40 --out s3://bucket/tune   # on a cluster

Under ``ray job submit`` it joins the cluster (RAY_ADDRESS). Trials show in the Ray dashboard; point
TensorBoard at OUT/sweep-<category>/ for their curves.
"""

import sys

import tyro

from catpose.align.tune import run_sweep
from catpose.cli import expand_short_flags
from catpose.config import SweepConfig


def main() -> int:
    # the same flags as catpose tune, its short ones (--rotations for --trial.rotations) included
    res = run_sweep(tyro.cli(SweepConfig, args=expand_short_flags(["tune", *sys.argv[1:]])[1:]))
    print(open(f"{res['results']}/sweep_results.md").read())
    print(f"best: {res['best']} -> {res['results']}/best_config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
