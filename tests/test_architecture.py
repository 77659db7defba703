"""The architecture as tests: the packages are layered and imports point down them, never in a circle
(between modules or between packages, lazy imports included); a few modules sit at the top; functions fit
on a screen, modules stay small; and the extension tables list every kind that exists."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "trainkit"

# Bottom to top. A package may import its own modules and the packages below it, never one above.
# The top-level modules are placed as packages of one: `text` and `errors` under everything, `cli` on top.
PACKAGES: list[tuple[str, str]] = [
    ("text", "words and numbers for people: every message, table and progress line"),
    ("errors", "the error types, one per area, and the checks their messages share"),
    ("config", "safe YAML, spec parsing, the typed builder and --set, the loop's own sections"),
    ("store", "atomic writes, the checkpoint file format and its safe load, the run directory"),
    ("data", "the data section, the dataset types' table, datasets, transforms, samplers, loaders, caches"),
    ("models", "the model section, the model sources' table, building, optimizers, EMA, shapes"),
    ("sinks", "the log section, the sinks' table, one module per sink"),
    ("run", "a run's whole config; building a run, the loop, evaluation, devices, distributed"),
    ("trained", "loading a trained run from its checkpoint; evaluate, predict, features, export, report"),
    ("study", "many runs: the runs table, compare, the space file, sweeps on Optuna and their summary"),
    ("commands", "one module per command or close family"),
    ("cli", "argparse from the command table, errors to exit codes"),
    ("__main__", "python -m trainkit"),
]
ROOT_MODULES = {"__init__", "__main__", "cli", "errors", "text"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def module_name(path: Path, package: Path) -> str:
    """`trainkit/run/loop.py` -> `run.loop`; `trainkit/run/__init__.py` -> `run`; `trainkit/cli.py` -> `cli`."""
    parts = list(path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at module level or inside functions (`a.b` or `a` for a
    package's __init__)."""
    paths = sorted(package.rglob("*.py"))
    modules = {module_name(p, package) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] != package.name:
                    continue
                # the longest prefix that is a module: `from trainkit.run import config` -> run.config
                for cut in range(len(parts), 1, -1):
                    if ".".join(parts[1:cut]) in modules:
                        deps.add(".".join(parts[1:cut]))
                        break
        me = module_name(path, package)
        graph[me] = deps - {me}
    return graph


