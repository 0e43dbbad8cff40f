"""The package's layering, checked on the source (no import is executed).

- No module imports a private name (``_x``) or a private module of another sub-package of
  ``isus`` (``isus.datasets._io`` from ``isus.eval``, say), and ``isus_cli`` imports nothing
  private from ``isus``. A private top-level module of ``isus`` (``isus._parallel``) is
  shared by its sub-packages and counts as theirs.
- No import cycle, neither between modules nor between sub-packages: every import counts,
  deferred ones (inside a function) included, since a cycle means each side needs the other
  whatever delays the import; ``TYPE_CHECKING`` blocks do not count.

docs/architecture.md describes the layering these tests keep.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("isus", "isus_cli")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name (a module or package of this project)
    name: str | None  # the name imported from it, if not a module
    runtime: bool  # not under ``if TYPE_CHECKING``
    top_level: bool  # executed when the importer is imported
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[Import] = []

    def visit(node: ast.AST, runtime: bool, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for n in child.body:
                    visit_one(n, False, top)
                for n in child.orelse:
                    visit_one(n, runtime, top)
                continue
            visit_one(child, runtime, top)

    def visit_one(node: ast.AST, runtime: bool, top: bool) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    out.append(Import(name, a.name, None, runtime, top, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] not in PACKAGES:
                return
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in known:
                    out.append(Import(name, sub, None, runtime, top, node.lineno))
                else:
                    out.append(Import(name, mod, a.name, runtime, top, node.lineno))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            visit(node, runtime, False)
        else:
            visit(node, runtime, top)

    visit(tree, True, True)
    return out


def all_imports() -> list[Import]:
    known = modules()
    return [imp for name, path in known.items() for imp in imports_of(name, path, known)]


def package_of(module: str) -> str:
    """``isus.index.cache`` -> ``isus.index``; a top-level module is its own package; the
    private top-level helpers of ``isus`` belong to ``isus`` as a whole."""
    parts = module.split(".")
    if parts[0] == "isus_cli":
        return "isus_cli"
    if len(parts) == 1:
        return "isus"
    if parts[1].startswith("_") and not (ROOT / "isus" / parts[1]).is_dir():
        return "isus"
    return ".".join(parts[:2])


def private_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        src, dst = package_of(imp.importer), package_of(imp.target)
        if src == dst or (dst == "isus" and src != "isus_cli" and src.startswith("isus")):
            continue  # its own package, or isus's shared private helpers used inside isus
        private_parts = [p for p in imp.target.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
        name_private = imp.name is not None and imp.name.startswith("_") and not imp.name.startswith("__")
        if private_parts or name_private:
            what = imp.target + (f".{imp.name}" if imp.name else "")
            bad.append(f"{imp.importer}:{imp.line} imports {what} (private to {dst})")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a self-loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
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
            if len(comp) > 1 or v in edges.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def module_edges(imports: list[Import]) -> dict[str, set[str]]:
    """Edges between modules. A package's ``__init__`` re-exporting its modules is an edge to
    them; importing ``isus.x.y`` runs ``isus/__init__`` first, which imports everything, so that
    implicit parent edge is left out (it would make every module part of one cycle)."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.runtime and imp.target != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.target)
    return edges


def package_edges(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        src, dst = package_of(imp.importer), package_of(imp.target)
        if imp.runtime and src != dst and src != "isus" and dst != "isus":
            # ``isus`` (its face and shared helpers) is imported by everyone and imports everyone
            edges.setdefault(src, set()).add(dst)
    return edges


def test_the_checker_sees_imports():
    """The checks below must be able to fail: the parser finds relative, deferred and
    TYPE_CHECKING imports, and each detector flags a constructed case."""
    imps = all_imports()
    assert len(imps) > 200
    assert any(not i.top_level for i in imps) and any(not i.runtime for i in imps)
    fake = [Import("isus.eval.io", "isus.datasets._io", None, True, True, 1),
            Import("isus.synth.simulated", "isus.index.index", "_pack_strings", True, False, 2),
            Import("isus_cli.eval", "isus._parallel", None, True, True, 3),
            Import("isus.index.build", "isus._parallel", "run_parallel", True, True, 4),
            Import("isus.index.build", "isus.index._x", None, True, True, 5)]
    assert len(private_violations(fake)) == 3
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_crosses_a_package():
    bad = private_violations(all_imports())
    assert not bad, "imports of another package's private names:\n" + "\n".join(bad)


def test_no_module_import_cycle():
    found = cycles(module_edges(all_imports()))
    assert not found, f"modules importing each other: {found}"


def test_no_package_import_cycle():
    found = cycles(package_edges(all_imports()))
    assert not found, f"sub-packages that import each other (deferred imports included): {found}"
