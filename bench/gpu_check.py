"""The CUDA checks of the toolkit in one run, sized for about ten minutes on one GPU (not yet run on one).

Run from the repository root:

    python bench/gpu_check.py                          # on a machine with a CUDA GPU: the five steps below
    python bench/gpu_check.py --steps authors          # the authors-protocol run alone
    python bench/gpu_check.py --device cpu --way 5 --episodes 2 --epochs 3 --val-episodes 20 --steps authors

1. ``tests``: the test suite (pytest's default selection) with CUDA present.
2. ``bench``: ``bench/train_speed.py --device cuda --precisions float32 bf16`` (steps/s of every model in
   both precisions, HMDRN / FRN, bfloat16 autocast's speed-up, peak memory, the parts of a step).
3. ``data``: ``bench/data_speed.py --workers 0 N`` (N = ``--num-workers``): the images/s the loader
   delivers on this machine's cores, decoding each image or from images kept in memory, for the embedded
   set and for photo-like JPEGs at the sizes of CUB's photos. A 30-way episode holds 600 images: the loader
   keeps up with the model when its images/s exceed 600 × the 30-way training steps/s of step 2.
4. ``authors``: a short run of the authors' protocol on the embedded set (``data/birds``, generated when
   missing): Conv-4 HMDRN, 30-way 5-shot 15-query at 84 px, bfloat16 autocast, epochs of 11 episodes (about
   one epoch of CUB's training split at 30-way), validation once, on 1,000 episodes, after the last epoch,
   with the training images kept in memory (``--no-images-in-memory``: decoded each time). Each epoch's line
   says the share of its training spent waiting for the data loader: near 0 % the model limits training,
   above about half the loader does. The embedded set's images are small PNGs already at 84 px, so this
   share understates the loader's load on CUB (larger JPEGs, decoded and cropped); step 3 measures that
   load. From the epochs after the first (which pays for the warm-up) and the validated last epoch (its
   excess over them is taken as the validation's time), the summary projects the authors' 1,200 epochs,
   validated every 20.
5. ``authors-device``: the same run with ``augment_on_device`` (the loader's workers only draw each image's
   crop, jitter and flip; the GPU makes the images). Compare the epoch times of steps 4 and 5: this step's
   share of waiting leaves out the time the GPU spends making the images, which counts as training.

Each call writes into a new folder ``OUT/<time>-<suffix>/`` (``--out``, default outputs/gpu_check): the
training run and ``summary.json``, written after every step, so a later step's failure keeps what came before.
The exit status is 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from fsl_core.data.birds import ensure_birds
from fsl_core.engine import TrainConfig, train
from fsl_core.progress import ENVIRONMENT, LINES
from fsl_core.runtime import AUTO_DEVICE, atomic_write_json, device_name, native_bfloat16, resolve_device

AUTHORS = TrainConfig(protocol="authors", backbone="conv4")
"""The authors' protocol on Conv-4: its epochs (1,200), validation interval (20) and way (30)."""
STEPS = ("tests", "bench", "data", "authors", "authors-device")
ROOT = Path(__file__).resolve().parents[1]


def run_step(name: str, command: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    """Run a command of the check in the repository root (in ``env``, else this process's environment), its
    output passing through; → its exit status and seconds."""
    print(f"\n== {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, check=False, cwd=ROOT, env=env).returncode
    return {"exit_status": status, "seconds": round(time.perf_counter() - started, 1)}


def authors_run(args: argparse.Namespace, folder: Path, on_device: bool = False) -> dict[str, object]:
    """The short authors-protocol run, in ``folder``/authors_run (``authors_run_device`` with
    ``augment_on_device``), and the projection of a whole one (see the module docstring)."""
    data = ensure_birds(args.data)
    run_dir = folder / ("authors_run_device" if on_device else "authors_run")
    if not sys.stdout.isatty():  # a log: plain progress lines rather than bars
        os.environ.setdefault(ENVIRONMENT, LINES)
    result = train(
        AUTHORS,
        model="hmdrn",
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
        images_in_memory=args.images_in_memory,
        augment_on_device=on_device,
        run_dir=str(run_dir),
        progress=True,
    )
    metrics = result.metrics
    warm = metrics.iloc[1:-1]  # after the first epoch's warm-up, before the validated last epoch
    epoch_seconds = float(warm["seconds"].mean())
    validation_seconds = max(0.0, float(metrics["seconds"].iloc[-1]) - epoch_seconds)
    validations = AUTHORS.epochs // AUTHORS.val_every
    return {
        "way": args.way,
        "episodes_per_epoch": args.episodes,
        "num_workers": args.num_workers,
        "images_in_memory": args.images_in_memory or on_device,
        "augment_on_device": on_device,
        "epoch_seconds": round(epoch_seconds, 3),
        "data_wait_fraction": round(float((warm["data_seconds"] / warm["seconds"]).mean()), 3),
        "validation_seconds": round(validation_seconds, 2),
        "projected_hours": round(
            (AUTHORS.epochs * epoch_seconds + validations * validation_seconds) / 3600, 2
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
    parser.add_argument("--way", type=int, default=AUTHORS.way)
    parser.add_argument("--episodes", type=int, default=11, help="episodes per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="at least 3: warm-up, timed, validated")
    parser.add_argument("--val-episodes", type=int, default=1000)
    parser.add_argument("--num-workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 2)))
    parser.add_argument(
        "--images-in-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the authors run keeps its training images in memory (default) or decodes them each time",
    )
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error(
            f"--epochs {args.epochs}: expected at least 3 (a warm-up, a timed and a validated epoch)"
        )
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(f"{error}; this script is for a machine with a CUDA GPU (rehearse it with --device cpu)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{datetime.now():%Y%m%d-%H%M%S}-", dir=args.out))
    summary: dict[str, object] = {"device": device_name(device), "torch": torch.__version__}
    failed = False
    for step in args.steps:
        if step == "tests":
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            # the suite runs its bit-exact checks on the CPU (conftest.py) unless told otherwise: told nothing
            environment = {key: value for key, value in os.environ.items() if key != AUTO_DEVICE}
            summary[step] = run_step(step, command, environment)
        elif step == "bench":
            command = [sys.executable, str(ROOT / "bench" / "train_speed.py"), "--device", str(device)]
            precisions = ["--precisions", "float32", "bf16"] if native_bfloat16(device) else []
            summary[step] = run_step(step, command + precisions)
        elif step == "data":
            workers = sorted({0, args.num_workers})
            command = [sys.executable, str(ROOT / "bench" / "data_speed.py"), "--workers", *map(str, workers)]
            summary[step] = run_step(step, command + ["--device", str(device)])
        else:
            on_device = step == "authors-device"
            how = ", the augmentation on the device" if on_device else ""
            print(
                f"\n== {step}: a short run of the authors' protocol on {summary['device']}{how}", flush=True
            )
            try:
                summary[step] = authors_run(args, folder, on_device)
            except Exception as error:  # recorded in the summary; the exit status says it too
                summary[step] = {"error": f"{type(error).__name__}: {error}"}
        failed = failed or bool(summary[step].get("exit_status") or summary[step].get("error"))
        atomic_write_json(summary, folder / "summary.json")
    print("\n" + json.dumps(summary, indent=1) + f"\nwritten to {folder / 'summary.json'}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
