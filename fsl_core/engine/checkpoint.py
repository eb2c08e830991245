"""Training checkpoints: what ``last.pt`` and ``best.pt`` hold, written atomically, loadable with
``torch.load(weights_only=True)`` (tensors and plain containers only).

``last.pt`` (resumable)::

    {"format": "fsl_core.train/1",
     "config": model.config, "state_dict": model weights,      # as save_model / load_model
     "train_config": TrainConfig.to_dict(),
     "optimizer": ..., "scheduler": ..., "epoch": completed epochs,
     "best": {"val_acc": float | None, "val_ci95": float | None, "epoch": int | None},
     "sampler": {"mode": "epoch" | "fixed", "seed": int, "next_epoch": int, "next_episode": int},
     "rng": {"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [ByteTensor, ...]},
     "metrics": [one dict per epoch, the rows of metrics.csv],
     "versions": {"fsl_core": ..., "torch": ..., "git": ...}}

``best.pt`` holds the model config, weights and validation result of the best epoch (``load_model`` reads it).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsl_core.runtime import atomic_torch_save, load_torch_file

FORMAT = "fsl_core.train/1"


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and plain values."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(python_state, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state`` (CUDA states are restored only where the same devices exist)."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_checkpoint(path: str | Path, content: dict[str, Any]) -> Path:
    """Write a checkpoint dict atomically (a crash never leaves a half-written ``path``)."""
    return atomic_torch_save({"format": FORMAT, **content}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (tensors and plain containers only, ``load_torch_file``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable checkpoint (the message says why: empty, a text file, damaged,
            holding other Python objects) or not one of fsl_core's (no 'config' and 'state_dict').
    """
    path = Path(path)
    content = load_torch_file(path, map_location=map_location)
    if not isinstance(content, dict) or "state_dict" not in content or "config" not in content:
        raise ValueError(
            f"{path} is not an fsl_core checkpoint (expected a dict with 'config' and 'state_dict'); "
            "released weights of the HMDRN authors load with load_reference_checkpoint (--reference)"
        )
    return content
