"""Run the parameterised notebooks headless with papermill, one run folder per run.

``run("02_train", {"model": "bifrn"})`` executes ``notebooks/02_train.ipynb`` into
``outputs/02_train/<run name>/02_train.ipynb`` with the repository root as working directory, and injects
``run_dir`` and ``run_name`` so that the notebook writes its figures, tables and ``results.json`` beside the
executed copy. ``sweep`` runs a grid of parameter sets through a bounded pool of kernels and returns a table.

A path given to the runner (``-p data_root glyphs``, or a path parameter of ``run``/``sweep``) is taken from
the folder the runner is started in and passed to the notebook as an absolute path; the notebooks' defaults
are relative to the repository root. While a notebook runs, the runner prints its progress lines (the
training plan, one line per epoch with the time left, one per evaluation: ``fsl_core.progress``), which the
kernel prints in plain-lines mode; everything else the notebook prints stays in the executed notebook.

Run folder contents written here: ``run.json`` (the manifest, written first: notebook and parameters),
``config.json`` (notebook, the parameters given, every parameter's value in this run, library version, git
revision), the executed notebook, and a ``DONE`` marker once it ran to the end (``FAILED`` with the error
otherwise). A run folder belongs to one run
(``fsl_core.run_folder``): a run into a folder that exists is refused before anything runs, unless
``overwrite=True`` (``--overwrite``) moves the old files aside into ``replaced-<time>/``; the runner holds the
folder's lock while the notebook executes.

Command line::

    python -m fsl_core.notebooks 00_quickstart
    python -m fsl_core.notebooks 02_train -p model bifrn -p epochs 4 --run-name bifrn-short
    python -m fsl_core.notebooks 02_train --help-notebook
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import itertools
import json
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

import fsl_core
from fsl_core.cli import CommandParser
from fsl_core.notebook_parameters import (
    NOTEBOOKS,
    REPO_ROOT,
    check,  # noqa: F401 -- the notebooks' one call: fsl_core.notebooks.check(NOTEBOOK, globals())
    check_values,
    declared,
    parameters_cell,
    repo_path,
)
from fsl_core.progress import ENVIRONMENT, LINES, PREFIX, note, plain_lines, report, tqdm
from fsl_core.run_folder import FINISHED, RunFolderConflict, RunFolderInUse, claim_run_folder, is_finished
from fsl_core.runtime import (
    THREADS_REASON,
    atomic_write_bytes,
    atomic_write_json,
    command_line,
    did_you_mean,
    git_revision,
    usable_cpu_cores,
    way_out,
)

INJECTED = ("run_dir", "run_name")
FAILED = "FAILED"
RESULTS = "results.json"
_KERNEL_EXIT: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "kernel_exit", default=None
)
"""Where the runner's kernel manager writes the exit status of a kernel it found dead ({"status": returncode},
negative for a signal): set by ``_execute`` for the run at hand. It is not seen where papermill's event loop runs in
another thread (a run started inside a running kernel's own thread), and the message then says less."""
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


class NotebookRunError(RuntimeError):
    """A notebook run stopped at an error; the executed notebook holding the error stays in ``run_dir``."""

    def __init__(
        self,
        message: str,
        notebook: str = "",
        run_name: str = "",
        run_dir: Path | None = None,
        ename: str = "",
        evalue: str = "",
    ) -> None:
        super().__init__(message)
        self.notebook, self.run_name, self.run_dir = notebook, run_name, run_dir
        self.ename, self.evalue = ename, evalue


# -- paths ----------------------------------------------------------------------------------------------------
def repo_root() -> Path:
    """The repository root (the folder holding ``fsl_core/`` and ``notebooks/``)."""
    return REPO_ROOT


def outputs_root(output_root: str | Path | None = None) -> Path:
    """The folder of all notebook runs: the repository's ``outputs/`` by default; a given relative path is taken
    from the current working folder, as the notebooks' path parameters are."""
    return repo_path("outputs") if output_root is None else Path(output_root).expanduser().absolute()


def notebooks_dir() -> Path:
    """The folder of the numbered notebooks (``<repo>/notebooks``)."""
    folder = REPO_ROOT / "notebooks"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"notebook folder {folder} does not exist; fsl_core must be installed from a source checkout "
            "(pip install -e .) for the notebook runner"
        )
    return folder


def list_notebooks() -> list[str]:
    """Names of the notebooks (file stems, e.g. ``00_quickstart``), sorted."""
    return sorted(p.stem for p in notebooks_dir().glob("[0-9]*.ipynb"))


