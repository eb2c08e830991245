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


def test_a_cuda_index_beyond_the_machines_gpus_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cuda") == torch.device(
        "cuda"
    )
    with pytest.raises(
        ValueError,
        match=r"device='cuda:5': this machine has 2 CUDA devices; expected 'cuda' or "
        r"one of \['cuda:0', 'cuda:1'\]",
    ):
        resolve_device("cuda:5")


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_native_bfloat16_on_cuda_asks_for_ampere_or_later(monkeypatch, capability, native) -> None:
    """A T4 (7.5) or V100 (7.0) emulates bfloat16, which ``torch.cuda.is_bf16_supported()`` counts in."""
    asked = []
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda device: asked.append(device) or capability
    )
    monkeypatch.setattr(torch.version, "hip", None)
    assert runtime.native_bfloat16("cuda:1") is native and asked == [torch.device("cuda:1")]


def test_evaluation_mode_moves_the_model_and_puts_its_mode_back() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).double().train()
    with runtime.evaluation_mode(model, torch.device("cpu")) as inside:
        assert inside is model and not any(module.training for module in model.modules())
        x = torch.ones(3, 2, dtype=torch.float64)
        assert torch.equal(model(x), model(x))  # no dropout
    assert all(module.training for module in model.modules())
    with pytest.raises(KeyError), runtime.evaluation_mode(model.eval(), torch.device("cpu")):
        model.train()
        raise KeyError("inside")
    assert not any(module.training for module in model.modules())  # as it came in, after an error too
    model.train()[0].eval()  # a frozen first layer in a model that trains
    with runtime.evaluation_mode(model, torch.device("cpu")):
        assert not any(module.training for module in model.modules())
    assert [module.training for module in model.modules()] == [True, False, True]
