"""The project installs what it says: pyproject.toml and environment.yml name the same requirements."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

import fsl_core

ROOT = Path(__file__).resolve().parents[1]


def requirement_set(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line.strip())
        assert match, line
        out[match[1].lower().replace("_", "-")] = match[2].replace(" ", "")
    return out


def test_environment_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = requirement_set(project["dependencies"] + project["optional-dependencies"]["dev"])
    env_lines = []
    in_pip = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.strip() == "- pip:":
            in_pip = True
            continue
        if in_pip and line.strip().startswith("- ") and line.strip() != "- -e .":
            env_lines.append(line.strip()[2:])
    assert requirement_set(env_lines) == declared


def test_installed_versions_satisfy_the_declared_ranges() -> None:
    """Every declared requirement (dev ones included) is installed at a version its range admits, so the
    ranges describe at least the environment the tests run in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    outside = {}
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(line)
        installed = metadata.version(requirement.name)
        if not requirement.specifier.contains(installed, prereleases=True):
            outside[requirement.name] = f"{installed} not in {requirement.specifier}"
    assert outside == {}
    assert fsl_core.__version__ == project["version"]


def distribution_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def required_by(names: list[str]) -> set[str]:
    """The distributions ``names`` install: themselves and everything they require, recursively (extras
    left out)."""
    seen: set[str] = set()
    todo = [distribution_name(name) for name in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(distribution_name(requirement.name))
    return seen


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in Python source."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


# Imported by fsl_core or the notebooks but installed by a declared requirement, not declared themselves.
INSTALLED_BY: dict[str, str] = {}  # modules a declared requirement brings without being declared: none


def test_every_imported_library_is_declared() -> None:
    """Each third-party module that fsl_core or a notebook imports belongs to a declared requirement, or is
    one of ``INSTALLED_BY``, which a declared requirement installs."""
    modules: set[str] = set()
    for path in sorted((ROOT / "fsl_core").rglob("*.py")):
        modules |= imported_modules(path.read_text())
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                modules |= imported_modules(
                    "\n".join(x for x in lines if not x.lstrip().startswith(("%", "!")))
                )
    third_party = sorted(m for m in modules if m not in sys.stdlib_module_names and m != "fsl_core")
    assert {"torch", "numpy", "sklearn", "pytorch_grad_cam", "ipywidgets"} <= set(third_party)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {distribution_name(Requirement(line).name) for line in project["dependencies"]}
    owners = metadata.packages_distributions()
    undeclared = {}
    for module in third_party:
        distributions = {distribution_name(d) for d in owners.get(module, [module])}
        if distributions & declared:
            continue
        provider = INSTALLED_BY.get(module)
        if provider is None or not distributions & required_by([provider]):
            undeclared[module] = sorted(distributions)
    assert undeclared == {}, "declare these in pyproject.toml and environment.yml"
    assert set(INSTALLED_BY.values()) <= declared


def test_every_library_the_project_names_is_a_dependency() -> None:
    deps = requirement_set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for name in ("torch", "torchvision", "jupyterlab", "ipywidgets", "papermill", "seaborn", "grad-cam"):
        assert name in deps, name


FAULTS_PER_ALLOCATION = """
import resource, sys
import fsl_core, torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(3):
    block = torch.empty(25_000_000)  # 100 MB
    block.fill_(1.0)
    del block
print((faults() - before) / 3)
"""


def faults_per_allocation(thp: str | None) -> float:
    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    if thp is not None:
        env["THP_MEM_ALLOC_ENABLE"] = thp
    run = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_ALLOCATION], env=env, capture_output=True, text=True, check=True
    )
    return float(run.stdout.strip().splitlines()[-1])


def huge_pages_available() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[never]" not in path.read_text()


@pytest.mark.skipif(
    not huge_pages_available(), reason="transparent huge pages are off or absent on this system"
)
def test_importing_fsl_core_backs_large_tensors_with_huge_pages() -> None:
    """100 MB is 24,414 pages of 4 KiB: the default allocator faults each one in again at every allocation;
    with huge pages (set by ``import fsl_core``) it is 50 pages of 2 MiB. An explicit 0 is respected."""
    default = faults_per_allocation(None)
    refused = faults_per_allocation("0")
    assert default < 2_000
    assert refused > 20_000
