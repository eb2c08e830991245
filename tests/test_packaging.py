"""The project installs what it says: pyproject.toml and environment.yml name the same requirements."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

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


def test_torch_range_admits_the_supported_release() -> None:
    deps = requirement_set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert deps["torch"] == ">=2.2,<2.15" and deps["torchvision"] == ">=0.17,<0.30"
    assert fsl_core.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


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
    """100 MB is 24,414 pages of 4 KiB: the default allocator faults each one in again at every allocation; with
    huge pages (set by ``import fsl_core``) it is 50 pages of 2 MiB. An explicit 0 is respected."""
    default = faults_per_allocation(None)
    refused = faults_per_allocation("0")
    assert default < 2_000
    assert refused > 20_000
