"""The package layout is the architecture (DESIGN.md section 3): each layer imports only from
the layers below it, entry points import nothing from each other, and no module imports itself
back through others, ``TYPE_CHECKING`` imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vae_lab"
#: bottom to top; a module may import from its own layer and those before it
LAYERS = ("config", "components", "estimators", "model", "training", "evaluation", "records")
ENTRY_POINTS = ("run", "evaluate", "report")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every vae_lab module ``path`` imports, wherever the import statement stands."""
    found = set()
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vae_lab")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.startswith("vae_lab"):
                found |= {f"{base}.{a.name}" for a in node.names} | {base}
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The module a dotted import names (an attribute of a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vae_lab"


GRAPH = {m: {r for i in imports_of(p) if (r := resolve(i)) and r != m} for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_from_layers_below(module: str) -> None:
    layer = layer_of(module)
    for target in GRAPH[module]:
        below = layer_of(target)
        if layer in LAYERS:
            assert below in LAYERS and LAYERS.index(below) <= LAYERS.index(layer), (
                f"{module} ({layer}) imports {target} ({below})"
            )
        elif layer in ENTRY_POINTS:
            assert below not in ENTRY_POINTS or below == layer, f"{module} imports {target}"


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
