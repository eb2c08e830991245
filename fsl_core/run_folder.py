"""A run folder belongs to one run: a manifest says which, a lock says who is writing, nothing is overwritten.

Every writer of run folders (``fsl_core.engine.train``, ``fsl_core.engine.train_gsfl`` and the notebook runner
``fsl_core.notebooks``) claims its folder first with ``claim_run_folder``:

1. **Lock.** ``<folder>/.lock`` is locked with ``fcntl.flock`` (the operating system releases it when the
   process ends, however it ends) and holds the writer's process id. A second process claiming the same folder
   fails at once with ``RunFolderInUse``: "run folder X is in use by process N".
2. **Identity.** ``<folder>/run.json``, the manifest, is written first (atomically) and never rewritten: the
   kind of run (``"train"``, ``"notebook"``) and the settings that identify it. A folder whose manifest names
   another run, or that holds files but no manifest, is refused with ``RunFolderConflict`` before any work,
   naming the folder, what it holds and the two ways out: another folder, or ``overwrite=True``.
3. **Overwrite moves aside.** ``overwrite=True`` moves everything the folder holds into a dated subfolder
   ``replaced-<UTC time>/`` and starts a new run there: nothing is deleted.

A refused claim changes nothing in the folder, not even the lock file. Temporary files of an interrupted atomic
write (``.<name>.<random>.tmp``, see ``fsl_core.runtime``) never held finished work; a successful claim removes
them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsl_core
from fsl_core.runtime import atomic_write_json, blocking_file, git_revision, some_names

MANIFEST = "run.json"
FINISHED = "DONE"
"""The marker a run folder gets when its run ended well (the notebook runner writes it last)."""
LOCK = ".lock"
REPLACED_PREFIX = "replaced-"


class RunFolderConflict(ValueError):
    """The run folder holds another run's files, or files no run of this kind wrote."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of the traceback: the message alone (it names the folder and the way out)."""
        return [f"{type(self).__name__}: {self}"]


class RunFolderInUse(RuntimeError):
    """Another process holds the run folder's lock."""


def _is_interrupted_write(path: Path) -> bool:
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def _own_entries(folder: Path) -> set[str]:
    """Entries every run folder may hold besides a run's outputs: the lock and moved-aside runs."""
    return {LOCK} | {p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith(REPLACED_PREFIX)}


def folder_contents(folder: Path) -> list[str]:
    """The names in ``folder`` that belong to a run (lock, moved-aside runs, interrupted writes left out)."""
    own = _own_entries(folder)
    return sorted(p.name for p in folder.iterdir() if p.name not in own and not _is_interrupted_write(p))


def move_aside(path: str | Path) -> Path:
    """Move a file, or everything in a folder but its lock and earlier moved-aside runs, out of the way.

    A folder's entries go into ``<folder>/replaced-<UTC time>/``; a file ``a/b.json`` becomes
    ``a/b.replaced-<UTC time>.json``. Returns where the old content now is. Nothing is deleted.
    """
    path = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    if path.is_dir():
        target = path / f"{REPLACED_PREFIX}{stamp}"
        target.mkdir()
        for name in folder_contents(path):
            os.replace(path / name, target / name)
        return target
    target = path.with_name(f"{path.stem}.{REPLACED_PREFIX}{stamp}{path.suffix}")
    os.replace(path, target)
    return target


@dataclass
class RunFolder:
    """A claimed run folder: ``path``, its manifest, whether it was new, and the held lock."""

    path: Path
    manifest: dict[str, Any]
    created: bool
    moved_aside: Path | None = None
    _lock: Any = field(default=None, repr=False)

    def release(self) -> None:
        """Release the lock (also released by the operating system when the process ends)."""
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _in_use(folder: Path, holder: str) -> RunFolderInUse:
    return RunFolderInUse(
        f"run folder {folder} is in use by process {holder or 'unknown'}; wait for it to finish, or choose "
        "another folder"
    )


def _refuse_if_in_use(folder: Path) -> None:
    """Raise ``RunFolderInUse`` when another process holds ``folder``'s lock; changes nothing."""
    try:
        handle = open(folder / LOCK)  # noqa: SIM115 -- read only: the file stays as it is
    except OSError:
        return  # no lock file: nobody holds the folder (a lock is taken on the file, never without it)
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise _in_use(folder, handle.read().strip()) from None
            raise
        fcntl.flock(handle, fcntl.LOCK_UN)


def in_use(folder: str | Path) -> bool:
    """Whether another process is writing ``folder`` now (holds its lock); changes nothing."""
    try:
        _refuse_if_in_use(Path(folder))
    except RunFolderInUse:
        return True
    return False


