"""``catpose align``: pairwise alignments as batched Ray tasks, reduced to one category reference.

Pairs come from :func:`~catpose.align.reference.pair_graph` (all pairs, or ``--partners`` per video:
nearest videos by a pooled feature descriptor plus random long-range edges) and are cut into chunks
(``--chunk`` pairs per task; by default hundreds per GPU task, 16 per CPU task); each task reads its
chunk's feature files once and aligns all its pairs with the batched engine
(:mod:`catpose.align.batched`). A video whose features cannot be read fails its own pairs only. Each
finished chunk is written atomically to ``OUT/pairs/<settings>/chunk-<k>.json``, so an interrupted run
resumes without redoing finished chunks. ``OUT`` is a store (a folder or ``s3://``); the driver writes
every output there from the tasks' results, the tasks themselves only read feature files by URI. Outputs:

* ``OUT/alignment.parquet``: one row per sequence — ``sequence_name``, ``rotation`` (9, row-major),
  ``translation`` (3), ``scale``, ``cost``, ``is_reference``; ``x_ref = scale · R · x + translation``
  maps the sequence's CO3D world frame into the category reference frame;
* ``OUT/alignment_paths.parquet``: the same without synchronisation (each video via its cheapest path);
* ``OUT/pairs.parquet``: ``seq_i``, ``seq_j``, ``rotation``, ``translation``, ``scale``, ``cost`` (i → j);
* ``OUT/aligned_clouds.png``: the point clouds in the reference frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from catpose import fingerprint as fp
from catpose.align import fused
from catpose.align.batched import align_pairs
from catpose.align.reference import Edge, edge_support, pair_graph, reduce_to_reference
from catpose.align.search import SearchConfig, align_pair
from catpose.align.table import SCHEMA, Alignment, alignment_rows, ambiguous
from catpose.align.videos import prepare_states, upload_video, video_arrays
from catpose.config import AlignConfig, FeaturesConfig
from catpose.devices import resolve_device
from catpose.errors import AlignmentError, ConfigError
from catpose.features.runner import load_surface_features, signature, store_settings
from catpose.manifest import Manifest
from catpose.parallel import init_ray, map_items, ray_has_gpus
from catpose.storage import Store, key

_CACHE: dict = {}


def _features(store: str, category: str, name: str, endpoint: str | None):
    key = (store, category, name)
    if key not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = load_surface_features(store, category, name, endpoint)
    return _CACHE[key]


_STATES: OrderedDict = OrderedDict()  # prepared per-video engine state of this worker process, LRU


def _state_budget(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return int(0.3 * torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return 2 * 1024**3


def _video_states(store: str, category: str, names: list[str], endpoint: str | None, scfg: SearchConfig,
                  device: str) -> tuple[dict, dict]:
    """The engine state of each video (``{name: VideoState}``, from this process's cache or read and
    prepared now; files are read by a thread pool) and ``{name: error}`` for those that failed."""
    from concurrent.futures import ThreadPoolExecutor


    tag = (store, category, json.dumps(dataclasses.asdict(scfg), sort_keys=True, default=str), device)
    states, bad = {}, {}
    missing = []
    for n in names:
        if (tag, n) in _STATES:
            _STATES.move_to_end((tag, n))
            states[n] = _STATES[(tag, n)]
        else:
            missing.append(n)

    def load(n):  # reading and the CPU part of the preparation, in threads
        try:
            return n, video_arrays(load_surface_features(store, category, n, endpoint), scfg), None
        except Exception as e:  # an unreadable or unusable file costs its own pairs
            return n, None, f"{type(e).__name__}: {e}"

    budget = _state_budget(device)
    if fused.available(device) and missing:  # read in threads, then prepared together on the GPU
        def read(n):
            try:
                return n, load_surface_features(store, category, n, endpoint), None
            except Exception as e:  # noqa: BLE001 — an unreadable file costs its own pairs
                return n, None, f"{type(e).__name__}: {e}"

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(read, missing))
        bad.update({n: err for n, _, err in got if err is not None})
        errors: dict = {}
        for st in prepare_states([sf for _, sf, err in got if err is None], scfg, device, errors):
            states[st.name] = _STATES[(tag, st.name)] = st
        bad.update(errors)
        missing = []
    with ThreadPoolExecutor(8) as pool:
        for n, arr, err in pool.map(load, missing):
            if err is None:
                try:
                    states[n] = upload_video(arr, device)
                except Exception as e:
                    err = f"{type(e).__name__}: {e}"
            if err is not None:
                bad[n] = err
                continue
            _STATES[(tag, n)] = states[n]
    total = sum(st.nbytes() for st in _STATES.values())
    while total > budget and len(_STATES) > len(states):
        _, st = _STATES.popitem(last=False)
        total -= st.nbytes()
    return states, bad


def _chunk_task(args) -> dict:
    """One chunk of pairs: its videos read once (and kept prepared on the device for later chunks of
    this worker), all pairs aligned by the batched engine.

    A video whose feature file cannot be read fails its own pairs only; if the batched call itself
    fails, the chunk falls back to the per-pair reference so that a bad pair fails alone.
    """

    _, store, category, pairs, scfg, device, endpoint = args  # the first field is the chunk index
    device = resolve_device(device)
    names = sorted({n for p in pairs for n in p})
    states, bad = _video_states(store, category, names, endpoint, scfg, device)
    good = [p for p in pairs if p[0] in states and p[1] in states]
    failed = [
        {"seq_i": a, "seq_j": b, "error": "; ".join(f"video '{v}': {bad[v]}" for v in (a, b) if v in bad)}
        for a, b in pairs
        if a in bad or b in bad
    ]
    results: list = []
    if good:
        used = sorted({n for p in good for n in p})
        try:
            results = list(zip(good, align_pairs([states[n] for n in used], good, scfg, device)))
        except Exception:  # one bad video must not sink its chunk: the reference, pair by pair
            for a, b in good:
                try:
                    T = align_pair(
                        _features(store, category, a, endpoint),
                        _features(store, category, b, endpoint),
                        scfg,
                        device,
                    )
                    results.append(((a, b), T))
                except Exception as e:
                    failed.append({"seq_i": a, "seq_j": b, "error": f"{type(e).__name__}: {e}"})
    rows = [{"seq_i": a, "seq_j": b, "rotation": T.R.ravel().tolist(), "translation": T.t.tolist(),
             "scale": T.scale, "cost": T.cost} for (a, b), T in results]
    return {"results": rows, "failed": failed}


def _summary_task(args) -> list[dict]:
    """Centroid and pooled descriptor of each video of a batch (one read of its features)."""

    store, category, names, endpoint = args
    out = []
    for n in names:
        try:
            sf = load_surface_features(store, category, n, endpoint)
            vis = sf.visible.astype(np.float32)
            desc = (sf.features.astype(np.float32) * vis[..., None]).sum((0, 1)) / max(1.0, float(vis.sum()))
            out.append({"sequence_name": n, "centroid": sf.vertices.mean(0).astype(np.float64).tolist(),
                        "descriptor": desc.tolist(), "error": None})
        except Exception as e:
            out.append(
                {
                    "sequence_name": n,
                    "centroid": None,
                    "descriptor": None,
                    "error": f"{type(e).__name__}: {e}",
                }
            )
    return out


def video_summaries(names: list[str], feat_store: str, category: str, endpoint: str | None, workers: int,
                    progress: bool, batch: int = 64) -> dict[str, dict]:
    """Every video's centroid and pooled feature descriptor, read in parallel (Ray tasks)."""
    tasks = [(feat_store, category, names[i:i + batch], endpoint) for i in range(0, len(names), batch)]
    if workers > 0 and len(tasks) > 1:  # reading is all they do: as many in flight as the cluster has CPUs
        import ray

        init_ray()
        workers = max(workers, int(ray.cluster_resources().get("CPU", 1)))
    out = {}
    for task, res, err, _ in map_items(_summary_task, tasks, workers=workers, desc=f"summaries {category}",
                                       progress=progress and len(tasks) > 1):
        for r in res or [{"sequence_name": n, "error": err} for n in task[2]]:
            out[r["sequence_name"]] = r
    return out


