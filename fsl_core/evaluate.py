"""Command line for few-shot evaluation of a checkpoint.

    python -m fsl_core.evaluate outputs/train/NAME/best.pt --data data/birds --shot 1 5 --episodes 10000
    python -m fsl_core.evaluate CUB_conv4.pth --reference --data data/CUB_fewshot_cropped

Prints a table (mean ± 95% confidence interval per shot) and writes the results as JSON next to the
checkpoint (``<checkpoint stem>_<split>_eval.json``) or to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import fsl_core
from fsl_core.engine.evaluate import evaluate_checkpoint, write_results
from fsl_core.runtime import git_revision, resolve_device


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m fsl_core.evaluate",
        description="Accuracy (mean ± 1.96·std/√n over N episodes) of a trained few-shot model.",
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="best.pt / last.pt of a run, a save_model file, or with "
        "--reference the HMDRN authors' released weights",
    )
    parser.add_argument("--data", required=True, type=Path, help="data set root holding the split folder")
    parser.add_argument("--split", default="test", help="split folder to evaluate on (default: test)")
    parser.add_argument(
        "--shot", type=int, nargs="+", default=[1, 5], help="shots to evaluate (default: 1 5)"
    )
    parser.add_argument("--way", type=int, default=5, help="classes per episode (default: 5)")
    parser.add_argument("--query", type=int, default=16, help="query images per class (default: 16)")
    parser.add_argument("--episodes", type=int, default=10000, help="episodes per shot (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (default: 0)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size (default: the training size recorded in the checkpoint, else 84)",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="CHECKPOINT holds the HMDRN authors' released weights (load_reference_checkpoint)",
    )
    parser.add_argument("--model", default="hmdrn", help="with --reference: model name (default: hmdrn)")
    parser.add_argument("--backbone", default="conv4", help="with --reference: backbone (default: conv4)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    parser.add_argument(
        "--batch-size", type=int, default=256, help="images per embedding batch (default: 256)"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default: 0)")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="run every episode through the model instead of caching embeddings (slow)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Evaluate, print the table, write the JSON; a one-line error and exit status 1 on bad input."""
    args = build_parser().parse_args(argv)
    out = args.out or args.checkpoint.with_name(f"{args.checkpoint.stem}_{args.split}_eval.json")
    try:
        device = resolve_device(args.device)
        started = time.perf_counter()
        results = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            split=args.split,
            shots=args.shot,
            way=args.way,
            query=args.query,
            episodes=args.episodes,
            seed=args.seed,
            image_size=args.image_size,
            reference=args.reference,
            model_name=args.model,
            backbone=args.backbone,
            cached=not args.plain,
            device=device,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            num_workers=args.num_workers,
        )
        seconds = time.perf_counter() - started
        write_results(
            results,
            out,
            checkpoint=str(args.checkpoint),
            data=str(args.data),
            split=args.split,
            reference=args.reference,
            cached=not args.plain,
            device=str(device),
            seconds=seconds,
            fsl_core_version=fsl_core.__version__,
            torch_version=str(torch.__version__),
            git_revision=git_revision(),
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"{args.checkpoint} on {args.data}/{args.split}: {args.way}-way, {args.query} queries per class, "
        f"{args.episodes} episodes, {device}"
    )
    print(f"{'shot':>4}  {'accuracy (%)':>15}  {'seconds':>8}")
    for shot, result in results.items():
        print(f"{shot:>4}  {str(result):>15}  {result.seconds:>8.1f}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
