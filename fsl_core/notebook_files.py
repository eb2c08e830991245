"""The notebooks as the repository keeps them: code and text, no outputs.

A notebook run in JupyterLab saves its outputs, execution counts, widget state and kernel details into its
file. The repository's ``.gitattributes`` sends ``notebooks/*.ipynb`` through the git filter
``notebook-outputs``, whose *clean* step is ``stripped``: git then compares and commits a notebook without
what a run added, so running the notebooks leaves the checkout clean, while the file on disk keeps the
outputs for its reader. ``make setup`` defines the filter in the clone's ``.git/config``
(``install_git_filter``); where it is not defined, git passes the files through unchanged.

``make lab`` goes further: its JupyterLab saves the repository's notebooks without outputs too
(``keep_outputs_aside``, a pre-save hook), so a session leaves them byte for byte as committed, and keeps the
notebook with its outputs in the session's run folder, ``outputs/<notebook>/interactive/``, as a headless run
keeps its executed notebook in its own.

This module imports only the standard library, so git can run it as a script for every notebook it looks at
(``python fsl_core/notebook_files.py --clean < a.ipynb``) without loading the toolkit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FILTER = "notebook-outputs"
"""The name of the git filter that ``.gitattributes`` names for ``notebooks/*.ipynb``."""

REPOSITORY = Path(__file__).resolve().parent.parent
"""The repository root: its ``notebooks/`` are those kept without outputs, its ``outputs/`` the run folders."""
KEPT_CELL_METADATA = ("tags",)
"""The cell metadata a committed notebook keeps: the ``parameters`` tag papermill reads."""


def stripped(text: str) -> str:
    """The text of a notebook file (nbformat 4 JSON) without what running it added: outputs and execution
    counts emptied, cell metadata other than ``KEPT_CELL_METADATA`` dropped, notebook metadata reduced to its
    ``kernelspec`` and the language's name; laid out as nbformat writes it (sorted keys, one-space indent, UTF-8,
    a final newline). Stripping twice changes nothing."""
    notebook = json.loads(text)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA}
    metadata = notebook.get("metadata", {})
    kept = {"kernelspec": metadata["kernelspec"]} if "kernelspec" in metadata else {}
    if "name" in metadata.get("language_info", {}):
        kept["language_info"] = {"name": metadata["language_info"]["name"]}
    notebook["metadata"] = kept
    return _layout(notebook)


def _layout(notebook: Any) -> str:
    """A notebook (a dict) as nbformat writes it."""
    return json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def keep_outputs_aside(model: dict[str, Any], path: str, contents_manager: Any, **_: Any) -> None:
    """Jupyter server pre-save hook (``--ContentsManager.pre_save_hook=fsl_core.notebook_files.keep_outputs_aside``,
    as ``make lab`` starts JupyterLab): a notebook of the repository's ``notebooks/`` is saved ``stripped``, and,
    when it held outputs, written whole to ``outputs/<notebook>/interactive/<notebook>.ipynb`` (atomically).
    Every other file is saved as it is."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    file = (Path(contents_manager.root_dir) / path).resolve()
    if file.parent != REPOSITORY / "notebooks" or file.suffix != ".ipynb":
        return
    whole = _layout(model["content"])
    kept = stripped(whole)
    if kept == whole:
        return
    folder = REPOSITORY / "outputs" / file.stem / "interactive"
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(whole)
        os.replace(temporary, folder / file.name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    model["content"] = json.loads(kept)


def install_git_filter(repository: str | Path, python: str | Path) -> bool:
    """Define the ``notebook-outputs`` filter in the git configuration of ``repository`` (its clean step runs
    this file with ``python``). True when that changed the configuration; False when it was defined so already,
    or when ``repository`` is not a git working tree (nothing is changed then)."""
    inside = subprocess.run(
        ["git", "-C", str(repository), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True
    )
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return False
    script = Path(__file__).resolve()
    settings = {
        f"filter.{FILTER}.clean": f'"{Path(python).absolute()}" "{script}" --clean',
        f"filter.{FILTER}.smudge": "cat",
    }
    changed = False
    for key, value in settings.items():
        now = subprocess.run(["git", "-C", str(repository), "config", key], capture_output=True, text=True)
        if now.stdout.strip() != value:
            subprocess.run(["git", "-C", str(repository), "config", key, value], check=True)
            changed = True
    return changed


def main(argv: list[str]) -> int:
    """``--clean``: a notebook on stdin, ``stripped`` on stdout (git's clean step). ``--install-git-filter``:
    ``install_git_filter`` for the repository holding this file, run by the Python running this file."""
    if argv == ["--clean"]:
        text = sys.stdin.buffer.read().decode("utf-8")
        sys.stdout.buffer.write(stripped(text).encode("utf-8"))
        return 0
    if argv == ["--install-git-filter"]:
        if install_git_filter(REPOSITORY, sys.executable):
            print(
                f"git: notebooks/*.ipynb are compared and committed without their outputs (filter {FILTER})"
            )
        return 0
    print(
        "usage: python fsl_core/notebook_files.py --clean < NOTEBOOK | --install-git-filter", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
