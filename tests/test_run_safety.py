"""Runs never lose work: fault injection against the run folder rules of ``fsl_core.run_folder``.

Every test asserts on the files a run leaves (names and SHA-256 hashes), not only on messages: a second run, a
racing process, a poisoned step, a kill during a checkpoint write, a read-only folder, a full disk and Ctrl-C
all leave what was finished exactly as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, assert_same_run, cli_command, snapshot

import fsl_core.runtime
from fsl_core.cli.train import main as train_main
from fsl_core.engine import TrainingDiverged, train
from fsl_core.engine.brief_training import checkpoint_or_brief_training
from fsl_core.engine.train import parameter_digest
from fsl_core.models.checkpoints import load_checkpoint
from fsl_core.run_folder import (
    FINISHED,
    LOCK,
    RunFolderConflict,
    RunFolderInUse,
    claim_run_folder,
    finished_notebook_run_holding,
    lock_folder,
)
from fsl_core.runtime import NonFiniteError, Terminated, atomic_torch_save, in_words, termination_as_interrupt

pytestmark = pytest.mark.usefixtures("one_thread")


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(LOCK))
    return target


CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# -- a second run never replaces a finished one ------------------------------------------------------------------
def test_the_training_folder_of_a_finished_notebook_run_stays_as_that_run_left_it(
    reference_run: Path, birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook_run = tmp_path / "02_train" / "earlier"
    claim_run_folder(notebook_run, "notebook", {"notebook": "02_train", "parameters": {}}).release()
    (notebook_run / FINISHED).write_text("{}")
    folder = copy_run(reference_run, notebook_run / "train")  # trained 3 epochs
    before = snapshot(notebook_run)
    assert train(data_root=str(birds), run_dir=str(folder), **TINY).epochs_done == 3  # returned as it is
    start = f"run folder {folder} belongs to the finished notebook run {notebook_run}, whose results.json and figures "
    outside = f"hoose another run_dir outside {notebook_run} for a new run"
    copy_way = f"To train on from it, train a copy: cp -r {folder} NEW_FOLDER, then give run_dir=NEW_FOLDER; or c{outside}"
    refusals = {
        f"training it on from epoch 3 to 5 would change them. Nothing was changed. {copy_way}": dict(
            epochs=5
        ),
        f"overwrite=True would move its files aside. Nothing was changed. C{outside}": dict(overwrite=True),
        f"it holds a run of other settings (lr: 0.05 in the run, 0.5 now). Nothing was changed. C{outside}": dict(
            lr=0.5
        ),
        f"it has trained 3 epochs, more than epochs=2 (epochs=3 returns it). Nothing was changed. C{outside}": dict(
            epochs=2
        ),
    }
    for change, settings in refusals.items():
        with pytest.raises(RunFolderConflict) as error:
            train(data_root=str(birds), run_dir=str(folder), **{**TINY, **settings})
        assert str(error.value) == f"{start}describe it as that run left it; {change}"
    with (
        in_words({"run_dir": "train_dir"}),
        pytest.raises(RunFolderConflict, match="then give train_dir=NEW_FOLDER;"),
    ):
        train(data_root=str(birds), run_dir=str(folder), **{**TINY, "epochs": 5})
    assert train_main(cli_command(folder, birds, epochs=5)[3:]) == 1
    assert "then give --run-dir NEW_FOLDER; or choose another --run-dir outside" in capsys.readouterr().err
    for inside in (notebook_run / "another", folder / "sub"):  # beside the training, or inside it
        with pytest.raises(RunFolderConflict, match=f"a new run there would mix with them. .* C{outside}$"):
            train(data_root=str(birds), run_dir=str(inside), **TINY)
    link = tmp_path / "link"
    link.symlink_to(folder)  # the copy the message gives copies the folder, not the link
    with pytest.raises(RunFolderConflict, match=f"cp -r {folder} NEW_FOLDER"):
        train(data_root=str(birds), run_dir=str(link), **{**TINY, "epochs": 5})
    assert snapshot(notebook_run) == before and not (notebook_run / "another").exists()
    assert not (folder / "sub").exists()
    (tmp_path / "run.json").write_text(
        '{"name": "another tool\'s file"}'
    )  # above every folder here: not ours
    assert finished_notebook_run_holding(folder) == notebook_run
    # the runs of a later notebook run kept inside this one are its own: the nearest run folder decides
    nested = notebook_run / "runs" / "02_train" / "later"
    claim_run_folder(nested, "notebook", {"notebook": "02_train", "parameters": {}}).release()
    assert train(data_root=str(birds), run_dir=str(nested / "train"), **TINY).epochs_done == 3
    # the way out: a copy trains on, exactly as the run would have
    copy = copy_run(folder, tmp_path / "longer")
    assert train(data_root=str(birds), run_dir=str(copy), **{**TINY, "epochs": 4}).epochs_done == 4
    (notebook_run / FINISHED).unlink()  # an interrupted notebook run's training is continued as any other
    assert train(data_root=str(birds), run_dir=str(folder), **{**TINY, "epochs": 4}).epochs_done == 4
    assert_same_run(folder, copy)


def test_another_run_into_a_finished_run_folder_changes_nothing(
    reference_run: Path, birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(reference_run, tmp_path / "a")
    (run_dir / "last.pt").unlink()  # a user starting over after a corrupt file
    before = snapshot(run_dir)
    with pytest.raises(RunFolderConflict) as error:
        train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "model": "protonet"})
    message = str(error.value)
    assert str(run_dir) in message and "model: 'hmdrn' in the run, 'protonet' now" in message
    assert "Choose another run_dir, or pass overwrite=True to move" in message  # in Python's words
    with pytest.raises(RunFolderConflict) as in_notebook:  # as notebook 02 calls it: in its parameters' words
        with in_words({"run_dir": "train_dir", "overwrite=True": 'train_settings={"overwrite": True}'}):
            train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "model": "protonet"})
    assert 'Choose another train_dir, or pass train_settings={"overwrite": True} to move' in str(
        in_notebook.value
    )
    assert "run_dir" not in str(in_notebook.value).replace(str(run_dir), "")
    code = train_main(cli_command(run_dir, birds, model="protonet")[3:])  # the command line says it in flags
    err = capsys.readouterr().err
    assert code == 1 and "Choose another --run-dir, or pass --overwrite to move" in err and "=True" not in err
    assert error.value._render_traceback_() == [
        f"RunFolderConflict: {message}"
    ]  # in a notebook: no traceback
    assert snapshot(run_dir) == before and not (run_dir / LOCK).exists()  # not even a lock file
    with pytest.raises(RunFolderConflict, match="it holds best.pt but no last.pt to continue from"):
        train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    assert snapshot(run_dir) == before

    result = train(
        data_root=str(birds), run_dir=str(run_dir), overwrite=True, **{**TINY, "model": "protonet"}
    )
    assert result.epochs_done == 3
    (moved,) = run_dir.glob("replaced-*")
    assert snapshot(moved) == before  # the old run, byte for byte, beside the new one
    assert json.loads((run_dir / "run.json").read_text())["identity"]["model"] == "protonet"
    assert json.loads((run_dir / "config.json").read_text())["model"] == "protonet"
    assert load_checkpoint(run_dir / "last.pt")["config"]["name"] == "protonet"


def test_a_folder_of_unrelated_files_is_refused(birds: Path, tmp_path: Path) -> None:
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    with pytest.raises(
        RunFolderConflict, match=r"holds files that no train run of fsl_core wrote \(notes.txt\)"
    ):
        train(data_root=str(birds), run_dir=str(folder), **TINY)
    assert snapshot(folder) == {"notes.txt": hashlib.sha256(b"my notes\n").hexdigest()}
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_finished_run_called_again_is_returned_and_nothing_is_written(
    reference_run: Path, birds: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(reference_run, tmp_path / "done")
    before = snapshot(run_dir)
    result = train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    assert result.finished and result.epochs_done == 3
    assert snapshot(run_dir) == before


def test_epochs_may_grow_on_resume(
    reference_run: Path, birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(reference_run, tmp_path / "longer")
    result = train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "epochs": 5})
    assert result.epochs_done == 5
    assert (
        "epochs grow from 3 to 5; the cosine schedule keeps the period it started with (the learning rate starts "
        "a new cycle every 3 epochs); one schedule over all the epochs needs a new run (another run_dir)"
        in capsys.readouterr().err
    )
    assert json.loads((run_dir / "config.json").read_text())["scheduler_period"] == 3
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert metrics["lr"][3] == metrics["lr"][0] == TINY["lr"]  # a new cosine cycle starts at epoch 4
    assert pd.read_csv(reference_run / "metrics.csv")["loss"].tolist() == metrics["loss"][:3].tolist()
    again = train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "epochs": 5})
    assert again.finished and "epochs grow" not in capsys.readouterr().err  # said by the call that grew them
    # growing again counts from the epochs last asked for, not from those the run started with
    assert train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "epochs": 6}).epochs_done == 6
    assert (
        "epochs grow from 5 to 6; the cosine schedule keeps the period it started with (the learning rate starts "
        "a new cycle every 3 epochs)" in capsys.readouterr().err
    )
    # fewer epochs than trained: one reason, with the way out, whatever else follows from epochs
    before = snapshot(run_dir)
    for epochs in (2, 4):
        with pytest.raises(ValueError) as error:
            train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "epochs": epochs})
        assert (
            f"that this one cannot continue: it has already trained 6 epochs, more than epochs={epochs}; a run "
            "never trains backwards: give epochs >= 6 (epochs=6 leaves it as it is)."
        ) in str(error.value)
        assert "scheduler_period" not in str(error.value)
    capsys.readouterr()
    assert train_main(cli_command(run_dir, birds, epochs=2)[3:]) == 1  # in flags on the command line
    assert "give --epochs 6 or more (--epochs 6 leaves it as it is)" in capsys.readouterr().err
    assert snapshot(run_dir) == before


# -- one process per run folder ----------------------------------------------------------------------------------
def test_a_folder_in_use_is_refused_at_once_and_freed_when_its_process_dies(
    birds: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "busy"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from fsl_core.run_folder import claim_run_folder; "
            "held = claim_run_folder(sys.argv[1], 'train', {}); print('held', flush=True); time.sleep(600)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderInUse, match=f"run folder {run_dir} is in use by process {holder.pid}"):
            train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the operating system released the lock of the killed process: the folder holds its (empty) run
    with pytest.raises(RunFolderConflict, match="cannot continue"):
        train(data_root=str(birds), run_dir=str(run_dir), **TINY)


def test_two_trainings_started_at_once_into_one_folder_do_not_mix(birds: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "race"
    processes = [
        subprocess.Popen(
            cli_command(run_dir, birds, seed=seed),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=CHILD_ENV,
        )
        for seed in (1, 2)
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read().decode()) for p in processes]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 1], outcomes
    refused = next(err for code, err in outcomes if code == 1)
    assert "is in use by process" in refused or "cannot continue: seed" in refused
    seed = json.loads((run_dir / "run.json").read_text())["identity"]["seed"]
    assert json.loads((run_dir / "config.json").read_text())["seed"] == seed
    assert load_checkpoint(run_dir / "last.pt")["train_config"]["seed"] == seed
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3


# -- nothing non-finite is saved ---------------------------------------------------------------------------------
def test_a_poisoned_step_keeps_the_last_finite_checkpoint(
    birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "poisoned"
    train(data_root=str(birds), run_dir=str(run_dir), stop_after_epochs=1, **TINY)
    before = {name: digest for name, digest in snapshot(run_dir).items() if name.endswith(".pt")}
    steps = {"n": 0}
    original = torch.optim.SGD.step

    def poisoned_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        result = original(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 2:  # epoch 2, episode 2: the loss was finite, the update is not
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned_step)
    with pytest.raises(TrainingDiverged) as error:
        train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    message = str(error.value)
    assert "the step of epoch 2, episode 2 of 3" in message and "last.pt still holds epoch 1" in message
    after = {name: digest for name, digest in snapshot(run_dir).items() if name.endswith(".pt")}
    assert after == before
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1


def test_a_huge_learning_rate_never_reaches_a_checkpoint(birds: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "lr1e6"
    settings = {**TINY, "model": "protonet", "episodes_per_epoch": 1, "epochs": 4, "val_every": 1, "lr": 1e6}
    with pytest.raises(TrainingDiverged, match=r"epoch \d, episode 1 of 1") as error:
        train(data_root=str(birds), run_dir=str(run_dir), **settings)
    kept = load_checkpoint(run_dir / "last.pt")
    assert f"last.pt still holds epoch {kept['epoch']}" in str(error.value)
    for name in ("last.pt", "best.pt"):
        content = torch.load(run_dir / name, weights_only=True)
        assert fsl_core.runtime.non_finite_tensors(content) == [], name
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert len(metrics) == kept["epoch"] and metrics["loss"].notna().all()


def test_a_non_finite_tensor_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    atomic_torch_save({"w": torch.ones(3)}, path)
    before = snapshot(tmp_path)
    poisoned = {"w": torch.tensor([1.0, float("nan")]), "state": {0: {"m": torch.tensor([float("-inf")])}}}
    with pytest.raises(NonFiniteError, match=r"2 tensors hold NaN or inf values \(w, state.0.m\)"):
        atomic_torch_save(poisoned, path)
    assert snapshot(tmp_path) == before


# -- crashes and failing disks -------------------------------------------------------------------------------------
KILLED_DURING_WRITE = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from fsl_core.engine import train

    settings, marker = json.loads(sys.argv[1]), Path(sys.argv[2])
    real_fsync = os.fsync

    def fsync_then_hang(fd):
        real_fsync(fd)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(name).startswith(".last.pt."):
            marker.write_text(name)
            time.sleep(600)

    os.fsync = fsync_then_hang
    train(**settings)
    """
)


