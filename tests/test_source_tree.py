"""The tree stays readable from the door: no Python file of the repository over 500 lines (past that it is two
ideas), and no import cycle among the modules of the add-on, the engine or the CUDA extension. Read with ast,
nothing is imported; imports inside functions count too (a cycle that only a deferred import hides is still one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500
# Every Python file of these is held to MAX_LINES: the add-on, the engine, the kernels, tools, benchmarks, tests.
SOURCE_DIRS = ("blender_addon", "engine", "cuda_ext", "tools", "benchmarks", "tests")
SOURCE_FILES = ("build_addon.py",)
PACKAGES = ("blender_addon", "engine", "cuda_ext")


def source_files() -> list[Path]:
    files = [ROOT / name for name in SOURCE_FILES]
    for folder in SOURCE_DIRS:
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """(dotted module name, is a package's __init__) of a file under `root`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports (absolute or relative, at any depth of the file)."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        if "__pycache__" not in path.parts:
            files[module_name(path, root)] = path
    modules = {name for name, _ in files}
    graph: dict[str, set[str]] = {}
    for (name, is_package), path in files.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:    # `from pkg import module` names a module; else the source is one
                    target = f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    if target in modules:
                        found.add(target)
        found.discard(name)
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
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
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_python_file_is_over_500_lines():
    long = {}
    for path in source_files():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            long[path.relative_to(ROOT).as_posix()] = lines
    assert not long, f"split these in two (one idea per module): {long}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    found = cycles(import_graph(ROOT, package))
    assert found == [], f"modules that import each other (name the shared piece, import it from both): {found}"


def test_the_graph_sees_relative_deferred_and_package_imports(tmp_path):
    """The checks above can fail: a cycle through a relative import inside a function, and one through
    `from package import module`, are both found; a one-way chain is not a cycle."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    (pkg / "sub" / "c.py").write_text("import pkg.sub.d\n")
    (pkg / "sub" / "d.py").write_text("from pkg.sub import c\n")
    (pkg / "e.py").write_text("from pkg.a import x\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.e"] == {"pkg.a"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert sorted(sorted(c) for c in cycles(graph)) == [["pkg.a", "pkg.sub.b"], ["pkg.sub.c", "pkg.sub.d"]]
