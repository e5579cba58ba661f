"""The layer rule (CONTRIBUTING.md): imports run one way and packages form no cycle."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def check_layers():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_project_has_no_upward_import_and_no_package_cycle(check_layers):
    assert check_layers.check() == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    """Write the files, with an empty __init__.py in every folder that has none."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for folder in path.relative_to(root).parents[:-1]:
            (root / folder / "__init__.py").touch(exist_ok=True)
    return root


def test_an_upward_import_is_named_with_its_file_and_line(check_layers, tmp_path):
    root = _tree(tmp_path, {
        "keyseg_core/modeling/keyseg.py": "import torch\n\ndef f():\n    from keyseg_core.inference.results import Prediction\n",
        "keyseg_core/inference/results.py": "class Prediction: ...\n",
    })
    problems = check_layers.check(root)
    assert len(problems) == 1
    assert problems[0].startswith("keyseg_core/modeling/keyseg.py:4: ") and "upward import" in problems[0]


def test_a_cycle_between_sibling_packages_is_found(check_layers, tmp_path):
    root = _tree(tmp_path, {
        "keyseg_core/runtime/backends/__init__.py": "from keyseg_core.runtime.export.graphs import G\n",
        "keyseg_core/runtime/export/graphs.py": "from keyseg_core.runtime.backends import B\nG = 1\n",
    })
    assert check_layers.check(root) == [
        "package cycle: keyseg_core.runtime.backends -> keyseg_core.runtime.export -> keyseg_core.runtime.backends"]