def package_of(module: str) -> str:
    return module.split(".")[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        out.setdefault(package_of(module), set()).update(package_of(d) for d in deps)
    return {p: deps - {p} for p, deps in out.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
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


def long_functions(path: Path, limit: int) -> list[str]:
    """`file:line name (N lines)` for each function or method longer than `limit` lines (its decorators and
    docstring included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = (node.end_lineno or node.lineno) - first + 1
            if n > limit:
                out.append(f"{path}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_the_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub.c import g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert graph == {"a": {"b"}, "b": {"sub.c"}, "sub": set(), "sub.c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "sub.c", "a"]
    assert find_cycle(package_graph(graph)) == ["a", "b", "sub", "a"]


def test_the_function_length_check_finds_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}")
    found = long_functions(tmp_path / "m.py", MAX_FUNCTION_LINES)
    assert len(found) == 1 and found[0].endswith("long (62 lines)"), found


def test_no_import_cycle_between_modules_or_packages():
    graph = import_graph(PACKAGE)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    cycle = find_cycle(package_graph(graph))
    assert cycle is None, "package import cycle: " + " -> ".join(cycle or [])


def test_every_package_has_a_floor_and_imports_point_down():
    floor = {name: i for i, (name, _) in enumerate(PACKAGES)}
    graph = import_graph(PACKAGE)
    packages = {package_of(m) for m in graph} - {"__init__"}
    assert packages == set(floor), f"place these in PACKAGES: {sorted(packages ^ set(floor))}"
    upward = [
        f"{m} imports {d}: {package_of(d)} sits above {package_of(m)}"
        for m, deps in graph.items()
        if m != "__init__"
        for d in deps
        if floor[package_of(d)] > floor[package_of(m)]
    ]
    assert not upward, upward


def test_few_modules_at_the_top_and_every_package_has_an_init():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == ROOT_MODULES and len(top) <= 8, top
    for folder in [p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"]:
        assert (folder / "__init__.py").is_file(), folder


def test_building_a_run_knows_nothing_of_loading_a_trained_one():
    graph = import_graph(PACKAGE)
    assert not any(d.startswith("trained") for m, deps in graph.items() if package_of(m) == "run" for d in deps)
    assert "store.checkpoint" not in graph["models.build"], "a model source builds; the store reads weights"
    assert not {d for d in graph["sinks.console"] if package_of(d) == "run"}, graph["sinks.console"]
    assert not graph["run.loop"] & {"sinks.visdom", "sinks.tensorboard", "sinks.console", "sinks.csv"}


def test_visdom_and_torchnet_are_each_imported_in_one_place():
    importers: dict[str, set[str]] = {"visdom": set(), "torchnet": set()}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.split(".")[0] in importers:
                    importers[name.split(".")[0]].add(module_name(path, PACKAGE))
    assert importers == {"visdom": {"sinks.visdom", "sinks.visdom_server"}, "torchnet": {"run.metrics"}}, importers


def test_functions_fit_on_a_screen_and_modules_stay_small():
    paths = sorted(PACKAGE.rglob("*.py"))
    long = [f for p in paths for f in long_functions(p, MAX_FUNCTION_LINES)]
    assert not long, long
    lines = {module_name(p, PACKAGE): len(p.read_text(encoding="utf-8").splitlines()) for p in paths}
    assert lines["run.loop"] <= 300, lines["run.loop"]
    assert max(lines.values()) <= MAX_MODULE_LINES, max(lines.items(), key=lambda kv: kv[1])


def public_names(package: Path) -> dict[str, list[str]]:
    """Each public top-level function or class name -> the modules that define one."""
    out: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                out.setdefault(node.name, []).append(module_name(path, package))
    return out


def test_no_two_public_functions_share_a_name():
    shared = {n: mods for n, mods in public_names(PACKAGE).items() if len(mods) > 1 and n != "main"}
    assert not shared, shared  # `main`: the entry point of each `python -m` module


def wide_dataclasses(package: Path, limit: int) -> set[str]:
    """The dataclasses with more than `limit` fields set by their constructor."""
    out = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in node.decorator_list):
                fields = [s for s in node.body if isinstance(s, ast.AnnAssign) and "init=False" not in ast.unparse(s)]
                if len(fields) > limit:
                    out.add(node.name)
    return out


def test_dataclasses_of_more_than_six_fields_are_built_by_keyword():
    wide = wide_dataclasses(PACKAGE, 6)
    assert {"Run", "Data", "Trained", "DataConfig"} <= wide, wide
    positional = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and node.args:
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in wide:
                    positional.append(f"{module_name(path, PACKAGE)}:{node.lineno} {name}(...)")
    assert not positional, positional


def kinds_defined(folder: Path, type_name: str) -> set[str]:
    """`module.NAME` for each module-level NAME = type_name(...) in the package's modules."""
    out = set()
    for path in folder.glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                if getattr(node.value.func, "id", None) == type_name:
                    out.update(f"{path.stem}.{t.id}" for t in node.targets if isinstance(t, ast.Name))
    return out


def table_entries(path: Path) -> set[str]:
    """The `module.NAME` values of the dict literal in a table module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            return {ast.unparse(v) for v in node.value.values}
    return set()


def test_every_kind_that_exists_is_in_its_table():
    # a dataset type, a model source, a sink and a command: each one module and one line in its table
    assert kinds_defined(PACKAGE / "data", "DatasetKind") <= table_entries(PACKAGE / "data" / "table.py") | {
        "mnist.kind"  # not a kind: the maker of the family's three
    }
    assert table_entries(PACKAGE / "data" / "table.py") == {
        "imagefolder.KIND", "csvfile.KIND", "cifar.CIFAR10", "cifar.CIFAR100", "mnist.MNIST", "mnist.FASHION_MNIST", "mnist.KMNIST"
    }  # fmt: skip
    assert kinds_defined(PACKAGE / "models", "ModelSource") == table_entries(PACKAGE / "models" / "table.py")
    assert kinds_defined(PACKAGE / "sinks", "SinkKind") == table_entries(PACKAGE / "sinks" / "table.py")
    assert kinds_defined(PACKAGE / "commands", "Command") == table_entries(PACKAGE / "cli.py")
