"""The project installs what it says: pyproject.toml and environment.yml name the same requirements."""

from __future__ import annotations

import re
from pathlib import Path

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