def resolve_notebook(notebook: str | Path) -> Path:
    """A notebook by path, by name (``02_train``, ``02_train.ipynb``), number (``02``) or title (``train``)."""
    path = Path(notebook)
    if path.suffix == ".ipynb" and path.is_file():
        return path.resolve()
    stem = path.stem if path.suffix == ".ipynb" else str(notebook)
    names = list_notebooks()
    matches = [n for n in names if n == stem] or [
        n for n in names if n.split("_", 1)[0] == stem or n.split("_", 1)[-1] == stem
    ]
    if path.suffix == ".ipynb" and not matches:
        raise FileNotFoundError(
            f"notebook {str(notebook)!r} does not exist; give the path of an .ipynb file, or one of {names}"
        )
    if len(matches) != 1:
        what = "is ambiguous" if matches else f"is not a notebook{did_you_mean(stem, names)}"
        raise ValueError(
            f"notebook {str(notebook)!r} {what}; expected one of {names} or a path to an .ipynb file"
        )
    return notebooks_dir() / f"{matches[0]}.ipynb"


def default_run_name() -> str:
    """A timestamp run name, e.g. ``20250101-120000``."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def run_folder(notebook: str, run_dir: str | Path | None = None) -> Path:
    """The run folder a notebook writes into, created if needed.

    Under the runner (or papermill with ``-p run_dir ...``) it is the injected ``run_dir``; run interactively
    (``run_dir`` left as None or "") it is ``outputs/<notebook>/interactive`` under the repository root.
    """
    folder = repo_path(run_dir) if run_dir else outputs_root() / notebook / "interactive"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def output_root_of(run_dir: str | Path) -> Path | None:
    """The output root that holds the run folder ``run_dir`` when it has the runner's layout
    ``<output root>/<notebook>/<run>`` (``outputs/<notebook>/interactive`` too), else None (a run folder given to
    papermill anywhere): where a notebook looks for other runs' results (``reuse_under`` of the brief training)."""
    run_dir = Path(run_dir)
    return run_dir.parent.parent if run_dir.parent.name in NOTEBOOKS else None


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """The ``results.json`` a notebook wrote into ``run_dir`` ({} when it wrote none)."""
    path = Path(run_dir) / RESULTS
    return json.loads(path.read_text()) if path.is_file() else {}


# -- parameters -----------------------------------------------------------------------------------------------
def notebook_parameters(notebook: str | Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares: {name: {default, type, help}}.

    The project's notebooks declare theirs in ``fsl_core.notebook_parameters`` (type = what a valid value
    looks like); another notebook's are read from its ``parameters`` cell by papermill.
    """
    name = resolve_notebook(notebook).stem
    if name in NOTEBOOKS:
        return {
            key: {"default": spec.default, "type": spec.expected(), "help": spec.help}
            for key, spec in declared(name).items()
        }
    import papermill

    inspected = papermill.inspect_notebook(str(resolve_notebook(notebook)))
    return {
        key: {
            "default": spec.get("default"),
            "type": spec.get("inferred_type_name"),
            "help": spec.get("help"),
        }
        for key, spec in inspected.items()
    }


def _plain(value: Any) -> Any:
    """Values papermill keeps typed: Path → str, tuple → list, recursively."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def check_parameters(
    notebook: str | Path, parameters: Mapping[str, Any], given: Mapping[str, Any] | None = None
) -> None:
    """Raise a ValueError naming every unknown parameter (with the closest name) and, for the project's
    notebooks, every wrong value and missing path (``check_values``; ``given``: the parameters as they were
    typed, before ``absolute_path_parameters``) — before a kernel starts."""
    name = resolve_notebook(notebook).stem
    if name in NOTEBOOKS:
        check_values(name, {k: v for k, v in parameters.items() if k not in INJECTED}, given=given)
        return
    declared_here = notebook_parameters(notebook)
    unknown = [key for key in parameters if key not in declared_here and key not in INJECTED]
    if unknown:
        hints = ", ".join(f"{key!r}{did_you_mean(key, declared_here)}" for key in unknown)
        raise ValueError(
            f"notebook {name} has no parameter {hints}; its parameters: {', '.join(declared_here)}"
        )


