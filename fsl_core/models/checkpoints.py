"""Checkpoint files: the one module that reads and writes them.

Every file is a dict of tensors and plain containers, written atomically by
``fsl_core.runtime.atomic_torch_save`` (never half-written, never holding NaN or inf) and read by
``fsl_core.runtime.load_torch_file`` (``torch.load(weights_only=True)`` whose errors say in plain words why a
file cannot be read).

Our files share two keys: ``config`` (``rebuild_model(config)`` rebuilds the model) and ``state_dict`` (its
weights and buffers, on the CPU).

- Model files (``save_model`` / ``load_model``): ``{"config", "state_dict", **extra}``. A run's ``best.pt``
  adds ``train_config``, ``epoch``, ``val_acc``, ``val_ci95`` and ``versions``; GSFL training's
  ``gsfl_last.pt`` adds ``optimizer``, ``scheduler``, ``stage``, ``epoch``, ``history``, ``train_config`` and
  its ``gsfl_best.pt`` adds ``stage``, ``epoch``, ``val_accuracy``.
- Training checkpoints (``save_checkpoint`` / ``load_checkpoint``): a run's resumable ``last.pt``, tagged
  with ``FORMAT``::

    {"format": "fsl_core.train/1",
     "config": model.config, "state_dict": model weights,
     "train_config": TrainConfig.to_dict(),
     "optimizer": ..., "scheduler": ..., "epoch": completed epochs,
     "best": {"val_acc": float | None, "val_ci95": float | None, "epoch": int | None},
     "sampler": {"mode": "epoch" | "fixed", "seed": int, "next_epoch": int, "next_episode": int},
     "rng": {"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [ByteTensor, ...]},
     "metrics": [one dict per epoch, the rows of metrics.csv],
     "versions": {"fsl_core": ..., "torch": ..., "git": ...}}

  (``rng`` is ``fsl_core.engine.random_state.rng_state()``.) ``load_model`` reads these files too.
- The HMDRN authors' released Conv-4 weights: a bare state dict under their module names, read by
  ``load_reference_checkpoint``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..runtime import atomic_torch_save, load_torch_file, non_finite_tensors, some_names, way_out
from .base import EpisodicModel
from .factory import build_model, rebuild_model

FORMAT = "fsl_core.train/1"
"""The ``format`` tag of training checkpoints (``save_checkpoint``)."""


def save_model(model: EpisodicModel, path: str | Path, **extra: Any) -> Path:
    """Write {"config", "state_dict", **extra} atomically; loadable with ``torch.load(weights_only=True)``."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    return atomic_torch_save({"config": dict(model.config), "state_dict": state, **extra}, path)


