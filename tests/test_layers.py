"""The floor plan: packages import only the layers below them, and no modules import each other in a circle.

Layers, bottom up: `core` -> `search_spaces` -> `hardware_profiles` -> `predictors` -> `nas` (`core/__init__.py`).
Every import statement of the project's own modules is read with `ast`, function-level ones too: an import kept
inside a function only to dodge a circle is still a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("core", "search_spaces", "hardware_profiles", "predictors", "nas")


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> tuple[set[str], list[tuple[str, str, str]]]:
    """(every module of the layered packages, (importer, imported module, 'file:line') per import statement)."""
    files = {_module(p): p for layer in LAYERS for p in (REPO / layer).rglob("*.py")}
    edges = []
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the module pkg.sub where there is one, else pkg
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            else:
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            edges += [(name, t, where) for t in targets if t.split(".")[0] in LAYERS]
    return set(files), edges


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_package_imports_a_layer_above_it():
    _, edges = project_imports()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = [f"{where}: {src} imports {dst} ({src.split('.')[0]} may import only "
              f"{', '.join(LAYERS[:rank[src.split('.')[0]] + 1])})"
              for src, dst, where in edges if rank[dst.split(".")[0]] > rank[src.split(".")[0]]]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    modules, edges = project_imports()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for src, dst, _ in edges:
        while dst and dst not in modules:   # `import pkg.mod.name` where name is no module
            dst = dst.rpartition(".")[0]
        if dst and dst != src:
            graph[src].add(dst)
    circles = _circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_checks_find_an_upward_import_and_a_circle():
    """The checks above can fail: a made-up graph with a circle is found, and the layer rule reads the pair."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []
    modules, edges = project_imports()
    assert {"core.errors", "search_spaces.blocks", "nas.run"} <= modules
    assert any(src == "nas.run" and dst.startswith("core.") for src, dst, _ in edges)
