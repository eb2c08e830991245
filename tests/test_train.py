"""Episodic training: settings and presets, the run folder, exact resume, divergence, validation, the CLI."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, assert_same_run, snapshot

from fsl_core.cli.train import build_parser, main, parse_option
from fsl_core.data import FewShotFolder
from fsl_core.data.transforms import train_transform
from fsl_core.engine import TrainConfig, TrainingDiverged, train
from fsl_core.engine.config import continued_settings
from fsl_core.engine.tracking import EVENT_FILE_PREFIX, tensorboard_available
from fsl_core.engine.train import _continued_schedule
from fsl_core.models import ProtoNet, load_model
from fsl_core.models.checkpoints import load_checkpoint
from fsl_core.progress import ENVIRONMENT, LINES, PREFIX, format_bytes
from fsl_core.runtime import native_bfloat16

pytestmark = pytest.mark.usefixtures("one_thread")
TRAINING = importlib.import_module(
    "fsl_core.engine.train"
)  # the module (the package's ``train`` is its function)


# -- settings ---------------------------------------------------------------------------------------------------
def test_authors_protocol_values() -> None:
    conv4 = TrainConfig()
    assert (conv4.way, conv4.shot, conv4.query, conv4.epochs, conv4.sampler) == (30, 5, 15, 1200, "epoch")
    assert (conv4.lr, conv4.momentum, conv4.nesterov, conv4.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert (conv4.scheduler, conv4.scheduler_period, conv4.val_every) == ("cosine", 400, 20)
    assert (conv4.val_way, conv4.val_shot, conv4.val_query, conv4.val_episodes) == (5, 5, 16, 1000)
    assert TrainConfig(backbone="resnet12").way == 10
    quick = TrainConfig(protocol="quick", epochs=7, way=4)
    assert (quick.way, quick.epochs, quick.scheduler_period, quick.sampler) == (4, 7, 7, "fixed")
    assert TrainConfig(model="frn", way=20, scheduler="step").scheduler == "step"


def test_replace_derives_protocol_values_again() -> None:
    quick = TrainConfig(protocol="quick", shot=2)
    longer = quick.replace(epochs=50)
    assert (longer.epochs, longer.scheduler_period, longer.shot) == (50, 50, 2)
    assert TrainConfig().replace(backbone="resnet12").way == 10
    assert TrainConfig(way=12).replace(backbone="resnet12").way == 12
    assert TrainConfig().replace(seed=3).run_dir == "outputs/train/hmdrn-conv4-30w5s-seed3"
    assert TrainConfig(run_dir="here").replace(seed=3).run_dir == "here"
    # an explicit value is kept even when it equals the protocol's value
    assert TrainConfig(way=30).replace(backbone="resnet12").way == 30
    assert TrainConfig().replace(backbone="resnet12").way == 10
    assert TrainConfig(protocol="quick", scheduler_period=10).replace(epochs=50).scheduler_period == 10
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        quick.replace(epoch=3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"protocol": "slow"}, "protocol='slow' is not known"),
        ({"way": 0}, "way must be a positive integer"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"sampler": "random"}, "sampler='random' is not known"),
        ({"scheduler": "linear"}, "scheduler='linear' is not known"),
        ({"amp": "yes"}, "amp must be True or False"),
        ({"wya": 5}, "unknown training setting 'wya' (did you mean 'way'?)"),
    ],
)
def test_bad_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        TrainConfig.from_dict(settings)
    assert message in str(error.value)


# -- the run folder ---------------------------------------------------------------------------------------------
def test_run_folder_contents(reference_run: Path) -> None:
    # TensorBoard's event file, when tensorboard is installed
    events = sorted(p.name for p in reference_run.glob(EVENT_FILE_PREFIX + "*"))
    assert len(events) == (1 if tensorboard_available() else 0)
    assert sorted(p.name for p in reference_run.iterdir() if p.name not in events) == [
        ".lock",
        "best.pt",
        "config.json",
        "last.pt",
        "metrics.csv",
        "run.json",
    ]
    config = json.loads((reference_run / "config.json").read_text())
    manifest = json.loads((reference_run / "run.json").read_text())
    assert manifest["kind"] == "train"
    assert manifest["identity"] == {k: config[k] for k in manifest["identity"]}
    assert config["model"] == "hmdrn" and config["way"] == 3 and config["epochs"] == 3
    assert config["fsl_core_version"] and config["torch_version"] == str(torch.__version__)
    assert (
        config["device"] == "auto"
        and config["device_used"] == "cpu"
        and config["world_size"] == 1
        and "git_revision" in config
        and config["huge_pages"] == (os.environ.get("THP_MEM_ALLOC_ENABLE") == "1")
    )
    assert config["model_config"]["name"] == "hmdrn" and config["model_config"]["image_size"] == 16

    metrics = pd.read_csv(reference_run / "metrics.csv")
    assert list(metrics.columns) == [
        "epoch",
        "loss",
        "train_acc",
        "val_acc",
        "val_ci95",
        "lr",
        "w_last",
        "w_mid",
        "gamma",
        "episodes",
        "seconds",
        "data_seconds",
    ]
    assert metrics["epoch"].tolist() == [1, 2, 3]
    assert metrics["episodes"].tolist() == [3, 3, 3]
    # validated every 2 epochs and after the last one; empty cells elsewhere
    assert metrics["val_acc"].isna().tolist() == [True, False, False]
    assert metrics["val_ci95"].isna().tolist() == [True, False, False]
    # cosine over the 3-epoch run: lr_e = 0.05 * (1 + cos(pi * e / 3)) / 2
    expected = [0.05 * (1 + torch.cos(torch.tensor(torch.pi * e / 3)).item()) / 2 for e in range(3)]
    assert metrics["lr"].tolist() == pytest.approx(expected, rel=1e-6)
    assert metrics["loss"].notna().all() and metrics["train_acc"].between(0, 100).all()

    last = torch.load(reference_run / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["config"]["name"] == "hmdrn"
    assert {"optimizer", "scheduler", "rng", "sampler", "metrics", "train_config", "best"} <= set(last)
    assert last["sampler"] == {"mode": "fixed", "seed": 0, "next_epoch": 3, "next_episode": 9}
    best_epoch = int(metrics.loc[metrics["val_acc"].idxmax(), "epoch"])
    assert last["best"]["epoch"] == best_epoch
    assert last["best"]["val_acc"] == pytest.approx(metrics["val_acc"].max())
    best = torch.load(reference_run / "best.pt", weights_only=True)
    assert best["epoch"] == best_epoch and best["val_acc"] == last["best"]["val_acc"]
    model = load_model(reference_run / "best.pt")
    assert model.config["name"] == "hmdrn"
    assert TrainConfig.load(reference_run).to_dict() == last["train_config"]


def test_result_and_resume_of_a_finished_run(
    reference_run: Path, birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*_: object) -> None:
        raise AssertionError("a finished run decoded its training images")

    monkeypatch.setattr(FewShotFolder, "keep_in_memory", no_decoding)
    result = train(data_root=str(birds), run_dir=str(reference_run), **dict(TINY, images_in_memory=True))
    assert result.finished and result.epochs_done == 3 and len(result.metrics) == 3
    on_device = train(data_root=str(birds), run_dir=str(reference_run), **dict(TINY, augment_on_device=True))
    assert on_device.finished and on_device.metrics.equals(result.metrics)
    assert result.best_epoch in (2, 3) and result.best_val_acc == result.metrics["val_acc"].max()
    assert (
        result.last_checkpoint == reference_run / "last.pt" and result.checkpoint == reference_run / "best.pt"
    )
    unvalidated = dataclasses.replace(result, run_dir=tmp_path)  # a folder without best.pt
    (tmp_path / "last.pt").touch()
    assert unvalidated.checkpoint == tmp_path / "last.pt"
    # printed, a result is one line, not the model's module tree
    assert repr(result) == (
        f"TrainResult(hmdrn on conv4 in {reference_run}: 3 of 3 epochs, best validation {result.best_val_acc:.2f} "
        f"± {result.best_val_ci95:.2f} % at epoch {result.best_epoch}; checkpoint best.pt)"
    )
    no_validation = dataclasses.replace(unvalidated, best_val_acc=None, best_val_ci95=None, best_epoch=None)
    assert str(no_validation).endswith("3 of 3 epochs, no validation; checkpoint last.pt)")


# -- exact resume -----------------------------------------------------------------------------------------------
def test_stopped_and_resumed_run_equals_uninterrupted(
    reference_run: Path, birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    first = train(data_root=str(birds), run_dir=str(run_dir), stop_after_epochs=1, **TINY)
    assert first.epochs_done == 1 and not first.finished
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    # the resumed part loads images in a worker process, from pixels decoded once and kept in memory:
    # augmentation is seeded per image and the pixels are those of the files, so nothing changes
    capsys.readouterr()
    settings = dict(TINY, progress=True, num_workers=1, images_in_memory=True)
    second = train(data_root=str(birds), run_dir=str(run_dir), **settings)
    assert second.epochs_done == 3
    images = len(FewShotFolder(birds, "train"))
    kept = format_bytes(images * 32 * 32 * 3)  # the set's 32×32 files, whatever the input size
    in_memory = f"; training images in memory: {images} images, {kept}, decoded in "
    assert f"  data: {birds}, 16 px{in_memory}" in capsys.readouterr().out
    assert json.loads((run_dir / "config.json").read_text())["resumed_at_epoch"] == 1
    assert_same_run(reference_run, run_dir)


def test_epoch_sampler_resume_is_exact(birds: Path, tmp_path: Path) -> None:
    settings = dict(
        TINY,
        model="protonet",
        options={"learn_scale": False},
        sampler="epoch",
        way=8,
        shot=2,
        query=2,
        epochs=2,
        val_every=0,
    )
    whole = train(data_root=str(birds), run_dir=str(tmp_path / "whole"), **settings)
    # an FRN epoch on 24 classes of 12 images: 24*3 class slots of 4 images, 8 classes per episode
    assert whole.metrics["episodes"].tolist()[0] in range(7, 10)
    assert not (tmp_path / "whole" / "best.pt").exists()
    train(data_root=str(birds), run_dir=str(tmp_path / "parts"), stop_after_epochs=1, **settings)
    train(data_root=str(birds), run_dir=str(tmp_path / "parts"), **settings)
    last_a = load_checkpoint(tmp_path / "whole" / "last.pt")["state_dict"]
    last_b = load_checkpoint(tmp_path / "parts" / "last.pt")["state_dict"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


# -- bfloat16 autocast (amp) --------------------------------------------------------------------------------------
def _printed_by_amp_training(
    native: bool,
    birds: Path,
    run_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """Train TINY with amp=True as on a CPU with (``native``) or without AMX or AVX-512 BF16 (any CPU runs
    bfloat16, emulated where it lacks them); the lines printed."""
    monkeypatch.setattr(TRAINING, "native_bfloat16", lambda device: native)
    train(data_root=str(birds), run_dir=str(run_dir), **dict(TINY, amp=True, progress=True))
    return [line.removeprefix(PREFIX) for line in capsys.readouterr().out.splitlines()]


AMP_PLAN = "  device: cpu, 1 CPU thread (as asked); "


def test_amp_trains_in_bfloat16_on_a_cpu_that_has_it_and_resumes_exactly(
    reference_run: Path,
    birds: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = tmp_path / "whole"
    printed = _printed_by_amp_training(True, birds, whole, capsys, monkeypatch)
    assert AMP_PLAN + "bfloat16 autocast while training (amp), float32 validation" in printed
    assert json.loads((whole / "config.json").read_text())["bfloat16_autocast"] is True
    # bfloat16 changes the losses a little (8 significant bits instead of 24)
    losses, float32_losses = (
        pd.read_csv(whole / "metrics.csv")["loss"],
        pd.read_csv(reference_run / "metrics.csv")["loss"],
    )
    assert (losses != float32_losses).all() and (
        (losses - float32_losses).abs() < 0.05 * float32_losses
    ).all()
    parts = tmp_path / "parts"
    train(data_root=str(birds), run_dir=str(parts), stop_after_epochs=1, **dict(TINY, amp=True))
    train(data_root=str(birds), run_dir=str(parts), **dict(TINY, amp=True))
    assert_same_run(whole, parts)


def test_amp_on_a_cpu_without_bfloat16_says_so_and_trains_in_float32(
    reference_run: Path,
    birds: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir = tmp_path / "run"
    printed = _printed_by_amp_training(False, birds, run_dir, capsys, monkeypatch)
    emulated = "float32: amp asked for bfloat16, which this CPU (no AMX or AVX-512 BF16) would only emulate, more slowly"
    assert AMP_PLAN + emulated in printed
    assert json.loads((run_dir / "config.json").read_text())["bfloat16_autocast"] is False
    assert_same_run(reference_run, run_dir)


def test_native_bfloat16_reads_the_cpu_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    for amx, avx512_bf16, native in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx=avx512_bf16: avx)
        assert native_bfloat16("cpu") is native
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert native_bfloat16("cpu") is False  # a torch without these checks: float32


def test_killed_process_resumes_exactly(reference_run: Path, birds: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "fsl_core.cli.train", "--data", str(birds), "--run-dir", str(run_dir)]
    command += [
        "--images-in-memory"
    ]  # the killed part reads its images from memory, the resumed part from files
    for name, value in TINY.items():
        flag = "--" + name.replace("_", "-")
        command += [flag if value else f"--no-{name}"] if isinstance(value, bool) else [flag, str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    metrics = run_dir / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:  # header + epoch 1
            break
        time.sleep(0.02)
    was_running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert was_running, process.stderr.read().decode()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] >= 1
    train(data_root=str(birds), run_dir=str(run_dir), **TINY)
    assert_same_run(reference_run, run_dir)


class SlowImages:
    """A training transform that takes at least ``seconds`` per image: a data loader slower than the model."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.resize = train_transform(TINY["image_size"], "none")

    def __call__(self, image):  # noqa: ANN001, ANN204
        time.sleep(self.seconds)
        return self.resize(image)


