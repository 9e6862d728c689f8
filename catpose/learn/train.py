"""``catpose train``: the template and its features, learned with Ray Train (TorchTrainer, DDP).

The driver (:func:`run_train`) reads the alignment and the videos' vertices, splits the videos into
training and held-out ones, builds the template (:mod:`catpose.learn.template`), the per-video targets
and the Ray Data pipeline over the Parquet shards (:mod:`catpose.learn.data`), then fits a
``TorchTrainer``. Each worker (:func:`train_loop_per_worker`) trains Φ and Θ with the vertex-contrastive
loss (:mod:`catpose.learn.model`), bf16 autocast on GPU, prints one line per epoch, reports to Ray Train
with a checkpoint from rank 0 every ``checkpoint_every_s`` seconds and after the last epoch, and writes
TensorBoard events next to the checkpoints. A run is named (default
``train-<category>``); running it again with the same storage and name resumes from its latest
checkpoint, and ``max_failures`` worker-group restarts resume from it inside one run. The driver then
writes ``model.pt``, ``template.npz``, ``history.json``, ``training_curves.png`` and the held-out
evaluation (:mod:`catpose.learn.evaluate`) under ``OUT/NAME/``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from catpose.align.table import ambiguous_videos, read_alignment
from catpose.config import TrainConfig
from catpose.data.groundtruth import load_ground_truth
from catpose.devices import resolve_device
from catpose.errors import CatposeError, ConfigError
from catpose.features.runner import load_surface_features
from catpose.geometry import Similarity
from catpose.learn.checkpoint import (  # noqa: F401 (save/load: the stored run's layer; names kept here)
    STATE_KEYS,
    _jsonable,
    load_trained,
    read_state,
    save_trained,
    write_state,
)
from catpose.learn.data import VideoTargets, training_dataset
from catpose.learn.evaluate import evaluate_run
from catpose.learn.feed import DeviceFeed, prefetched
from catpose.learn.frames import AugmentConfig
from catpose.learn.model import build_model, count_parameters
from catpose.learn.template import Template, build_template, instance_correspondents
from catpose.parallel import init_ray, remote_progress, verbose
from catpose.plotting import png_bytes
from catpose.storage import Store, join_uri, safe_name


def run_name(cfg: TrainConfig) -> str:
    """The run's folder under ``OUT``: ``--name`` or ``train-<category>``, a plain name (checked, as the
    category is: both become keys of the store)."""
    safe_name(cfg.category, "category", "flags", "category")
    return safe_name(cfg.name, "run name", "flags", "name") if cfg.name else f"train-{cfg.category}"


def ground_truth_to_reference(root, category: str, reference: str,
                              endpoint_url: str | None = None) -> dict[str, Similarity]:
    """Each video's true world → reference-frame similarity, from the synthetic ground truth (``root``: a
    dataset folder or ``s3://`` URI)."""
    gt = load_ground_truth(root, category, endpoint_url)
    to_ref = gt[reference].inverse()
    return {k: to_ref.compose(g) for k, g in gt.items()}


