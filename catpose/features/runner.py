"""``catpose features``: surface features of every sequence of a category, as Ray tasks.

One task per sequence (GPU fractions when the cluster has GPUs, batched frames), a progress bar,
one file per sequence in the store (``<out>/<category>/<sequence>.npz``, local or ``s3://``),
per-sequence status in ``<out>/<category>/_manifest.json``. Reruns skip sequences already done with
the same settings; a failed sequence is recorded with its error and the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from catpose import fingerprint as fp
from catpose.config import CleaningConfig, FeaturesConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.pointcloud import MAX_POINTS
from catpose.data.types import to_jsonable
from catpose.devices import resolve_device
from catpose.errors import CatposeError, DataFormatError
from catpose.features.backbones import build_backbone
from catpose.features.surface import SurfaceFeatures, compute_surface_features
from catpose.manifest import Manifest
from catpose.parallel import map_items, ray_has_gpus
from catpose.storage import Store, key

_BACKBONES: dict = {}


def signature(cfg: FeaturesConfig) -> dict:
    """The settings that change a sequence's features (a mismatch recomputes it)."""
    keys = (
        "backbone",
        "layer",
        "facet",
        "input_size",
        "vertices",
        "frames",
        "outlier_k",
        "outlier_std",
        "vis_tol",
    )
    sig = {k: getattr(cfg, k) for k in keys}
    # the cleaning section under the keys stored features were signed with before it was one section
    sig.update({f"clean_{k}": v for k, v in dataclasses.asdict(cfg.cleaning).items()})
    if not cfg.backbone.startswith("dinov2"):
        for k in ("layer", "facet", "input_size"):
            sig.pop(k)
    if cfg.cloud_points != MAX_POINTS:  # the cap changes only clouds above it (the default: as before)
        sig["cloud_points"] = cfg.cloud_points
    return sig


def get_backbone(cfg: FeaturesConfig, device: str):
    """The backbone of ``cfg``, built once per process."""

    key = (cfg.backbone, str(cfg.weights), cfg.layer, cfg.facet, cfg.input_size, device)
    if key not in _BACKBONES:
        _BACKBONES[key] = build_backbone(cfg.backbone, cfg.weights, cfg.layer, cfg.facet, cfg.input_size).to(
            device
        )
    return _BACKBONES[key]


def feature_key(category: str, sequence: str) -> str:
    return key(category, f"{sequence}.npz")


def _task(args: tuple[FeaturesConfig, str, str]) -> dict:
    cfg, category, name = args
    device = resolve_device(cfg.device)
    backbone = get_backbone(cfg, device)
    cat = Co3dCategory(cfg.data, category, cfg.endpoint_url, cfg.cloud_points)
    seq = cat[name]
    t0 = time.perf_counter()
    sf = compute_surface_features(seq, backbone, cfg.vertices, cfg.frames, cfg.batch, device, cfg.outlier_k,
                                  cfg.outlier_std, cfg.vis_tol, clean=cfg.cleaning)
    sf.meta["signature"] = signature(cfg)
    Store(cfg.out, cfg.endpoint_url).write_bytes(feature_key(category, name), sf.to_bytes())
    res = {"vertices": len(sf.vertices), "frames": len(sf.frame_numbers),
           "visible": round(float(sf.visible.mean()), 4), "backbone": sf.meta["backbone"],
           "frames_per_s": round(len(sf.frame_numbers) / (time.perf_counter() - t0), 2),
           "cleaning": sf.meta.get("cleaning")}
    res["cloud"] = sf.meta.get("cloud")  # "file" or "depth" (made from the depth maps: no pointcloud.ply)
    for k in ("blank_frames", "bad_masks"):  # frames replaced for being blank; masks at odds with the cloud
        if sf.meta.get(k):
            res[k] = sf.meta[k]
    skipped = {k: v for k, v in cat.skipped_frames.items() if k.startswith(name + "/")}
    if skipped:  # frames of this video left out for their annotation records, named in its manifest entry
        res["skipped_frames"] = skipped
    return res


