"""A watchdog that ends the local Ray a driver started once the driver is gone, however it ended.

``ray.init`` of a local Ray starts the GCS, raylet and their agents as the driver's descendants. After a
SIGKILL of the driver the GCS and raylet die with it (Ray's fate sharing), but the raylet's
``DashboardAgent`` and ``RuntimeEnvAgent`` stay behind as orphans (measured on Ray 2.59: alive 15 s and
more after the kill). :func:`start` spawns this module as a small separate process (its own session,
so a kill of the driver's process group does not take it too) that notes the driver's descendants every
``period`` seconds and, once the driver has exited, SIGKILLs those that still run. A descendant is
identified by pid and start time, so a recycled pid is never hit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def start(period: float = 0.5) -> subprocess.Popen:
    """Starts the watchdog of this process (the driver); it ends by itself after the driver does."""
    return subprocess.Popen([sys.executable, "-m", "catpose.raywatch", str(os.getpid()), str(period)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def _is_ray(cmdline: list[str]) -> bool:
    """Whether a process is one of Ray's (its binaries and agents; workers are named ``ray::...``)."""
    text = " ".join(cmdline)
    return text.startswith("ray::") or "/ray/" in text


def watch(driver: int, period: float = 0.5) -> int:
    """Notes ``driver``'s descendants until it exits, then kills those left; returns how many it killed."""
    import psutil

    try:
        proc = psutil.Process(driver)
    except psutil.NoSuchProcess:
        return 0
    me = os.getpid()
    seen: dict[int, float] = {}
    while True:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                break
            for c in proc.children(recursive=True):
                if c.pid != me:
                    try:
                        if _is_ray(c.cmdline()):
                            seen[c.pid] = c.create_time()
                    except psutil.Error:
                        pass
        except psutil.NoSuchProcess:
            break
        time.sleep(period)
    killed = 0
    for pid, created in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created:
                p.kill()
                killed += 1
        except psutil.Error:
            pass
    return killed


if __name__ == "__main__":
    watch(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.5)