def split_videos(names: list[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    names = sorted(names)
    n_out = min(len(names) - 1, max(1 if len(names) >= 3 and holdout > 0 else 0, round(holdout * len(names))))
    order = np.random.default_rng(seed).permutation(len(names))
    held = sorted(names[i] for i in order[:n_out])
    return [n for n in names if n not in held], held


# settings that say how a run is carried out, not what it learns: a run resumes across changes of these
OPERATIONAL = frozenset({"endpoint_url", "out", "name", "epochs", "num_workers", "device", "cpus_per_worker",
                         "gpus_per_worker", "amp", "max_failures", "keep_checkpoints", "checkpoint_every_s",
                         "wait_for_resources", "frame_cache_mb", "prefetch", "evaluate", "eval_frames",
                         "eval_threshold"})


def run_fingerprint(cfg: TrainConfig) -> dict:
    """What a run learns from: its settings (less :data:`OPERATIONAL`) and a digest of its inputs' contents
    (:mod:`catpose.fingerprint`): the alignment table's bytes, the fingerprints of the category's shards
    (their rows, images included) and of its videos' features (their inputs and settings). Timings and other
    bookkeeping in those manifests do not count. A stored run whose fingerprint differs is not resumed or
    kept (see :func:`run_train`)."""
    from catpose import fingerprint as fp
    from catpose.data.shards import load_manifest
    from catpose.manifest import Manifest

    settings = {k: v for k, v in _jsonable(cfg).items() if k not in OPERATIONAL}
    table = (
        cfg.alignment
        if str(cfg.alignment).endswith(".parquet")
        else join_uri(cfg.alignment, "alignment.parquet")
    )
    parent, leaf = table.rstrip("/").rsplit("/", 1)
    st = Store(parent, cfg.endpoint_url)
    shards = load_manifest(Store(cfg.data, cfg.endpoint_url))["shards"]
    fman = Manifest.load_or_new(
        f"{cfg.category}/_manifest.json",
        "features",
        store=Store(cfg.features or join_uri(cfg.alignment, "features"), cfg.endpoint_url),
    )
    inputs = {
        "alignment": st.read_bytes(leaf) if st.exists(leaf) else b"(missing)",
        "shards": {
            r: v.get("fingerprint", v) for r, v in shards.items() if r.startswith(f"category={cfg.category}/")
        },
        "features": {
            n: [v.get("fingerprint"), v.get("signature")]
            for n, v in fman.items.items()
            if v.get("status") == "ok"
        },
    }
    return {"settings": settings, "inputs": fp.digest({k: fp.digest(v) for k, v in inputs.items()})}


def stored_fingerprint_change(store: Store, name: str, fingerprint: dict) -> list[str] | None:
    """None when ``NAME`` holds no run, else what differs between its stored fingerprint and
    ``fingerprint`` ([] when nothing does)."""
    if not store.exists(f"{name}/split.json"):
        return None if not store.exists(f"{name}/model.pt") else ["the run predates fingerprints"]
    old = store.read_json(f"{name}/split.json").get("fingerprint")
    if old is None:
        return ["the run predates fingerprints"]
    changed = [f"{k}: {old['settings'].get(k)!r} -> {v!r}" for k, v in fingerprint["settings"].items()
               if old["settings"].get(k) != v]
    if old.get("inputs") != fingerprint["inputs"]:
        changed.append("its inputs (alignment, shards or features) changed")
    return changed


def prepare(cfg: TrainConfig) -> dict:
    """Template, split and per-video targets (driver side; small arrays only)."""

    transforms, reference = read_alignment(cfg.alignment, cfg.endpoint_url)
    feat_store = cfg.features or join_uri(cfg.alignment, "features")
    vertices, framed = {}, {}
    for n in transforms:
        sf = load_surface_features(feat_store, cfg.category, n, cfg.endpoint_url)
        vertices[n] = sf.vertices
        framed[n] = sf.meta.get("view_size")  # how large a thing the video's cameras frame (its world units)
    train, held = split_videos(list(transforms), cfg.holdout, cfg.seed)
    left_out = {}
    if cfg.skip_ambiguous:
        left_out = {n: s for n, s in ambiguous_videos(cfg.alignment, cfg.endpoint_url).items() if n in train}
        for n, (agree, edges) in left_out.items():
            print(f"train {cfg.category}: {n} left out of training: only {agree} of its {edges} pairwise "
                  "alignments "
                  "agree with its rotation (often a near-symmetric object seen from one side)", flush=True)
        train = [n for n in train if n not in left_out]
    if not train:
        raise ValueError(f"category '{cfg.category}': no training videos in {cfg.alignment}")
    # the size check of the template against the instances: the framed sizes in the reference frame
    # (alignment scale x view size) when every training video has one; else the clouds' own diameters
    sizes = [float(transforms[n].scale) * float(framed[n]) for n in train if framed[n] is not None]
    template = build_template(
        [transforms[n].apply(vertices[n]).astype(np.float32) for n in train],
        cfg.vertices,
        instance_sizes=sizes if len(sizes) == len(train) else None,
    )
    held_tf = transforms
    if cfg.ground_truth is not None:
        held_tf = ground_truth_to_reference(cfg.ground_truth, cfg.category, reference, cfg.endpoint_url)

    def targets(name: str, tf: Similarity) -> VideoTargets:
        pts, valid = instance_correspondents(template, vertices[name], tf)
        return VideoTargets(pts, valid, vertices[name])

    return {"template": template, "reference": reference, "train": train, "held_out": held,
            "left_out": {n: f"ambiguous alignment: {a} of {e} pairs agree" for n, (a, e) in left_out.items()},
            "train_targets": {n: targets(n, transforms[n]) for n in train},
            "held_targets": {n: targets(n, held_tf[n]) for n in held if n in held_tf},
            "held_transforms": {n: held_tf[n] for n in held if n in held_tf}}


def _upload_dir(store: Store, local: str, rel: str) -> None:
    for f in sorted(os.listdir(local)):
        p = os.path.join(local, f)
        if os.path.isfile(p):
            with open(p, "rb") as fh:
                store.write_bytes(f"{rel}/{f}", fh.read())


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: resume, train Φ and Θ over this worker's data shard, report per epoch."""
    import ray.train
    import ray.train.torch

    cfg: TrainConfig = config["cfg"]
    if not config.get("verbose", True):
        import logging

        # Ray Train sets the worker's root logger to INFO, where some of its own modules log every
        # report ("Reporting training result ..."); this loop prints its one line per epoch itself
        logging.getLogger().setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(round(cfg.cpus_per_worker))))
    model = build_model(
        cfg, torch.as_tensor(config["vertices"]), backbone_weights=not config.get("random_backbone")
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    start, history = 0, []
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = read_state(os.path.join(d, "state.pt"))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["epoch"] + 1, state["history"]
    model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model
    store = Store(cfg.out, cfg.endpoint_url)
    name = config["name"]
    tb_dir = tb = None
    if rank == 0:
        from tensorboardX import SummaryWriter

        tb_dir = tempfile.mkdtemp(prefix="catpose-tb-")
        tb = SummaryWriter(tb_dir)
        if start:
            print(f"[catpose train] resumed from the checkpoint of epoch {start - 1}", flush=True)
    use_amp = cfg.amp and device.type == "cuda"
    shard = ray.train.get_dataset_shard("train")
    # decoding, targets, crops and augmentation on this worker's device, a batch or two ahead of the step
    feed = DeviceFeed(config["videos"], cfg.size, AugmentConfig() if cfg.augment else None, device,
                      seed=cfg.seed * 1009 + rank * 7919 + start, cache_mb=cfg.frame_cache_mb,
                      mask_fill=cfg.mask_fill, mask_snap=cfg.mask_snap)
    seen = None  # crops of this worker's last Ray Data epoch
    last_ckpt = t_end = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        sums = torch.zeros(5, device=device)  # loss, loss_v, loss_bg, acc, steps
        n_img, t0 = 0, time.perf_counter()
        dropped0 = feed.stats["dropped"]
        model.train()
        # the first epoch of this process streams the shard through Ray Data and fills the frame cache;
        # once every worker's frames are cached, an epoch draws the same number of crops from the cache
        steps = None
        if seen is not None:
            flags = torch.tensor([float(feed.complete), float(seen)], device=device)
            if world > 1 and torch.distributed.is_initialized():
                # equal steps on all ranks
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
            if flags[0].item() > 0:
                steps = int(flags[1].item()) // cfg.batch_size
        if steps:
            source, make = feed.cached_epoch(steps * cfg.batch_size, cfg.batch_size), feed.from_cache
        else:
            source = shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", prefetch_batches=2,
                                        local_shuffle_buffer_size=4 * cfg.batch_size)
            make = feed
        n_rows = 0
        for batch in prefetched(source, make, cfg.prefetch):
            n_rows += len(batch["key"])
            if not batch["key"]:
                continue
            images, uv, vis, fg = batch["image"], batch["uv"], batch["vis"], batch["fg"]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, parts = model(images, uv, vis, fg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack(
                [
                    loss.detach().float(),
                    parts["loss_vertex"].float(),
                    parts["loss_background"].float(),
                    parts["vertex_acc"].float(),
                    torch.ones((), device=device),
                ]
            )
            n_img += images.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the epoch's kernels are done before its time is taken
        seconds = time.perf_counter() - t0
        if not steps:
            seen = n_rows
        dropped = feed.stats["dropped"] - dropped0
        totals = torch.cat([sums, torch.tensor([n_img, dropped], dtype=sums.dtype, device=device)])
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        steps = max(totals[4].item(), 1)
        metrics = {"epoch": epoch, "loss": totals[0].item() / steps, "loss_vertex": totals[1].item() / steps,
                   "loss_background": totals[2].item() / steps, "train_vertex_acc": totals[3].item() / steps,
                   "images": int(totals[5].item()), "images_per_s": totals[5].item() / max(seconds, 1e-9),
                   "lr": lr, "seconds": seconds, "started_at_epoch": start,
                   "dropped_frames": int(totals[6].item()), "cached_frames": len(feed.cache),
                   "from_cache": bool(steps), "wall_s": time.perf_counter() - t_end}
        history.append(metrics)
        checkpoint = ckpt_dir = None
        if rank == 0:
            for k, v in metrics.items():
                if k not in ("epoch", "started_at_epoch"):
                    tb.add_scalar(f"train/{k}", v, epoch)
        # report (and checkpoint) only every checkpoint_every_s: ray.train.report blocks until Ray Train's
        # controller takes the result (measured ~1.7 s a call on an H200, against 0.3 s of a short epoch).
        # Every rank reports together, so rank 0's clock decides for all.
        now = time.perf_counter()
        due = torch.tensor(
            [float(epoch == cfg.epochs - 1 or now - last_ckpt >= cfg.checkpoint_every_s)], device=device
        )
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.broadcast(due, src=0)
        due = bool(due.item())
        if due:
            last_ckpt = now
        if rank == 0 and due:
            tb.flush()
            _upload_dir(store, tb_dir, f"{name}/tensorboard")
            ckpt_dir = tempfile.mkdtemp(prefix="catpose-ckpt-")
            write_state(
                os.path.join(ckpt_dir, "state.pt"),
                {
                    "model": core.state_dict(),
                    "optimizer": opt.state_dict(),
                    "epoch": epoch,
                    "history": history,
                },
            )
            checkpoint = ray.train.Checkpoint.from_directory(ckpt_dir)
        if rank == 0 and config.get("progress") is not None:  # the driver's training bar
            config["progress"].post.remote(n=epoch + 1, postfix=f"loss {metrics['loss']:.3f}, "
                                           f"{metrics['images_per_s']:.0f} crops/s"
                                           + (f", {metrics['dropped_frames']} frames "
                                              "dropped" if metrics["dropped_frames"] else ""))
        if rank == 0 and config.get("verbose"):  # one line per epoch (--verbose)
            print(f"train {cfg.category}: epoch {epoch + 1}/{cfg.epochs}  loss {metrics['loss']:.3f}  "
                  f"vertex acc {metrics['train_vertex_acc']:.1%}  {metrics['images_per_s']:.0f} crops/s "
                  f"({world} worker{'s' if world > 1 else ''})"
                  + (f"  {metrics['dropped_frames']} undecodable frame(s) "
                     "dropped" if metrics["dropped_frames"] else ""),
                  flush=True)
        if due:
            ray.train.report(metrics, checkpoint=checkpoint)  # uploads the checkpoint before returning
        t_end = time.perf_counter()
        if ckpt_dir is not None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    if tb is not None:
        tb.close()
        shutil.rmtree(tb_dir, ignore_errors=True)


def _use_gpu(cfg: TrainConfig) -> bool:
    """Whether the Ray Train workers ask for GPUs: ``cuda``/``cuda:N`` yes, ``cpu`` no, ``auto`` when the
    cluster has GPUs (the run context's device, :class:`catpose.config.DeviceContext`)."""
    if cfg.device.startswith("cuda"):
        return True
    if cfg.device == "cpu":
        return False
    import ray

    init_ray()
    return ray.cluster_resources().get("GPU", 0) > 0


DATA_CPUS = 1.0
"""CPUs a Ray Data read task of the training dataset reserves (Ray Data's default)."""


def placement(cfg: TrainConfig, use_gpu: bool, poll_s: float = 5.0) -> int:
    """The number of Ray Train workers, once the cluster can place them all.

    ``num_workers`` 0 means one per GPU of the cluster (GPU training) or 2 (CPU training). Besides the
    workers' CPUs, Ray Data's reading of the shards needs one CPU of its own (``DATA_CPUS``): workers that
    reserve every CPU of the cluster leave the first epoch's reads waiting forever (Ray Data only warns
    that "the job may hang"). When the cluster lacks the CPUs or GPUs that the run needs, this prints a
    "waiting for" line every ``poll_s`` seconds — an autoscaling cluster adds nodes meanwhile — and raises
    :class:`~catpose.errors.CatposeError` after ``wait_for_resources`` seconds, instead of letting Ray Train
    wait silently for resources that never come.
    """
    import ray

    gpus_each = cfg.gpus_per_worker if use_gpu else 0.0
    t0 = time.monotonic()
    while True:
        have = ray.cluster_resources()
        workers = cfg.num_workers
        if workers <= 0:
            workers = max(1, int(have.get("GPU", 0) // max(gpus_each, 1e-9))) if use_gpu else 2
        need = {
            "CPU": workers * cfg.cpus_per_worker + DATA_CPUS,
            **({"GPU": workers * gpus_each} if gpus_each else {}),
        }
        short = {k: (v, have.get(k, 0.0)) for k, v in need.items() if have.get(k, 0.0) + 1e-9 < v}
        if not short:
            return workers
        what = ", ".join(f"{v:g} {k}s (the cluster has {h:g})" for k, (v, h) in short.items())
        waited = time.monotonic() - t0
        if waited >= cfg.wait_for_resources:
            raise CatposeError(
                f"train {cfg.category}: {workers} worker(s) × {cfg.cpus_per_worker:g} CPU"
                + (f" + {gpus_each:g} "
                   "GPU" if gpus_each else "") + f", and {DATA_CPUS:g} CPU for reading the shards, "
                f"need {what}; waited {waited:.0f} s. "
                "Lower --num-workers (0: one per GPU), --cpus-per-worker or --gpus-per-worker, or add nodes.")
        print(f"train {cfg.category}: waiting for {what} — an autoscaling cluster adds nodes; otherwise "
              "lower "
              f"--num-workers (gives up in {cfg.wait_for_resources - waited:.0f} s)", flush=True)
        time.sleep(min(poll_s, max(0.0, cfg.wait_for_resources - waited)))


def make_trainer(cfg: TrainConfig, dataset, vertices: np.ndarray, name: str, use_gpu: bool, workers: int = 0,
                 videos: dict[str, VideoTargets] | None = None, random_backbone: bool = False, progress=None):
    """The ``TorchTrainer`` of a run: ``dataset`` from :func:`catpose.learn.data.training_dataset`, ``videos``
    the training videos' targets (what each worker's :class:`~catpose.learn.feed.DeviceFeed` needs);
    ``random_backbone``: the base model's frozen ViT randomly initialised (speed benchmarks without weights);
    ``workers`` from :func:`placement` (0: ``cfg.num_workers``, or 2 when that is auto)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    store = Store(cfg.out, cfg.endpoint_url)
    on_s3 = store.uri.startswith("s3://")
    gpus = cfg.gpus_per_worker if use_gpu else 0
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": gpus} if gpus else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "vertices": vertices, "name": name, "videos": videos,
                           "random_backbone": random_backbone, "verbose": verbose(), "progress": progress},
        datasets={"train": dataset},
        torch_config=TorchConfig(backend="nccl" if gpus >= 1 else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers or cfg.num_workers or 2, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name, storage_path=store.root if on_s3 else str(Path(store.root).resolve()),
            storage_filesystem=store.arrow_fs if on_s3 else None,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            # Ray Train's own lines ("Requesting resources", "Reporting training result ...", "Checkpoint
            # successfully created") only with --verbose; the loop prints one line per epoch itself
            logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose() else "ERROR")),
    )


def run_train(cfg: TrainConfig, replace_changed: bool = False) -> dict:
    """Fits (or resumes) the run ``OUT/NAME`` and writes the model, curves and evaluation.

    A stored run of the same name is resumed (or kept, when finished) only if it learned from the same
    settings and inputs (:func:`run_fingerprint`). Otherwise it is a :class:`~catpose.errors.ConfigError`
    naming what changed, or, with ``replace_changed`` (the main job, which reruns this stage because its
    inputs or settings changed), the old run is removed and a new one starts."""

    name = run_name(cfg)  # checked before Ray starts
    init_ray()
    store = Store(cfg.out, cfg.endpoint_url)
    store.check()
    fingerprint = run_fingerprint(cfg)
    changed = stored_fingerprint_change(store, name, fingerprint)
    if changed:
        if not replace_changed:
            raise ConfigError(store.url(name), "a run of this name learned from other settings or inputs ("
                              + "; ".join(changed) + "); give a new --name or remove the old run")
        print(f"train {cfg.category}: {store.url(name)} learned from other settings or inputs ("
              + "; ".join(changed) + "); starting it anew", flush=True)
        store.remove(name, recursive=True)
    done = finished_run(cfg, store, name)
    if done is not None:
        print(f"train {cfg.category}: {store.url(name)} finished its {done['epochs']} epochs before; "
              "kept", flush=True)
        return done
    prep = prepare(cfg)
    tpl: Template = prep["template"]
    write_split(store, name, cfg, prep, fingerprint)
    use_gpu = _use_gpu(cfg)
    workers = placement(cfg, use_gpu)
    ds = training_dataset(cfg.data, cfg.category, prep["train_targets"], cfg.endpoint_url)
    print(f"train {cfg.category}: {len(prep['train'])} training videos, {len(prep['held_out'])} held out, "
          + (f"{len(prep['left_out'])} left out, " if prep["left_out"] else "") +
          f"template of {len(tpl.vertices)} vertices, {workers} worker(s) on {'GPU' if use_gpu else 'CPU'}, "
          f"run {store.url(name)}", flush=True)
    t0 = time.perf_counter()
    with remote_progress(cfg.epochs, f"train {cfg.category} "
                                     "(epochs)") as board:  # loss and crops/s on the bar
        trainer = make_trainer(
            cfg, ds, tpl.vertices, name, use_gpu, workers, prep["train_targets"], progress=board
        )
        result = trainer.fit()
    if result.error:
        raise RuntimeError(f"training run {store.url(name)} failed: {result.error}")
    if result.checkpoint is None:
        raise RuntimeError(f"training run {store.url(name)} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        state = read_state(os.path.join(d, "state.pt"))
    model = build_model(cfg, torch.as_tensor(tpl.vertices))
    model.load_state_dict(state["model"])
    save_trained(store, name, cfg, model, tpl, state["epoch"] + 1)
    history = state["history"]
    store.write_json(f"{name}/history.json", history)
    store.write_bytes(f"{name}/training_curves.png", plot_history(history, cfg.category))
    out = {"run": store.url(name), "epochs": state["epoch"] + 1, "history": history,
           "parameters": count_parameters(model), "fit_seconds": round(time.perf_counter() - t0, 1),
           "use_gpu": use_gpu, "train_videos": len(prep["train"]), "held_out": len(prep["held_out"]),
           "left_out": prep["left_out"]}
    if cfg.evaluate and prep["held_targets"]:
        device = resolve_device(cfg.device) if use_gpu else "cpu"
        out["evaluation"] = evaluate_run(cfg, prep, model, store, name, device)
    return out


def write_split(
    store: Store, name: str, cfg: TrainConfig, prep: dict, fingerprint: dict | None = None
) -> None:
    """``NAME/template.npz`` (before training) and ``NAME/split.json``: the training and held-out videos,
    the reference video, the run's settings (the pose evaluation reads them) and its fingerprint."""
    store.write_bytes(f"{name}/template.npz", prep["template"].to_bytes())
    store.write_json(f"{name}/split.json", {"train": prep["train"], "held_out": prep["held_out"],
                                            "left_out": prep.get("left_out", {}),
                                            "reference": prep["reference"], "config": _jsonable(cfg),
                                            "fingerprint": fingerprint or run_fingerprint(cfg)})


def finished_run(cfg: TrainConfig, store: Store, name: str) -> dict | None:
    """The summary of a run that already trained ``cfg.epochs`` epochs (and was evaluated if asked)."""
    if not (store.exists(f"{name}/model.pt") and store.exists(f"{name}/history.json")):
        return None
    history = store.read_json(f"{name}/history.json")
    if len(history) < cfg.epochs or (cfg.evaluate and not store.exists(f"{name}/evaluation.json")):
        return None
    out = {"run": store.url(name), "epochs": len(history), "history": history, "resumed": "finished before"}
    if cfg.evaluate:
        out["evaluation"] = store.read_json(f"{name}/evaluation.json")
    return out


def plot_history(history: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    for key in ("loss", "loss_vertex", "loss_background"):
        axes[0].plot(ep, [h[key] for h in history], label=key)
    axes[0].set_title("loss")
    axes[0].legend(fontsize=7)
    axes[1].plot(ep, [h["train_vertex_acc"] for h in history])
    axes[1].set_title("training vertex accuracy")
    axes[2].plot(ep, [h["images_per_s"] for h in history])
    axes[2].set_title("images / s (all workers)")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.suptitle(f"{title}: training")

    return png_bytes(fig)