def sequence_fingerprints(
    cfg: FeaturesConfig, cat: Co3dCategory, category: str, sig: dict
) -> dict[str, dict]:
    """Each video's fingerprint (:mod:`catpose.fingerprint`): the settings ``sig`` and its inputs — its
    records in frame_annotations.jgz and sequence_annotations.jgz and its files (one listing of the
    category's folder or prefix: sizes and times, or ETags)."""
    tokens = fp.file_tokens(Store(str(cfg.data), cfg.endpoint_url), category)
    per_seq: dict[str, dict] = {}
    for rel, tok in tokens.items():
        parts = rel.split("/")
        if len(parts) > 2:
            per_seq.setdefault(parts[1], {})[rel] = tok
    out = {}
    for n in cat.sequence_names:
        seq = cat[n]
        out[n] = fp.make(sig, {"frame_annotations.jgz": to_jsonable([f.annotation for f in seq.frames]),
                               "sequence_annotations.jgz": to_jsonable(seq.annotation),
                               f"files under {category}/{n}": per_seq.get(n, {})})
    return out


def verify_feature_file(store: Store, category: str, name: str, item: dict) -> str | None:
    """None when the finished file of ``name`` is readable with the expected arrays and shapes (the
    manifest's vertex and frame counts), else why not."""

    key = feature_key(category, name)
    try:
        sf = SurfaceFeatures.from_bytes(store.read_bytes(key), store.url(key))
        sf.check(store.url(key), item.get("vertices"), item.get("frames"))
    except FileNotFoundError:
        return f"{store.url(key)}: missing"
    except (CatposeError, OSError) as e:
        return str(e)
    return None


def run_features(
    cfg: FeaturesConfig, progress: bool = True, keep_existing: bool = False
) -> dict[str, Manifest]:
    """Surface features of every sequence of ``cfg.category`` into the store; finished sequences with
    the same settings are skipped, and with ``keep_existing`` any finished sequence is kept whatever
    its settings (later stages use a store as they find it and only fill in what is missing)."""

    store = Store(cfg.out, cfg.endpoint_url)
    store.check()
    sig = signature(cfg)
    use_gpu = ray_has_gpus(cfg.workers, cfg.device)
    device_note = "GPU (Ray tasks with 0.25 GPU)" if use_gpu else resolve_device(cfg.device)
    out = {}
    for category in cfg.category:
        cat = Co3dCategory(cfg.data, category, cfg.endpoint_url, cfg.cloud_points)
        man = Manifest.load_or_new(key(category, "_manifest.json"), "features", store=store)
        if not keep_existing:
            man.info.update({"signature": sig})
        # a bad annotation record costs its video (or frame) only: named in the manifest, not computed
        for name, reason in sorted(cat.excluded.items()):
            man.record(name, "skipped", error=reason, save=False)
        # a finished video is kept only when it was made from these inputs (its annotation records, its
        # files) and settings (with keep_existing: any settings), and its file reads back
        fps = sequence_fingerprints(cfg, cat, category, sig)
        log = fp.ResumeLog(f"features {category}", "videos")
        why_redo: dict[str, str | None] = {}
        for n in cat.sequence_names:
            if man.status(n) != "ok":
                why_redo[n] = "missing" if man.status(n) is None else f"{man.status(n)} before"
                continue
            old = man.items[n].get("fingerprint")
            if keep_existing and isinstance(old, dict):
                old = {**old, "settings": fps[n]["settings"]}
            why_redo[n] = fp.change(old, fps[n])
        done = [n for n, why in why_redo.items() if why is None]
        # resume trusts a finished file only after reading it back
        with ThreadPoolExecutor(8) as pool:
            invalid = {n: why for n, why in zip(done, pool.map(
                lambda n: verify_feature_file(store, category, n, man.items[n]), done)) if why}
        for n, why in invalid.items():
            print(f"features {category}: '{n}' was done but its output is invalid ({why}); "
                  "recomputing", flush=True)
            man.record(n, "invalid", error=why, save=False)
            why_redo[n] = "output invalid"
        done = [n for n in done if n not in invalid]
        for n, why in why_redo.items():
            log.keep() if why is None else log.redo(why)
        todo = [(cfg, category, n) for n in cat.sequence_names if n not in done]
        print(f"features {category}: backbone {cfg.backbone} on {device_note}", flush=True)
        log.say()
        task_cfg = dataclasses.replace(cfg, device="cuda" if use_gpu else cfg.device)
        todo = [(task_cfg, c, n) for _, c, n in todo]
        for (_, _, name), res, err, sec in map_items(
            _task,
            todo,
            workers=cfg.workers,
            desc=f"features {category}",
            num_gpus=0.25 if use_gpu else 0,
            progress=progress,
        ):
            if err and err.startswith("CleaningError"):  # too little object left: skipped, the reason kept
                man.record(name, "skipped", error=err, seconds=sec)
            elif err:
                man.record(name, "failed", error=err, seconds=sec)
            else:
                man.record(name, "ok", seconds=sec, signature=sig, fingerprint=fps[name], **res)
        ok = [v for v in man.items.values() if v.get("status") == "ok" and "backbone" in v]
        if ok:
            man.info["backbone"] = ok[-1]["backbone"]
            man.info["mean_visible"] = round(float(np.mean([v["visible"] for v in ok])), 4)
            removed = [v["cleaning"]["removed_share"] for v in ok if isinstance(v.get("cleaning"), dict)]
            if removed:
                man.info["cleaning_removed_share"] = {"mean": round(float(np.mean(removed)), 4),
                                                      "max": round(float(np.max(removed)), 4)}
        man.info["annotations"] = {"excluded": cat.excluded, "skipped_frames": cat.skipped_frames,
                                   "warnings": cat.annotation_warnings}
        oks = [v for v in man.items.values() if v.get("status") == "ok"]
        man.info["data_quality"] = {
            "clouds_from_depth": sorted(n for n, v in man.items.items() if v.get("status") == "ok"
                                        and v.get("cloud") == "depth"),
            "no_cloud": sorted(cat.no_cloud),
            "blank_frames": sum(len(v.get("blank_frames") or {}) for v in oks),
            "bad_masks": {k: why for v in oks for k, why in (v.get("bad_masks") or {}).items()}}
        man.save()
        dq = man.info["data_quality"]
        for line in (cat.annotation_summary(), cat.cloud_summary(),
                     f"{category}: {dq['blank_frames']} blank frames replaced" if dq["blank_frames"] else "",
                     f"{category}: masks at odds with the cloud: {', '.join(sorted(dq['bad_masks']))}"
                     if dq["bad_masks"] else ""):
            if line:
                print(f"features {line} (named in {store.url(f'{category}/_manifest.json')})", flush=True)
        out[category] = man
    return out


