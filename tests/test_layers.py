"""The package's layers: no module imports a module of a higher layer (imports inside functions
count too), so `data` can be used and tested without models, and nothing below the demo
depends on it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "umr_jax"

# Lowest first. A module may import its own layer and those below it. The longest prefix wins.
LAYERS = {
    "umr_jax": 0, "umr_jax.errors": 0, "umr_jax.storage": 0,
    "umr_jax.data": 1, "umr_jax.parallel": 1,
    "umr_jax.config": 2, "umr_jax.models": 2, "umr_jax.runtime": 2, "umr_jax.outputs": 1,
    "umr_jax.evaluation": 3, "umr_jax.retrieval": 3, "umr_jax.labeling": 3,
    "umr_jax.training": 4,
    "umr_jax.stages": 5, "umr_jax.aot": 5,
    "umr_jax.scaling": 6,
    "umr_jax.demo": 7,
    "umr_jax.cli": 8,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS")


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("umr_jax"):
            if node.module == "umr_jax":
                found += [(node.lineno, f"umr_jax.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("umr_jax")]
    return found


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("umr_jax", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        for line, imported in _imports(path):
            if imported != "umr_jax.__version__" and _layer(imported) > _layer(module):
                upward.append(f"{path.relative_to(ROOT.parent)}:{line}: {module} imports {imported}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from umr_jax.training import distill\n")
    assert _imports(bad) == [(2, "umr_jax.training")] and _layer("umr_jax.training.distill") > _layer("umr_jax.data.files")
