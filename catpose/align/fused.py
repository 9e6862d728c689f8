"""Fused CUDA kernels (Triton) of the alignment engine's hot loops, each with its plain-torch twin.

The plain-torch functions of :mod:`catpose.align.batched` stay the CPU path and the reference the tests
compare these against (``tests/align/test_fused.py``; on the GPU run with ``--device cuda``). Each
kernel computes a distance and its minimum in registers, so the [.., N, M] distance tensors the torch
path writes to memory never exist:

* :func:`appearance_min` — ``A[p, i, j] = min_{k,l} ‖f_i^k − f̄_j^l‖`` from vertex-major features
  (row ``i·K + k``; fp16 operands on the tensor cores, fp32 accumulation and output: the stored
  features are fp16, so the products are exact and only the summation order differs from fp32);
* :func:`coarse_cost` — ``D`` of every pair × rotation of the coarse search (scale 1, no translation);
* :func:`nearest` — nearest neighbour (squared distance and index) of each point of X among Y, per batch;
* :func:`farthest_points` — farthest point sampling of many clouds at once (start at index 0).

``available(device)`` says whether they can run (CUDA and Triton importable).
"""

from __future__ import annotations

import inspect
import os

import torch

try:  # Triton ships with CUDA builds of torch; CPU-only installs (CI) have none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on CPU-only machines
    triton = None


ENABLED = os.environ.get("CATPOSE_FUSED", "1") != "0"
"""Whether the engine uses the kernels where they can run (``CATPOSE_FUSED=0``: the plain-torch path on
CUDA too, as the tests and the benchmark's comparison do)."""


def available(device) -> bool:
    """Whether the fused kernels run on ``device``: a CUDA device, Triton importable, :data:`ENABLED`."""
    return ENABLED and triton is not None and torch.device(device).type == "cuda"


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


