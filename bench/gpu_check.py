"""The CUDA checks of the toolkit, in one run of about ten minutes on one GPU.

    python bench/gpu_check.py                          # on a machine with a CUDA GPU: the three steps below
    python bench/gpu_check.py --steps authors          # the authors-protocol run alone
    python bench/gpu_check.py --device cpu --way 5 --episodes 2 --epochs 3 --val-episodes 20 --steps authors

1. ``tests``: the test suite (pytest's default selection) with CUDA present.
2. ``bench``: ``bench/train_speed.py --device cuda --amp`` (steps/s of every model, HMDRN / FRN, peak memory,
   the parts of a step).
3. ``authors``: a short run of the authors' protocol on the embedded set (``data/birds``, generated when
   missing): Conv-4 HMDRN, 30-way 5-shot 15-query at 84 px, bfloat16 autocast, epochs of 11 episodes (about
   one epoch of CUB's training split at 30-way), validation once, on 1,000 episodes, after the last epoch.
   Each epoch's line says the share of its training spent waiting for the data loader: near 0 % the model
   limits training, above about half the loader does. From the epochs after the first (which pays for the
   warm-up) and the validation, the summary projects the authors' 1,200 epochs with a validation every 20.

The summary is printed and written to ``OUT/summary.json`` (``--out``, default outputs/gpu_check); the run goes
into a new folder ``OUT/authors-<time>`` each time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from fsl_core.data.birds import ensure_birds
from fsl_core.engine import train
from fsl_core.progress import ENVIRONMENT, LINES
from fsl_core.runtime import atomic_write_json, device_name, resolve_device

AUTHORS_EPOCHS = 1200
AUTHORS_VAL_EVERY = 20
STEPS = ("tests", "bench", "authors")


def run_step(name: str, command: list[str]) -> dict[str, object]:
    """Run a command of the check, its output passing through; → its exit status and seconds."""
    print(f"\n== {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, check=False).returncode
    return {"exit_status": status, "seconds": round(time.perf_counter() - started, 1)}


def authors_run(args: argparse.Namespace) -> dict[str, object]:
    """The short authors-protocol run and the projection of a whole one (see the module docstring)."""
    data = ensure_birds(args.data)
    run_dir = Path(args.out) / f"authors-{datetime.now():%Y%m%d-%H%M%S}"
    result = train(
        protocol="authors",
        model="hmdrn",
        backbone="conv4",
        data_root=str(data),
        image_size=84,
        way=args.way,
        sampler="fixed",
        episodes_per_epoch=args.episodes,
        epochs=args.epochs,
        val_every=args.epochs,
        val_episodes=args.val_episodes,
        device=args.device,
        amp=True,
        num_workers=args.num_workers,
        run_dir=str(run_dir),
        progress=True,
    )
    metrics = result.metrics
    warm = metrics.iloc[1:-1]  # after the first epoch's warm-up, before the validated last epoch
    epoch_seconds = float(warm["seconds"].mean())
    validation_seconds = max(0.0, float(metrics["seconds"].iloc[-1]) - epoch_seconds)
    validations = AUTHORS_EPOCHS // AUTHORS_VAL_EVERY
    return {
        "way": args.way,
        "episodes_per_epoch": args.episodes,
        "num_workers": args.num_workers,
        "epoch_seconds": round(epoch_seconds, 3),
        "waiting_for_data": round(float((warm["data_seconds"] / warm["seconds"]).mean()), 3),
        "validation_seconds": round(validation_seconds, 2),
        "projected_hours": round(
            (AUTHORS_EPOCHS * epoch_seconds + validations * validation_seconds) / 3600, 2
        ),
        "run_dir": str(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", default="data/birds", help="the embedded set (generated when missing)")
    parser.add_argument("--out", default="outputs/gpu_check")
    parser.add_argument("--way", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=11, help="episodes per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="at least 3: warm-up, timed, validated")
    parser.add_argument("--val-episodes", type=int, default=1000)
    parser.add_argument("--num-workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 2)))
    args = parser.parse_args()
    if not sys.stdout.isatty():  # a log: plain progress lines rather than bars
        os.environ.setdefault(ENVIRONMENT, LINES)
    if args.epochs < 3:
        parser.error(
            f"--epochs {args.epochs}: expected at least 3 (a warm-up, a timed and a validated epoch)"
        )
    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device here: run this on a machine with a GPU, or rehearse with --device cpu"
        )
    summary: dict[str, object] = {"device": device_name(device), "torch": torch.__version__}
    if "tests" in args.steps:
        summary["tests"] = run_step("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
    if "bench" in args.steps:
        bench = [sys.executable, str(Path(__file__).with_name("train_speed.py")), "--device", str(device)]
        summary["bench"] = run_step("bench", bench + (["--amp"] if device.type == "cuda" else []))
    if "authors" in args.steps:
        print(f"\n== authors: a short run of the authors' protocol on {summary['device']}", flush=True)
        summary["authors"] = authors_run(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(summary, Path(args.out) / "summary.json")
    print("\n" + json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
