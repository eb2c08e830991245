"""CPU threads: one rule (``fsl_core.runtime.use_cpu_threads``), used by training and the notebooks, and
the number in use recorded with each run; and the CPU's name as benchmark tables give it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import TINY

from fsl_core import runtime
from fsl_core.cli.train import main as train_main
from fsl_core.engine import train
from fsl_core.engine.distributed import EpisodeLoss
from fsl_core.runtime import (
    AUTO_DEVICE,
    choose_cpu_threads,
    resolve_device,
    usable_cpu_cores,
    use_cpu_threads,
)


@pytest.fixture
def three_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process allowed on three cores of a machine of eight, with no thread setting in the environment."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_zero_takes_every_core_the_process_may_use(three_cores: None, keep_threads: None) -> None:
    assert usable_cpu_cores() == 3
    assert choose_cpu_threads(0) == (3, "the 3 of 8 cores this process may use")
    assert use_cpu_threads(0) == 3 == torch.get_num_threads()


def test_without_an_affinity_the_cpu_count_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert choose_cpu_threads(0) == (6, "every core of this machine")


def test_an_explicit_number_is_honoured(three_cores: None, keep_threads: None) -> None:
    assert choose_cpu_threads(5) == (5, "as asked")
    assert use_cpu_threads(2) == 2 == torch.get_num_threads()
    assert use_cpu_threads(1) == 1 == torch.get_num_threads()


def test_the_environment_and_torchrun(three_cores: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_cpu_threads(0) == (2, "OMP_NUM_THREADS of the environment")
    assert choose_cpu_threads(3)[0] == 3  # an explicit number wins
    # under torchrun the machine's cores are divided between its processes (torchrun sets OMP_NUM_THREADS=1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert choose_cpu_threads(0) == (2, "8 cores shared by 3 processes on this machine")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert choose_cpu_threads(0)[0] == 1  # never none
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("OMP_NUM_THREADS", "four")
    with pytest.raises(ValueError, match=r"OMP_NUM_THREADS='four' in the environment is not a positive"):
        choose_cpu_threads(0)


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_a_wrong_number_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="expected a non-negative integer"):
        choose_cpu_threads(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("threads, expected", [(0, 3), (2, 2)])
def test_training_records_the_threads_it_ran_with(
    birds: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    three_cores: None,
    keep_threads: None,
    threads: int,
    expected: int,
) -> None:
    seen = []
    forward = EpisodeLoss.forward

    def counting(self: EpisodeLoss, *args: object, **kwargs: object) -> object:
        seen.append(torch.get_num_threads())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(EpisodeLoss, "forward", counting)
    torch.set_num_threads(1)
    settings = {**TINY, "epochs": 1, "val_every": 0, "threads": threads}
    train(data_root=str(birds), run_dir=str(tmp_path / "run"), **settings)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["threads"] == threads and config["cpu_threads"] == expected
    assert seen == [expected] * 3  # every step of the run
    assert torch.get_num_threads() == 1  # the caller's setting is back


def test_the_command_line_takes_threads(
    birds: Path, tmp_path: Path, keep_threads: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = train_main(
        ["--data", str(birds), "--run-dir", str(tmp_path / "cli"), "--threads", "2", "--epochs", "1"]
        + [
            f"--{name.replace('_', '-')}={value}"
            for name, value in TINY.items()
            if name not in ("epochs", "progress", "threads")
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "  device: cpu, 2 CPU threads (as asked)" in out
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["cpu_threads"] == 2


def test_device_name_gives_the_cpu_family_and_model_beside_a_bare_name(monkeypatch, tmp_path):
    """A virtual machine's "AMD EPYC" alone does not tell two generations apart; the family and model do."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
        "processor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
    )
    monkeypatch.setattr(runtime, "Path", lambda path: cpuinfo if path == "/proc/cpuinfo" else Path(path))
    assert runtime.device_name("cpu") == "AMD EPYC (family 25, model 17)"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: ARMv8 Processor\n")
    assert runtime.device_name("cpu") == "ARMv8 Processor"


def test_the_environment_names_what_device_auto_stands_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTO_DEVICE, "cpu")
    assert resolve_device("auto") == torch.device("cpu") and resolve_device() == torch.device("cpu")
    monkeypatch.setenv(AUTO_DEVICE, "gpu")
    with pytest.raises(ValueError, match=r"FSL_CORE_AUTO_DEVICE='gpu' \(what device 'auto' stands for\): "):
        resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")  # a device named outright ignores the variable
    monkeypatch.delenv(AUTO_DEVICE)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
