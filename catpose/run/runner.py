"""The main job's runner: executes the stage graph (:mod:`catpose.run.graph`) against the run's store.

Each stage's fingerprint is the hash of its settings and of its input artifacts. A stage whose
``pipeline_manifest.json`` entry and stored artifact (``stages/<name>.json``) carry the same hash is
skipped, so a rerun against the same store — on the same or a fresh machine — goes straight to the
first unfinished stage; a stage that runs again says in one line why (settings or which inputs
changed). The runner knows stages only through their declarations: it names none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from catpose.errors import CatposeError, report_error
from catpose.manifest import Manifest
from catpose.parallel import set_verbose
from catpose.run.config import PipelineConfig, check_config, config_yaml, load_config
from catpose.run.graph import Artifact, Ctx, Stage, graph
from catpose.run.report import assemble_report
from catpose.storage import Store


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _jsonable(obj):
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def fingerprint(stage: Stage, cfg: PipelineConfig, arts: dict) -> tuple[str, dict]:
    """The stage's hash (its settings and the input artifacts it needs, as they are now) and the hashes
    of those parts, recorded to say later what changed."""
    inputs = {n: _jsonable(arts[n]) for n in stage.needs if n in arts}
    settings = stage.settings(cfg)
    return (_hash({"settings": settings, "inputs": inputs}),
            {"settings": _hash(settings), "inputs": {n: _hash(v) for n, v in inputs.items()}})


def _load_artifact(store: Store, stage: Stage):
    d = store.read_json(f"stages/{stage.name}.json", default=None)
    if not isinstance(d, dict) or "artifact" not in d:
        return None, None
    try:
        return stage.artifact(**d["artifact"]), d.get("hash")
    except TypeError:  # an artifact of an older catpose: recomputed
        return None, None


def why_again(item: dict | None, parts: dict) -> str:
    """Why a stage runs (again): "" the first time, else what changed since it was recorded."""
    from catpose import fingerprint as fp

    if not item:
        return ""
    if item.get("status") != "ok":
        return f" ({item.get('status')} before)"
    old = item.get("fingerprint")
    if not isinstance(old, dict):
        return f" ({fp.NO_FINGERPRINT})"
    why = []
    if old.get("settings") != parts["settings"]:
        why.append("settings changed")
    changed = [n for n, v in parts["inputs"].items() if (old.get("inputs") or {}).get(n) != v]
    if changed:
        why.append("inputs changed: " + ", ".join(changed))
    return f" ({'; '.join(why) or 'its recorded result is unreadable'})"


def run(cfg: PipelineConfig) -> dict:
    """Runs the stage graph of ``cfg`` against its store; returns the report (a dict). The run holds the
    store's lease (:mod:`catpose.lease`) throughout: a second run on the same store stops before any work,
    naming this one."""
    from catpose.lease import store_lease

    check_config(cfg)
    store = Store(str(cfg.out), cfg.endpoint_url)
    store.check()
    with store_lease(store.uri, cfg.endpoint_url, "catpose run"):
        return _run(cfg)


def _join_cluster(cfg: PipelineConfig, store: Store) -> None:
    """Joins the Ray cluster the job was submitted to (else Ray starts when a stage needs it); a local
    folder as the store of a cluster of several nodes is said."""
    from catpose.parallel import init_ray

    if cfg.workers > 0 and os.environ.get("RAY_ADDRESS"):  # on a cluster: join it now
        init_ray()
    if cfg.workers > 0 and "ray" in sys.modules and sys.modules["ray"].is_initialized():
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) > 1 and not store.is_s3:  # said, not an error: the folder may be a shared mount
            print(f"warning: the run's store {store.uri} is a local folder but the Ray cluster has "
                  f"{len(nodes)} nodes; unless it is a mount every node shares, give an s3:// store "
                  "(--out s3://...)", flush=True)


def _run(cfg: PipelineConfig) -> dict:
    """:func:`run`, with the store's lease held."""
    check_config(cfg)  # also when run() is called directly
    store = Store(str(cfg.out), cfg.endpoint_url)
    # a file in the way, a read-only folder, an unreachable bucket: one clear error before any work
    store.check()
    if cfg.endpoint_url:  # driver-side readers that are not handed the endpoint find it too
        os.environ.setdefault("CATPOSE_S3_ENDPOINT", cfg.endpoint_url)
    store.write_text("config.yaml", config_yaml(cfg))
    man = Manifest.load_or_new("pipeline_manifest.json", "pipeline", store=store)
    _join_cluster(cfg, store)
    ctx = Ctx(cfg, store, Path(tempfile.mkdtemp(prefix="catpose-scratch-")))
    stages = graph(cfg)
    t_run = time.perf_counter()
    times: dict[str, float] = {}
    skipped: list[str] = []
    try:
        for st in stages:
            if not st.recorded:  # e.g. the data a run is given: read every time, never skipped
                ctx.arts[st.key] = st.run(ctx)
                continue
            if not st.applies(ctx):
                continue
            h, parts = fingerprint(st, cfg, ctx.arts)
            if man.status(st.name) == "ok" and man.items[st.name].get("hash") == h:
                art, stored_hash = _load_artifact(store, st)
                if art is not None and stored_hash == h:
                    print(f"== {st.name}: done before with the same settings and inputs "
                          "(skipped)", flush=True)
                    ctx.arts[st.key] = art
                    times[st.name] = man.items[st.name].get("seconds", 0.0)
                    skipped.append(st.name)
                    continue
            print(f"== {st.name}" + why_again(man.items.get(st.name), parts), flush=True)
            t0 = time.perf_counter()
            try:
                art = st.run(ctx)
            except Exception as e:
                man.record(
                    st.name, "failed", error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0
                )
                raise
            sec = time.perf_counter() - t0
            store.write_json(f"stages/{st.name}.json", {"hash": h, "artifact": _jsonable(art)})
            extra = art.manifest_extra() if isinstance(art, Artifact) else {}
            man.record(st.name, "ok", seconds=sec, hash=h, fingerprint=parts, **extra)
            ctx.arts[st.key] = art
            times[st.name] = round(sec, 1)
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    report = assemble_report(cfg, ctx, stages, times, skipped, time.perf_counter() - t_run)
    failed = report.get("failed_categories")
    if failed:  # the others finished; the run must still not end as a success
        raise CatposeError(f"the run finished without {sorted(failed)}: " + "; ".join(failed.values())
                           + f" (report: {store.url('report.md')})")
    return report


def main(argv: list[str] | None = None) -> int:
    """The main job; an error ends it with one line on stderr and exit code 2 (``--debug``: the
    traceback). ``--verbose`` brings back Ray's and Ray Data's own progress and log lines."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if "--verbose" in argv:  # Ray's and Ray Data's own progress and log lines (off by default)
        set_verbose(True)
    argv = [a for a in argv if a not in ("--debug", "--verbose")]
    try:
        cfg = load_config(argv)
        t0 = time.perf_counter()
        run(cfg)
    except Exception as e:
        if debug:
            raise
        return report_error(e, "full_pipeline")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0
