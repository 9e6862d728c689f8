"""Per-video state of the batched alignment engine (:mod:`catpose.align.batched`): what a video is
reduced to once, before any of its pairs is aligned — the farthest-point subset of ``SearchConfig.vertices``
vertices, normalised (centroid ``c``, scale ``d``), ``diam(V)``, the coarse and prefilter subsets and the
map of every vertex to its nearest kept vertex, the visible (frame, vertex) features on the device with
their squared norms — and a chunk's videos stacked and padded to its largest sizes (:func:`stack_videos`:
padded vertices copy vertex 0 with weight 0, padded feature rows have an infinite norm).

On the CPU a video is prepared as NumPy arrays (:func:`video_arrays`, threads for many) and uploaded
(:func:`upload_video`); on CUDA many videos are prepared together on the device (:func:`prepare_states`,
farthest-point sampling included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from catpose.align import fused
from catpose.align.search import subsample_vertices
from catpose.config import SearchConfig
from catpose.features.surface import SurfaceFeatures
from catpose.geometry import farthest_point_sample

# --------------------------------------------------------------------------------------------------
# per-video state


@dataclass
class Subset:
    """A farthest-point subset of each video of a batch, padded (``idx`` repeats its first index)."""

    idx: torch.Tensor  # [nv, n] vertex indices
    valid: torch.Tensor  # [nv, n] bool
    count: torch.Tensor  # [nv]
    near: torch.Tensor  # [nv, N] index into the subset of each vertex's nearest kept vertex


@dataclass
class VideoBatch:
    """Prepared, padded tensors of the videos of one chunk (index v = the video's position)."""

    names: list[str]
    V: torch.Tensor  # [nv, N, 3] normalised vertices (padding copies vertex 0)
    valid: torch.Tensor  # [nv, N] bool, real vertices
    count: torch.Tensor  # [nv] number of real vertices
    diam: torch.Tensor  # [nv] diam(V) of the normalised cloud
    centre: np.ndarray  # [nv, 3] float64 centroid c of the (unnormalised) subset
    scale: np.ndarray  # [nv] float64 normaliser d (twice the largest distance to c)
    F: torch.Tensor  # [nv, Q, C] the visible (frame, vertex) features, padded (device storage dtype)
    f2: torch.Tensor  # [nv, Q] float32 squared feature norms, +inf on padding
    fv: torch.Tensor  # [nv, Q] long, the vertex of each feature row
    subs: list[Subset]  # the coarse search's vertex subsets: [coarse, prefilter]
    k: int = 0  # 0: F holds the visible rows (fv their vertices); K > 0: vertex-major rows i·K + frame

    def index(self, name: str) -> int:
        return self.names.index(name)


@dataclass
class VideoState:
    """One video's state on the device, unpadded (reusable across chunks; see :func:`prepare_video`)."""

    name: str
    V: torch.Tensor  # [n, 3] normalised vertices
    diam: torch.Tensor  # () diam(V)
    centre: np.ndarray  # [3] float64
    scale: float
    F: torch.Tensor  # [q, C] features of the visible (frame, vertex) rows
    f2: torch.Tensor  # [q] float32 squared norms
    fv: torch.Tensor  # [q] long, the vertex of each row
    subs: list[tuple[torch.Tensor, torch.Tensor]]  # (subset [s], each vertex's nearest kept vertex [n])
    # for the coarse search's subsets: coarse_vertices, then prefilter_vertices
    # 0: F holds the visible rows; K > 0: F [n·K, C] vertex-major (row i·K + frame, see prepare_states)
    k: int = 0

    def nbytes(self) -> int:
        return sum(
            x.numel() * x.element_size() for x in (self.V, self.F, self.f2, self.fv, *sum(self.subs, ()))
        )


def video_arrays(sf: SurfaceFeatures, cfg: SearchConfig, exact_fps: bool = False) -> dict:
    """The CPU part of a video's state (numpy; safe to run in threads): the FPS subset of
    ``cfg.vertices`` vertices (as the reference), normalised by its centroid ``c`` and ``d`` = twice
    the largest distance to it, the coarse and prefilter FPS subsets, and the visible (frame, vertex)
    feature rows. FPS is fpsample's bucket variant, the reference's; ``exact_fps``: the greedy sequence
    that :func:`prepare_states` computes on a GPU (the CPU path's accuracy tests were set on the first)."""

    i = subsample_vertices(sf, cfg.vertices, exact=exact_fps)
    V = sf.vertices[i].astype(np.float32)
    if len(V) == 0:
        raise ValueError(f"video '{sf.sequence}' has no vertices")
    c = V.mean(0, dtype=np.float32)
    d = np.float32(np.linalg.norm(V - c, axis=1).max() * 2)
    if not np.isfinite(d) or d <= 0:
        raise ValueError(f"video '{sf.sequence}': its vertices span no volume (size {d})")
    Vn = (V - c) / d
    subs = [
        np.arange(len(Vn)) if n >= len(Vn) else farthest_point_sample(Vn, n, exact=exact_fps).astype(np.int64)
        for n in (cfg.coarse_vertices, cfg.prefilter_vertices or cfg.coarse_vertices)
    ]
    # only visible (frame, vertex) features take part in min_{k,l}: about half of K·N on object orbits
    kk, ii = np.nonzero(np.asarray(sf.visible[:, i], dtype=bool))
    return {"name": sf.sequence, "V": Vn, "c": c.astype(np.float64), "d": float(d), "subs": subs,
            "F": np.ascontiguousarray(sf.features[:, i][kk, ii]), "fv": ii.astype(np.int64)}


def upload_video(
    arr: dict, device: str | torch.device = "cpu", feature_dtype: torch.dtype | None = None
) -> VideoState:
    """The device part of a video's state (from :func:`video_arrays`): tensors, diam(V), and each
    vertex's nearest kept vertex of every subset."""
    dev = torch.device(device)
    if feature_dtype is None:
        # fp16 products flip near-tied ψ (measured on the GPU): not exact enough
        feature_dtype = torch.float32
    F = torch.as_tensor(arr["F"], device=dev).to(feature_dtype)
    Vt = torch.as_tensor(arr["V"], device=dev)
    subs = []
    for sub in arr["subs"]:
        sub_t = torch.as_tensor(sub, device=dev)
        subs.append((sub_t, _sqdist(Vt[None], Vt[sub_t][None])[0].argmin(-1)))
    diam = _sqdist(Vt[None], Vt[None])[0].max().clamp_min(0).sqrt()
    return VideoState(arr["name"], Vt, diam, arr["c"], arr["d"], F, F.float().square().sum(-1),
                      torch.as_tensor(arr["fv"], device=dev), subs)


def prepare_video(sf: SurfaceFeatures, cfg: SearchConfig, device: str | torch.device = "cpu",
                  feature_dtype: torch.dtype | None = None) -> VideoState:
    """A video's state on ``device`` (:func:`video_arrays`, then :func:`upload_video`)."""
    return upload_video(video_arrays(sf, cfg), device, feature_dtype)


def stack_videos(states: list[VideoState]) -> VideoBatch:
    """Pads a chunk's video states to common sizes: padded vertices copy vertex 0 (so no nearest
    neighbour changes) and are marked invalid; padded feature rows have an infinite norm. Vertex-major
    states (``k > 0``, :func:`prepare_states`) are padded to a common frame count and to a vertex count
    that the fused appearance kernel's tiles divide."""
    if not states:
        raise ValueError("stack_videos needs at least one video")
    C = states[0].F.shape[1]
    for st in states:
        if st.F.shape[1] != C:
            raise ValueError(f"video '{st.name}' has {st.F.shape[1]} feature channels, '{states[0].name}' "
                             f"has {C}: "
                             "one chunk needs one backbone")
    dev = states[0].V.device
    nv = len(states)
    N = max(len(st.V) for st in states)
    ks = {st.k for st in states}
    K = max(ks) if 0 not in ks else 0
    if K and len(ks) > 1:  # a chunk mixing frame counts: pad every video to the largest
        states = [_repad_frames(st, K) for st in states]
    if K:
        NP = -(-N // max(1, 128 // K)) * max(1, 128 // K)
        Q = NP * K
    else:
        Q = max(1, max(len(st.F) for st in states))
    V = torch.empty((nv, N, 3), device=dev)
    valid = torch.zeros((nv, N), dtype=torch.bool, device=dev)
    F = torch.zeros((nv, Q, C), device=dev, dtype=states[0].F.dtype)
    f2 = torch.full((nv, Q), float("inf"), device=dev)
    fv = torch.zeros((nv, Q), dtype=torch.long, device=dev)
    for v, st in enumerate(states):
        m, q = len(st.V), len(st.F)
        V[v, :m], V[v, m:] = st.V, st.V[0]
        valid[v, :m] = True
        F[v, :q], f2[v, :q] = st.F, st.f2
        if not K:
            fv[v, :q] = st.fv
    return VideoBatch(
        [st.name for st in states],
        V,
        valid,
        valid.sum(1),
        torch.stack([st.diam for st in states]),
        np.stack([st.centre for st in states]),
        np.asarray([st.scale for st in states]),
        F,
        f2,
        fv,
        [_stack_subset(states, level, N) for level in range(len(states[0].subs))],
        K,
    )


def _repad_frames(st: VideoState, K: int) -> VideoState:
    if st.k == K:
        return st
    n, C = len(st.V), st.F.shape[1]
    F = st.F.new_zeros((n, K, C))
    F[:, :st.k] = st.F.view(n, st.k, C)
    f2 = st.f2.new_full((n, K), float("inf"))
    f2[:, :st.k] = st.f2.view(n, st.k)
    return VideoState(
        st.name, st.V, st.diam, st.centre, st.scale, F.view(n * K, C), f2.view(n * K), st.fv, st.subs, K
    )


def _stack_subset(states: list[VideoState], level: int, N: int) -> Subset:
    dev = states[0].V.device
    n = max(len(st.subs[level][0]) for st in states)
    idx = torch.empty((len(states), n), dtype=torch.long, device=dev)
    valid = torch.zeros((len(states), n), dtype=torch.bool, device=dev)
    near = torch.zeros((len(states), N), dtype=torch.long, device=dev)
    for v, st in enumerate(states):
        sub, nr = st.subs[level]
        idx[v, :len(sub)], idx[v, len(sub):] = sub, sub[0]
        valid[v, :len(sub)] = True
        near[v, :len(nr)] = nr
    return Subset(idx, valid, valid.sum(1), near)


def video_arrays_many(videos: list[SurfaceFeatures], cfg: SearchConfig, workers: int = 0) -> list[dict]:
    """:func:`video_arrays` of many videos, in ``workers`` threads (default: this process's CPUs, at most
    16; numpy's and fpsample's loops release the GIL), in order; a bad video raises as it would alone."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = workers or min(16, len(os.sched_getaffinity(0)))
    if workers <= 1 or len(videos) <= 1:
        return [video_arrays(sf, cfg) for sf in videos]
    with ThreadPoolExecutor(min(workers, len(videos))) as pool:
        return list(pool.map(lambda sf: video_arrays(sf, cfg), videos))


def prepare_videos(videos: list[SurfaceFeatures], cfg: SearchConfig, device: str | torch.device = "cpu",
                   feature_dtype: torch.dtype | None = None, workers: int = 0) -> VideoBatch:
    """The per-video state of a chunk's videos, computed once (the CPU part in threads,
    :func:`video_arrays_many`) and padded to common sizes."""
    if fused.available(device) and feature_dtype is None:  # on the GPU, all at once (prepare_states)
        return stack_videos(prepare_states(videos, cfg, device))
    return stack_videos(
        [upload_video(a, device, feature_dtype) for a in video_arrays_many(videos, cfg, workers)]
    )


def farthest_points(X: torch.Tensor, count: torch.Tensor, n: int) -> torch.Tensor:
    """Farthest point sampling of clouds X [B, N, 3] (the first count[b] points of each real), from
    index 0 → [B, n] long indices in selection order (exact FPS: each step takes the point farthest
    from those chosen, the lowest index on a tie). The fused kernel on CUDA, a torch loop elsewhere."""
    if fused.available(X.device):
        return fused.farthest_points(X, count, n)
    B, N, _ = X.shape
    real = torch.arange(N, device=X.device)[None] < count[:, None]
    dist = torch.where(real, torch.full_like(X[..., 0], float("inf")), torch.full_like(X[..., 0], -1.0))
    out = torch.zeros((B, n), dtype=torch.long, device=X.device)
    for s in range(1, n):
        c = torch.gather(X, 1, out[:, s - 1, None, None].expand(B, 1, 3))
        dist = torch.where(real, torch.minimum(dist, (X - c).square().sum(-1)), dist)
        out[:, s] = dist.argmax(1)
    return out


def _subset_indices(
    X: torch.Tensor, count: torch.Tensor, n: int, seq: torch.Tensor | None = None
) -> torch.Tensor:
    """The FPS subset of at most n points of each cloud, sorted (as ``farthest_point_sample``), padded
    with its first index; all real points where count ≤ n → [B, min(n, N)] long."""
    B, N, _ = X.shape
    n = min(n, N)
    ar = torch.arange(n, device=X.device)[None].expand(B, n)
    small = torch.where(ar < count[:, None], ar, torch.zeros_like(ar))
    if seq is None:
        seq = farthest_points(X, count, n)
    big = torch.sort(seq[:, :n], dim=1).values
    return torch.where((count > n)[:, None], big, small)


def prepare_states(videos: list[SurfaceFeatures], cfg: SearchConfig, device: str | torch.device = "cpu",
                   errors: dict | None = None, block: int = 64) -> list[VideoState]:
    """The per-video state of many videos computed together on ``device`` (the GPU path of
    :func:`video_arrays` + :func:`upload_video`): FPS of ``cfg.vertices`` vertices, normalisation,
    diam(V), the coarse and prefilter FPS subsets (the prefilter's is the first part of the coarse
    sequence, as FPS is greedy) with each vertex's nearest kept vertex, and the features in the
    vertex-major layout of the fused appearance kernel (``k`` = frames rounded up to a power of two;
    row ``i·k + frame``, squared norm +inf where not visible), fp16 as stored.

    A video that cannot be prepared raises, or with ``errors`` given is recorded there
    (``{name: message}``) and left out. Videos are taken ``block`` at a time."""
    dev = torch.device(device)
    out: list[VideoState] = []
    for b0 in range(0, len(videos), block):
        out += _prepare_block(videos[b0:b0 + block], cfg, dev, errors)
    return out


def _prepare_block(videos, cfg, dev, errors) -> list[VideoState]:
    good = []
    for sf in videos:
        if len(sf.vertices) == 0:
            err = f"video '{sf.sequence}' has no vertices"
            if errors is None:
                raise ValueError(err)
            errors[sf.sequence] = f"ValueError: {err}"
        else:
            good.append(sf)
    if not good:
        return []
    nv = len(good)
    counts = np.array([len(sf.vertices) for sf in good])
    Nr = int(counts.max())
    Vr = np.zeros((nv, Nr, 3), np.float32)
    for v, sf in enumerate(good):
        Vr[v, :counts[v]] = sf.vertices
    Vr_t = torch.from_numpy(Vr).to(dev)
    cnt_raw = torch.as_tensor(counts, device=dev)
    n_sel = np.minimum(counts, cfg.vertices) if cfg.vertices > 0 else counts
    N = int(n_sel.max())
    idx = (
        _subset_indices(Vr_t, cnt_raw, N)
        if cfg.vertices > 0
        else torch.arange(N, device=dev)[None].expand(nv, N)
        * (torch.arange(N, device=dev)[None] < cnt_raw[:, None])
    )
    cnt = torch.as_tensor(n_sel, device=dev)
    valid = torch.arange(N, device=dev)[None] < cnt[:, None]
    V = torch.gather(Vr_t, 1, idx[..., None].expand(nv, N, 3))
    c = (V * valid[..., None]).sum(1) / cnt[:, None]
    d = torch.where(valid, (V - c[:, None]).norm(dim=-1), torch.zeros_like(V[..., 0])).amax(1) * 2
    Vn = (V - c[:, None]) / d[:, None, None]
    Vn = torch.where(valid[..., None], Vn, Vn[:, :1])  # padding copies vertex 0
    diam = (
        _sqdist(Vn, Vn)
        .masked_fill_(~(valid[:, :, None] & valid[:, None]), 0)
        .amax((1, 2))
        .clamp_min(0)
        .sqrt()
    )
    levels = [cfg.coarse_vertices, cfg.prefilter_vertices or cfg.coarse_vertices]
    seq = farthest_points(Vn, cnt, min(N, max(levels)))
    subs_idx, subs_near = [], []
    for n in levels:
        sub = _subset_indices(Vn, cnt, n, seq)
        Vs = torch.gather(Vn, 1, sub[..., None].expand(*sub.shape, 3))
        if fused.available(dev):
            near = fused.nearest(Vn, Vs)[1]
        else:
            near = _sqdist(Vn, Vs).argmin(-1)
        subs_idx.append(sub)
        subs_near.append(near)
    frames = max(len(sf.features) for sf in good)
    K = 1 << max(0, frames - 1).bit_length()
    C = good[0].features.shape[2]
    c_np, d_np = c.double().cpu().numpy(), d.double().cpu().numpy()  # the one synchronisation
    states = []
    for v, sf in enumerate(good):
        if not np.isfinite(d_np[v]) or d_np[v] <= 0:
            err = f"video '{sf.sequence}': its vertices span no volume (size {d_np[v]})"
            if errors is None:
                raise ValueError(err)
            errors[sf.sequence] = f"ValueError: {err}"
            continue
        if sf.features.shape[2] != C:
            raise ValueError(f"video '{sf.sequence}' has {sf.features.shape[2]} feature channels, "
                             f"'{good[0].sequence}' has {C}: one chunk needs one backbone")
        n = int(n_sel[v])
        iv = idx[v, :n]
        f = torch.from_numpy(np.ascontiguousarray(sf.features)).to(dev)[:, iv]  # [k, n, C]
        vis = torch.from_numpy(np.asarray(sf.visible, dtype=bool)).to(dev)[:, iv]
        F = f.new_zeros((n, K, C))
        F[:, :len(f)] = f.transpose(0, 1)
        seen = torch.zeros((n, K), dtype=torch.bool, device=dev)
        seen[:, :len(f)] = vis.T
        F = F.view(n * K, C)
        if dev.type != "cuda":
            F = F.float()
        f2 = torch.where(seen.view(-1), F.float().square().sum(-1), torch.full((), float("inf"), device=dev))
        subs = []
        for sub, near in zip(subs_idx, subs_near):
            s_n = min(n, sub.shape[1])
            subs.append((sub[v, :s_n], near[v, :n]))
        states.append(VideoState(sf.sequence, Vn[v, :n], diam[v], c_np[v], float(d_np[v]), F, f2,
                                 torch.empty(0, dtype=torch.long, device=dev), subs, K))
    return states


def _sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distances ``‖x‖² + ‖y‖² − 2xyᵀ`` [B, n, m] of x [B, n, 3] and y [B, m, 3].

    One GEMM of the augmented points ``[x, ‖x‖², 1]·[−2y, 1, ‖y‖²]ᵀ`` (a single pass over the output;
    rounding may leave tiny negatives: clamp what is square-rooted)."""
    one_x = torch.ones_like(x[..., :1])
    one_y = torch.ones_like(y[..., :1])
    xa = torch.cat([x, x.square().sum(-1, keepdim=True), one_x], -1)
    ya = torch.cat([-2.0 * y, one_y, y.square().sum(-1, keepdim=True)], -1)
    return torch.bmm(xa, ya.transpose(1, 2))
