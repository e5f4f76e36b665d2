"""The import graph keeps its layers (issue 17): the library never imports the CLI, the server never imports the
exporter, and the robot client's wheel ships exactly the modules the client imports."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import deepcrl

PACKAGE = Path(deepcrl.__file__).parent
ROOT = PACKAGE.parent


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """deepcrl modules `name` imports, at any depth (module level and inside functions)."""
    known = modules()
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("deepcrl") and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    return {name: imports(name, path) for name, path in modules().items()}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_library_does_not_import_the_cli():
    bad = {m: sorted(t for t in targets if _within(t, "deepcrl.cli"))
           for m, targets in graph().items() if not _within(m, "deepcrl.cli")}
    assert not {m: t for m, t in bad.items() if t}


def test_serve_does_not_import_export():
    bad = {m: sorted(t for t in targets if _within(t, "deepcrl.export"))
           for m, targets in graph().items() if _within(m, "deepcrl.serve")}
    assert not {m: t for m, t in bad.items() if t}


def test_the_walk_sees_imports_inside_functions():
    assert "deepcrl.pipeline" in graph()["deepcrl.cli.pipeline"]  # imported inside run_with_progress


def test_the_client_wheel_ships_exactly_what_the_client_imports():
    edges = graph()
    needed, todo = set(), ["deepcrl.serve.client"]
    while todo:
        module = todo.pop()
        if module in needed:
            continue
        needed.add(module)
        todo += edges[module]
        parent = module.rpartition(".")[0]
        if parent:
            todo.append(parent)  # importing a module imports its package's __init__ first
    config = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())
    shipped = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"].values()
    shipped_modules = {p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in shipped}
    assert shipped_modules == needed
    assert not any(_within(m, "deepcrl.export") for m in shipped_modules)