def test_the_time_spent_waiting_for_data_is_recorded_and_shown(
    birds: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Images that take 30 ms each to load (9 per episode, 3 episodes per epoch): every epoch waits at least
    0.81 s for data, in metrics.csv and in its line (as a share of the epoch's training)."""
    monkeypatch.setenv(ENVIRONMENT, LINES)
    run_dir = tmp_path / "slow"
    train(
        data_root=str(birds), run_dir=str(run_dir), augmentation=SlowImages(0.03), **dict(TINY, progress=True)
    )
    metrics = pd.read_csv(run_dir / "metrics.csv")
    waits = TINY["episodes_per_epoch"] * TINY["way"] * (TINY["shot"] + TINY["query"]) * 0.03
    assert (metrics["data_seconds"] >= waits).all() and (metrics["data_seconds"] < metrics["seconds"]).all()
    out = [line.removeprefix(PREFIX) for line in capsys.readouterr().out.splitlines()]
    lines = [line for line in out if line.startswith("epoch ")]
    shares = [int(re.search(r"s, (\d+) % of it waiting for images", line).group(1)) for line in lines]
    assert len(shares) == len(metrics) == 3
    for share, row in zip(shares, metrics.itertuples()):  # training is part of the epoch: the share is larger
        assert 100 * row.data_seconds / row.seconds - 1 <= share <= 100


# -- divergence -------------------------------------------------------------------------------------------------
def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    birds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = ProtoNet.episode_loss

    def poisoned(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        loss, logits = original(self, *args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 5 else loss), logits

    monkeypatch.setattr(ProtoNet, "episode_loss", poisoned)
    run_dir = tmp_path / "nan"
    settings = dict(TINY, model="protonet", val_every=1)
    with pytest.raises(TrainingDiverged) as error:
        train(data_root=str(birds), run_dir=str(run_dir), **settings)
    message = str(error.value)
    assert "loss is nan at epoch 2, episode 2 of 3" in message and "still holds epoch 1" in message
    last = load_checkpoint(run_dir / "last.pt")
    assert last["epoch"] == 1
    assert all(
        torch.isfinite(value).all() for value in last["state_dict"].values() if value.is_floating_point()
    )
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1]


# -- validation before any work ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "resnet"}, "unknown model 'resnet'"),
        ({"backbone": "vgg"}, "unknown backbone 'vgg'"),
        ({"options": {"maks": False}}, "unknown option(s) ['maks']"),
        ({"way": 30}, "training: way=30: "),
        ({"shot": 8, "query": 8}, "training: shot 8 + query 8 = 16 images per class, but"),
        ({"val_way": 7}, "validation: val_way=7: "),
        ({"options": {"image_size": 84}}, "options image_size=84 contradicts image_size=16"),
        ({"momentum": 1.0}, "momentum must be below 1"),
    ],
)
def test_invalid_runs_fail_before_any_work(birds: Path, tmp_path: Path, settings: dict, message: str) -> None:
    run_dir = tmp_path / "never"
    with pytest.raises(ValueError) as error:
        train(data_root=str(birds), run_dir=str(run_dir), **{**TINY, **settings})
    assert message in str(error.value)
    assert not run_dir.exists()


