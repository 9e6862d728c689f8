"""Rotation accuracy as the paper reports it: Acc@π/6, Acc@π/18 and the median geodesic error."""

from __future__ import annotations

import numpy as np


def pose_metrics(errors_deg) -> dict:
    """``n``, ``acc_pi_6``, ``acc_pi_18``, ``median_deg`` of geodesic errors in degrees [n].

    A non-finite error (NaN: the estimate failed) counts as wrong, as 180°; no errors give NaN metrics.
    """
    e = np.asarray(errors_deg, np.float64).reshape(-1)
    if len(e) == 0:
        return {"n": 0, "acc_pi_6": float("nan"), "acc_pi_18": float("nan"), "median_deg": float("nan")}
    filled = np.where(np.isfinite(e), e, 180.0)
    return {"n": len(e), "acc_pi_6": float((filled < 30).mean()), "acc_pi_18": float((filled < 10).mean()),
            "median_deg": float(np.median(filled))}
