"""The package's import graph: no cycles between modules (module-level and function-level imports alike),
the shared geometry layer below every stage, and every module importable with the names the others take from
it."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "catpose"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the catpose modules it imports anywhere in its body."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("catpose"):
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("catpose")]
            else:
                continue
            graph[m] |= {r for t in targets if (r := resolve(t)) and r != m and not m.startswith(r + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_geometry_layer_imports_no_stage_and_stages_take_shared_math_from_it():
    graph = import_graph()
    stages = ("catpose.data", "catpose.features", "catpose.align", "catpose.learn", "catpose.pose")
    for m, deps in graph.items():
        if m.startswith("catpose.geometry"):
            assert not {d for d in deps if d.startswith(stages)}, m
    # pose and learn no longer reach into features/align for projection, metrics or transforms
    for m in (
        "catpose.pose.estimate",
        "catpose.pose.evaluate",
        "catpose.learn.frames",
        "catpose.learn.template",
    ):
        assert "catpose.features.surface" not in graph[m] and "catpose.align.evaluate" not in graph[m], m
    # reading ground truth or computing features does not import the synthetic renderer (trimesh)
    for m in ("catpose.data.groundtruth", "catpose.features.evaluate", "catpose.features.runner"):
        assert "catpose.data.synth.generate" not in graph[m], m


def test_the_test_self_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def imported_names() -> dict[str, set[str]]:
    """Module → the names the package's modules take from it (``from catpose.m import name``, anywhere)."""
    mods = _modules()
    out: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in out:
                out[node.module] |= {a.name for a in node.names if f"{node.module}.{a.name}" not in mods}
    return out


NAMES = imported_names()


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_imports_and_has_the_names_others_take_from_it(module):
    mod = importlib.import_module(module)
    missing = sorted(n for n in NAMES[module] if not hasattr(mod, n))
    assert not missing, f"{module} lacks {missing}, which other catpose modules import from it"
    assert all(hasattr(mod, n) for n in getattr(mod, "__all__", ())), module


def test_the_names_check_sees_the_imports():
    # the stages take their configs from catpose.config and the CLI the job from catpose.run.runner (a
    # function-level import): the check above covers both kinds
    assert {"TrainConfig", "PoseConfig", "SweepConfig"} <= NAMES["catpose.config"]
    assert "main" in NAMES["catpose.run.runner"]


STAGE_PACKAGES = ("catpose.data", "catpose.features", "catpose.align", "catpose.learn", "catpose.pose")


def test_the_main_job_sits_above_the_stages_which_declare_themselves_through_its_graph_module():
    graph = import_graph()
    run_modules = {m for m in graph if m.startswith("catpose.run.")}
    assert {
        "catpose.run.config",
        "catpose.run.graph",
        "catpose.run.runner",
        "catpose.run.report",
    } <= run_modules
    # the runner, the report and the declaration layer know stages only through their declarations
    for m in ("catpose.run.graph", "catpose.run.runner", "catpose.run.report"):
        assert not {d for d in graph[m] if d.startswith(STAGE_PACKAGES)}, (m, graph[m])
    # the declaration layer is below the rest of catpose.run: a stage module imports nothing else of it
    assert not {d for d in graph["catpose.run.graph"] if d.startswith("catpose.run")}
    for m, deps in graph.items():
        used = {d for d in deps if d.startswith("catpose.run")}
        if m.startswith(STAGE_PACKAGES):
            assert used <= {"catpose.run.graph"}, (m, used)
            # only a package's stage module reaches the main job's layer; the stage engines do not
            assert not used or m.endswith(".stage"), (m, used)
        elif not m.startswith("catpose.run") and m != "catpose.cli":
            assert not used, (m, used)
    # every stage package declares its stages in its own stage module
    for pkg in STAGE_PACKAGES:
        assert f"{pkg}.stage" in graph, pkg


def test_pose_estimation_imports_no_training_code():
    """Stored outputs are a layer below the stages: a trained run is read by catpose.learn.checkpoint, so the
    pose modules import neither the training loop (catpose.learn.train) nor Ray Train."""
    import subprocess
    import sys

    graph = import_graph()
    for m in graph:
        if m.startswith("catpose.pose"):
            assert "catpose.learn.train" not in graph[m], m
    assert "catpose.learn.train" not in graph["catpose.learn.checkpoint"]
    code = ("import sys, catpose.pose.estimate, catpose.learn.checkpoint; "
            "print(sorted(m for m in sys.modules if m == 'catpose.learn.train' or "
            "m.startswith('ray.train')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=ROOT.parent, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_no_module_is_over_600_lines():
    """A module that grows past 600 lines does more than one job: split it (issue 28's rule)."""
    pkg = Path(__file__).resolve().parents[1] / "catpose"
    long = {
        str(p.relative_to(pkg)): n for p in pkg.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long
