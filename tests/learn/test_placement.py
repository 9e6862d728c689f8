"""Ray Train workers the cluster cannot place: a clear error within the wait, never a silent hang."""

import time

import pytest

from catpose.config import TrainConfig
from catpose.errors import CatposeError
from catpose.learn.train import placement


def test_auto_workers_on_cpus(ray_local):
    """The defaults fit a 2-core machine: 2 workers × 0.5 CPU and one CPU for reading the shards."""
    assert placement(TrainConfig(data=""), use_gpu=False) == 2
    assert placement(TrainConfig(data="", num_workers=1, cpus_per_worker=1), use_gpu=False) == 1


def test_workers_that_take_every_cpu_leave_none_for_reading(ray_local):
    """2 workers × 1 CPU on 2 CPUs would start, and then wait forever for Ray Data's first read."""
    cfg = TrainConfig(data="", category="car", num_workers=2, cpus_per_worker=1, wait_for_resources=0)
    with pytest.raises(CatposeError, match=r"2 worker\(s\) × 1 CPU, and 1 CPU for reading the shards, need 3 "
                                           r"CPUs "
                                           r"\(the cluster has 2\)"):
        placement(cfg, use_gpu=False)


def test_more_cpus_than_the_cluster_has_is_a_clear_error_within_the_wait(ray_local, capsys):
    cfg = TrainConfig(data="", category="car", num_workers=4, cpus_per_worker=1, wait_for_resources=1.5)
    t0 = time.monotonic()
    with pytest.raises(CatposeError, match=r"train car: 4 worker\(s\) × 1 CPU, and 1 CPU for reading the "
                                           r"shards, need 5 CPUs "
                                           r"\(the cluster has 2\); "
                                           r"waited \d s\. Lower --num-workers"):
        placement(cfg, use_gpu=False, poll_s=0.5)
    assert time.monotonic() - t0 < 10
    assert "train car: waiting for 5 CPUs (the cluster has 2)" in capsys.readouterr().out


def test_gpus_the_cluster_does_not_have(ray_local):
    """As on a one-GPU machine asked for two GPU workers (here: none at all)."""
    cfg = TrainConfig(data="", category="car", num_workers=2, cpus_per_worker=0.5, gpus_per_worker=1,
                      wait_for_resources=0)
    with pytest.raises(CatposeError, match=r"need 2 GPUs \(the cluster has 0\)"):
        placement(cfg, use_gpu=True)