def lock_folder(folder: Path) -> Any:
    """Take ``folder/.lock`` without waiting; ``RunFolderInUse`` names the process that holds it."""
    try:
        handle = open(folder / LOCK, "a+")  # noqa: SIM115 -- kept open while the lock is held
    except OSError as error:
        raise OSError(
            error.errno,
            f"cannot lock run folder {folder}: {error.strerror}; choose a folder you can write to",
        ) from error
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            handle.close()
            raise
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise _in_use(folder, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of ``folder`` (None when it has none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunFolderConflict(f"{path} is not a readable run manifest ({error})") from error
    if not isinstance(manifest, dict) or "kind" not in manifest or "identity" not in manifest:
        raise RunFolderConflict(f"{path} is not a run manifest (expected 'kind' and 'identity')")
    return manifest


def is_finished(folder: str | Path) -> bool:
    """Whether the run in ``folder`` ran to the end (its ``FINISHED`` marker exists)."""
    return (Path(folder) / FINISHED).is_file()


def finished_notebook_run_holding(folder: str | Path) -> Path | None:
    """The folder of the notebook run that holds ``folder`` (the nearest folder above it with a notebook manifest;
    training folders between are part of it, and a ``run.json`` of another tool is no manifest) when that run has
    finished, else None. What such a run's results.json and figures describe is kept as it was: a training there
    would change it (``fsl_core.engine.train`` refuses)."""
    for above in Path(folder).resolve().parents:
        if not (above / MANIFEST).is_file():
            continue
        try:
            manifest = read_manifest(above)
        except RunFolderConflict:  # not one of ours
            continue
        if manifest is not None and manifest["kind"] == "notebook":
            return above if is_finished(above) else None
    return None


def _problem(folder: Path, kind: str, same_run: Callable[[dict[str, Any]], list[str]] | None) -> str | None:
    """Why ``folder`` cannot take this run (None: it is empty, or holds this very run)."""
    manifest = read_manifest(folder)
    if manifest is not None and manifest["kind"] != kind:
        return f"holds a {manifest['kind']} run (made {manifest.get('created', '?')})"
    if manifest is not None:
        reasons = same_run(manifest["identity"]) if same_run else ["a run is never rewritten"]
        if reasons:
            made = manifest.get("created", "?")
            return f"holds a {kind} run (made {made}) that this one cannot continue: " + "; ".join(reasons)
        return None
    contents = folder_contents(folder)
    return f"holds files that no {kind} run of fsl_core wrote ({some_names(contents)})" if contents else None


def claim_run_folder(
    folder: str | Path,
    kind: str,
    identity: dict[str, Any],
    *,
    same_run: Callable[[dict[str, Any]], list[str]] | None = None,
    overwrite: bool = False,
    overwrite_hint: str = "overwrite=True",
    other_hint: str = "another folder for this run",
) -> RunFolder:
    """Lock ``folder`` and make sure it holds this run, or nothing (see the module docstring).

    Args:
        kind: the kind of run ("train", "notebook").
        identity: the settings that identify the run (JSON-ready); written to the manifest of a new run.
        same_run: given the manifest's identity, the differences that make it another run ([] = the same
            run, which may continue in the folder). Default: any difference. ``None`` continues nothing:
            a folder with content is always refused.
        overwrite: move what the folder holds aside (``move_aside``) instead of refusing it.
        overwrite_hint / other_hint: how the caller's user asks for ``overwrite`` (``--overwrite`` on a command
            line) and names another folder (``another run name (--run-name)``), for the messages.

    A refused claim changes nothing in ``folder``, not even its lock file: the folder is looked at before it is
    locked, and again under the lock. Returns the claimed ``RunFolder``, holding the lock until ``release()``
    or the end of the process.
    """
    folder = Path(folder)

    def refuse(problem: str) -> RunFolderConflict:
        return RunFolderConflict(
            f"run folder {folder} {problem}. Nothing was changed. Choose {other_hint}, or pass {overwrite_hint} "
            f"to move its present files aside into {folder}/{REPLACED_PREFIX}<time>/ (nothing is deleted)"
        )

    if folder.is_dir():
        _refuse_if_in_use(folder)
        if not overwrite and (problem := _problem(folder, kind, same_run)):
            raise refuse(problem)
    if (blocking := blocking_file(folder)) is not None:
        raise NotADirectoryError(
            f"run folder {folder} cannot be made: {blocking} is a file (a folder was expected). Nothing was "
            f"changed. Choose {other_hint}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            error.errno, f"cannot create run folder {folder}: {error.strerror}; choose {other_hint}"
        ) from error
    lock = lock_folder(folder)
    try:
        for leftover in folder.iterdir():
            if _is_interrupted_write(leftover):
                leftover.unlink()
        problem = _problem(folder, kind, same_run)
        moved = None
        if problem is not None:
            if not overwrite:
                raise refuse(problem)
            moved = move_aside(folder)
        manifest = read_manifest(folder)
        created = manifest is None
        if manifest is None:
            manifest = {
                "kind": kind,
                "identity": identity,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "fsl_core_version": fsl_core.__version__,
                "git_revision": git_revision(),
            }
            atomic_write_json(manifest, folder / MANIFEST)
        return RunFolder(folder, manifest, created, moved, lock)
    except BaseException:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        raise
