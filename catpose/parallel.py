"""A thin layer over Ray for per-item batch work (one item = one sequence, or one chunk of pairs).

``map_items`` runs ``fn(item)`` for every item, in this process (``workers=0``) or as Ray tasks
(``workers>=1``: at most that many in flight, streamed with ``ray.wait``), shows a progress bar, and
yields ``(item, result, error)`` in completion order. An exception in one item is returned as its
error string and never stops the others; Ray system failures (a lost worker) are retried by Ray.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm


def _call(fn: Callable[[Any], Any], item: Any) -> tuple[Any, str | None, float]:
    t0 = time.perf_counter()
    try:
        return fn(item), None, time.perf_counter() - t0
    except Exception as e:  # an item's failure is data, not a crash of the batch
        msg = f"{type(e).__name__}: {e}"
        if os.environ.get("CATPOSE_TRACEBACKS"):
            msg += "\n" + traceback.format_exc()
        return None, msg, time.perf_counter() - t0


VERBOSE_ENV = "CATPOSE_VERBOSE"


def verbose() -> bool:
    """Whether Ray's and Ray Data's own progress and log chatter is shown (``--verbose`` of the main job,
    or ``CATPOSE_VERBOSE=1``); off by default: catpose's own progress bars and tables are what a user
    reads."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def set_verbose(on: bool) -> None:
    """Turns Ray's own console output on or off for this process and the Ray it starts."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"


def quiet_ray_data() -> None:
    """Ray Data without its per-operator progress bars and its "Starting execution / Execution plan"
    lines (unless :func:`verbose`). A dataset copies the current DataContext when it is created, so this
    runs before any dataset is built (every :func:`init_ray` call)."""
    try:
        from ray.data import DataContext
    except ImportError:  # Ray Data not installed: nothing to quiet
        return
    ctx = DataContext.get_current()
    on = verbose()
    ctx.enable_progress_bars = on
    ctx.enable_operator_progress_bars = on
    ctx.print_on_execution_start = on


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Connects to the cluster named by ``address``/``RAY_ADDRESS``, or starts a small local Ray.

    Unless :func:`verbose`, Ray's own log lines (driver and workers) are cut to errors, Ray Train prints
    the training loop's lines once (no logger copy), and Ray Data shows no progress bars; what the tasks
    print still reaches this console."""
    import logging

    import ray

    quiet_ray_data()
    if ray.is_initialized():
        return
    quiet = not verbose()
    kw: dict = {}
    if quiet:
        # workers started by this Ray inherit these: Ray Train's print patch sends every print of the
        # training loop to its logger *and* stdout (each line twice), and deprecation/user warnings of
        # libraries inside Ray Data tasks repeat once per task
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        # Ray's own loggers: the driver's, and in every worker (this includes Ray Train's detached
        # placement-group cleaner that warns "Failed to query Ray Train Controller actor state" every
        # few seconds when the dashboard, and with it the state API, is off)
        kw = {"logging_level": logging.ERROR, "logging_config": ray.LoggingConfig(log_level="ERROR")}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=not quiet, **kw)
    else:
        # address "local": a new Ray of its own even when a `ray start` cluster runs on this machine (Ray
        # would otherwise join that one and refuse these settings)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True,
                 object_store_memory=256 * 1024**2, log_to_driver=not quiet, **kw)
        # Ray's agents outlive a killed driver: a watchdog ends them (catpose.raywatch)
        from catpose.raywatch import start as start_watchdog

        start_watchdog()
    # the workers' output (Ray Train, torch.distributed's c10d warnings, Ray's own errors) stays in files
    if quiet:
        print(f"Ray's worker and system output: {_ray_logs_dir()} (--verbose shows it here)", flush=True)


def _ray_logs_dir() -> str:
    """The log folder of this Ray session (``.../session_*/logs``), where the workers' output goes."""
    try:
        from ray._private.worker import _global_node

        return _global_node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - a Ray without that internal: its default place
        return "/tmp/ray/session_latest/logs"


