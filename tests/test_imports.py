"""The package's structure, read from its source with `ast`: no import cycles, and every import
points down the layers of the code map (docs/development.md). Every import statement counts:
at module level, inside functions (they run later, but the dependency is the same) and under
`TYPE_CHECKING`."""

from __future__ import annotations

import ast
from collections import deque
from itertools import pairwise
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tuning"

# The layers, top first: a module imports from its own entry (a subpackage, or a module) or from
# a lower layer, never from a higher one nor from a sibling entry of its own layer (siblings are
# independent: transfer never imports study or export). A new top-level module or subpackage is
# placed here and in the code map.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tuning.cli", "tuning"),  # the command, and the package's lazily imported entry points
    ("tuning.summaries", "tuning.dashboard"),
    ("tuning.export",),
    ("tuning.study", "tuning.transfer"),
    ("tuning.model",),
    ("tuning.training", "tuning.images"),
    ("tuning.publish", "tuning.records"),
    ("tuning.artifacts", "tuning.storage", "tuning.protocol"),
    ("tuning.device", "tuning.reconnect"),
    (
        "tuning.backend",
        "tuning.typed_json",
        "tuning.console",
        "tuning.hp",
        "tuning.figures",
        "tuning.notes",
        "tuning.memory",
    ),
    ("tuning.errors",),  # every layer may raise them
)

Graph = dict[str, dict[str, str]]  # module -> {imported module: "file:line" of the import}


def modules(package: Path) -> dict[str, Path]:
    """Every module of `package` by dotted name (a package is its `__init__.py`)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(package: Path) -> Graph:
    """Which of the package's modules each module imports, anywhere in its source. `from a
    import b` is module `a.b` where that is a module, else `a`; relative imports are resolved."""
    known = modules(package)
    graph: Graph = {}
    for name, path in known.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                while target not in known and "." in target:  # `import a.b.c` of a name in a.b
                    target = target.rsplit(".", 1)[0]
                if target in known and target != name:
                    where = f"{path.relative_to(package.parent)}:{node.lineno}"
                    edges.setdefault(target, where)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) through each strongly
    connected set of modules (Tarjan's algorithm); empty when the graph is acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_loop(graph, min(component), component) for component in components]


def _loop(graph: Graph, start: str, within: set[str]) -> list[str]:
    """The shortest path from `start` back to itself inside `within` (breadth first)."""
    came_from: dict[str, str] = {}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        for target in sorted(graph[node]):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if target in within and target not in came_from:
                came_from[target] = node
                todo.append(target)
    raise AssertionError(f"no loop through {start}")  # a strongly connected set always has one


def describe(graph: Graph, loop: list[str]) -> str:
    """'a -> b -> a (a.py:3, b.py:9)': a cycle and where each of its imports is."""
    places = [graph[a][b] for a, b in pairwise(loop)]
    return f"{' -> '.join(loop)} ({', '.join(places)})"


def layer_of(module: str) -> tuple[int, str] | None:
    """The layer (0 at the top) and the entry of `module`; None where it is not placed."""
    root = PACKAGE.name
    for level, entries in enumerate(LAYERS):
        for entry in entries:
            if module == entry or (entry != root and module.startswith(entry + ".")):
                return level, entry
    return None


def upward_imports(graph: Graph) -> list[str]:
    """Each import that points up the layers or sideways to a sibling, as 'file:line: a
    imports b (...)'."""
    found = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        for target, where in sorted(targets.items()):
            there = layer_of(target)
            if here is None or there is None or here[1] == there[1] or here[0] < there[0]:
                continue
            way = "a sibling" if here[0] == there[0] else "a layer above"
            found.append(f"{where}: {module} imports {target}, {way} ({there[1]})")
    return found


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50  # the whole package was read
    found = [describe(graph, loop) for loop in cycles(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_cycle_finder_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.low import VALUE\n")
    (package / "sub" / "low.py").write_text("VALUE = 1\n\ndef late():\n    from .. import top\n")
    (package / "top.py").write_text("from pkg.sub import low\n")
    (package / "alone.py").write_text("import os\nfrom pkg import top\n")
    graph = import_graph(package)
    assert graph["pkg.alone"] == {"pkg.top": "pkg/alone.py:2"}
    assert [describe(graph, loop) for loop in cycles(graph)] == [
        "pkg.sub.low -> pkg.top -> pkg.sub.low (pkg/sub/low.py:4, pkg/top.py:1)"
    ]


def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = sorted(m for m in import_graph(PACKAGE) if layer_of(m) is None)
    assert unplaced == [], f"place these in tests/test_imports.py LAYERS: {unplaced}"


def test_every_import_points_down_the_layers() -> None:
    found = upward_imports(import_graph(PACKAGE))
    assert found == [], "imports running back up:\n" + "\n".join(found)


@pytest.mark.parametrize("higher", ["tuning.study", "tuning.export"])
def test_transfer_never_reaches_study_or_export(higher: str) -> None:
    """Transfer reads an exported model through its card; it never needs the code that made
    it, not even through another module or an import inside a function."""
    graph = import_graph(PACKAGE)
    reached = {m for m in graph if m.startswith("tuning.transfer")}
    todo = list(reached)
    while todo:
        for target in graph[todo.pop()]:
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert {"tuning.model.card", "tuning.training.cv"} <= reached
    assert sorted(m for m in reached if m == higher or m.startswith(higher + ".")) == []
