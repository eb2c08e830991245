"""The notebooks as the repository keeps them: a notebook run in JupyterLab leaves the checkout clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from fsl_core.notebook_files import FILTER, install_git_filter, stripped

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "05_masks_and_reconstructions.ipynb"


def as_jupyterlab_saves_it(text: str) -> str:
    """The committed notebook after a run in JupyterLab: outputs, counts, timing metadata, widget state and the
    kernel's language details, laid out as nbformat writes it."""
    notebook = json.loads(text)
    for count, cell in enumerate(c for c in notebook["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = count + 1
        cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": [f"run {count}\n"]}]
        cell["metadata"]["execution"] = {"iopub.status.idle": "2026-12-07T19:18:56.734209Z"}
        cell["metadata"]["scrolled"] = True
    notebook["metadata"]["language_info"] = {
        "name": "python",
        "version": "3.11.7",
        "mimetype": "text/x-python",
    }
    notebook["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_committed_notebook_is_as_the_filter_keeps_it(path: Path) -> None:
    """Byte for byte: else a fresh clone would show the notebook as changed as soon as the filter is defined."""
    text = path.read_text(encoding="utf-8")
    assert stripped(text) == text
    assert stripped(as_jupyterlab_saves_it(text)) == text


def test_a_run_in_jupyterlab_leaves_the_checkout_clean_and_a_real_edit_shows(tmp_path: Path) -> None:
    """A git repository as a clone is after ``make setup``: .gitattributes, the filter defined, a notebook
    committed. Saving outputs changes nothing git diffs or commits (git status lists the file, whose size
    changed, until ``git add`` finds nothing to add); editing a cell shows as that edit alone."""
    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    shutil.copy(NOTEBOOK, repo / "notebooks" / NOTEBOOK.name)
    (repo / "fsl_core").mkdir()
    shutil.copy(ROOT / "fsl_core" / "notebook_files.py", repo / "fsl_core" / "notebook_files.py")

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
        return done.stdout

    git("init", "-q")
    git("-c", "user.name=a", "-c", "user.email=a@b", "add", ".")
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "notebooks")
    install = [sys.executable, str(repo / "fsl_core" / "notebook_files.py"), "--install-git-filter"]
    said = subprocess.run(install, capture_output=True, text=True, check=True).stdout  # as make setup runs it
    assert said.startswith("git (.git/config): notebooks/*.ipynb are now compared and committed without")
    assert said.rstrip().endswith("undo: git config --remove-section filter.notebook-outputs)")
    assert subprocess.run(install, capture_output=True, text=True, check=True).stdout == ""  # defined already
    assert git("config", f"filter.{FILTER}.clean").strip() == "python3 fsl_core/notebook_files.py --clean"
    saved = repo / "notebooks" / NOTEBOOK.name
    ran = as_jupyterlab_saves_it(NOTEBOOK.read_text(encoding="utf-8"))
    saved.write_text(ran, encoding="utf-8")
    assert git("diff") == ""  # git status may list the file until it is added, which then adds nothing:
    git("add", "-A")
    assert git("status", "--porcelain") == "" and git("diff", "--cached") == ""
    assert saved.read_text(encoding="utf-8") == ran  # the file on disk keeps its outputs for its reader
    edited = json.loads(ran)
    edited["cells"][0]["source"] = ["# Masks, edited\n"]
    saved.write_text(
        json.dumps(edited, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    changed = [
        line for line in git("diff", "-U0").splitlines() if line[:1] in "+-" and line[:3] not in "+++---"
    ]
    assert changed[-1] == '+    "# Masks, edited\\n"' and not any(
        '"run ' in line for line in changed
    )  # no output
    # a file half written (or holding merge markers) is no notebook's JSON: kept as it is, without a traceback
    saved.write_text('{"cells": [', encoding="utf-8")
    added = subprocess.run(["git", "-C", str(repo), "add", "-A"], capture_output=True, text=True, check=True)
    assert added.stderr.strip() == "notebook-outputs: not a notebook's JSON, kept as it is"
    assert git("show", f":notebooks/{NOTEBOOK.name}") == '{"cells": ['


def test_the_filter_is_set_only_at_the_top_of_a_git_working_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not in a folder without git, not in an outer repository the project was unpacked into, not without git."""
    assert install_git_filter(tmp_path) is False and not (tmp_path / ".git").exists()
    outer = tmp_path / "home"
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    (outer / "project").mkdir()
    assert install_git_filter(outer / "project") is False
    assert FILTER not in (outer / ".git" / "config").read_text()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no git on the PATH
    assert install_git_filter(outer) is False


def test_jupyterlab_saves_the_project_notebooks_without_outputs_and_keeps_them_in_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through jupyter_server's own file manager, as ``make lab`` configures it (its root the notebooks folder), in
    a copy of the repository."""
    from jupyter_server.services.contents.filemanager import FileContentsManager
    from traitlets.config import Config

    import fsl_core.notebook_parameters
    import fsl_core.notebooks

    repository = tmp_path / "repository"
    (repository / "notebooks" / "mine").mkdir(parents=True)
    committed = NOTEBOOK.read_text(encoding="utf-8")
    (repository / "notebooks" / NOTEBOOK.name).write_text(committed, encoding="utf-8")
    for module in (fsl_core.notebooks, fsl_core.notebook_parameters):  # its notebooks/, and its outputs/
        monkeypatch.setattr(module, "REPO_ROOT", repository)
    hook = {"ContentsManager": {"pre_save_hook": "fsl_core.notebook_files.keep_outputs_aside"}}  # as make lab
    manager = FileContentsManager(root_dir=str(repository / "notebooks"), config=Config(hook))

    model = manager.get(NOTEBOOK.name)
    ran = json.loads(as_jupyterlab_saves_it(committed))
    manager.save({"type": "notebook", "format": "json", "content": ran}, NOTEBOOK.name)
    assert (repository / "notebooks" / NOTEBOOK.name).read_text(
        encoding="utf-8"
    ) == committed  # byte for byte
    aside = repository / "outputs" / NOTEBOOK.stem / "interactive" / NOTEBOOK.name
    kept = json.loads(aside.read_text(encoding="utf-8"))
    assert [c["outputs"] for c in kept["cells"] if c["cell_type"] == "code"][:2] == [
        [{"name": "stdout", "output_type": "stream", "text": [f"run {i}\n"]}] for i in range(2)
    ]
    assert model["content"]["cells"][0]["source"] == "".join(kept["cells"][0]["source"])
    assert sorted(p.name for p in aside.parent.iterdir()) == [NOTEBOOK.name]  # no temporary file left
    assert manager.notary.check_signature(nbformat.from_dict(kept))  # trusted, as the saved notebook is
    # reopened, its kernel's details added but no outputs yet: the copy of the last run stays
    reopened = json.loads(committed)
    reopened["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    manager.save({"type": "notebook", "format": "json", "content": reopened}, NOTEBOOK.name)
    assert json.loads(aside.read_text(encoding="utf-8")) == kept
    # a notebook of the user's own, in notebooks/ or below it, is saved as it is
    for mine in ("Untitled.ipynb", "mine/mine.ipynb"):
        manager.save({"type": "notebook", "format": "json", "content": ran}, mine)
        saved = json.loads((repository / "notebooks" / mine).read_text(encoding="utf-8"))
        assert saved["cells"][1]["outputs"] == ran["cells"][1]["outputs"] != []
    assert sorted(p.name for p in (repository / "outputs").iterdir()) == [NOTEBOOK.stem]


def test_make_lab_starts_jupyterlab_with_the_hook() -> None:
    """The Makefile names the hook by its import path: it must import to the function itself."""
    from traitlets.utils.importstring import import_item

    from fsl_core.notebook_files import keep_outputs_aside

    makefile = (ROOT / "Makefile").read_text()
    (named,) = [
        word.split("=", 1)[1] for word in makefile.split() if word.startswith("--ContentsManager.pre_save")
    ]
    assert import_item(named) is keep_outputs_aside
