"""The notebooks as the repository keeps them: code and text, no outputs.

A notebook run in JupyterLab saves its outputs, execution counts, widget state and kernel details into its
file. The repository's ``.gitattributes`` sends ``notebooks/*.ipynb`` through the git filter
``notebook-outputs``, whose *clean* step is ``stripped``: git then diffs and commits a notebook without what a
run added, while the file on disk keeps the outputs for its reader (``git status`` can still list such a file,
whose size changed, until ``git add`` finds nothing to add). ``make setup`` defines the filter in the clone's ``.git/config``
(``install_git_filter``); where it is not defined, git passes the files through unchanged.

``make lab`` goes further: its JupyterLab saves the project's notebooks without outputs too
(``keep_outputs_aside``, a pre-save hook), so a session leaves them byte for byte as committed, and keeps the
notebook with its outputs in the session's run folder, ``outputs/<notebook>/interactive/``, as a headless run
keeps its executed notebook in its own.

This module imports only the standard library, so git can run it as a script for every notebook it looks at
(``python3 fsl_core/notebook_files.py --clean < a.ipynb``) without loading the toolkit; the pre-save hook, which
runs in the Jupyter server, loads what it needs when called.
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
"""The repository holding this file, whose git configuration ``--install-git-filter`` sets."""
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


def _has_outputs(notebook: dict[str, Any]) -> bool:
    return any(cell.get("outputs") for cell in notebook.get("cells", []) if cell.get("cell_type") == "code")


def keep_outputs_aside(model: dict[str, Any], path: str, contents_manager: Any, **_: Any) -> None:
    """Jupyter server pre-save hook (``--ContentsManager.pre_save_hook=fsl_core.notebook_files.keep_outputs_aside``,
    as ``make lab`` starts JupyterLab). One of the project's notebooks (``notebooks/NAME.ipynb`` with NAME a
    notebook of ``fsl_core.notebook_parameters.NOTEBOOKS``) is saved ``stripped``; when it held outputs it is also
    written whole, atomically, to its interactive run folder (``fsl_core.notebooks.run_folder``:
    ``outputs/NAME/interactive/NAME.ipynb``) and signed as trusted, as the saved notebook is. A save that only
    changes what ``stripped`` drops (a kernel's details) leaves that copy as it was. Every other file is saved as
    it is."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    from fsl_core.notebook_parameters import NOTEBOOKS
    from fsl_core.notebooks import notebooks_dir, run_folder

    file = (Path(contents_manager.root_dir) / path).resolve()
    if file.parent != notebooks_dir().resolve() or file.suffix != ".ipynb" or file.stem not in NOTEBOOKS:
        return
    if _has_outputs(model["content"]):
        folder = run_folder(file.stem)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{file.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(_layout(model["content"]))
            os.replace(temporary, folder / file.name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        import nbformat

        contents_manager.notary.sign(nbformat.from_dict(model["content"]))
    model["content"] = json.loads(stripped(_layout(model["content"])))


def install_git_filter(repository: str | Path) -> bool:
    """Define the ``notebook-outputs`` filter in the git configuration of ``repository``, the top of its own git
    working tree. Its clean step runs this file with the ``python3`` on the PATH, by a path from the top of the
    working tree (where git runs it), so the clone may move and its .venv be remade. True when that changed the
    configuration; False when it was defined so already, or when ``repository`` is not the top of a git working
    tree (a folder inside another repository, or no git at all), which is then left as it is.
    ``git config --remove-section filter.notebook-outputs`` undoes it."""
    try:
        top = subprocess.run(
            ["git", "-C", str(repository), "rev-parse", "--show-toplevel"], capture_output=True, text=True
        )
    except OSError:  # no git
        return False
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != Path(repository).resolve():
        return False
    script = Path(__file__).resolve().relative_to(Path(repository).resolve()).as_posix()
    settings = {f"filter.{FILTER}.clean": f"python3 {script} --clean", f"filter.{FILTER}.smudge": "cat"}
    changed = False
    for key, value in settings.items():
        now = subprocess.run(["git", "-C", str(repository), "config", key], capture_output=True, text=True)
        if now.stdout.strip() != value:
            subprocess.run(["git", "-C", str(repository), "config", key, value], check=True)
            changed = True
    return changed


def main(argv: list[str]) -> int:
    """``--clean``: a notebook on stdin, ``stripped`` on stdout (git's clean step; text that is no notebook's
    JSON, a file half written or holding merge markers, passes unchanged). ``--install-git-filter``:
    ``install_git_filter`` for the repository holding this file."""
    if argv == ["--clean"]:
        data = sys.stdin.buffer.read()
        try:
            out = stripped(data.decode("utf-8")).encode("utf-8")
        except (ValueError, TypeError, AttributeError, KeyError):
            print("notebook-outputs: not a notebook's JSON, kept as it is", file=sys.stderr)
            out = data
        sys.stdout.buffer.write(out)
        return 0
    if argv == ["--install-git-filter"]:
        if install_git_filter(REPOSITORY):
            print(
                f"git (.git/config): notebooks/*.ipynb are now compared and committed without their outputs "
                f"(filter {FILTER}; undo: git config --remove-section filter.{FILTER})"
            )
        return 0
    print(
        "usage: python fsl_core/notebook_files.py --clean < NOTEBOOK | --install-git-filter", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