def _read(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    """A loaded checkpoint as it is, or the content of a checkpoint file (``load_torch_file``)."""
    if isinstance(source, Mapping):
        return source
    content = load_torch_file(source)
    if not isinstance(content, Mapping):
        raise ValueError(
            f"checkpoint {source} holds a {type(content).__name__}; expected a dict of tensors (a state dict "
            "or an fsl_core checkpoint)"
        )
    return content


def load_model(
    source: str | Path | Mapping[str, Any],
    device: str | torch.device = "cpu",
    read_from: str | Path | None = None,
) -> EpisodicModel:
    """Rebuild a model from one of our checkpoints (a path or the loaded dict; ``read_from``: the file a loaded
    dict came from, named by errors)."""
    checkpoint = _read(source)
    source = read_from if read_from is not None and isinstance(source, Mapping) else source
    if "config" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(
            f"{source if not isinstance(source, Mapping) else 'checkpoint'} has keys {sorted(checkpoint)[:8]}; "
            "expected an fsl_core checkpoint with 'config' and 'state_dict' (use load_reference_checkpoint for the "
            "HMDRN authors' files)"
        )
    model = rebuild_model(checkpoint["config"])
    load_state_strict(model, checkpoint["state_dict"], what=_described(source, "checkpoint"))
    return model.to(device)


def _described(source: str | Path | Mapping[str, Any], kind: str) -> str:
    """``kind`` and the file it was read from, for error messages ("checkpoint runs/x/best.pt")."""
    return kind if isinstance(source, Mapping) else f"{kind} {source}"


def save_checkpoint(path: str | Path, content: dict[str, Any]) -> Path:
    """Write a training checkpoint ``{"format": FORMAT, **content}`` atomically (a crash never leaves a
    half-written ``path``); ``content`` holds the keys listed in the module docstring."""
    return atomic_torch_save({"format": FORMAT, **content}, path)


def training_setting(source: str | Path | Mapping[str, Any], name: str) -> Any:
    """The value of the training setting ``name`` (a ``TrainConfig`` field) that a checkpoint recorded (a path
    or the loaded dict; None when it does not say: a model saved outside training)."""
    content = source if isinstance(source, Mapping) else load_checkpoint(source)
    recorded = content.get("train_config")
    return recorded.get(name) if isinstance(recorded, Mapping) else None


def trained_image_size(source: str | Path | Mapping[str, Any]) -> int | None:
    """The input size a checkpoint's model was trained at (``training_setting(source, "image_size")``)."""
    return training_setting(source, "image_size")


def input_size(model: EpisodicModel, image_size: int | None = None, trained: int | None = None) -> int:
    """The input side S to feed ``model``: ``image_size`` when given, else the size it was ``trained`` at (as a
    checkpoint records it), else its own ``config["image_size"]`` (HMDRN's token positions), else 84."""
    return int(image_size or trained or model.config.get("image_size") or 84)


def load_trained_model(
    path: str | Path,
    image_size: int | None = None,
    reference: bool = False,
    name: str = "hmdrn",
    backbone: str = "conv4",
) -> tuple[EpisodicModel, int]:
    """(model, the input side to feed it, ``input_size``) from a checkpoint file: best.pt/last.pt of a run or a
    ``save_model`` file, which record their model; with ``reference=True`` also the HMDRN authors' released
    weights, built as ``name``/``backbone`` (``load_reference_checkpoint``). One of our checkpoints loads the
    same way with or without ``reference`` (its recorded model and training size; ``name`` and ``backbone`` are
    not used).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no model we can build (the message says why).
    """
    if reference and not is_fsl_core_checkpoint(load_torch_file(path)):
        model = load_reference_checkpoint(path, name=name, backbone=backbone)
        return model, input_size(model, image_size)
    content = load_checkpoint(path)
    model = load_model(content, read_from=path)
    return model, input_size(model, image_size, trained_image_size(content))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read one of our checkpoint files as a dict (tensors and plain containers only, ``load_torch_file``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable checkpoint (the message says why: empty, a text file, damaged,
            holding other Python objects) or not one of fsl_core's (no 'config' and 'state_dict').
    """
    path = Path(path)
    content = load_torch_file(path, map_location=map_location)
    if not is_fsl_core_checkpoint(content):
        raise ValueError(
            f"{path} is not an fsl_core checkpoint (expected a dict with 'config' and 'state_dict'); "
            f"released weights of the HMDRN authors load with "
            + way_out("load_reference_checkpoint", "fsl-evaluate or fsl-predict --reference")
        )
    return content


def is_fsl_core_checkpoint(content: Any) -> bool:
    """True when ``content`` (what a checkpoint file holds) is one of ours: a dict with 'config' and
    'state_dict', which records its model; the HMDRN authors' released weights are not."""
    return isinstance(content, Mapping) and "config" in content and "state_dict" in content


def refuse_non_finite(state: Mapping[str, Tensor], what: str) -> None:
    """Raise a ``ValueError`` naming the tensors of ``state`` that hold NaN or infinite values (``what``: the
    source, for the message)."""
    poisoned = non_finite_tensors(dict(state))
    if poisoned:
        raise ValueError(
            f"{what} holds NaN or infinite values in {len(poisoned)} tensor(s) ({some_names(poisoned)}), so its model "
            "cannot predict anything; take another checkpoint (a run's best.pt, or an earlier copy) or train again"
        )


def load_state_strict(model: torch.nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Load ``state`` into ``model``; NaN or infinite values and missing, unexpected or mis-shaped tensors raise
    a ``ValueError`` naming them (``what``: the source, for the message)."""
    refuse_non_finite(state, what)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing tensors {some_names(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {some_names(unexpected)}")
        if shapes:
            parts.append(f"wrong shapes {some_names(shapes, separator='; ')}")
        raise ValueError(
            f"{what} does not fit {model.config.get('name')}/{model.config.get('backbone')}: "
            + "; ".join(parts)
            + "; the file holds the weights of another model or backbone, or was saved by another fsl_core version: "
            "load it with that version"
        )
    model.load_state_dict(state)


# The authors' module names → ours (Conv-4 HMDRN): fsrm = masked transformer, hhdcm = attention reconstruction.
_REFERENCE_RULES: list[tuple[str, str]] = [
    (r"^feature_extractor\.conv(\d)\.layers\.(\d)\.", lambda m: f"backbone.blocks.{int(m[1]) - 1}.{m[2]}."),
    (r"^fsrm1\.transformer\.", "transformers.last."),
    (r"^fsrm2\.transformer\.", "transformers.mid."),
    (r"\.blocks\.(\d+)\.self_attn\.", r".layers.\1.attn."),
    (r"\.blocks\.(\d+)\.pre_norm\.", r".layers.\1.norm_pre."),
    (r"\.blocks\.(\d+)\.norm1\.", r".layers.\1.norm_post."),
    (r"\.blocks\.(\d+)\.linear1\.", r".layers.\1.ffn_in."),
    (r"\.blocks\.(\d+)\.linear2\.", r".layers.\1.ffn_out."),
    (r"\.norm\.(weight|bias)$", r".norm_final.\1"),
    (r"^hhdcm1\.to_qkv\.0\.", "reconstructions.last.qkv."),
    (r"^hhdcm2\.to_qkv\.0\.", "reconstructions.mid.qkv."),
    (r"^scale$", "gamma"),
    (r"^w1$", "fusion.last"),
    (r"^w2$", "fusion.mid"),
]


def reference_key(name: str) -> str:
    """Our state-dict name of one tensor of the HMDRN authors' checkpoints."""
    for pattern, replacement in _REFERENCE_RULES:
        name = re.sub(pattern, replacement, name)
    return name


def load_reference_checkpoint(
    path_or_state_dict: str | Path | Mapping[str, Any],
    name: str = "hmdrn",
    backbone: str = "conv4",
    **options: Any,
) -> EpisodicModel:
    """A model holding the HMDRN authors' released weights (Conv-4: CUB, Cars, Dogs), or one of our checkpoints.

    The authors' positional tables (``fsrm*.transformer.positional_emb``) are fixed sinusoids; they are
    checked against ours and, should they differ, used as stored.

    Raises:
        ValueError: ``name``/``backbone`` other than "hmdrn"/"conv4" (the only released weights), a file
            that is not a readable checkpoint (see ``load_torch_file``), or tensors that do not fit.
    """
    if (name, backbone) != ("hmdrn", "conv4"):
        raise ValueError(
            f"reference weights cannot be loaded as model {name!r} with backbone {backbone!r}: the HMDRN "
            "authors released weights only for model 'hmdrn' with backbone 'conv4' (Conv-4 on CUB, Cars and "
            "Dogs); use "
            + way_out("name='hmdrn', backbone='conv4'", "--model hmdrn --backbone conv4 (the defaults)")
        )
    checkpoint = _read(path_or_state_dict)
    if is_fsl_core_checkpoint(checkpoint):
        return load_model(
            checkpoint, read_from=None if isinstance(path_or_state_dict, Mapping) else path_or_state_dict
        )
    state = checkpoint
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    what = _described(path_or_state_dict, "reference checkpoint")
    refuse_non_finite(state, what)  # the positional tables too, which are not loaded as state
    model = build_model(name, backbone, **options)
    mapped: dict[str, Tensor] = {}
    positions: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith("transformer.positional_emb"):
            positions["last" if key.startswith("fsrm1") else "mid"] = value
            continue
        mapped[reference_key(key)] = value
    load_state_strict(model, mapped, what=what)
    for level, table in positions.items():
        if level in model.transformers:
            transformer = model.transformers[level]
            if table.shape != transformer.positions.shape:
                raise ValueError(
                    f"reference positional table for level {level!r} has shape {tuple(table.shape)}; the model "
                    f"expects {tuple(transformer.positions.shape)} (image_size 84)"
                )
            if not torch.allclose(table.float(), transformer.positions, atol=1e-5):
                transformer.positions.copy_(table.float())
    return model
