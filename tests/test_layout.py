"""The folder tree is the architecture: imports run one way (sdm <- calibration <- convert), and no
module outgrows one concept."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the packages of this project it must never import (at module level or inside functions)
FORBIDDEN = {"sdm": {"calibration", "convert"}, "calibration": {"convert"}}


def _imported_packages(path: Path) -> set[str]:
    packages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages


@pytest.mark.parametrize("package", FORBIDDEN)
def test_imports_run_one_way(package):
    offenders = {str(path.relative_to(ROOT)): sorted(_imported_packages(path) & FORBIDDEN[package])
                 for path in (ROOT / package).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_module_outgrows_about_350_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for package in ("sdm", "calibration", "convert") for p in (ROOT / package).rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 360} == {}
