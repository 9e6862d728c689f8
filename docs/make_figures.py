"""Draws docs/images/pipeline.png: the stages of the main job, what runs them on Ray, where their
outputs go, and which dashboard shows each. ``python docs/make_figures.py``."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

STAGES = [
    ("synth / ingest", "Ray tasks per video\n(Embree / pycolmap)", "data/ (CO3D layout)"),
    ("shard", "pyarrow", "shards/ category=*/part-*.parquet"),
    ("features", "Ray tasks per video\n(0.25 GPU each)", "features/<cat>/<seq>.npz"),
    ("tune (optional)", "Ray Tune: α × τ trials", "tune/<cat>/ best_config.yaml"),
    ("align", "Ray tasks: chunks of pairs", "align/<cat>/alignment.parquet"),
    (
        "train",
        "Ray Train TorchTrainer (DDP)\n+ Ray Data pipeline",
        "train/train-<cat>/ checkpoints, model.pt",
    ),
]
DASH = {
    "synth / ingest": "Ray dashboard :8265 (Jobs, Tasks, logs)",
    "features": "Ray dashboard :8265 + progress bars",
    "tune (optional)": "Tune trial table; tensorboard --logdir tune/<cat>/sweep-<cat>",
    "align": "Ray dashboard :8265 + progress bar",
    "train": "tensorboard --logdir train/train-<cat>/tensorboard; Ray dashboard (Train, Data)",
}


def main() -> None:
    fig, ax = plt.subplots(figsize=(12, 6.2))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, len(STAGES) + 1.2)
    ax.axis("off")
    for title, x in (("stage", 0.2), ("runs as", 2.4), ("writes (folder or s3:// store)", 4.9),
                     ("watch it in", 8.2)):
        ax.text(x, len(STAGES) + 0.75, title, fontsize=10, weight="bold")
    for i, (name, how, out) in enumerate(STAGES):
        y = len(STAGES) - i - 0.2
        ax.add_patch(
            FancyBboxPatch((0.15, y - 0.32), 2.0, 0.64, boxstyle="round,pad=0.02", fc="#dbe9f6", ec="#3b6ea5")
        )
        ax.text(1.15, y, name, ha="center", va="center", fontsize=10)
        ax.text(2.4, y, how, va="center", fontsize=8.5)
        ax.text(4.9, y, out, va="center", fontsize=8.5, family="monospace")
        ax.text(8.2, y, DASH.get(name, ""), va="center", fontsize=8, wrap=True)
        if i:
            ax.annotate(
                "", (1.15, y + 0.33), (1.15, y + 0.67), arrowprops=dict(arrowstyle="->", color="#3b6ea5")
            )
    ax.text(0.2, 0.1, "Every stage resumes from its outputs; pipeline_manifest.json records each stage's "
                      "status and "
            "time, report.md and plots/ the results.", fontsize=8.5, style="italic")
    out = Path(__file__).parent / "images" / "pipeline.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