class _Clock:
    """Seconds spent in each named stretch of a run."""

    def __init__(self):
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 3)
        self.t = now


def _settings_key(scfg: SearchConfig, feat_store: str, feat_signature: dict) -> str:
    """The chunk folder's name: the search settings, the feature store and its features' settings
    (backbone included), so finished chunks are reused only for exactly the same inputs."""
    blob = json.dumps(
        {"search": dataclasses.asdict(scfg), "features": feat_store, "signature": feat_signature},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _parquet_bytes(rows: list[dict], schema=None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def alignment_bytes(transforms: dict[str, Alignment], ref: str,
                    support: dict[str, tuple[int, int]] | None = None) -> bytes:
    """The bytes of an ``alignment.parquet`` (see :mod:`catpose.align.table`), with each video's
    (agreeing, all) pairs when ``support`` is given (:func:`catpose.align.reference.edge_support`)."""
    return _parquet_bytes(alignment_rows(transforms, ref, support), SCHEMA)


def _chunk_problem(
    store: Store, key: str, pairs: list[tuple[str, str]], raw: bytes | None = None
) -> str | None:
    """None when ``key`` is a finished chunk file for exactly these pairs, else why not."""
    path = store.url(key)
    try:
        data = json.loads(raw if raw is not None else store.read_bytes(key))
    except FileNotFoundError:
        return "missing"
    except ValueError as e:
        return f"{path}: not valid JSON ({type(e).__name__}: {e})"
    try:
        if [tuple(p) for p in data["pairs"]] != pairs:
            return f"{path}: field 'pairs': other pairs than this run's chunk"
        rows = data["results"]
        if not isinstance(rows, list) or not all(
                isinstance(r, dict) and (r["seq_i"], r["seq_j"]) in set(pairs) and len(r["rotation"]) == 9
                and len(r["translation"]) == 3 and math.isfinite(r["scale"]) and math.isfinite(r["cost"])
                for r in rows):
            return f"{path}: field 'results': not the expected pair results"
    except (KeyError, TypeError) as e:
        return f"{path}: field {e}: missing or of the wrong type"
    return None


def _read_chunks(store: Store, keys: list[str], chunks: list) -> dict[str, dict]:
    """The finished chunk files among ``keys`` for exactly their pairs (read concurrently)."""
    have = set(store.glob(keys[0].rsplit("/", 1)[0] + "/chunk-*.json")) if keys else set()
    got = store.cat_many([k for k in keys if k in have])
    out = {}
    for k, ch in zip(keys, chunks):
        raw = got.get(k)
        if raw is None or isinstance(raw, Exception):
            continue
        if _chunk_problem(store, k, ch, raw) is None:
            out[k] = json.loads(raw)
    return out


def default_chunk(pairs: int, workers: int, gpu: bool) -> int:
    """Pairs per Ray task: 512 on a GPU (the engine splits them to fit its memory); on CPUs at most 16,
    with a multiple of ``workers`` chunks so that the last round keeps every worker busy."""
    if gpu:
        return 512
    w = max(1, workers)
    n_chunks = w * max(1, math.ceil(pairs / (16 * w)))
    return max(1, math.ceil(pairs / n_chunks))


def features_for_align(cfg: AlignConfig, features: FeaturesConfig | None, feat_store: str
                       ) -> tuple[FeaturesConfig, dict | None]:
    """The features settings with which missing videos are filled in, and the store's signature.

    With ``features`` (the run's own settings, e.g. from the main job) the store must hold features made
    with exactly those settings: a store made with others is a :class:`ConfigError` naming both, never
    silently mixed or recomputed. Without it (``catpose align`` alone) the store's settings are used.
    """
    base = features or FeaturesConfig()
    base = dataclasses.replace(
        base,
        data=cfg.data,
        category=(cfg.category,),
        out=feat_store,
        workers=cfg.workers,
        endpoint_url=cfg.endpoint_url,
    )
    fcfg, feat_sig = store_settings(base, cfg.category)
    if features is not None:
        _check_signature(feat_store, cfg.category, feat_sig, signature(base))
    return (base if features is not None else fcfg), feat_sig


def _check_signature(feat_store: str, category: str, made: dict | None, wanted: dict) -> None:
    if made is not None and made != wanted:
        raise ConfigError(f"{feat_store}/{category}/_manifest.json",
                          f"the feature store was made with {made}, but this run's features settings are "
                          f"{wanted}; use the same settings or another features.out", field="features")


def feature_store(cfg: AlignConfig) -> str:
    """The feature store an alignment reads: ``cfg.features``, default ``OUT/features``."""
    return cfg.features or Store(str(cfg.out), cfg.endpoint_url).url("features")


def run_align(cfg: AlignConfig, progress: bool = True, made_with: dict | None = None) -> dict:
    """Aligns every video of ``cfg.category`` whose features are done in the feature store
    (:func:`feature_store`), as they are: nothing is computed or recomputed here (``catpose align``
    fills in missing videos first). ``made_with``: the features settings the store must have been made
    with (:func:`catpose.features.runner.signature`; the main job's features stage): a store made with
    others is a :class:`ConfigError` naming both."""

    out = Store(str(cfg.out), cfg.endpoint_url)
    # a file in the way, a read-only folder, an unreachable bucket: one clear error before any work
    out.check()
    clock = _Clock()
    feat_store = feature_store(cfg)
    fcfg, feat_sig = store_settings(FeaturesConfig(data=cfg.data, category=(cfg.category,), out=feat_store,
                                                   endpoint_url=cfg.endpoint_url), cfg.category)
    if made_with is not None:
        _check_signature(feat_store, cfg.category, feat_sig, made_with)
    fman = Manifest.load_or_new(key(cfg.category, "_manifest.json"), "features",
                                store=Store(feat_store, cfg.endpoint_url))
    names = fman.keys_with("ok")
    if not fman.items:  # nothing to align: said with where it looked
        raise AlignmentError(cfg.category, f"has no features in {feat_store} (its "
                                           f"{cfg.category}/_manifest.json "
                             "lists none; catpose features, or catpose align, computes them)")
    clock.lap("features")
    summaries = video_summaries(names, feat_store, cfg.category, cfg.endpoint_url, cfg.workers, progress)
    unreadable = {n: r["error"] for n, r in summaries.items() if r.get("error")}
    for n, e in unreadable.items():
        print(f"align {cfg.category}: video '{n}' left out: {e}", flush=True)
    names = [n for n in names if n not in unreadable]
    if len(names) < 2:
        lost = {**fman.failed, **fman.skipped, **unreadable}
        raise AlignmentError(cfg.category, f"has {len(names)} usable videos; alignment needs 2 or more"
                             + (f" (left out: {lost})" if lost else ""))
    clock.lap("summaries")
    scfg = cfg.search
    pairs = pair_graph(names, cfg.partners, descriptors={n: summaries[n]["descriptor"] for n in names})
    chunk_dir = "pairs/" + _settings_key(scfg, feat_store, feat_sig or signature(fcfg))
    use_gpu = ray_has_gpus(cfg.workers, cfg.device)
    size = (
        cfg.chunk
        if cfg.chunk > 0
        else default_chunk(len(pairs), cfg.workers, use_gpu or resolve_device(cfg.device) == "cuda")
    )
    chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    todo = []
    keys = [f"{chunk_dir}/chunk-{k:05d}.json" for k in range(len(chunks))]
    have = set(out.glob(f"{chunk_dir}/chunk-*.json"))
    raw = out.cat_many([k for k in keys if k in have])
    # a finished chunk is kept only when its videos' feature files are those it was made from
    tokens = fp.file_tokens(Store(feat_store, cfg.endpoint_url), cfg.category)
    chunk_fps = [
        fp.make(
            dataclasses.asdict(scfg),
            {
                f"{cfg.category}/{n}.npz": tokens.get(f"{cfg.category}/{n}.npz", "")
                for n in sorted({v for p in ch for v in p})
            },
        )
        for ch in chunks
    ]
    log = fp.ResumeLog(f"align {cfg.category}", "chunks")
    for k, ch in enumerate(chunks):
        r = raw.get(keys[k])
        why = (
            "missing"
            if r is None
            else _chunk_problem(out, keys[k], ch, r if not isinstance(r, Exception) else b"")
        )
        if why is None:
            why = fp.change(json.loads(r).get("fingerprint"), chunk_fps[k])
        elif why != "missing":  # never trusted: recomputed, and said so
            print(f"align {cfg.category}: {why}; recomputing chunk {k}", flush=True)
            why = "output invalid"
        if why is not None:
            todo.append((k, ch))
        log.keep() if why is None else log.redo(why)
    print(f"align {cfg.category}: {len(names)} videos, {len(pairs)} pairs in {len(chunks)} chunks "
          f"({len(chunks) - len(todo)} done before), alpha {scfg.alpha}, tau {scfg.tau}", flush=True)
    log.say()
    device = "cuda" if use_gpu else cfg.device
    tasks = [(k, feat_store, cfg.category, ch, scfg, device, cfg.endpoint_url) for k, ch in todo]
    failed = {}
    for task, res, err, _ in map_items(_chunk_task, tasks, workers=cfg.workers, desc=f"align {cfg.category}",
                                       num_gpus=0.5 if use_gpu else 0, progress=progress):
        k = task[0]
        if err:
            failed[f"chunk-{k:05d}"] = err
            continue
        out.write_json(
            keys[k], {"pairs": chunks[k], **res, "fingerprint": chunk_fps[k]}
        )  # atomic (a rename, or one S3 put)
    rows, failed_pairs = [], []
    finished = _read_chunks(out, keys, chunks)
    for k in keys:
        if k in finished:
            rows += finished[k]["results"]
            failed_pairs += finished[k].get("failed", [])
    for f in failed_pairs[:10]:
        print(f"align {cfg.category}: pair {f['seq_i']} → {f['seq_j']} failed: {f['error']}", flush=True)
    if not rows:
        raise AlignmentError(cfg.category, f"has no pair that could be aligned: {failed or failed_pairs[:5]}")
    clock.lap("pairs")
    out.write_bytes("pairs.parquet", _parquet_bytes(rows))
    edges = [
        Edge(
            r["seq_i"],
            r["seq_j"],
            Alignment(np.reshape(r["rotation"], (3, 3)), np.asarray(r["translation"]), r["scale"], r["cost"]),
        )
        for r in rows
    ]
    centroids = {n: np.asarray(summaries[n]["centroid"], np.float64) for n in names}
    ref, synced, paths = reduce_to_reference(edges, centroids, sync=cfg.sync)
    clock.lap("reduce")
    support = edge_support(edges, synced)
    out.write_bytes("alignment.parquet", alignment_bytes(synced, ref, support))
    unsure = sorted(ambiguous(support, ref))
    if unsure:
        print(f"align {cfg.category}: no majority of pairs agrees with the rotation of {', '.join(unsure)} "
              "(training leaves them out)", flush=True)
    out.write_bytes("alignment_paths.parquet", alignment_bytes(paths, ref, edge_support(edges, paths)))
    out.write_bytes(
        "aligned_clouds.png", plot_aligned_clouds(synced, feat_store, cfg.category, cfg.endpoint_url)
    )
    clock.lap("outputs")
    out.write_json(
        "timings.json",
        {
            "stages_s": clock.laps,
            "videos": len(names),
            "pairs": len(rows),
            "chunks": len(chunks),
            "device": "cuda" if use_gpu else resolve_device(cfg.device),
        },
    )
    print(f"align {cfg.category}: " + ", ".join(f"{k} {v:.1f} s" for k, v in clock.laps.items()), flush=True)
    return {
        "uri": out.uri,
        "features_signature": feat_sig or signature(fcfg),
        "timings": clock.laps,
        "reference": ref,
        "videos": len(synced),
        "pairs": len(rows),
        "failed_chunks": failed,
        "failed_pairs": failed_pairs,
        "unreadable": unreadable,
        "unaligned": sorted(set(names) - set(synced)),
        "ambiguous": unsure,
    }


def plot_aligned_clouds(transforms: dict[str, Alignment], store: str, category: str,
                        endpoint: str | None, max_videos: int = 12) -> bytes:
    """The PNG bytes of the point clouds of up to ``max_videos`` videos in the reference frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 3.2))
    views = [(20, -60), (20, 30), (80, -90)]
    axes = [fig.add_subplot(1, 3, i + 1, projection="3d") for i in range(3)]
    cmap = plt.get_cmap("tab20")
    allx = []
    for n, (name, T) in enumerate(sorted(transforms.items())[:max_videos]):
        V = _features(store, category, name, endpoint).vertices.astype(np.float64)
        X = T.apply(V)
        allx.append(X)
        for ax in axes:
            ax.scatter(X[::3, 0], X[::3, 1], X[::3, 2], s=0.5, color=cmap(n % 20))
    span = np.ptp(np.concatenate(allx), axis=0)
    for ax, (el, az) in zip(axes, views):
        ax.view_init(el, az)
        ax.set_box_aspect(np.maximum(span, 1e-3 * span.max()))
        ax.set_axis_off()
    fig.suptitle(f"{category}: {min(len(transforms), max_videos)} videos in the reference frame")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110)
    plt.close(fig)
    return buf.getvalue()
