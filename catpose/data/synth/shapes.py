"""Procedural object categories: every instance differs in shape, proportions and colours, but keeps
the category's semantic parts with a consistent appearance (wheels are dark, head lights bright at
the front, the mug's handle on its side...), so features can match parts across instances.

Canonical category frame (what the ground truth maps each video into):
x = the object's front (car: bonnet; mug: handle side; crate: its red and yellow quarters), y = left, z = up;
the object stands on the
plane z = 0 and its bounding box is centred on the z axis. Units are the object's own (a car is about
4 long, a mug about 0.1): the pipeline must be scale-free.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import trimesh


@dataclass
class Part:
    name: str
    mesh: trimesh.Trimesh
    albedo: np.ndarray  # (3,) in [0, 1]
    texture_amp: float = 0.45  # strength of the solid noise texture (SfM needs some)


@dataclass
class ObjectInstance:
    category: str
    parts: list[Part]
    params: dict[str, float] = field(default_factory=dict)

    def merged(self) -> tuple[trimesh.Trimesh, np.ndarray]:
        """One mesh of all parts and the part index of each face."""
        mesh = trimesh.util.concatenate([p.mesh for p in self.parts])
        face_part = np.concatenate([np.full(len(p.mesh.faces), i) for i, p in enumerate(self.parts)])
        return mesh, face_part

    @property
    def extent(self) -> float:
        """Bounding-box diagonal of the instance."""
        mesh, _ = self.merged()
        return float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))


def _box(extents, center) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(center))


def _cylinder(radius, height, center, axis="z", sections=40) -> trimesh.Trimesh:
    T = trimesh.transformations.translation_matrix(center)
    if axis == "y":
        T = T @ trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])
    elif axis == "x":
        T = T @ trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0])
    return trimesh.creation.cylinder(radius=radius, height=height, sections=sections, transform=T)


def _hsv(h, s, v) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def make_car(rng: np.random.Generator) -> ObjectInstance:
    """A car-like object: clearly asymmetric front/back (lights, bonnet, cabin set back)."""
    L = rng.uniform(3.6, 4.8)
    W = rng.uniform(1.6, 2.0)
    rw = rng.uniform(0.30, 0.42)  # wheel radius
    z0 = rw * rng.uniform(0.55, 0.8)  # body bottom
    hb = rng.uniform(0.5, 0.75)  # body height
    Lc = L * rng.uniform(0.42, 0.58)  # cabin length
    xc = -L * rng.uniform(0.04, 0.16)  # cabin set back from the centre
    hc = rng.uniform(0.4, 0.6)
    body_col = _hsv(rng.uniform(), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9))
    glass = _hsv(0.58 + rng.normal(0, 0.02), 0.35, 0.35 + rng.uniform(-0.05, 0.05))
    ztop = z0 + hb
    parts = [
        Part("body", _box([L, W, hb], [0, 0, z0 + hb / 2]), body_col, 0.4),
        Part("cabin", _box([Lc, W * 0.84, hc], [xc, 0, ztop + hc / 2]), glass, 0.35),
        Part("roof", _box([Lc * 0.9, W * 0.86, 0.06], [xc, 0, ztop + hc + 0.03]), body_col * 0.9, 0.4),
        Part(
            "grille",
            _box([0.04, W * 0.4, hb * 0.35], [L / 2 + 0.01, 0, z0 + hb * 0.45]),
            np.array([0.12, 0.12, 0.13]),
            0.5,
        ),
    ]
    for side in (1, -1):
        parts.append(
            Part(
                "headlight",
                _box([0.05, W * 0.2, hb * 0.22], [L / 2 + 0.015, side * W * 0.33, z0 + hb * 0.7]),
                np.array([1.0, 0.95, 0.7]),
                0.2,
            )
        )
        parts.append(
            Part(
                "taillight",
                _box([0.05, W * 0.18, hb * 0.2], [-L / 2 - 0.015, side * W * 0.34, z0 + hb * 0.72]),
                np.array([0.85, 0.08, 0.06]),
                0.2,
            )
        )
    xw = L / 2 - rw * rng.uniform(1.3, 1.7)
    for sx in (1, -1):
        for sy in (1, -1):
            parts.append(Part("wheel", _cylinder(rw, 0.24, [sx * xw, sy * (W / 2 - 0.08), rw], axis="y"),
                              np.array([0.09, 0.09, 0.1]), 0.5))
            parts.append(
                Part(
                    "hubcap",
                    _cylinder(rw * 0.5, 0.02, [sx * xw, sy * (W / 2 + 0.05), rw], axis="y"),
                    np.array([0.75, 0.75, 0.78]),
                    0.3,
                )
            )
    return ObjectInstance("car", parts, dict(length=L, width=W, wheel_radius=rw))


def make_mug(rng: np.random.Generator) -> ObjectInstance:
    """A mug-like object: rotationally symmetric but for its handle (on +x)."""
    r = rng.uniform(0.04, 0.055)
    h = rng.uniform(0.08, 0.12)
    wall = r * 0.1
    body_col = _hsv(rng.uniform(), rng.uniform(0.3, 0.85), rng.uniform(0.55, 0.95))
    outer = trimesh.creation.annulus(r_min=r - wall, r_max=r, height=h, sections=64,
                                     transform=trimesh.transformations.translation_matrix([0, 0, h / 2]))
    bottom_in = _cylinder(r - wall, wall, [0, 0, wall / 2], sections=64)
    band_h = h * rng.uniform(0.12, 0.2)
    band = trimesh.creation.annulus(
        r_min=r * 0.999,
        r_max=r * 1.012,
        height=band_h,
        sections=64,
        transform=trimesh.transformations.translation_matrix([0, 0, h * rng.uniform(0.55, 0.75)]),
    )
    R_major = h * rng.uniform(0.25, 0.33)
    handle = trimesh.creation.torus(major_radius=R_major, minor_radius=r * rng.uniform(0.12, 0.18),
                                    major_sections=40, minor_sections=16)
    handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))  # into the xz plane
    handle.apply_translation([r + R_major * 0.35, 0, h * 0.52])
    parts = [
        Part("body", outer, body_col, 0.35),
        Part("inside", bottom_in, body_col * 0.35, 0.3),
        Part("band", band, _hsv(rng.uniform(), 0.1, 0.95), 0.25),
        Part("handle", handle, body_col * 0.75, 0.35),
    ]
    return ObjectInstance("mug", parts, dict(radius=r, height=h))


def make_crate(rng: np.random.Generator) -> ObjectInstance:
    """A crate-like object whose shape is ambiguous: a box on a square footprint (turned by 90°, 180° or
    270° about z it has the same shape), told apart only by appearance — its four quarters have four
    different colours (front-left red, front-right yellow, back-right green, back-left blue), each
    quarter an exact quarter of the box, so the geometry is that of one plain box."""
    w = rng.uniform(0.4, 0.6)
    h = w * rng.uniform(0.6, 0.9)
    hues = {(1, 1): 0.0, (1, -1): 0.15, (-1, -1): 0.33, (-1, 1): 0.62}  # (front +x / back, left +y / right)
    parts = []
    for (sx, sy), hue in hues.items():
        col = _hsv(hue + rng.normal(0, 0.015), rng.uniform(0.7, 0.9), rng.uniform(0.7, 0.9))
        parts.append(Part("quarter", _box([w / 2, w / 2, h], [sx * w / 4, sy * w / 4, h / 2]), col, 0.3))
    return ObjectInstance("crate", parts, {"width": w, "height": h})


CATEGORIES: dict[str, Callable[[np.random.Generator], ObjectInstance]] = {"car": make_car, "mug": make_mug,
                                                                          "crate": make_crate}


def make_instance(category: str, rng: np.random.Generator) -> ObjectInstance:
    if category not in CATEGORIES:
        raise ValueError(f"unknown synthetic category {category!r}; choose from {sorted(CATEGORIES)}")
    inst = CATEGORIES[category](rng)
    # centre the bounding box on the z axis, standing on z = 0
    mesh, _ = inst.merged()
    lo, hi = mesh.bounds
    shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    for p in inst.parts:
        p.mesh.apply_translation(shift)
    return inst
