"""Benchmark of stage 1 (surface features): frames/s of each backbone and of the whole per-video step.

For every backbone: frames/s batched (``--batch``) against the simplest baseline, one frame at a time,
in the same run. For DINOv2 (random weights: the speed does not depend on them): the FLOPs per frame
(counted from the architecture) and the fraction of the device's limit, taken as the FLOP/s of a
large matmul measured in the same run and dtype. End to end: ``compute_surface_features`` on
synthetic videos (decode, backbone, projection, z-buffer visibility, sampling).

    python bench/features.py [--device auto] [--size 128] [--batch 16] [--out
    bench/results/features-<device>.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, min_time: float = 1.0, warmup: int = 2) -> float:
    """Seconds per call (repeats until ``min_time`` has passed)."""
    for _ in range(warmup):
        fn()
    sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync(device)
        if time.perf_counter() - t0 > min_time:
            return (time.perf_counter() - t0) / n


def matmul_flops(device: str, dtype: torch.dtype) -> float:
    n = 4096 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device)


def vit_flops(dim: int, depth: int, input_size: int, patch: int = 14) -> float:
    """Multiply-adds x 2 of a ViT forward pass: patch embedding, qkv/proj/MLP, attention."""
    n = (input_size // patch) ** 2 + 1
    per_block = 24 * n * dim * dim + 4 * n * n * dim
    return 2 * n * 3 * patch * patch * dim + depth * per_block


def bench_backbones(device: str, size: int, batch: int) -> list[dict]:
    from catpose.features.backbones import DINOV2_SPECS, ColorSift, DinoV2, RandomCNN

    rows = []
    cands = [("colorsift", ColorSift(), None), ("random_cnn", RandomCNN(), None)]
    for arch in ("dinov2_vits14", "dinov2_vitb14"):
        cands.append((arch, DinoV2(arch, input_size=448), DINOV2_SPECS[arch]))
    peak = {}
    for name, model, spec in cands:
        model = model.to(device).eval()
        dtypes = [torch.float32] + (
            [torch.bfloat16] if spec is not None and device.startswith("cuda") else []
        )
        for dtype in dtypes:
            x = torch.rand(batch, 3, size, size, device=device)

            def run(inp):
                with (
                    torch.no_grad(),
                    torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32),
                ):
                    return model(inp)

            t_batch = timed(lambda: run(x), device)
            t_one = timed(lambda: run(x[:1]), device)
            row = {"backbone": name, "dtype": str(dtype).replace("torch.", ""), "batch": batch, "image": size,
                   "frames_per_s": round(batch / t_batch, 2), "baseline_one_frame_per_s": round(1 / t_one, 2),
                   "speedup_vs_baseline": round(t_one * batch / t_batch, 2)}
            if spec is not None:
                if dtype not in peak:
                    peak[dtype] = matmul_flops(device, dtype)
                fl = vit_flops(spec.dim, spec.depth, 448)
                row.update({"input": 448, "gflop_per_frame": round(fl / 1e9, 1),
                            "tflop_per_s": round(fl * batch / t_batch / 1e12, 3),
                            "matmul_limit_tflop_per_s": round(peak[dtype] / 1e12, 2),
                            "fraction_of_limit": round(fl * batch / t_batch / peak[dtype], 3)})
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bench_end_to_end(device: str, size: int) -> dict:
    from catpose.config import SynthConfig
    from catpose.data.co3d import Co3dCategory
    from catpose.data.synth.generate import generate
    from catpose.features.backbones import ColorSift
    from catpose.features.surface import compute_surface_features

    tmp = Path(tempfile.mkdtemp(prefix="catpose_bench_feat_"))
    try:
        generate(SynthConfig(workers=0, out=tmp, category=("car",), videos=6, frames=8, size=size))
        cat = Co3dCategory(tmp, "car")
        bb = ColorSift().to(device)
        compute_surface_features(cat[cat.sequence_names[0]], bb, 1000, 8, 8, device)  # warm-up
        t0 = time.perf_counter()
        for name in cat.sequence_names:
            compute_surface_features(cat[name], bb, 1000, 8, 8, device)
        sync(device)
        dt = time.perf_counter() - t0
        return {
            "backbone": "colorsift",
            "videos": len(cat),
            "frames_per_video": 8,
            "vertices": 1000,
            "image": size,
            "frames_per_s": round(8 * len(cat) / dt, 2),
            "videos_per_s": round(len(cat) / dt, 3),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 numbers are fp32
        name = torch.cuda.get_device_name()
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    res = {"device": name, "torch": torch.__version__, "backbones": bench_backbones(device, a.size, a.batch),
           "end_to_end": bench_end_to_end(device, a.size)}
    print(json.dumps(res["end_to_end"]))
    out = Path(
        a.out
        or Path(__file__).parent
        / "results"
        / f"features-{'gpu' if device.startswith('cuda') else 'cpu'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