def absolute_path_parameters(
    notebook: str | Path, parameters: Mapping[str, Any], folder: str | Path | None = None
) -> dict[str, Any]:
    """``parameters`` with every path a project notebook declares (kind "path", and each path of kind "paths") made
    absolute, relative ones
    taken from ``folder`` (default: the current working folder): what the runner passes to the kernel, which
    runs in the repository root. ``~`` is expanded; None and "" stay as they are."""
    name = resolve_notebook(notebook).stem
    if name not in NOTEBOOKS:
        return dict(parameters)
    base = Path(folder) if folder is not None else Path.cwd()
    kinds = declared(name)
    out = dict(parameters)
    for key, value in parameters.items():
        kind = kinds[key].kind if key in kinds and key not in INJECTED else None
        if kind == "path" and isinstance(value, str) and value:
            out[key] = os.path.normpath(base / Path(value).expanduser())
        elif kind == "paths" and isinstance(value, Mapping):
            out[key] = {
                entry: os.path.normpath(base / Path(path).expanduser())
                if isinstance(path, str) and path
                else path
                for entry, path in value.items()
            }
    return out


def every_value(
    name: str, parameters: Mapping[str, Any], run_dir: Path, run_name: str
) -> dict[str, Any] | None:
    """Every parameter of the project notebook ``name`` with the value its run uses: ``parameters`` (as the runner
    passes them) over the declared defaults (a relative default path made absolute from the repository root, as the
    kernel reads it), and the injected ``run_dir`` and ``run_name``. config.json records it as ``values``, so that a
    run says what it ran with even after a default changes. None for another notebook, whose defaults are source
    text, not values."""
    if name not in NOTEBOOKS:
        return None
    defaults = {
        key: str(repo_path(parameter.default))
        if parameter.kind == "path" and isinstance(parameter.default, str) and parameter.default
        else parameter.default
        for key, parameter in declared(name).items()
    }
    return _plain({**defaults, **parameters, "run_dir": run_dir, "run_name": run_name})


def write_parameter_cells() -> list[str]:
    """Rewrite the ``parameters`` cell of every project notebook from its declarations; returns the changed
    notebooks (run after adding or changing a parameter in ``fsl_core.notebook_parameters``)."""
    import nbformat

    changed = []
    for name in NOTEBOOKS:
        path = notebooks_dir() / f"{name}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        source = parameters_cell(name)
        if cell.source != source:
            cell.source = source
            nbformat.write(notebook, path)
            changed.append(name)
    return changed


