"""Simulated pair graphs with known ground truth, for the synchronisation's tests and benchmark.

A category of ``videos`` random ground-truth rotations, the pair graph of ``catpose align``
(:func:`~catpose.align.reference.pair_graph` with random descriptors), each edge's relative rotation
perturbed by ``noise_deg`` and a share ``wrong`` of the edges replaced by random rotations; edge costs
are random, so cheapest paths cannot tell wrong edges apart.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from catpose.align.reference import Edge, pair_graph
from catpose.align.table import Alignment


def simulate(videos: int, partners: int, wrong: float, noise_deg: float, seed: int = 0):
    """(names, ground-truth rotations, edges) of a simulated category."""
    rng = np.random.default_rng(seed)
    names = [f"v{i:05d}" for i in range(videos)]
    gt = dict(zip(names, Rotation.random(videos, random_state=seed).as_matrix()))
    desc = {n: rng.normal(size=16) for n in names}
    pairs = pair_graph(names, partners, seed=seed, descriptors=desc)
    noise = Rotation.from_rotvec(
        rng.normal(size=(len(pairs), 3)) * np.deg2rad(noise_deg) / np.sqrt(3)
    ).as_matrix()
    bad = rng.random(len(pairs)) < wrong
    rand = Rotation.random(len(pairs), random_state=seed + 1).as_matrix()
    edges = []
    for k, (a, b) in enumerate(pairs):
        R = rand[k] if bad[k] else noise[k] @ gt[b].T @ gt[a]  # a's frame -> b's frame
        edges.append(Edge(a, b, Alignment(R, np.zeros(3), 1.0, float(rng.random()))))
    return names, gt, edges, float(bad.mean())


def errors_deg(synced: dict, gt: dict, ref: str) -> np.ndarray:
    """Angle between each video's synchronised rotation and the truth, in the reference's frame."""
    out = []
    for n, T in synced.items():
        want = gt[ref].T @ gt[n]
        c = np.clip((np.trace(T.R.T @ want) - 1) / 2, -1, 1)
        out.append(np.degrees(np.arccos(c)))
    return np.asarray(out)
