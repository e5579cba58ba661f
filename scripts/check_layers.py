"""Check that imports run one way: each package imports only its own layer or layers below it.

    python scripts/check_layers.py            # prints each upward import and each package cycle; exit 1 if any

Layers, lowest first (CONTRIBUTING.md): a module may import from its own layer and from lower
ones, never from a higher one, and packages must not import each other in a cycle. Every import counts, including those inside functions, so
a lazy import can not hide an upward arrow. Cycles are looked for between packages at every depth
(keyseg_core.runtime.backends against keyseg_core.runtime.export, not only between top-level ones).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("keyseg_core", "keyseg_ros")
# package -> layer; a module's layer is that of its longest listed prefix
LAYERS: dict[str, int] = {
    "keyseg_core.atomic": 0,
    "keyseg_core.timing": 0,
    "keyseg_core.config": 1,
    "keyseg_core.pretrained": 1,
    "keyseg_core.modeling": 2,
    "keyseg_core.weights": 3,
    "keyseg_core.inference": 4,
    "keyseg_core.runtime": 5,
    "keyseg_core.data": 6,
    "keyseg_core.scenes": 6,
    "keyseg_core.keywords": 6,
    "keyseg_core.speech": 6,
    "keyseg_core.train": 7,
    "keyseg_core.eval": 8,
    "keyseg_core.cli": 9,
    "keyseg_ros.msg": 10,  # generated at build time
    "keyseg_ros.srv": 10,
    "keyseg_ros.node": 10,
    "keyseg_ros.tools": 11,
}
GENERATED = ("keyseg_ros.msg", "keyseg_ros.srv")  # message modules colcon generates
PUBLIC_FACADE = "keyseg_core"  # keyseg_core/__init__.py: lazy public names, may name any layer


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> tuple[str, int] | None:
    """(package prefix, layer) of a module, None for a module no layer lists."""
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return best


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a project module in the file, at any depth."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.append((node.lineno, f"{base}.{alias.name}"))  # a submodule or a name in base
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def resolve(name: str, modules: set[str]) -> str:
    """The project module an import names: `pkg.mod.Name` -> `pkg.mod`."""
    if name.startswith(GENERATED):
        return name
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def packages_of(module: str, is_package: bool) -> list[str]:
    """Every package that contains the module, innermost first (a package contains itself)."""
    parts = module.split(".")
    top = len(parts) if is_package else len(parts) - 1
    return [".".join(parts[:n]) for n in range(top, 0, -1)]


def check(root: Path = ROOT) -> list[str]:
    files = {module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    modules = set(files)
    problems = []
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in sorted(files.items()):
        if module == PUBLIC_FACADE:
            continue
        own = layer_of(module)
        for line, name in imports_of(path, module):
            target = resolve(name, modules)
            if target == PUBLIC_FACADE and name != PUBLIC_FACADE:
                target = name  # `from keyseg_core import x` where x is not a module: the facade
            theirs = layer_of(target)
            where = f"{path.relative_to(root)}:{line}"
            if theirs is None and target != PUBLIC_FACADE:
                problems.append(f"{where}: {module} imports {target}, which no layer lists")
                continue
            if own and theirs and theirs[1] > own[1]:
                problems.append(f"{where}: {module} (layer {own[1]}, {own[0]}) imports {target} "
                                f"(layer {theirs[1]}, {theirs[0]}): an upward import")
            # package-level edge between the innermost packages that differ
            mine = packages_of(module, path.name == "__init__.py")
            other = packages_of(target, files.get(target, Path()).name == "__init__.py")
            common = set(mine) & set(other)
            a = next((p for p in reversed(mine) if p not in common), None)
            b = next((p for p in reversed(other) if p not in common), None)
            if a and b:
                edges[a].add(b)
    problems = list(dict.fromkeys(problems))  # one line per import, however many names it takes
    problems += [f"package cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of packages (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(set(edges) | {n for targets in edges.values() for n in targets}):
        if node not in index:
            visit(node)
    return [group + [group[0]] for group in groups]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    problems = check()
    for line in problems:
        print(line)
    print(f"check_layers: {len(problems)} problem(s)" if problems else "check_layers: imports run one way, no package cycle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