if triton is not None:

    @triton.jit
    def _appearance_kernel(F, N2, IA, IB, OUT, NT, N_OUT, C, ROWS,
                           K: tl.constexpr, BV: tl.constexpr, BK: tl.constexpr):
        t = tl.program_id(0)
        p = tl.program_id(1)
        ti = t // NT
        tj = t % NT
        va = tl.load(IA + p).to(tl.int64)
        vb = tl.load(IB + p).to(tl.int64)
        BM: tl.constexpr = BV * K
        ra = ti * BM + tl.arange(0, BM)
        rb = tj * BM + tl.arange(0, BM)
        ks = tl.arange(0, BK)
        pa = F + va * ROWS * C + ra[:, None].to(tl.int64) * C
        pb = F + vb * ROWS * C + rb[:, None].to(tl.int64) * C
        acc = tl.zeros((BM, BM), dtype=tl.float32)
        for k0 in range(0, C, BK):
            km = (k0 + ks) < C
            a = tl.load(pa + (k0 + ks)[None, :], mask=km[None, :], other=0.0)
            b = tl.load(pb + (k0 + ks)[None, :], mask=km[None, :], other=0.0)
            acc = tl.dot(a, tl.trans(b), acc)
        na = tl.load(N2 + va * ROWS + ra)
        nb = tl.load(N2 + vb * ROWS + rb)
        d2 = na[:, None] + nb[None, :] - 2.0 * acc
        d2 = tl.reshape(d2, (BV, K, BV, K))
        m = tl.min(tl.min(d2, axis=3), axis=1)  # [BV, BV]
        ii = ti * BV + tl.arange(0, BV)
        jj = tj * BV + tl.arange(0, BV)
        mask = (ii[:, None] < N_OUT) & (jj[None, :] < N_OUT)
        out = tl.sqrt(tl.maximum(m, 0.0))
        tl.store(OUT + p.to(tl.int64) * N_OUT * N_OUT + ii[:, None] * N_OUT + jj[None, :], out, mask=mask)

    # few configurations, so that a fresh worker process compiles little on its first chunk; the choice
    # is kept on disk where this Triton can (cache_results)
    _AT = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}

    @triton.autotune(configs=[triton.Config({"BR": br}, num_warps=w) for br, w in ((16, 2), (16, 4))],
                     key=["n", "m", "RC"], **_AT)
    @triton.jit
    def _coarse_kernel(X, Y, YP, XPB, WG, WGB, WA, WAB, SCALE, ROT, CAND, D, n, m, RC, alpha,
                       HAS_CAND: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, BR: tl.constexpr):
        rb = tl.program_id(0)
        p = tl.program_id(1).to(tl.int64)
        i = tl.arange(0, BN)
        j = tl.arange(0, BM)
        mi = i < n
        mj = j < m
        xb = X + p * n * 3 + i * 3
        x0 = tl.load(xb, mask=mi, other=0.0)
        x1 = tl.load(xb + 1, mask=mi, other=0.0)
        x2 = tl.load(xb + 2, mask=mi, other=0.0)
        yb = Y + p * m * 3 + j * 3
        y0 = tl.load(yb, mask=mj, other=0.0)
        y1 = tl.load(yb + 1, mask=mj, other=0.0)
        y2 = tl.load(yb + 2, mask=mj, other=0.0)
        ypb = YP + p * n * 3 + i * 3  # ȳ_ψ(i)
        q0 = tl.load(ypb, mask=mi, other=0.0)
        q1 = tl.load(ypb + 1, mask=mi, other=0.0)
        q2 = tl.load(ypb + 2, mask=mi, other=0.0)
        xpbb = XPB + p * m * 3 + j * 3  # x_ψ̄(j)
        u0 = tl.load(xpbb, mask=mj, other=0.0)
        u1 = tl.load(xpbb + 1, mask=mj, other=0.0)
        u2 = tl.load(xpbb + 2, mask=mj, other=0.0)
        wg = tl.load(WG + p * n + i, mask=mi, other=0.0) * (1.0 - alpha)
        wa = tl.load(WA + p * n + i, mask=mi, other=0.0) * alpha
        wgb = tl.load(WGB + p * m + j, mask=mj, other=0.0) * (1.0 - alpha)
        wab = tl.load(WAB + p * m + j, mask=mj, other=0.0) * alpha
        scale = tl.load(SCALE + p)
        valid = mi[:, None] & mj[None, :]
        for r in range(BR):
            rr = rb * BR + r
            ok = rr < RC
            rc = tl.minimum(rr, RC - 1)
            if HAS_CAND:
                ridx = tl.load(CAND + p * RC + rc).to(tl.int64)
            else:
                ridx = rc.to(tl.int64)
            rp = ROT + ridx * 9
            r00 = tl.load(rp)
            r01 = tl.load(rp + 1)
            r02 = tl.load(rp + 2)
            r10 = tl.load(rp + 3)
            r11 = tl.load(rp + 4)
            r12 = tl.load(rp + 5)
            r20 = tl.load(rp + 6)
            r21 = tl.load(rp + 7)
            r22 = tl.load(rp + 8)
            t0 = r00 * x0 + r01 * x1 + r02 * x2
            t1 = r10 * x0 + r11 * x1 + r12 * x2
            t2 = r20 * x0 + r21 * x1 + r22 * x2
            e0 = t0[:, None] - y0[None, :]
            e1 = t1[:, None] - y1[None, :]
            e2 = t2[:, None] - y2[None, :]
            d2 = tl.where(valid, e0 * e0 + e1 * e1 + e2 * e2, float("inf"))
            gf = tl.where(mi, tl.sqrt(tl.min(d2, axis=1)), 0.0)
            gb = tl.where(mj, tl.sqrt(tl.min(d2, axis=0)), 0.0)
            af = tl.sqrt((t0 - q0) * (t0 - q0) + (t1 - q1) * (t1 - q1) + (t2 - q2) * (t2 - q2))
            s0 = r00 * u0 + r01 * u1 + r02 * u2 - y0
            s1 = r10 * u0 + r11 * u1 + r12 * u2 - y1
            s2 = r20 * u0 + r21 * u1 + r22 * u2 - y2
            ab = tl.sqrt(s0 * s0 + s1 * s1 + s2 * s2)
            tot = (
                tl.sum(wg * gf, axis=0)
                + tl.sum(wgb * gb, axis=0)
                + tl.sum(wa * af, axis=0)
                + tl.sum(wab * ab, axis=0)
            )
            tl.store(D + p * RC + rc, tot * scale, mask=ok)

    @triton.autotune(
        configs=[
            triton.Config({"BI": bi, "BJ": bj}, num_warps=w) for bi, bj, w in ((64, 32, 4), (128, 32, 8))
        ],
        key=["n", "m"],
        **_AT,
    )
    @triton.jit
    def _nearest_kernel(X, Y, DIST, IDX, n, m, HX, HY, BI: tl.constexpr, BJ: tl.constexpr):
        ib = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        i = ib * BI + tl.arange(0, BI)
        mi = i < n
        xb = X + (b // HX) * n * 3 + i * 3
        x0 = tl.load(xb, mask=mi, other=0.0)
        x1 = tl.load(xb + 1, mask=mi, other=0.0)
        x2 = tl.load(xb + 2, mask=mi, other=0.0)
        # running minimum per (row, lane): elementwise in the loop, one reduction at the end
        best = tl.full((BI, BJ), float("inf"), tl.float32)
        arg = tl.zeros((BI, BJ), dtype=tl.int32)
        yb = Y + (b // HY) * m * 3
        for j0 in range(0, m, BJ):
            j = j0 + tl.arange(0, BJ)
            mj = j < m
            y0 = tl.load(yb + j * 3, mask=mj, other=float("inf"))
            y1 = tl.load(yb + j * 3 + 1, mask=mj, other=0.0)
            y2 = tl.load(yb + j * 3 + 2, mask=mj, other=0.0)
            e0 = x0[:, None] - y0[None, :]
            e1 = x1[:, None] - y1[None, :]
            e2 = x2[:, None] - y2[None, :]
            d2 = e0 * e0 + e1 * e1 + e2 * e2
            upd = d2 < best
            best = tl.where(upd, d2, best)
            arg = tl.where(upd, j[None, :], arg)
        dmin = tl.min(best, axis=1)
        # the lowest index among the lanes that reach the minimum (as a sequential scan would)
        amin = tl.min(tl.where(best == dmin[:, None], arg, 2147483647), axis=1)
        tl.store(DIST + b * n + i, dmin, mask=mi)
        tl.store(IDX + b * n + i, amin.to(tl.int64), mask=mi)

    @triton.jit
    def _fps_kernel(X, COUNT, OUT, N, S, BLOCK: tl.constexpr):
        v = tl.program_id(0).to(tl.int64)
        cnt = tl.load(COUNT + v)
        i = tl.arange(0, BLOCK)
        mi = i < cnt
        xb = X + v * N * 3 + i * 3
        x0 = tl.load(xb, mask=mi, other=0.0)
        x1 = tl.load(xb + 1, mask=mi, other=0.0)
        x2 = tl.load(xb + 2, mask=mi, other=0.0)
        dist = tl.where(mi, float("inf"), -1.0)
        cur = tl.program_id(0) * 0
        tl.store(OUT + v * S, cur.to(tl.int64))
        for s in range(1, S):
            sel = i == cur
            c0 = tl.sum(tl.where(sel, x0, 0.0), axis=0)
            c1 = tl.sum(tl.where(sel, x1, 0.0), axis=0)
            c2 = tl.sum(tl.where(sel, x2, 0.0), axis=0)
            d = (x0 - c0) * (x0 - c0) + (x1 - c1) * (x1 - c1) + (x2 - c2) * (x2 - c2)
            dist = tl.where(mi, tl.minimum(dist, d), -1.0)
            cur = tl.argmax(dist, axis=0)
            tl.store(OUT + v * S + s, cur.to(tl.int64))


# --------------------------------------------------------------------------------------------------
# launchers


def appearance_min(F: torch.Tensor, n2: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, K: int, n_out: int
                   ) -> torch.Tensor:
    """``A[p, i, j] = sqrt(max(0, min_{k,l} n2[a, iK+k] + n2[b, jK+l] − 2·F[a, iK+k]·F[b, jK+l]))``.

    F [nv, NP·K, C] fp16 (vertex-major rows, NP a multiple of 128 / K), n2 [nv, NP·K] float32 squared
    norms (+inf on invisible and padded rows), ia, ib [P] long → A [P, n_out, n_out] float32."""
    _, rows, C = F.shape
    BV = 128 // K
    NP = rows // K
    assert NP % BV == 0 and K * BV == 128, (NP, K)
    NT_out = -(-n_out // BV)
    out = torch.empty((len(ia), n_out, n_out), device=F.device, dtype=torch.float32)
    if len(ia) == 0:
        return out
    # tiles past n_out are skipped: the grid covers only the output's tiles (NT_out² per pair)
    grid = (NT_out * NT_out, len(ia))
    _appearance_kernel_tiles(F, n2, ia, ib, out, NT_out, n_out, C, rows, K, BV, grid)
    return out


def _appearance_kernel_tiles(F, n2, ia, ib, out, NT, n_out, C, rows, K, BV, grid):
    _appearance_kernel[grid](
        F, n2, ia, ib, out, NT, n_out, C, rows, K=K, BV=BV, BK=64, num_warps=8, num_stages=3
    )


def coarse_cost(X, Y, YP, XPB, w_geo, w_geo_bar, w_app, w_app_bar, scale, rotations, alpha: float,
                candidates: torch.Tensor | None = None) -> torch.Tensor:
    """D of each pair for each rotation: X [P, n, 3] source, Y [P, m, 3] reference, YP = Y[ψ] [P, n, 3],
    XPB = X[ψ̄] [P, m, 3], weights [P, n] / [P, m] (0 on padding), scale [P] = 1 / (diam(V̄)·points),
    rotations [R, 3, 3]; candidates [P, Rc] (indices into rotations) or None (all) → D [P, R or Rc]."""
    P, n, _ = X.shape
    m = Y.shape[1]
    rot = rotations.reshape(-1, 9).float().contiguous()
    RC = candidates.shape[1] if candidates is not None else len(rot)
    D = torch.empty((P, RC), device=X.device, dtype=torch.float32)
    if P == 0:
        return D
    c = lambda x: x.float().contiguous()
    cand = candidates.contiguous() if candidates is not None else rot  # unused pointer when None
    grid = lambda meta: (triton.cdiv(RC, meta["BR"]), P)
    BN, BM = max(16, _pow2(n)), max(16, _pow2(m))
    _coarse_kernel[grid](
        c(X),
        c(Y),
        c(YP),
        c(XPB),
        c(w_geo),
        c(w_geo_bar),
        c(w_app),
        c(w_app_bar),
        c(scale),
        rot,
        cand,
        D,
        n,
        m,
        RC,
        float(alpha),
        HAS_CAND=candidates is not None,
        BN=BN,
        BM=BM,
    )
    return D


def nearest(X: torch.Tensor, Y: torch.Tensor, hx: int = 1, hy: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """For batch b, the nearest point of Y[b // hy] to each point of X[b // hx]: X [Bx, n, 3], Y [By, m, 3]
    (B = Bx·hx = By·hy) → (squared distance [B, n] float32, index [B, n] long)."""
    n, m = X.shape[1], Y.shape[1]
    B = X.shape[0] * hx
    dist = torch.empty((B, n), device=X.device, dtype=torch.float32)
    idx = torch.empty((B, n), device=X.device, dtype=torch.long)
    if B == 0 or n == 0:
        return dist, idx
    grid = lambda meta: (triton.cdiv(n, meta["BI"]), B)
    _nearest_kernel[grid](X.float().contiguous(), Y.float().contiguous(), dist, idx, n, m, hx, hy)
    return dist, idx


def farthest_points(X: torch.Tensor, count: torch.Tensor, n: int) -> torch.Tensor:
    """Farthest point sampling of each cloud X [B, N, 3] (its first count[b] points real), starting at
    index 0 → [B, n] long indices in selection order (a cloud of fewer than n points repeats its last)."""
    B, N, _ = X.shape
    out = torch.zeros((B, n), device=X.device, dtype=torch.long)
    if B == 0 or n == 0:
        return out
    _fps_kernel[(B,)](X.float().contiguous(), count.to(torch.int32).contiguous(), out, N, n,
                      BLOCK=max(16, _pow2(N)), num_warps=8 if N > 1024 else 4)
    return out