# -- the kernel ----------------------------------------------------------------------------------------------
class _ProgressEcho:
    """The kernel's stdout, as papermill receives it: the progress lines (``fsl_core.progress.PREFIX``) are
    printed again by ``report``, after ``label``; everything else stays in the executed notebook only."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.pending = ""

    def write(self, text: str) -> None:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self._forward(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.pending:
            self._forward(self.pending)
            self.pending = ""

    def _forward(self, line: str) -> None:
        line = line.rsplit("\r", 1)[-1]  # what a terminal would show of a line rewritten in place
        if line.startswith(PREFIX):
            report(f"{self.label}: {line[len(PREFIX) :]}" if self.label else line[len(PREFIX) :])


@functools.cache
def _kernel_manager_class() -> type:
    """The kernel manager of the runner's kernels (a subclass of jupyter_client's ``AsyncKernelManager``).

    - A kernel starts in the repository root with ``FSL_CORE_PROGRESS=lines`` (``fsl_core.progress``): no
      widget bars, which would be saved as frozen text, and progress lines that the runner forwards. The
      runner itself never changes its working folder (papermill's ``cwd`` would, for the whole process).
    - The kernel's messages travel encrypted (CurveZMQ keys provisioned by the manager, when pyzmq supports
      them and the kernel declares it can use them) or, without CurveZMQ on POSIX, over local sockets: the
      kernel then has no reason to warn that it runs "over TCP without encryption".
    - A kernel found dead leaves its exit status where ``_execute`` can read it (``_KERNEL_EXIT``): a kernel
      killed for lack of memory is then named as such.
    - A kernel is shut down without the interrupt that jupyter_client sends first. papermill shuts a kernel
      down once its notebook ran to the end or stopped at an error (or the runner was stopped), and the
      shutdown request, then SIGTERM, ends it in every case; the interrupt only ever reached a kernel still
      finishing its answer to the runner's last request, which ipykernel then logged as an error
      ("KeyboardInterrupt caught in kernel") after a run that had succeeded.
    """
    import zmq
    from jupyter_client.manager import AsyncKernelManager

    class RunnerKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if self.has_trait("transport_encryption") and zmq.has("curve"):
                self.transport_encryption = "auto"
            elif os.name == "posix":
                self.transport = "ipc"

        async def start_kernel(self, **kwargs: Any) -> None:
            env = dict(kwargs.pop("env", None) or os.environ)
            env[ENVIRONMENT] = LINES
            kwargs.setdefault("cwd", str(REPO_ROOT))
            await super().start_kernel(env=env, **kwargs)

        async def _async_interrupt_kernel(self) -> None:
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

        async def _async_is_alive(self) -> bool:  # asked by the manager and by its kernel client
            alive = await super()._async_is_alive()
            exit_record = _KERNEL_EXIT.get()
            process = getattr(self.provisioner, "process", None)
            if (
                not alive
                and exit_record is not None
                and process is not None
                and process.returncode is not None
            ):
                exit_record.setdefault("status", process.returncode)
            return alive

        is_alive = _async_is_alive  # jupyter_client binds this name to its own function, not to the override

    return RunnerKernelManager


def _kernel_death(status: int | None) -> str:
    """Why a notebook's kernel died, from its exit status (negative: the signal that ended it; None: unknown), with
    the way out."""
    memory = (
        "lower what the run holds at once (way, query, image_size, a batch size) or close other programs, and run "
        f"again ({way_out('overwrite=True', '--overwrite')} reuses the run's name)"
    )
    if status is not None and status == -getattr(signal, "SIGKILL", -1):  # POSIX only
        return (
            "the kernel was killed (SIGKILL), on Linux most often by the system when memory runs out (the system "
            f"log says so: dmesg); {memory}"
        )
    if status is not None and status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"the kernel ended on {name}: a crash in compiled code, or a signal sent from outside"
    if status is not None:
        return f"the kernel exited with status {status} (the notebook or a library called exit)"
    return f"the kernel died (on Linux most often because memory ran out); {memory}"


# -- one run --------------------------------------------------------------------------------------------------
def run(
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    output_root: str | Path | None = None,
    kernel_name: str = "python3",
    log_output: bool = False,
    progress: bool = False,
    overwrite: bool = False,
    progress_lines: bool = True,
    label: str | None = None,
) -> Path:
    """Execute a notebook with papermill into ``<output_root>/<notebook>/<run_name>/`` and return that folder.

    Args:
        notebook: name (``00_quickstart``), number, or path of the notebook.
        parameters: values for the notebook's ``parameters`` cell (unknown names raise ValueError); a relative
            path is taken from the current working folder (``absolute_path_parameters``).
        run_name: run folder name (default: a timestamp).
        output_root: folder of all runs (``outputs_root``): the repository's ``outputs/`` by default; a relative
            path is taken from the current working folder.
        kernel_name: Jupyter kernel (``python3`` resolves to the environment running this code).
        log_output: stream the notebook's output to the log while it runs.
        progress: papermill's per-cell progress bar.
        overwrite: when the run folder exists, move its files aside into ``replaced-<time>/`` and run;
            otherwise an existing run folder is refused (``RunFolderConflict``) before anything runs.
        progress_lines: print the notebook's progress lines while it runs (the training plan, one line per
            epoch, one per evaluation), each preceded by ``label`` (default: the notebook's name).

    Raises:
        NotebookRunError: a cell raised; the message names the run, the cell and the error, and the executed
            notebook (with the traceback) stays in the run folder next to a ``FAILED`` marker.
        RunFolderConflict: the run folder exists (and ``overwrite`` is False); nothing was changed.
        RunFolderInUse: another process is writing the run folder.
    """
    source = resolve_notebook(notebook)
    name = source.stem
    parameters = _plain(dict(parameters or {}))
    if injected := [key for key in INJECTED if key in parameters]:
        raise ValueError(
            f"{' and '.join(injected)} {'is' if len(injected) == 1 else 'are'} set by the runner: the run folder is "
            f"<output root>/{name}/<run name>; choose it with "
            + way_out("output_root= and run_name=", "--output-root and --run-name")
        )
    given = parameters
    parameters = absolute_path_parameters(source, parameters)  # first: the checks read the data set there
    check_parameters(source, parameters, given)
    run_name = run_name or default_run_name()
    if not _RUN_NAME.match(run_name):
        raise ValueError(f"run_name={run_name!r}: use letters, digits and . _ = , + - (no spaces or slashes)")
    run_dir = outputs_root(output_root) / name / run_name
    identity = {"notebook": name, "parameters": parameters}
    try:
        folder = claim_run_folder(
            run_dir,
            "notebook",
            identity,
            overwrite=overwrite,
            overwrite_hint=way_out("overwrite=True", "--overwrite"),
            other_hint=way_out("another run_name", "another --run-name")
            + " (the default is a new timestamp)",
        )
    except RunFolderConflict as error:
        failed = run_dir / FAILED
        if not failed.is_file():
            raise
        reason = failed.read_text(errors="replace").strip().splitlines()[:1] or ["no reason recorded"]
        raise RunFolderConflict(
            f"the run named {run_name!r} failed ({failed}: {reason[0]}); {error}"
        ) from None
    if folder.moved_aside is not None:
        print(
            f"the files of the earlier run in {run_dir} were moved to {folder.moved_aside}", file=sys.stderr
        )
    try:
        earlier = (
            [f for f in finished_runs_with(name, parameters, output_root) if f != run_dir]
            if progress_lines
            else []
        )
        if earlier:
            print(
                f"{name}: a run with the same parameters finished earlier in {earlier[0]} (its results are there); "
                f"this one runs them again in {run_dir}",
                file=sys.stderr,
            )
        echo = _ProgressEcho(label if label is not None else name) if progress_lines else None
        return _execute(source, parameters, run_name, run_dir, kernel_name, log_output, progress, echo)
    finally:
        folder.release()


def _execute(
    source: Path,
    parameters: dict[str, Any],
    run_name: str,
    run_dir: Path,
    kernel_name: str,
    log_output: bool,
    progress: bool,
    echo: _ProgressEcho | None = None,
) -> Path:
    """Execute ``source`` into the claimed ``run_dir``: config.json, the executed notebook, DONE or FAILED."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name = source.stem
    config = {
        "notebook": name,
        "run_name": run_name,
        "parameters": parameters,
        "values": every_value(name, parameters, run_dir, run_name),
        "fsl_core_version": fsl_core.__version__,
        "git_revision": git_revision(REPO_ROOT),
        "started": datetime.now().isoformat(timespec="seconds"),
        "python": sys.executable,
    }
    atomic_write_json(config, run_dir / "config.json")
    output = run_dir / f"{name}.ipynb"
    start = time.perf_counter()
    kernel_exit: dict[str, int] = {}
    watching = _KERNEL_EXIT.set(kernel_exit)
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters={**parameters, "run_dir": str(run_dir), "run_name": run_name},
            kernel_name=kernel_name,
            progress_bar=progress,
            log_output=log_output,
            stdout_file=echo,
            kernel_manager_class=_kernel_manager_class(),  # starts the kernel in the repository root
        )
    except PapermillExecutionError as error:
        message = (
            f"notebook {name} failed in run {run_name!r} at cell {error.exec_count}: {error.ename}: {error.evalue}\n"
            f"the executed notebook with the error: {output}"
        )
        atomic_write_bytes((message + "\n").encode(), run_dir / FAILED)
        raise NotebookRunError(message, name, run_name, run_dir, error.ename, error.evalue) from None
    except Exception as error:  # the kernel died, did not start, or timed out
        ename, evalue = type(error).__name__, str(error)
        if ename == "DeadKernelError":
            evalue = _kernel_death(kernel_exit.get("status"))
        message = (
            f"notebook {name} could not run to the end in run {run_name!r}: {ename}: {evalue}\nsee {output}"
        )
        atomic_write_bytes((message + "\n").encode(), run_dir / FAILED)
        raise NotebookRunError(message, name, run_name, run_dir, ename, evalue) from error
    finally:
        _KERNEL_EXIT.reset(watching)
        if echo is not None:
            echo.close()
    seconds = time.perf_counter() - start
    atomic_write_json(
        {"seconds": round(seconds, 1), "finished": datetime.now().isoformat(timespec="seconds")},
        run_dir / FINISHED,
    )
    return run_dir


