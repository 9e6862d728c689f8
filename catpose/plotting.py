"""Figures as PNG bytes, so that every stage can write its plots to its store (a folder or S3).

matplotlib is imported inside the function: it is needed only where a figure is drawn, and its import
costs a second that Ray tasks and the CLI should not pay.
"""

from __future__ import annotations

import io


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (for stores that may be on S3); closes the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