def progress_bar(total: int | None, desc: str, disable: bool = False, **kw) -> tqdm:
    """The one progress bar of a stage. On a terminal it redraws as usual; into a file or a pipe (a log, CI,
    ``ray job logs``) every redraw is a line of its own, so it draws only at each quarter of the total and
    at the end (at most 6 lines a bar), never on a timer."""
    import sys

    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, disable=disable, dynamic_ncols=True, mininterval=0.1, **kw)
    step = max(1, (total or 0) // 4)
    return tqdm(
        total=total,
        desc=desc,
        disable=disable,
        dynamic_ncols=True,
        mininterval=0,
        miniters=step,
        ascii=True,
        maxinterval=float("inf"),
        **kw,
    )


class _Progress:
    """A tiny Ray actor holding the latest progress a remote loop posted (``n`` done, a postfix)."""

    def __init__(self) -> None:
        self.state: dict = {}

    def post(self, **state) -> None:
        self.state = state

    def get(self) -> dict:
        return self.state


@contextlib.contextmanager
def remote_progress(total: int, desc: str, poll_s: float = 1.0):
    """Yields a Ray actor handle that remote code (a Ray Train loop) posts ``n=..., postfix=...`` to; a
    thread of this process shows it as one tqdm bar (the training bar: epochs, loss, crops/s)."""
    import threading

    import ray

    init_ray()
    actor = ray.remote(num_cpus=0)(_Progress).remote()
    bar = progress_bar(total, desc)
    stop = threading.Event()

    def show() -> None:
        try:
            s = ray.get(actor.get.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - a missed poll only delays the bar
            return
        if s.get("n", 0) > bar.n:
            bar.update(int(s["n"]) - bar.n)
        if s.get("postfix"):
            bar.set_postfix_str(s["postfix"], refresh=False)

    def follow() -> None:
        while not stop.wait(poll_s):
            show()
        show()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield actor
    finally:
        stop.set()
        thread.join(timeout=15)
        bar.close()
        ray.kill(actor)


def ray_has_gpus(workers: int, device: str) -> bool:
    """Whether per-item Ray tasks should ask for GPU fractions: tasks requested (``workers > 0``),
    the device allows a GPU (``auto``/``cuda``), and the cluster (started here if needed) has GPUs."""
    from catpose.devices import wants_gpu

    if workers <= 0 or not wants_gpu(device):
        return False
    import ray

    init_ray()
    return ray.cluster_resources().get("GPU", 0) > 0


def map_items(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int = 0,
    desc: str = "",
    num_cpus: float = 1,
    num_gpus: float = 0,
    progress: bool = True,
) -> Iterator[tuple[Any, Any, str | None, float]]:
    """Yields ``(item, result, error, seconds)`` for each item, as they complete. One item runs in this
    process, unless it asks for a GPU (``num_gpus``): that is only had from Ray, on a node that has one."""
    items = list(items)
    if workers > 0 and len(items) > 1:
        init_ray()  # before the bar: Ray's one-line pointer to its logs goes above it, not into it
    bar = progress_bar(len(items), desc, disable=not progress or not items)
    try:
        if workers <= 0 or (len(items) <= 1 and num_gpus == 0):
            for it in items:
                res, err, sec = _call(fn, it)
                bar.update(1)
                yield it, res, err, sec
            return
        import ray

        init_ray()
        remote = ray.remote(_call).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=2)
        fn_ref = ray.put(fn)
        pending: dict[Any, Any] = {}
        queue = list(items)
        while queue or pending:
            while queue and len(pending) < workers:
                it = queue.pop(0)
                pending[remote.remote(fn_ref, it)] = it
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                it = pending.pop(ref)
                try:
                    res, err, sec = ray.get(ref)
                except Exception as e:  # the task itself died after its retries
                    res, err, sec = None, f"{type(e).__name__}: {e}", 0.0
                bar.update(1)
                yield it, res, err, sec
    finally:
        bar.close()