def test_a_run_folder_must_be_named_and_apart_from_the_data(birds: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(birds, data)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"run_dir is empty; give a folder for the run"):
        train(data_root=str(data), run_dir="", **TINY)
    for run_dir, where in ((data, "is"), (tmp_path, "holds"), (data / "train" / "run", "lies inside")):
        with pytest.raises(ValueError, match=rf"run_dir {run_dir} {where} the data set {data}: .*apart"):
            train(data_root=str(data), run_dir=str(run_dir), overwrite=True, **TINY)
    assert snapshot(tmp_path) == before  # nothing moved aside, nothing written


def test_missing_data_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        train(data_root=str(tmp_path / "nowhere"), run_dir=str(tmp_path / "run"), **TINY)


def test_resume_with_other_settings_is_refused(reference_run: Path, birds: Path) -> None:
    with pytest.raises(ValueError) as error:
        train(data_root=str(birds), run_dir=str(reference_run), **{**TINY, "lr": 0.2, "shot": 2})
    message = str(error.value)
    assert "cannot continue" in message and "pass overwrite=True" in message
    assert "lr: 0.05 in the run, 0.2 now" in message and "shot: 1 in the run, 2 now" in message
    with pytest.raises(ValueError, match="model: 'hmdrn' in the run, 'bifrn' now"):
        train(data_root=str(birds), run_dir=str(reference_run), **{**TINY, "model": "bifrn"})
    with pytest.raises(ValueError, match="it holds last.pt and resume=False was asked"):
        train(data_root=str(birds), run_dir=str(reference_run), **{**TINY, "resume": False})


