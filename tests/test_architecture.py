"""The house rules of docs/ARCHITECTURE.md, read from the source with `ast` so they stay true:
small modules, imports only downwards, no import cycle, no private name used across packages,
no print in library code."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "finetuner"
MAX_LINES = 400

# the layers of docs/ARCHITECTURE.md, lowest first: a package may import its own layer's other
# packages (without a cycle) and every lower layer, never a higher one
LAYERS = [
    {"config", "console", "io"},
    {"data", "losses", "evaluation"},
    {"engine", "models", "report", "toydata"},
    {"recipes"},
    {"llm", "sklearn", "labeler"},
    {"api"},
    {"cli", "demos", "__init__", "__main__"},
]
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
PRINTING = {"cli", "demos"}  # the command line prints; the library uses finetuner.console / logging


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package(module: str) -> str:
    """The top-level part a module belongs to: `finetuner.data.formats` -> "data"; the package's
    own `__init__` -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[tuple[str, list[str]]]:
    """(imported finetuner module, imported names) for one import statement."""
    is_pkg = MODULES[module].name == "__init__.py"
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names if a.name.split(".")[0] == "finetuner"]
    if node.level:
        base = module.split(".")
        base = base if is_pkg else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "finetuner":
        return []
    out = []
    names = [a.name for a in node.names]
    for name in names:  # `from pkg import submodule` imports the submodule
        if f"{target}.{name}" in MODULES:
            out.append((f"{target}.{name}", []))
        else:
            out.append((target, [name]))
    return out


def _imports() -> dict[str, list[tuple[str, list[str], int]]]:
    """Every finetuner import of every module (top-level and inside functions alike)."""
    found = defaultdict(list)
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target, names in _resolve(module, node):
                    while target not in MODULES and "." in target:
                        target = target.rsplit(".", 1)[0]
                    found[module].append((target, names, node.lineno))
    return found


IMPORTS = _imports()


def test_every_package_has_a_layer():
    unknown = sorted({_package(m) for m in MODULES} - set(LAYER_OF))
    assert not unknown, f"packages without a layer in docs/ARCHITECTURE.md and LAYERS: {unknown}"


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_imports_only_go_down():
    bad = []
    for module, imports in IMPORTS.items():
        src = _package(module)
        for target, _, line in imports:
            dst = _package(target)
            if dst != src and LAYER_OF.get(dst, -1) > LAYER_OF.get(src, -1):
                bad.append(f"{module}:{line} imports {target} (layer {LAYER_OF.get(dst)} > {LAYER_OF.get(src)})")
    assert not bad, "imports from a higher layer into a lower one:\n" + "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules():
    graph = {m: {t for t, _, _ in imports if t != m} for m, imports in IMPORTS.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_packages():
    graph = defaultdict(set)
    for module, imports in IMPORTS.items():
        for target, _, _ in imports:
            if _package(target) != _package(module) and _package(module) != "__init__":
                graph[_package(module)].add(_package(target))
    cycle = _cycle(graph)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_no_private_name_across_packages():
    bad = []
    for module, imports in IMPORTS.items():
        for target, names, line in imports:
            if _package(target) == _package(module):
                continue
            private = [n for n in names if n.startswith("_")]
            if any(part.startswith("_") and part != "__init__" for part in target.split(".")):
                private.append(target)
            if private:
                bad.append(f"{module}:{line} imports private {private} from {target}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def test_library_code_does_not_print():
    """No print(), and no `<console>.print(...)` / `accelerator.print(...)` outside finetuner.console."""
    bad = []
    for module, path in MODULES.items():
        if _package(module) in PRINTING or module == "finetuner.console":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (isinstance(func, ast.Name) and func.id == "print") or (
                    isinstance(func, ast.Attribute) and func.attr == "print"):
                bad.append(f"{module}:{node.lineno}")
    assert not bad, "print() in library code (use finetuner.console or logging):\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _package(m) not in ("demos",)))
def test_public_names_have_docstrings(module):
    tree = ast.parse(MODULES[module].read_text())
    assert ast.get_docstring(tree), f"{module} has no module docstring"
    missing = [n.name for n in tree.body
               if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")
               and not ast.get_docstring(n)]
    assert not missing, f"{module}: public functions / classes without a docstring: {missing}"
