"""``map_items``: the same results in this process and as Ray tasks; one item's error is its own and
never stops the others; at most ``workers`` tasks in flight."""

from __future__ import annotations

import os
import sys
import time

import pytest

from catpose.parallel import map_items


def _by_value(fn):
    """``fn`` pickled by value: Ray's workers cannot import this test module by name."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[fn.__module__])
    return fn


def _square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x * x


def _pid_and_window(x: int) -> tuple[int, float, float]:
    t0 = time.time()
    time.sleep(0.3)
    return os.getpid(), t0, time.time()


@pytest.mark.parametrize("workers", [0, 2])
def test_results_and_errors_are_per_item(ray_local, workers):
    got = {
        it: (res, err)
        for it, res, err, _ in map_items(
            _by_value(_square_or_fail), range(6), workers=workers, progress=False
        )
    }
    assert {k: r for k, (r, e) in got.items() if e is None} == {0: 0, 1: 1, 2: 4, 4: 16, 5: 25}
    assert got[3][0] is None and got[3][1] == "ValueError: item 3 is bad"


def test_in_process_runs_here_and_tasks_run_elsewhere(ray_local):
    here = {
        res[0] for _, res, _, _ in map_items(_by_value(_pid_and_window), range(2), workers=0, progress=False)
    }
    assert here == {os.getpid()}
    there = {
        res[0] for _, res, _, _ in map_items(_by_value(_pid_and_window), range(4), workers=2, progress=False)
    }
    assert os.getpid() not in there


def test_at_most_workers_tasks_in_flight(ray_local):
    windows = [
        res[1:] for _, res, _, _ in map_items(_by_value(_pid_and_window), range(4), workers=1, progress=False)
    ]
    windows.sort()
    # one task in flight: each starts after the one before it ended
    assert all(b[0] >= a[1] - 1e-3 for a, b in zip(windows, windows[1:]))