def test_kill_during_a_checkpoint_write_keeps_the_old_checkpoint(
    reference_run: Path, birds: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "killed"
    train(data_root=str(birds), run_dir=str(run_dir), stop_after_epochs=1, **TINY)
    before = snapshot(run_dir)["last.pt"]
    marker = tmp_path / "writing"
    settings = {**TINY, "data_root": str(birds), "run_dir": str(run_dir)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_DURING_WRITE, json.dumps(settings), str(marker)], env=CHILD_ENV
    )
    deadline = time.monotonic() + 240
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert marker.exists(), "the child never reached the write of last.pt"
    half_written = Path(marker.read_text())
    assert half_written.is_file() and half_written.parent == run_dir  # the new last.pt, never renamed
    assert snapshot(run_dir)["last.pt"] == before
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    train(data_root=str(birds), run_dir=str(run_dir), **TINY)  # resumes from epoch 1, exactly
    assert not half_written.exists()
    assert_same_run(reference_run, run_dir)


def test_a_full_disk_names_the_file_and_keeps_the_checkpoint(
    reference_run: Path, birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = copy_run(reference_run, tmp_path / "full")
    before = snapshot(run_dir)
    real_replace = os.replace

    def no_space_for_checkpoints(source: str, target: str) -> None:
        if str(target).endswith(".pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(source, target)

    monkeypatch.setattr(fsl_core.runtime.os, "replace", no_space_for_checkpoints)
    with pytest.raises(
        OSError, match=f"cannot write {run_dir}/(best|last).pt: No space left on device"
    ) as error:
        train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "epochs": 4})
    assert error.value.errno == errno.ENOSPC
    after = snapshot(run_dir)
    assert {k: after[k] for k in ("last.pt", "best.pt")} == {k: before[k] for k in ("last.pt", "best.pt")}
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs mounted for the test (needs root and the right to mount; skipped elsewhere)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_really_full_disk_and_a_read_only_folder(
    reference_run: Path, birds: Path, small_tmpfs: Path
) -> None:
    run_dir = copy_run(reference_run, small_tmpfs / "run")
    filler = small_tmpfs / "filler"
    free = shutil.disk_usage(small_tmpfs).free
    filler.write_bytes(b"\0" * max(0, free - 200_000))  # leave less than a checkpoint needs
    before = snapshot(run_dir)
    with pytest.raises(OSError, match=r"cannot write .*/(best|last).pt: No space left on device"):
        train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "epochs": 4})
    after = snapshot(run_dir)
    assert {k: after[k] for k in ("last.pt", "best.pt")} == {k: before[k] for k in ("last.pt", "best.pt")}
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    before = snapshot(run_dir)
    with pytest.raises(OSError, match=f"cannot lock run folder {run_dir}: Read-only file system"):
        train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, "epochs": 4})
    assert snapshot(run_dir) == before


