"""Issue 28's device check: with default settings, ``catpose evaluate`` resolves its pose device to the
GPU on a CUDA machine, and the batched pose estimator's tensors live there.

    python bench/pose_device_default.py [--out bench/results/pose-device-default-gpu.json]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from results_io import write_result  # bench/results_io.py

from catpose.config import PoseEvalConfig
from catpose.devices import resolve_device


class TinyEncoder(torch.nn.Module):
    """A stand-in backbone (random weights): crops [B, 3, S, S] → feature maps [B, 16, S/4, S/4]."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 4, stride=4)

    def forward(self, x):
        return self.conv(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    cfg = PoseEvalConfig()
    res = {"default_device_setting": cfg.pose.device, "resolved": resolve_device(cfg.pose.device),
           "torch_cuda_available": torch.cuda.is_available(),
           "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        from catpose.pose.estimate import PoseEstimator

        rng = np.random.default_rng(0)
        V = rng.normal(size=(200, 3)).astype(np.float32)
        est = PoseEstimator(TinyEncoder().to(res["resolved"]), torch.randn(200, 16), V, None, 64, cfg.pose)
        res["estimator_device"] = str(est.cfg.device)
        res["theta_device"] = str(est.theta.device)
        images = [(rng.random((96, 128, 3)) * 255).astype(np.uint8) for _ in range(4)]
        boxes = [np.array([16, 16, 112, 80], dtype=np.float64)] * 4
        out = est.estimate_batch(images, bboxes=boxes)
        res["batch_results"] = [type(o).__name__ for o in out]
    except Exception as e:  # noqa: BLE001 — the resolution above is the check; this part is a bonus
        res["estimator_error"] = f"{type(e).__name__}: {e}"
    write_result(res, a.out, "pose-device-default-gpu.json")


if __name__ == "__main__":
    main()