# -- many runs ------------------------------------------------------------------------------------------------
def expand_grid(grid: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """A list of parameter dicts stays as it is; a dict of lists becomes their Cartesian product."""
    if isinstance(grid, Mapping):
        keys = list(grid)
        for key in keys:
            if not isinstance(grid[key], (list, tuple)):
                raise ValueError(f"grid[{key!r}] must be a list of values, got {grid[key]!r}")
        return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    return [dict(item) for item in grid]


def sweep_run_name(varying: Mapping[str, Any], parameters: Mapping[str, Any]) -> str:
    """A readable, reproducible run name: the varying values, then a hash of every parameter.

    Equal parameters give equal names, so a finished run can be found and reused.
    """

    def short(value: Any) -> str:
        text = (
            json.dumps(_plain(value), sort_keys=True)
            if isinstance(value, (dict, list, tuple))
            else str(value)
        )
        return re.sub(r"[^A-Za-z0-9.+-]+", "", text.replace(":", "-"))[:24]

    label = ",".join(f"{k}={short(v)}" for k, v in varying.items() if k != "label")
    if "label" in varying:
        label = re.sub(r"[^A-Za-z0-9.+=,-]+", "-", str(varying["label"])).strip("-") or label
    digest = hashlib.sha1(json.dumps(_plain(parameters), sort_keys=True).encode()).hexdigest()[:8]
    return f"{label}-{digest}" if label else digest


@contextlib.contextmanager
def _threads_per_kernel(kernels: int) -> Iterator[None]:
    """Kernels started meanwhile, ``kernels`` at a time, share the usable cores: each uses cores // kernels
    intra-op threads (they inherit the environment), and says why (``THREADS_REASON``). An ``OMP_NUM_THREADS``
    the environment already sets is kept."""
    cores = usable_cpu_cores()
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", THREADS_REASON)
    saved = {name: os.environ.get(name) for name in names}
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ[THREADS_REASON] = (
            f"the sweep's share of {cores} cores, {kernels} kernel{'s' * (kernels != 1)} at a time"
        )
    for name in names[:2]:
        os.environ.setdefault(name, str(max(1, cores // kernels)))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _ran_with(folder: Path, name: str, parameters: Mapping[str, Any], run_name: str) -> bool:
    """Whether the run in ``folder`` (its config.json) ran notebook ``name`` with ``parameters`` given and, where it
    recorded every value, with the values those give now: a run made before a default changed is not the same."""
    saved = folder / "config.json"
    if not saved.is_file():
        return False
    config = json.loads(saved.read_text())
    if config.get("parameters") != parameters:
        return False
    recorded = config.get("values")
    return recorded is None or recorded == every_value(name, parameters, folder, run_name)


def finished_runs_with(
    notebook: str, parameters: Mapping[str, Any], output_root: str | Path | None = None
) -> list[Path]:
    """The finished runs of ``notebook`` under ``<output_root>/<notebook>/`` that ran with ``parameters`` (as
    ``run`` passes them: paths absolute), newest first (see ``_ran_with``). A folder that cannot be read (a
    damaged config.json, a run moved aside meanwhile by a sweep) is passed over: the answer only informs."""
    base = outputs_root(output_root) / notebook
    found = []
    for folder in base.iterdir() if base.is_dir() else ():
        try:
            if is_finished(folder) and _ran_with(folder, notebook, parameters, folder.name):
                found.append(((folder / FINISHED).stat().st_mtime, folder))
        except (OSError, ValueError, AttributeError):
            continue
    return [folder for _, folder in sorted(found, reverse=True)]


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[f"{prefix}{key}"] = value
    return out


def sweep(
    notebook: str | Path,
    grid: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    max_workers: int = 2,
    skip_finished: bool = True,
    parameters: Mapping[str, Any] | None = None,
    output_root: str | Path | None = None,
    run_names: Sequence[str] | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
    strict: bool = False,
) -> pd.DataFrame:
    """Run a notebook once per parameter set, at most ``max_workers`` kernels at a time.

    Args:
        notebook: the notebook to run (e.g. ``02_train``).
        grid: a list of parameter dicts, or a dict of value lists (Cartesian product). A ``label`` key names
            the run instead of the varying values (it is not passed to the notebook).
        max_workers: kernels running at once (each is its own process). The usable cores are split evenly between
            the kernels that run at once (fewer than max_workers when fewer runs are pending), unless the
            environment sets OMP_NUM_THREADS; each kernel's training says which share it took.
        skip_finished: reuse a run whose folder holds ``DONE`` with the same parameters (and, where its
            config.json records every value, the same values: a run finished before a default changed is run
            again). Any other run whose folder exists (a failed or interrupted attempt) is run again after its
            files are moved aside into ``replaced-<time>/`` (see ``run``'s ``overwrite``): nothing is deleted.
        parameters: values shared by every run (the grid's values win). Relative paths, here and in the grid,
            are taken from the current working folder (``absolute_path_parameters``).
        output_root: as in ``run``; runs land in ``<output_root>/<notebook>/<run name>/``.
        run_names: explicit run names (default: ``sweep_run_name``, which includes a parameter hash).
        strict: raise ``NotebookRunError`` naming the failed runs (after all runs ended).
        progress: a bar over the runs, and each run's progress lines, after its run name, as they come.

    Returns:
        One row per run: ``run``, ``status`` ("done", "reused" or "failed"), ``seconds``, ``run_dir``,
        ``error``, the grid's values, and the scalars of its ``results.json`` (nested keys joined by ".").
    """
    source = resolve_notebook(notebook)
    combos = expand_grid(grid)
    if not combos:
        raise ValueError("the grid is empty: nothing to run")
    if max_workers < 1:
        raise ValueError(f"max_workers={max_workers}: expected at least 1")
    shared = _plain(dict(parameters or {}))
    jobs = []
    for i, combo in enumerate(combos):
        values = {k: v for k, v in _plain(combo).items() if k != "label"}
        full = {**shared, **values}
        absolute = absolute_path_parameters(source, full)  # here: the kernels' runs may change the folder
        check_parameters(source, absolute, full)  # before any run of the sweep starts
        full = absolute
        name = run_names[i] if run_names is not None else sweep_run_name(_plain(combo), full)
        jobs.append((name, combo, full))
    names = [name for name, _, _ in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"the grid gives several runs the same name: {duplicates}; make the parameter sets differ"
        )

    output_root = outputs_root(output_root)  # once, so every run of the sweep lands in the same folder
    base = output_root / source.stem
    rows: dict[str, dict[str, Any]] = {}
    pending = []
    for name, _, full in jobs:
        folder = base / name
        if skip_finished and is_finished(folder) and _ran_with(folder, source.stem, full, name):
            rows[name] = {
                "status": "reused",
                "seconds": json.loads((folder / FINISHED).read_text() or "{}").get("seconds"),
            }
        else:
            pending.append((name, full))
    if progress and len(pending) < len(jobs):
        note(
            f"{source.stem}: {len(jobs) - len(pending)} of {len(jobs)} runs finished earlier with the same "
            f"parameters and are reused ({', '.join(name for name in names if name in rows)})"
        )

    def one(name: str, full: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            run(
                source,
                full,
                run_name=name,
                output_root=output_root,
                kernel_name=kernel_name,
                overwrite=(base / name).exists(),
                progress_lines=progress,
                label=f"{source.stem} {name}",
            )
            return {"status": "done", "seconds": round(time.perf_counter() - start, 1)}
        except NotebookRunError as error:
            return {
                "status": "failed",
                "seconds": round(time.perf_counter() - start, 1),
                "error": f"{error.ename}: {error.evalue}",
            }

    if pending:
        with (
            _threads_per_kernel(min(max_workers, len(pending))),
            ThreadPoolExecutor(max_workers=max_workers) as pool,
        ):
            futures = {pool.submit(one, name, full): name for name, full in pending}
            for future in tqdm(
                as_completed(futures), total=len(futures), desc=f"{source.stem} runs", disable=not progress
            ):
                row = rows[futures[future]] = future.result()
                if progress:
                    note(f"{source.stem} {futures[future]}: {row['status']} in {row['seconds']:.0f} s")

    table = []
    for name, combo, _ in jobs:
        folder = base / name
        row = {"run": name, **rows[name], "run_dir": str(folder), "error": rows[name].get("error", "")}
        row.update(
            {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in _plain(combo).items()}
        )
        if row["status"] != "failed":
            row.update(_flatten(read_results(folder)))
        table.append(row)
    failed = [row["run"] for row in table if row["status"] == "failed"]
    if failed:
        details = "; ".join(f"{row['run']}: {row['error']}" for row in table if row["status"] == "failed")
        message = f"{len(failed)} of {len(table)} {source.stem} runs failed ({details}); see {base}/<run>/"
        if strict:
            raise NotebookRunError(message, source.stem, ",".join(failed), base)
        warnings.warn(message, stacklevel=2)
    return pd.DataFrame(table)


# -- command line ---------------------------------------------------------------------------------------------
def _value(text: str) -> Any:
    """Command-line value → int, float, bool, None, list or dict when it reads as YAML, else the string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _yaml_problem(error: Exception) -> str:
    """A YAML parser error on one line: what it expected, and where (line, column)."""
    problem = getattr(error, "problem", None) or (str(error).splitlines() or [type(error).__name__])[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fsl_core.notebooks NAME [-p key value ...] [-y YAML] [-f FILE] [--run-name X]``."""
    parser = CommandParser(prog="fsl-notebook", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebook", nargs="?", help=f"notebook name or path; one of: {', '.join(list_notebooks())}"
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter (values read as YAML: 5, 0.1, true, [1, 5], {mask: false})",
    )
    parser.add_argument(
        "-f",
        "--parameters-file",
        default=None,
        metavar="FILE",
        help="parameters from a YAML file holding a mapping (-y and -p given too take precedence)",
    )
    parser.add_argument(
        "-y",
        "--yaml",
        default=None,
        help="parameters as a YAML mapping written inline: '{epochs: 2, seed: 1}'",
    )
    parser.add_argument("--run-name", default=None, help="run folder name (default: a timestamp)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="when the run folder exists, move its files aside into RUN/replaced-<time>/ and run again",
    )
    parser.add_argument(
        "--output-root",
        default=None,
        help="folder of all runs, relative to the current folder (default: outputs/ of the repository)",
    )
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument(
        "--log-output", action="store_true", help="stream the notebook's output while it runs"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the per-cell progress bar and the progress lines (one per epoch, one per evaluation)",
    )
    parser.add_argument(
        "--help-notebook", action="store_true", help="list the notebook's parameters and exit"
    )
    parser.add_argument("--list", action="store_true", help="list the notebooks and exit")
    parser.add_argument(
        "--write-parameter-cells",
        action="store_true",
        help="rewrite every notebook's parameters cell from fsl_core/notebook_parameters.py and exit",
    )
    args = parser.parse_args(argv)
    if args.write_parameter_cells:
        changed = write_parameter_cells()
        print(
            f"rewrote the parameters cell of {', '.join(changed)}" if changed else "every cell is up to date"
        )
        return 0
    if args.list or not args.notebook:
        print("\n".join(list_notebooks()))
        return 0
    if args.help_notebook:
        try:
            listed = notebook_parameters(args.notebook)
        except (ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        for name, spec in listed.items():
            kind = f"{spec['type']}; " if spec["type"] not in (None, "None") else ""
            print(f"{name} = {spec['default']!r}  ({kind}{spec['help'] or ''})")
        return 0
    import yaml

    parameters: dict[str, Any] = {}
    if args.parameters_file:
        try:
            loaded = yaml.safe_load(Path(args.parameters_file).expanduser().read_text())
        except (OSError, ValueError, yaml.YAMLError) as error:  # ValueError: not UTF-8 text
            parser.error(f"-f {args.parameters_file}: cannot read it as YAML ({_yaml_problem(error)})")
        if not isinstance(loaded, dict):
            parser.error(
                f"-f {args.parameters_file}: expected a YAML mapping (name: value lines), got {loaded!r}"
            )
        parameters.update(loaded)
    if args.yaml:
        try:
            loaded = yaml.safe_load(args.yaml)
        except yaml.YAMLError as error:
            parser.error(f"-y {args.yaml!r}: not YAML ({_yaml_problem(error)})")
        if not isinstance(loaded, dict):
            hint = (
                f"; {args.yaml} is a file: read it with -f {args.yaml}" if Path(args.yaml).is_file() else ""
            )
            parser.error(
                f"-y expects a YAML mapping written inline, e.g. '{{epochs: 2}}', got {args.yaml!r}{hint}"
            )
        parameters.update(loaded)
    try:
        stem = resolve_notebook(args.notebook).stem
    except ValueError:  # a wrong name is refused by run below, with the way out
        stem = ""
    kinds = {key: spec.kind for key, spec in declared(stem).items()} if stem in NOTEBOOKS else {}
    typed: dict[str, Any] = {}
    for name, text in args.parameter:
        if name in typed:
            parser.error(f"-p {name} is given twice ({typed[name]!r}, then {text!r}); give it once")
        typed[name] = text
        value = _value(text)
        # one value where a list is expected: the list of that value (-p shots 1 is -p shots '[1]')
        parameters[name] = (
            [value] if kinds.get(name) in ("ints", "names") and not isinstance(value, list) else value
        )
    if args.log_output:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        folder = run(
            args.notebook,
            parameters,
            run_name=args.run_name,
            output_root=args.output_root,
            kernel_name=args.kernel,
            log_output=args.log_output,
            progress=not args.no_progress and not plain_lines(),  # papermill's cell bar: for a terminal
            overwrite=args.overwrite,
            progress_lines=not args.no_progress,
        )
    except (NotebookRunError, ValueError, OSError, RunFolderInUse) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    seconds = json.loads((folder / FINISHED).read_text())["seconds"]
    name = stem  # the notebook ran, so its name resolved
    figures = len(list(folder.glob("*.png")))  # figures are written at the top; sub-folders hold data
    print(
        f"{name} finished in {seconds:.0f} s; outputs in {folder}: the executed notebook {name}.ipynb (open it in "
        "JupyterLab to read it with its figures)"
        + (f", {RESULTS}" if (folder / RESULTS).is_file() else "")
        + (f" and {figures} figure{'s' * (figures != 1)} (.png)" if figures else "")
    )
    summary = read_results(folder).get("summary")
    if isinstance(summary, Mapping):
        for key, value in summary.items():
            print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