# -- Ctrl-C, and `kill` ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stop,status,said",
    [(signal.SIGINT, 130, "interrupted at"), (signal.SIGTERM, 143, "interrupted by SIGTERM at")],
    ids=["ctrl-c", "kill"],
)
def test_ctrl_c_or_kill_stops_with_one_line_and_the_run_resumes_exactly(
    reference_run: Path, birds: Path, tmp_path: Path, stop: int, status: int, said: str
) -> None:
    run_dir = tmp_path / "interrupted"
    process = subprocess.Popen(
        cli_command(run_dir, birds),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=CHILD_ENV,
        text=True,
        # a suite started in the background by a shell (`cmd &`) inherits an ignored SIGINT: give the child
        # Ctrl-C as a terminal gives it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    metrics = run_dir / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:  # header + epoch 1
            break
        time.sleep(0.01)
    was_running = process.poll() is None
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert was_running, stderr
    assert process.returncode == status, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    epoch = load_checkpoint(run_dir / "last.pt")["epoch"]
    # stopped after the epoch's save, or in its last instants (metrics.csv is the save's last file)
    assert lines[0].startswith((f"{said} epoch {epoch + 1}", f"{said} epoch {epoch}, while saving it")), (
        lines[0]
    )
    assert f"last.pt holds epoch {epoch}; run the same command to resume" in lines[0]
    train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    assert_same_run(reference_run, run_dir)


def test_sigterm_becomes_an_interrupt_only_where_its_default_stood() -> None:
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("the test process handles SIGTERM itself")

    def deliver() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(200):  # Python runs a handler between two bytecodes of the main thread
            time.sleep(0.005)

    with pytest.raises(Terminated), termination_as_interrupt():
        deliver()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored
    seen: list[int] = []

    def own(signum: int, frame: object) -> None:
        seen.append(signum)

    signal.signal(signal.SIGTERM, own)
    try:
        with termination_as_interrupt():  # someone else's handler is kept
            deliver()
        assert seen == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is own
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with termination_as_interrupt():  # ignored on purpose: still ignored
            deliver()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    inside: list[object] = []

    def elsewhere() -> None:  # only the main thread may set a handler: elsewhere nothing changes
        with termination_as_interrupt():
            inside.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert inside == [signal.SIG_DFL]


# -- the rules themselves ------------------------------------------------------------------------------------------
def test_claim_rules(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with claim_run_folder(folder, "notebook", {"notebook": "00", "parameters": {"a": 1}}) as claimed:
        assert claimed.created and json.loads((folder / "run.json").read_text())["identity"][
            "parameters"
        ] == {"a": 1}
        with pytest.raises(RunFolderInUse, match=f"in use by process {os.getpid()}"):
            claim_run_folder(folder, "notebook", {})
    (folder / "result.txt").write_text("finished\n")
    (folder / ".result.txt.x1y2.tmp").write_text("half")  # an interrupted atomic write
    with pytest.raises(RunFolderConflict, match="holds a notebook run .* a run is never rewritten"):
        claim_run_folder(folder, "notebook", {"notebook": "00", "parameters": {"a": 1}})
    with pytest.raises(RunFolderConflict, match="holds a notebook run"):
        claim_run_folder(folder, "train", {}, same_run=lambda identity: [])
    assert (folder / ".result.txt.x1y2.tmp").exists()  # a refused claim changes nothing at all
    before = {k: v for k, v in snapshot(folder).items() if not k.endswith(".tmp")}
    with claim_run_folder(folder, "notebook", {"n": 2}, overwrite=True) as claimed:
        assert claimed.moved_aside is not None and claimed.created
        assert snapshot(claimed.moved_aside) == before
        assert not (folder / ".result.txt.x1y2.tmp").exists()  # an interrupted write never held a result
    with claim_run_folder(folder, "notebook", {"n": 3}, overwrite=True) as again:  # earlier moves stay on top
        assert sorted(p.name for p in folder.glob("replaced-*")) == sorted(
            [claimed.moved_aside.name, again.moved_aside.name]  # type: ignore[union-attr]
        )


def test_a_run_folder_at_or_under_a_file_is_refused_naming_the_file(birds: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for folder in (afile, afile / "run"):
        with pytest.raises(
            NotADirectoryError, match=rf"run folder {folder} cannot be made: {afile} is a file"
        ):
            claim_run_folder(folder, "train", {}, other_hint="another run_dir")
    run = subprocess.run(cli_command(afile / "run", birds), capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert (
        f"run folder {afile / 'run'} cannot be made: {afile} is a file (a folder was expected)" in run.stderr
    )
    assert afile.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_notebook_s_brief_training_moves_an_edited_run_aside_and_continues_the_same_one(
    birds: Path, tmp_path: Path
) -> None:
    settings = dict(data_root=birds, image_size=16, epochs=1, episodes_per_epoch=1, query=2, device="cpu")
    folder = tmp_path / "train"
    _, first, _ = checkpoint_or_brief_training("protonet", None, folder, lr=0.1, **settings)
    finished = snapshot(folder)
    _, again, _ = checkpoint_or_brief_training("protonet", None, folder, lr=0.1, **settings)
    assert again == first and snapshot(folder) == finished  # the same settings: the finished run, untouched
    _, edited, _ = checkpoint_or_brief_training("protonet", None, folder, lr=0.05, **settings)
    (moved,) = folder.glob("replaced-*")  # another lr: the earlier run moved aside, byte for byte
    assert snapshot(moved) == finished
    assert load_checkpoint(edited)["train_config"]["lr"] == 0.05


def test_a_brief_training_reuses_another_notebook_run_s_identical_finished_training(
    birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fsl_core.engine.brief_training as brief

    settings = dict(data_root=birds, image_size=16, epochs=1, episodes_per_epoch=1, query=2, device="cpu")
    root = tmp_path / "outputs"
    model, first, _ = brief.checkpoint_or_brief_training(
        "protonet", None, root / "05" / "a" / "train", reuse_under=root, **settings
    )
    before = snapshot(root)
    trained_here = []
    real_train = brief.train
    monkeypatch.setattr(brief, "train", lambda **kw: trained_here.append(kw) or real_train(**kw))
    reused, path, _ = brief.checkpoint_or_brief_training(
        "protonet", None, root / "08" / "b" / "train", reuse_under=root, **settings
    )
    assert path == first and trained_here == [] and snapshot(root) == before  # read, nothing written
    assert f"protonet: reusing {first}, a finished training with these very settings: nothing to train" in (
        capsys.readouterr().out
    )
    assert parameter_digest(reused) == parameter_digest(model)
    # other settings, or no output root to look in: trained here
    _, other, _ = brief.checkpoint_or_brief_training(
        "protonet", None, root / "08" / "c" / "train", reuse_under=root, **{**settings, "seed": 1}
    )
    _, alone, _ = brief.checkpoint_or_brief_training(
        "protonet", None, root / "08" / "d" / "train", **settings
    )
    assert [p.parent for p in (other, alone)] == [root / "08" / "c" / "train", root / "08" / "d" / "train"]
    assert len(trained_here) == 2
    # a training stopped before its last epoch is not what a full one gives
    unfinished = root / "06" / "e" / "train" / "protonet"
    shutil.copytree(first.parent, unfinished)
    for folder in (first.parent, root / "08" / "d" / "train"):
        shutil.rmtree(folder)
    (unfinished / "metrics.csv").write_text((unfinished / "metrics.csv").read_text().splitlines()[0] + "\n")
    _, again, _ = brief.checkpoint_or_brief_training(
        "protonet", None, root / "08" / "f" / "train", reuse_under=root, **settings
    )
    assert again.parent == root / "08" / "f" / "train" and len(trained_here) == 3
    # trained on past its epochs, moved aside, or being written now: not what these settings give now
    longer = copy_run(again.parent, root / "05" / "g" / "train")
    config = json.loads((longer / "config.json").read_text())
    (longer / "config.json").write_text(json.dumps({**config, "epochs": 2}))
    metrics = (longer / "metrics.csv").read_text()
    (longer / "metrics.csv").write_text(metrics + metrics.splitlines()[-1].replace("1,", "2,", 1) + "\n")
    copy_run(again.parent, root / "05" / "h" / "train" / "replaced-20261207T000000Z")
    busy = copy_run(again.parent, root / "06" / "i" / "train" / "protonet")
    shutil.rmtree(again.parent)
    with lock_folder(busy):
        _, trained, _ = brief.checkpoint_or_brief_training(
            "protonet", None, root / "08" / "j" / "train", reuse_under=root, **settings
        )
    assert trained.parent == root / "08" / "j" / "train" and len(trained_here) == 4
    shutil.rmtree(trained.parent)
    _, released, _ = brief.checkpoint_or_brief_training(
        "protonet", None, root / "08" / "k" / "train", reuse_under=root, **settings
    )
    assert released == busy / "best.pt" and len(trained_here) == 4  # once no process writes it
