"""Reading checkpoint files: every way a file can be unreadable gets its own plain-words error."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fsl_core.models import build_model, load_model, load_reference_checkpoint, save_model
from fsl_core.models.checkpoints import input_size, load_checkpoint, load_trained_model
from fsl_core.runtime import load_torch_file


class Opaque:
    """An object ``torch.load(weights_only=True)`` refuses to rebuild."""


LOADERS: dict[str, Callable[[Path], Any]] = {
    "load_torch_file": load_torch_file,
    "load_checkpoint": load_checkpoint,
    "load_model": load_model,
    "load_reference_checkpoint": load_reference_checkpoint,
}


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "good.pt"
    torch.save({"config": {"name": "x"}, "state_dict": {"w": torch.arange(4.0)}}, path)
    return path


def test_readable_files_load_in_both_torch_formats(saved: Path, tmp_path: Path) -> None:
    content = load_torch_file(saved)
    assert torch.equal(content["state_dict"]["w"], torch.arange(4.0))
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_torch_file(legacy)["w"], torch.ones(3))
    model = build_model("protonet", "conv4", image_size=16)
    rebuilt = load_model(save_model(model, tmp_path / "model.pt"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))


@pytest.mark.parametrize("loader", list(LOADERS))
def test_missing_and_empty_files(loader: str, tmp_path: Path) -> None:
    missing = f"checkpoint {tmp_path / 'missing.pt'} does not exist; {tmp_path} holds no .pt file"
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        LOADERS[loader](tmp_path / "missing.pt")
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"(its folder {tmp_path / 'run'} does not exist either)")
    ):
        LOADERS[loader](tmp_path / "run" / "best.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=re.escape("holds empty.pt, last.pt (did you mean 'last.pt'?)")
    ):
        LOADERS[loader](tmp_path / "lats.pt")
    with pytest.raises(
        ValueError, match=r"empty\.pt is empty \(0 bytes\): the write that made it did not finish"
    ):
        LOADERS[loader](empty)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        LOADERS[loader](tmp_path)


def test_text_files_are_named_and_quoted_safely(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("accuracy: 81.2 %\ncafé\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is a text file, not a checkpoint") as raised:
        load_torch_file(text)
    assert "'accuracy: 81.2 %\\ncaf\\xe9\\n'" in str(raised.value)  # escaped, one line
    assert "\n" not in str(raised.value)
    pointer = tmp_path / "lfs.pt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 12345\n")
    with pytest.raises(ValueError, match="text file, not a checkpoint.*Git LFS pointer.*git lfs pull"):
        load_checkpoint(pointer)


def test_other_formats_are_neither_zip_nor_legacy_pickle(tmp_path: Path) -> None:
    binary = tmp_path / "random.pt"
    binary.write_bytes(bytes(range(7, 200)))
    with pytest.raises(ValueError, match="neither a zip archive .* nor a legacy torch pickle") as raised:
        load_torch_file(binary)
    assert "07 08 09 0a" in str(raised.value)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with pytest.raises(
        ValueError, match=r"nor a legacy torch pickle: it is a plain Python pickle \(protocol 4\)"
    ):
        load_reference_checkpoint(plain)


def test_cut_short_archives_say_the_write_did_not_finish(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"zip archive whose end is missing .*did not finish"):
        load_checkpoint(cut)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(100)}, legacy, _use_new_zipfile_serialization=False)
    legacy_cut = tmp_path / "legacy_cut.pt"
    legacy_cut.write_bytes(legacy.read_bytes()[:300])
    with pytest.raises(ValueError, match="legacy torch pickle that torch cannot read"):
        load_torch_file(legacy_cut)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_python_objects_are_refused_in_our_words(loader: str, tmp_path: Path) -> None:
    path = tmp_path / "objects.pt"
    torch.save({"x": Opaque(), "w": torch.zeros(2)}, path)
    with pytest.raises(ValueError) as raised:
        LOADERS[loader](path)
    message = str(raised.value)
    assert message.startswith(
        f"checkpoint {path} holds Python objects other than tensors and plain containers"
    )
    assert "test_checkpoint_files.Opaque" in message and "does not load such files" in message
    assert "weights_only" not in message and "trust" not in message and "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_fsl_core_layout_is_still_checked(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    torch.save({"w1": torch.zeros(1)}, weights)
    with pytest.raises(ValueError, match="is not an fsl_core checkpoint.*load_reference_checkpoint"):
        load_checkpoint(weights)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="holds a Tensor; expected a dict of tensors"):
        load_model(tensor)


@pytest.mark.parametrize(
    ("name", "backbone"), [("frn", "conv4"), ("hmdrn", "resnet12"), ("bifrn", "resnet12")]
)
def test_reference_weights_only_for_hmdrn_conv4(name: str, backbone: str, tmp_path: Path) -> None:
    # refused before the file is even read: the missing file is not reported
    with pytest.raises(ValueError, match=r"only for model 'hmdrn' with backbone 'conv4'") as raised:
        load_reference_checkpoint(tmp_path / "missing.pth", name=name, backbone=backbone)
    assert repr(name) in str(raised.value) and repr(backbone) in str(raised.value)


def test_a_trained_model_is_fed_the_size_it_was_trained_at(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("hmdrn", "conv4", image_size=16)
    plain = save_model(model, tmp_path / "plain.pt")  # no training record: the model's own size
    loaded, size = load_trained_model(plain)
    assert size == 16 and loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    recorded = save_model(model, tmp_path / "recorded.pt", train_config={"image_size": 24})
    assert load_trained_model(recorded)[1] == 24 and load_trained_model(recorded, image_size=32)[1] == 32
    assert load_trained_model(plain, reference=True)[1] == 16  # reference=True reads our files too
    sizeless = build_model("protonet", "conv4")
    del sizeless.config["image_size"]
    assert input_size(sizeless) == 84 and input_size(sizeless, trained=40) == 40