def store_settings(cfg: FeaturesConfig, category: str) -> tuple[FeaturesConfig, dict | None]:
    """The settings a feature store's finished videos of ``category`` were computed with, applied to
    ``cfg`` (so that a later stage fills in missing videos exactly as the others were made), and that
    signature (None for an empty store: ``cfg`` as given).

    Raises :class:`~catpose.errors.DataFormatError` naming the manifest and both settings when the
    store mixes features made with different settings (alignment must never compare them).
    """

    store = Store(cfg.out, cfg.endpoint_url)
    man = Manifest.load_or_new(key(category, "_manifest.json"), "features", store=store)
    sigs: dict[str, tuple[str, dict]] = {}
    for name, item in sorted(man.items.items()):
        if item.get("status") == "ok" and isinstance(item.get("signature"), dict):
            sigs.setdefault(json.dumps(item["signature"], sort_keys=True), (name, item["signature"]))
    if not sigs:
        return cfg, None
    if len(sigs) > 1:
        (a, sa), (b, sb) = list(sigs.values())[:2]
        raise DataFormatError(store.url(f"{category}/_manifest.json"),
                              f"features of '{a}' were made with {sa} and of '{b}' with {sb}; "
                              "recompute the store with one setting (catpose features --out "
                              "NEW)", field="signature")
    sig = next(iter(sigs.values()))[1]
    known = {f.name for f in dataclasses.fields(FeaturesConfig)}
    cleaning = {f.name for f in dataclasses.fields(CleaningConfig)}  # signed as clean_<field>
    clean = {k.removeprefix("clean_"): v for k, v in sig.items()
             if k.startswith("clean_") and k.removeprefix("clean_") in cleaning}
    return dataclasses.replace(cfg, **{k: v for k, v in sig.items() if k in known and k != "cleaning"},
                               cleaning=dataclasses.replace(cfg.cleaning, **clean)), sig


def load_surface_features(store_uri: str, category: str, sequence: str,
                          endpoint_url: str | None = None) -> SurfaceFeatures:
    store = Store(store_uri, endpoint_url)
    key = feature_key(category, sequence)
    return SurfaceFeatures.from_bytes(store.read_bytes(key), store.url(key))
