"""The package's arrows, checked against the code: every import of every module (function-level ones included)
goes to its own unit or to a unit of a lower layer, as the `layers` block of docs/architecture.md lists them, and
no modules import each other in a cycle. A unit is a top-level module (`sddkd/scales.py`) or a subpackage
(`sddkd/engine/`); the root `sddkd/__init__.py` is the façade over all of them and is not checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "sddkd"
ARCHITECTURE = REPO / "docs" / "architecture.md"


def documented_layers() -> dict[str, int]:
    """unit -> layer number (0 = bottom) from the ```layers block: one line a layer, top first, units by name."""
    block = re.search(r"```layers\n(.*?)```", ARCHITECTURE.read_text(), re.S)
    assert block, "docs/architecture.md has no ```layers block"
    lines = [line.split("#")[0].split() for line in block.group(1).splitlines()]
    lines = [line for line in lines if line]
    return {unit: len(lines) - 1 - depth for depth, line in enumerate(lines) for unit in line}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str | None:
    """`sddkd.engine.loop` -> `engine`; `sddkd.config` -> `config`; `sddkd` (the façade) -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "sddkd" else None


def imports_of(path: Path) -> set[str]:
    """Every sddkd module this file imports, anywhere in it (`from sddkd.x import y` counts as sddkd.x or sddkd.x.y
    when y is a submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "sddkd")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            if base.split(".")[0] != "sddkd":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (REPO / Path(*candidate.split("."))).with_suffix(".py").is_file() or (
                    REPO / Path(*candidate.split(".")) / "__init__.py"
                ).is_file()
                found.add(candidate if is_module else base)
    return found


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_unit_has_a_documented_layer():
    layers = documented_layers()
    units = {unit_of(name) for name in MODULES} - {None}
    assert units <= set(layers), f"units missing from the layers block of docs/architecture.md: {units - set(layers)}"
    assert set(layers) <= units, f"the layers block names units that do not exist: {set(layers) - units}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module: str):
    layers = documented_layers()
    unit = unit_of(module)
    if unit is None:
        return  # the root façade (`from sddkd import train`) re-exports from above by design
    upward = []
    for target in sorted(imports_of(MODULES[module])):
        target_unit = unit_of(target)
        if target_unit is None or target_unit == unit:
            continue
        if layers[target_unit] >= layers[unit]:
            upward.append(f"{target} ({target_unit}, layer {layers[target_unit]})")
    assert not upward, f"{module} ({unit}, layer {layers[unit]}) imports at or above its own layer: {upward}"


def test_no_import_cycles():
    graph = {name: {t for t in imports_of(path) if t in MODULES and t != name} for name, path in MODULES.items()}
    # A package's __init__ that re-exports its submodules is not a cycle with them: leave those edges out.
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_sees_an_upward_import(tmp_path: Path):
    """The checker itself: an upward import written into a throwaway module is found."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from sddkd.engine.loop import train\n    import sddkd.suite.plan\n")
    assert imports_of(module) == {"sddkd.engine.loop", "sddkd.suite.plan"}
    layers = documented_layers()
    assert layers["engine"] > layers["config"] and layers["cli"] > layers["suite"] > layers["engine"]
