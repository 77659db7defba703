"""The architecture as tests: imports point down the layers and never in a circle (lazy imports included),
every module has its place, and no module outgrows a screenful of concerns."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "trainkit"

# Bottom to top. A module may import modules of its own layer or of the layers below, never above.
LAYERS: list[tuple[str, set[str]]] = [
    ("errors and spec helpers", {"errors", "specs", "modelspec"}),
    ("the safe YAML reader", {"yamlio"}),
    ("schema and config", {"schema_train", "schema", "config"}),
    ("checkpoint file format and I/O", {"checkpoint"}),
    (
        "builders",
        {
            "devices",
            "distributed",
            "images",
            "filecheck",
            "samplers",
            "augment",
            "cache",
            "loaders",
            "data",
            "models",
            "optim",
            "shapes",
            "whiten",
            "ema",
            "metrics",
            "mixing",
        },
    ),
    (
        "the run: sinks, building a run, loading a trained one, the loop",
        {
            "sinks",
            "loggers",
            "plots",
            "tensorboard_sink",
            "rundir",
            "trained",
            "resuming",
            "pauses",
            "run",
            "engine",
            "evaluation",
            "smoke",
            "inference",
            "export",
            "report",
            "lr_find",
        },
    ),
    (
        "commands",
        {
            "cli",
            "launch",
            "__main__",
            "__init__",
            "digits",
            "visdom_assets",
            "visdom_server",
            "model_commands",
            "picture_commands",
        },
    ),
]


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at module level or inside functions."""
    modules = {p.stem for p in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == package.name and len(parts) > 1 and parts[1] in modules:
                    deps.add(parts[1])
        graph[path.stem] = deps - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_has_a_layer_and_imports_point_down():
    layer_of = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
    graph = import_graph(PACKAGE)
    assert set(graph) == set(layer_of), f"place these modules in LAYERS: {sorted(set(graph) ^ set(layer_of))}"
    upward = [
        f"{m} ({LAYERS[layer_of[m]][0]}) imports {d} ({LAYERS[layer_of[d]][0]})"
        for m, deps in graph.items()
        for d in deps
        if layer_of[d] > layer_of[m]
    ]
    assert not upward, upward


def test_the_config_layer_imports_no_builder_and_the_loop_names_no_sink():
    graph = import_graph(PACKAGE)
    for module in ("schema", "config", "checkpoint"):
        allowed = {"errors", "specs", "modelspec", "yamlio", "schema", "schema_train"}
        assert graph[module] <= allowed, (module, graph[module])
    assert not graph["engine"] & {"plots", "tensorboard_sink", "loggers"}, graph["engine"]
    # the modules that import visdom (its client; its server), and the one that imports torchnet
    importers: dict[str, set[str]] = {"visdom": set(), "torchnet": set()}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.split(".")[0] in importers:
                    importers[name.split(".")[0]].add(path.stem)
    assert importers == {"visdom": {"plots", "visdom_server"}, "torchnet": {"metrics"}}, importers


def test_module_sizes():
    lines = {p.stem: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert lines["engine"] <= 300, lines["engine"]
    assert max(lines.values()) <= 400, max(lines.items(), key=lambda kv: kv[1])
