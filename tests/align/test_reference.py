"""Many-to-one reduction: medoid, paths, robust rotation synchronisation."""

import numpy as np
from scipy.spatial.transform import Rotation

from catpose.align.evaluate import geodesic_deg, rotation_errors
from catpose.align.reference import Edge, choose_reference, pair_graph, reduce_to_reference
from catpose.align.search import PairAlignment


def make_edges(n=12, noise_deg=3.0, corrupt=4, seed=0):
    rng = np.random.default_rng(seed)
    truth = {f"v{i:02d}": Rotation.random(random_state=seed + i).as_matrix() for i in range(n)}  # video -> world
    edges = []
    for k, (a, b) in enumerate(pair_graph(sorted(truth), partners=0)):
        R_ab = truth[b].T @ truth[a]  # a's frame into b's frame
        noise = Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(noise_deg) / np.sqrt(3)).as_matrix()
        cost = 0.01 + 0.001 * rng.random()
        if k < corrupt:  # a few wrong pairs (e.g. symmetric flips)
            noise = Rotation.from_rotvec([0, 0, np.pi]).as_matrix()
            cost = 0.005  # and cheap: the path alone would trust them
        edges.append(Edge(a, b, PairAlignment(noise @ R_ab, rng.normal(size=3), 1.0, cost)))
    return truth, edges


def test_pair_graph_all_or_partners():
    names = [f"s{i}" for i in range(20)]
    assert len(pair_graph(names)) == 190
    g = pair_graph(names, partners=5)
    assert len(g) < 190 and all(a < b for a, b in g)
    deg = {n: 0 for n in names}
    for a, b in g:
        deg[a] += 1
        deg[b] += 1
    assert min(deg.values()) >= 2


def test_synchronisation_beats_paths_with_wrong_edges():
    truth, edges = make_edges()
    cents = {k: np.zeros(3) for k in truth}
    ref, synced, paths = reduce_to_reference(edges, cents)
    gt = {k: v for k, v in truth.items()}  # video -> world is the ground truth up to one rotation
    e_sync = np.array(list(rotation_errors({k: T.R for k, T in synced.items()}, gt).values()))
    e_path = np.array(list(rotation_errors({k: T.R for k, T in paths.items()}, gt).values()))
    assert np.median(e_sync) < 3.0 and e_sync.max() < 6.0
    assert e_sync.max() < e_path.max()
    assert synced[ref].R.tolist() == np.eye(3).tolist()


def test_reference_is_the_medoid():
    mk = lambda c: PairAlignment(np.eye(3), np.zeros(3), 1.0, c)  # noqa: E731
    edges = [Edge("a", "b", mk(1.0)), Edge("b", "c", mk(1.0)), Edge("a", "c", mk(5.0)), Edge("c", "d", mk(1.0))]
    assert choose_reference(edges) == "b"


def test_geodesic():
    R = Rotation.from_rotvec([0, 0, np.deg2rad(30)]).as_matrix()
    assert abs(geodesic_deg(np.eye(3), R) - 30) < 1e-9
