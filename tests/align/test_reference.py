"""Many-to-one reduction: medoid, paths, robust rotation synchronisation."""

import numpy as np
from scipy.spatial.transform import Rotation

from catpose.align.evaluate import rotation_errors
from catpose.align.reference import Edge, choose_reference, pair_graph, reduce_to_reference
from catpose.align.table import Alignment
from catpose.geometry import geodesic_deg


def make_edges(n=12, noise_deg=3.0, corrupt=4, seed=0):
    rng = np.random.default_rng(seed)
    truth = {
        f"v{i:02d}": Rotation.random(random_state=seed + i).as_matrix() for i in range(n)
    }  # video -> world
    edges = []
    for k, (a, b) in enumerate(pair_graph(sorted(truth), partners=0)):
        R_ab = truth[b].T @ truth[a]  # a's frame into b's frame
        noise = Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(noise_deg) / np.sqrt(3)).as_matrix()
        cost = 0.01 + 0.001 * rng.random()
        if k < corrupt:  # a few wrong pairs (e.g. symmetric flips)
            noise = Rotation.from_rotvec([0, 0, np.pi]).as_matrix()
            cost = 0.005  # and cheap: the path alone would trust them
        edges.append(Edge(a, b, Alignment(noise @ R_ab, rng.normal(size=3), 1.0, cost)))
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
    mk = lambda c: Alignment(np.eye(3), np.zeros(3), 1.0, c)  # noqa: E731
    edges = [
        Edge("a", "b", mk(1.0)),
        Edge("b", "c", mk(1.0)),
        Edge("a", "c", mk(5.0)),
        Edge("c", "d", mk(1.0)),
    ]
    assert choose_reference(edges) == "b"


def test_geodesic():
    R = Rotation.from_rotvec([0, 0, np.deg2rad(30)]).as_matrix()
    assert abs(geodesic_deg(np.eye(3), R) - 30) < 1e-9


def test_pair_graph_with_descriptors_has_nearest_and_long_range_edges():
    rng = np.random.default_rng(0)
    names = [f"s{i:03d}" for i in range(200)]
    centres = rng.normal(size=(10, 32))  # ten look-alike groups of twenty videos
    desc = {n: centres[i % 10] + 0.05 * rng.normal(size=32) for i, n in enumerate(names)}
    g = pair_graph(names, partners=6, descriptors=desc)
    same = [int(a[1:]) % 10 == int(b[1:]) % 10 for a, b in g]
    assert 0.3 < np.mean(same) < 0.9  # nearest partners are look-alikes; the rest reach other groups
    deg = np.zeros(len(names))
    adj = {n: set() for n in names}
    for a, b in g:
        deg[int(a[1:])] += 1
        deg[int(b[1:])] += 1
        adj[a].add(b)
        adj[b].add(a)
    assert deg.min() >= 4 and deg.mean() < 12
    seen, todo = {names[0]}, [names[0]]
    while todo:  # connected
        for m in adj[todo.pop()] - seen:
            seen.add(m)
            todo.append(m)
    assert seen == set(names)


def test_synchronisation_of_a_large_noisy_graph():
    """2,000 videos × 20 partners, 10 % of the edges random: every video within a few degrees."""
    from catpose.align.simulate import errors_deg, simulate

    names, gt, edges, wrong = simulate(2000, 20, 0.1, 1.0, seed=3)
    assert 0.08 < wrong < 0.12
    ref, synced, paths = reduce_to_reference(edges, {n: np.zeros(3) for n in names})
    e, e_path = errors_deg(synced, gt, ref), errors_deg(paths, gt, ref)
    assert len(e) == 2000 and np.median(e) < 1.0 and e.max() < 3.0
    assert np.mean(e_path < 30) < 0.95  # the paths alone go through wrong edges; synchronisation repairs them


def test_a_video_half_of_whose_pairs_see_it_flipped_is_named_ambiguous(tmp_path):
    """Video v05 has 4 pairs: two right, two that turned it by 180° (a symmetric object seen from one
    side). The table records each video's agreeing pairs; only v05 has no majority."""
    from catpose.align.reference import edge_support
    from catpose.align.table import ambiguous_videos, read_alignment, write_alignment

    rng = np.random.default_rng(1)
    truth = {f"v{i:02d}": Rotation.random(random_state=10 + i).as_matrix() for i in range(10)}
    others = [k for k in sorted(truth) if k != "v05"]
    pairs = [(a, b) for a, b in pair_graph(others, partners=0)] + [("v05", o) for o in others[:4]]
    flip = Rotation.from_rotvec([0, 0, np.pi]).as_matrix()
    edges = []
    for a, b in pairs:
        R_ab = truth[b].T @ truth[a]
        if a == "v05" and b in others[2:4]:
            R_ab = R_ab @ flip
        noise = Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(1.0)).as_matrix()
        edges.append(Edge(a, b, Alignment(noise @ R_ab, np.zeros(3), 1.0, 0.01)))
    ref, synced, _ = reduce_to_reference(edges, {k: np.zeros(3) for k in truth})
    support = edge_support(edges, synced)
    assert support["v05"] == (2, 4)
    assert all(support[k] == (8, 8) for k in others[4:])
    # v05's rotation follows one half of its pairs (a tie): two of its partners disagree with it
    assert sorted(support[k] for k in others[:4]) == [(8, 9), (8, 9), (9, 9), (9, 9)]
    path = tmp_path / "alignment.parquet"
    write_alignment(path, synced, ref, support)
    assert ambiguous_videos(path) == {"v05": (2, 4)}
    assert set(read_alignment(path)[0]) == set(truth)
    # a table written without the counts (as before they existed) names none
    write_alignment(path, synced, ref)
    assert ambiguous_videos(path) == {}
