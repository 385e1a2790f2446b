"""The package's import graph, read with `ast` (nothing is imported): no circles, and no upward imports.

Layers (docs/architecture.md), highest first; a module may import its own layer and the ones below it:

    cli / diagnostics                     the command (pixtral_quant/cli/); the measurement harness that runs
                                          conversions to measure them (pixtral_quant/diagnostics/)
    api                                   the Python API the CLI calls (pixtral_quant/api.py)
    convert                               checks + dispatch (pixtral_quant/convert.py)
    pipeline / export                     runtime and layer loop / the output run and the exporters
    schemes / mixed / capture / calibration / validate / engines / ...
    memory / loading / config / errors

Asserted here: (a) no cycle among modules (a strongly connected component of more than one module, or a module
importing itself); (b) nothing outside pixtral_quant/cli/, api.py and diagnostics/ (and convert.py itself) imports
`pixtral_quant.convert`, and nothing outside cli/ imports `pixtral_quant.cli`; (c) the very bottom, config.py and errors.py (every layer reads them), imports only
each other and two pure leaves: memory/units.py (sizes) and export/gguf/ftypes.py (llama.cpp's type table).

Edges: every `import` / `from ... import` anywhere in a module (module level and inside functions, relative
imports resolved); `from pkg import name` points at the submodule pkg.name when there is one, else at the
package's `__init__` (a module of its own). The implicit import of a parent package's `__init__` is not an
edge: Python runs it first, so a package re-exporting its submodules is no circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "pixtral_quant"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
# The very bottom and the only package modules it may import (besides the standard library and third parties).
BOTTOM = ("config", "errors")
BOTTOM_MAY_IMPORT = {f"{PACKAGE}.memory.units", f"{PACKAGE}.export.gguf.ftypes"}


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name → file for every .py under the package ('pkg.sub' for pkg/sub/__init__.py)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` names (relative levels resolved against `module`)."""
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `module` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {_known_prefix(a.name, known) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else _known_prefix(base, known))
    return {m for m in found if m}


def _known_prefix(name: str, known: set[str]) -> str:
    """The longest prefix of a dotted name that is a package module ('' for outside modules)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return ""


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the package modules it imports."""
    names = module_names(root)
    known = set(names)
    return {m: imports_of(m, p, known) for m, p in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _in(module: str, top: str) -> bool:
    name = f"{PACKAGE}.{top}"
    return module == name or module.startswith(name + ".")


def upward_imports(graph: dict[str, set[str]], targets: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """'importer -> imported' for every import of a module under `targets` from outside `allowed`."""
    return sorted(f"{m} -> {t}" for m, deps in graph.items() for t in deps
                  if any(_in(t, x) for x in targets) and not any(_in(m, x) for x in allowed))


def test_the_graph_is_read():
    """The reader sees the package (a guard against a test that passes because it read nothing)."""
    graph = import_graph()
    assert len(graph) > 50
    assert f"{PACKAGE}.memory.storage" in graph[f"{PACKAGE}.memory.inventory"]
    assert f"{PACKAGE}.cli.group" in graph[f"{PACKAGE}.cli"]  # `from .group import main` in cli/__init__


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_nothing_but_cli_imports_convert():
    graph = import_graph()
    assert upward_imports(graph, ("convert",), ("cli", "api", "convert", "diagnostics")) == []
    assert upward_imports(graph, ("cli",), ("cli",)) == []


def test_config_and_errors_import_nothing_above_them():
    graph = import_graph()
    bottom = {f"{PACKAGE}.{b}" for b in BOTTOM}
    up = sorted(f"{m} -> {t}" for m in bottom for t in graph[m] if t not in bottom | BOTTOM_MAY_IMPORT)
    assert up == []


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
    """The same functions on a hand-made package: a circle a → b → a and a lower module importing the top."""
    pkg = tmp_path / PACKAGE
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("main = None\n")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\nfrom .cli import main\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [[f"{PACKAGE}.a", f"{PACKAGE}.b"]]
    assert upward_imports(graph, ("cli",), ("cli",)) == [f"{PACKAGE}.b -> {PACKAGE}.cli"]
