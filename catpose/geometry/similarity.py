"""Similarity transforms ``x' = s·R·x + t`` (column vectors), one or a batch.

One type for every such transform in catpose: a pair's alignment (video i's frame into video j's), a
video's absolute transform into the category reference, the synthetic ground truth (a video's world
frame into the canonical frame). Small and per video, so numpy in float64; the batched torch form used
inside the alignment search is :func:`apply_similarity`.

Written here rather than taken from a library: roma's transforms (``Rigid``, ``Affine``) have no
uniform scale with its own inverse and composition, and pytorch3d's ``Transform3d`` is an optional
extra that does not install on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Similarity:
    """``x' = scale · R · x + t``.

    R [..., 3, 3] (a rotation), t [..., 3], scale [...] (> 0; a float for a single transform); any
    leading batch shape, the same for all three. Methods return the same class (so a subclass with
    more fields, e.g. the alignment's :class:`catpose.align.search.Alignment`, keeps them).
    """

    R: np.ndarray
    t: np.ndarray
    scale: float | np.ndarray = 1.0

    def __post_init__(self):
        R = np.asarray(self.R, np.float64)
        t = np.asarray(self.t, np.float64)
        s = np.asarray(self.scale, np.float64)
        if R.shape[-2:] != (3, 3) or t.shape != R.shape[:-1] or s.shape not in ((), R.shape[:-2]):
            raise ValueError(f"Similarity needs R [..., 3, 3], t [..., 3], scale [...]; got R {R.shape}, "
                             f"t {t.shape}, scale {s.shape}")
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "scale", float(s) if s.ndim == 0 else s)

    @classmethod
    def identity(cls, **fields) -> Similarity:
        return cls(np.eye(3), np.zeros(3), 1.0, **fields)

    @property
    def _s(self) -> np.ndarray:
        return np.asarray(self.scale)[..., None, None]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``s·R·x + t`` for points x [..., N, 3] (batch dims broadcast with the transform's) or one point
        [3] → float64, the same shape."""
        x = np.asarray(x, np.float64)
        if x.ndim == 1:
            return self.apply(x[None])[..., 0, :]
        return (self._s * x) @ np.swapaxes(self.R, -1, -2) + self.t[..., None, :]

    def _evolve(self, R: np.ndarray, t: np.ndarray, scale) -> Similarity:
        """A copy with other R, t and scale (this transform's other fields kept), without re-validating
        what comes from validated values: composing along 150,000 graph edges must stay cheap."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        if not isinstance(scale, float):
            scale = float(scale) if np.ndim(scale) == 0 else scale
        new.__dict__.update(R=R, t=t, scale=scale)
        return new

    def compose(self, other: Similarity) -> Similarity:
        """``self ∘ other``: first ``other``, then ``self`` (this transform's other fields are kept)."""
        if self.R.ndim == 2 and other.R.ndim == 2:
            return self._evolve(
                self.R @ other.R, (self.scale * self.R) @ other.t + self.t, self.scale * other.scale
            )
        R = self.R @ other.R
        t = ((self._s * self.R) @ other.t[..., None])[..., 0] + self.t
        return self._evolve(R, t, np.asarray(self.scale) * np.asarray(other.scale))

    def inverse(self) -> Similarity:
        if self.R.ndim == 2:
            Rt = self.R.T
            return self._evolve(Rt, -(Rt @ self.t) / self.scale, 1.0 / self.scale)
        Rt = np.swapaxes(self.R, -1, -2)
        s = np.asarray(self.scale)
        return self._evolve(Rt, -(Rt @ self.t[..., None])[..., 0] / s[..., None], 1.0 / s)

    def matrix(self) -> np.ndarray:
        """The 4 × 4 homogeneous matrices [..., 4, 4]."""
        M = np.zeros(self.R.shape[:-2] + (4, 4))
        M[..., :3, :3] = self._s * self.R
        M[..., :3, 3] = self.t
        M[..., 3, 3] = 1.0
        return M

    def to_json(self) -> dict:
        return {"rotation": self.R.reshape(-1).tolist(), "translation": self.t.reshape(-1).tolist(),
                "scale": float(self.scale)}

    @classmethod
    def from_json(cls, d: dict, **fields) -> Similarity:
        return cls(
            np.reshape(d["rotation"], (3, 3)),
            np.asarray(d["translation"], np.float64),
            float(d["scale"]),
            **fields,
        )


def apply_similarity(V: torch.Tensor, s: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``T v = s·R·v + t`` for B hypotheses: V [N, 3], s [B], R [B, 3, 3], t [B, 3] → [B, N, 3]."""
    return s[:, None, None] * torch.einsum("bij,nj->bni", R, V) + t[:, None]
