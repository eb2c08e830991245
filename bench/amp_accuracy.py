"""Accuracy of bfloat16 autocast training (``amp``) against float32: the same runs in both precisions.

    python bench/amp_accuracy.py                         # HMDRN Conv-4, quick protocol, seeds 0 and 1, data/birds
    python bench/amp_accuracy.py --seeds 0 1 2 --epochs 20 --model frn
    python bench/amp_accuracy.py --emulate               # a CPU without AMX or AVX-512 BF16: bfloat16 in software

For each seed the model is trained twice with the quick protocol, in float32 and with ``amp`` (bfloat16
autocast in the training step; validation and test run in float32), one run after the other, into run folders
under ``--out``: run again, the script continues unfinished runs and reuses finished ones. Each run's
``last.pt`` is then evaluated on the test split, on the same 5-way episodes for both precisions. The table
gives per run the best validation accuracy, the test accuracies ± their 95 % confidence intervals and the
training minutes; the last rows give, per shot, the mean test difference amp − float32 over the seeds.

Training uses bfloat16 only where the device computes it natively (``fsl_core.runtime.native_bfloat16``);
elsewhere ``amp`` trains in float32 and the comparison would be empty, so the script stops unless ``--emulate``
is given: bfloat16 is then computed in software, which rounds the same way, only more slowly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from pathlib import Path
from unittest import mock

import numpy as np

from fsl_core.engine import evaluate_checkpoint, train
from fsl_core.runtime import device_name, native_bfloat16, resolve_device

PRECISIONS = {"float32": False, "bf16": True}
# the training module, whose native_bfloat16 --emulate replaces (fsl_core.engine.train names the function)
TRAINING = importlib.import_module("fsl_core.engine.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/birds"), help="data set root (make data)")
    parser.add_argument("--model", default="hmdrn")
    parser.add_argument("--backbone", default="conv4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None, help="default: the quick protocol's")
    parser.add_argument("--episodes", type=int, default=2000, help="test episodes per shot")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/amp_accuracy"))
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--emulate",
        action="store_true",
        help="train the bf16 runs in software bfloat16 where the device lacks it",
    )
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    native = native_bfloat16(device)
    if not native and not args.emulate:
        parser.error(
            f"{device_name(device)} has no native bfloat16, so amp would train in float32 and both runs "
            "would be the same; add --emulate to compute bfloat16 in software (same rounding, slower)"
        )
    print(
        f"device: {device} ({device_name(device)}), bfloat16 {'native' if native else 'emulated'}; "
        f"{args.model} {args.backbone}, quick protocol, data {args.data}, test: 5-way, {args.episodes} episodes "
        f"per shot"
    )
    settings = {"protocol": "quick", "model": args.model, "backbone": args.backbone, "data_root": args.data}
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    runs = {}  # (seed, precision) -> (TrainResult, {shot: EvalResult})
    for seed in args.seeds:
        for precision, amp in PRECISIONS.items():
            run_dir = args.out / f"{args.model}-{args.backbone}-{precision}-seed{seed}"
            print(f"training {run_dir}", file=sys.stderr, flush=True)
            with (
                mock.patch.object(TRAINING, "native_bfloat16", return_value=True)
                if amp and not native
                else contextlib.nullcontext()
            ):
                result = train(
                    settings, seed=seed, amp=amp, device=str(device), run_dir=run_dir, progress=False
                )
            tests = evaluate_checkpoint(
                result.last_checkpoint,
                args.data,
                shots=args.shots,
                episodes=args.episodes,
                device=device,
                progress=False,
            )
            runs[seed, precision] = result, tests

    header = f"{'precision':<9} {'seed':>4} {'best val':>15} " + " ".join(
        f"{f'test {shot}-shot':>15}" for shot in args.shots
    )
    print(f"\n{header} {'train min':>9}\n{'-' * (len(header) + 10)}")
    for (seed, precision), (result, tests) in runs.items():
        val = f"{result.best_val_acc:.2f} ± {result.best_val_ci95:.2f}"
        cells = " ".join(f"{f'{tests[shot].mean:.2f} ± {tests[shot].ci95:.2f}':>15}" for shot in args.shots)
        minutes = result.metrics["seconds"].sum() / 60
        print(f"{precision:<9} {seed:>4} {val:>15} {cells} {minutes:>9.1f}")
    for shot in args.shots:
        differences = [
            runs[seed, "bf16"][1][shot].mean - runs[seed, "float32"][1][shot].mean for seed in args.seeds
        ]
        print(
            f"{shot}-shot test, amp − float32: mean {np.mean(differences):+.2f} points over "
            f"{len(differences)} seed(s) ({', '.join(f'{d:+.2f}' for d in differences)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