# -- command line -----------------------------------------------------------------------------------------------
def test_cli_help_documents_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in TrainConfig.__dataclass_fields__:
        flag = {"data_root": "--data", "options": "--option"}.get(name, "--" + name.replace("_", "-"))
        assert flag in text, flag
    assert "--stop-after-epochs" in text and "--rank-log" in text
    # help(TrainConfig) lists the same settings with their defaults and the same help, from the one declaration
    listed = [line.strip() for line in TrainConfig.__doc__.splitlines() if line.startswith("    ")]
    assert [line.split(" = ")[0] for line in listed] == list(TrainConfig.__dataclass_fields__)
    assert "way = None: classes per training episode" in listed and "classes per training episode" in text


def test_cli_option_parsing() -> None:
    assert parse_option("mask=False") == ("mask", False)
    assert parse_option("levels=last+mid") == ("levels", "last+mid")
    assert parse_option("transformer_layers=2") == ("transformer_layers", 2)
    assert parse_option("gsfl={'num_classes': 4}") == ("gsfl", {"num_classes": 4})
    args = build_parser().parse_args(["--option", "mask=False", "--option", "levels='last'", "--no-amp"])
    assert args.options == [("mask", False), ("levels", "last")] and args.amp is False


def test_cli_bad_input_is_one_line(birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--model",
            "hmdrn",
            "--data",
            str(birds),
            "--run-dir",
            str(tmp_path / "r"),
            "--way",
            "99",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: training: --way=99: ") and err.count("\n") == 1


def test_cli_trains(birds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "cli"
    code = main(
        [
            "--protocol",
            "quick",
            "--model",
            "protonet",
            "--data",
            str(birds),
            "--run-dir",
            str(run_dir),
            "--image-size",
            "16",
            "--way",
            "3",
            "--shot",
            "1",
            "--query",
            "2",
            "--episodes-per-epoch",
            "2",
            "--epochs",
            "1",
            "--val-way",
            "3",
            "--val-shot",
            "1",
            "--val-query",
            "2",
            "--val-episodes",
            "4",
            "--lr",
            "0.01",
            "--option",
            "learn_scale=False",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"run folder: {run_dir}" in out and "epochs: 1/1" in out
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert (
        f"best validation accuracy: {best['val_acc']:.2f} ± {best['val_ci95']:.2f} % (95 % interval; epoch 1), "
        f"kept in {run_dir / 'best.pt'}\nnext: fsl-evaluate {run_dir / 'best.pt'} --shot 1 5 --episodes 10000\n"
    ) in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["options"] == {"learn_scale": False} and config["model_config"]["learn_scale"] is False
    assert os.path.exists(run_dir / "best.pt")

    # continuing needs only the run folder and what changes: the rest is the run's own
    before = (run_dir / "metrics.csv").read_text()
    assert main(["--run-dir", str(run_dir), "--lr", "0.5", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cannot continue: lr: 0.01 in the run, 0.5 now. Nothing was changed" in err
    assert main(["--run-dir", str(run_dir), "--epochs", "2", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(
        f"{run_dir} holds a run: the settings not given are those it recorded; it goes on if those given agree\n"
    )
    assert "epochs: 2/2" in out
    assert (
        f"{run_dir}: epochs grow from 1 to 2; the cosine schedule keeps the period it started with (the learning "
        "rate starts a new cycle every 1 epoch); one schedule over all the epochs needs a new run (another "
        "--run-dir)"
    ) in err
    # alone again: the epochs it grew to, not those it began with
    assert main(["--run-dir", str(run_dir), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "epochs: 2/2" in out and "epochs grow" not in err
    assert main(["--run-dir", str(run_dir), "--protocol", "authors", "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        f"error: run folder {run_dir} holds a protonet conv4 run of the quick protocol, and --protocol authors "
        "would make another run. Nothing was changed. Choose another --run-dir, or pass --overwrite to move its "
        "files aside (nothing is deleted)\n"
    )
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert (run_dir / "metrics.csv").read_text().startswith(before) and metrics["epoch"].tolist() == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["options"] == {"learn_scale": False}


def write_manifest(folder: Path, identity: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(
        json.dumps({"kind": "train", "identity": identity, "created": "earlier"})
    )
    return folder


def test_a_continuation_takes_the_run_s_settings_as_its_protocol_left_them(tmp_path: Path) -> None:
    base = TrainConfig(protocol="quick", model="protonet", data_root=str(tmp_path), epochs=2).to_dict()
    quick = write_manifest(tmp_path / "quick", base)
    settings = continued_settings(quick, {"run_dir": str(quick), "epochs": 5})
    assert (
        "scheduler_period" not in settings and settings["epochs"] == 5
    )  # derived: the run keeps its first one
    assert {k: settings[k] for k in ("model", "lr", "way", "data_root")} == {
        k: base[k] for k in ("model", "lr", "way", "data_root")
    }
    assert "device" not in settings and "num_workers" not in settings  # the call's own
    (quick / "config.json").write_text(json.dumps({"epochs": 5}))  # a later call grew the epochs to 5
    assert continued_settings(quick, {"run_dir": str(quick)})["epochs"] == 5
    authors = TrainConfig(protocol="authors", data_root=str(tmp_path), epochs=2, scheduler_period=2).to_dict()
    fixed = write_manifest(tmp_path / "authors", authors)
    assert (
        continued_settings(fixed, {"run_dir": str(fixed)})["scheduler_period"] == 2
    )  # not the protocol's 400
    old = write_manifest(
        tmp_path / "old", {**base, "data_root": "data/birds"}
    )  # recorded before paths were absolute
    with pytest.raises(
        ValueError, match=r"recorded its data set as the relative path 'data/birds', .* with --data$"
    ):
        continued_settings(old, {"run_dir": str(old)})
    assert continued_settings(old, {"run_dir": str(old), "data_root": "/x"})["data_root"] == "/x"
    assert continued_settings(old, {"run_dir": str(old), "overwrite": True}) == {
        "run_dir": str(old),
        "overwrite": True,
    }
    assert continued_settings(tmp_path / "none", {"epochs": 3}) == {"epochs": 3}
    # growing the epochs keeps the first period (said once); a new run (overwrite) takes its own
    grown, note = _continued_schedule(
        TrainConfig.from_dict({**base, "epochs": 5, "scheduler_period": None}), quick
    )
    assert grown.scheduler_period == 2 and note is None  # config.json says 5 were asked already
    (quick / "config.json").write_text(json.dumps({"epochs": 2}))
    grown, note = _continued_schedule(
        TrainConfig.from_dict({**base, "epochs": 5, "scheduler_period": None}), quick
    )
    assert grown.scheduler_period == 2 and note.startswith(
        f"{quick}: epochs grow from 2 to 5; the cosine schedule"
    )
    fresh = TrainConfig.from_dict({**base, "epochs": 5, "scheduler_period": None, "overwrite": True})
    assert _continued_schedule(fresh, quick) == (fresh, None) and fresh.scheduler_period == 5
