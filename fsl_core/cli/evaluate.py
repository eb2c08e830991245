"""Command line for few-shot evaluation of a checkpoint.

    fsl-evaluate outputs/train/NAME/best.pt --shot 1 5 --episodes 10000    # on the data set it trained on
    fsl-evaluate outputs/train/NAME/best.pt --data data/other --episodes 600
    fsl-evaluate CUB_conv4.pth --reference --data data/CUB_fewshot_cropped

Prints a table (per shot: mean ± 95% confidence interval, the seconds spent embedding every image once and
running the episodes, and episodes per second), then writes the results as JSON to ``--out`` or
next to the checkpoint, named after what was evaluated (``result_file_name``), e.g.
``best_test_5way_1+5shot_16query_10000ep_seed0.json``; the JSON also identifies the checkpoint (absolute path,
SHA-256, epoch, and ``reference``: whether it held the HMDRN authors' released weights) and gives the input
size. The output path is checked before any episode runs. An existing result that measured exactly this (the
same checkpoint file, image files, input size and episodes: ``earlier_result``) is shown as it is, and nothing
runs.
Any other existing result is never overwritten, and its refusal says what it was measured on (this same
checkpoint with other data or size, another version of it after the run trained further, or another checkpoint):
choose another ``--out``, or pass ``--overwrite`` to move the old file aside (``<name>.replaced-<UTC time>.json``)
and measure again. A checkpoint that changes while it is evaluated gives no result file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import fsl_core
from fsl_core.cli import CommandParser
from fsl_core.data import FewShotFolder
from fsl_core.engine.evaluate import (
    Measured,
    check_episode_settings,
    check_result_path,
    checkpoint_record,
    earlier_result,
    evaluate_checkpoint,
    evaluation_data_root,
    result_file_name,
    results_to_dict,
    write_results,
)
from fsl_core.runtime import command_line, file_sha256, folder_to_make, git_revision, resolve_device


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = CommandParser(
        prog="fsl-evaluate",
        description="Accuracy (mean ± 1.96·std/√n over N episodes) of a trained few-shot model.",
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="best.pt / last.pt of a run, a save_model file, or with "
        "--reference the HMDRN authors' released weights",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data set root holding the split folder (default: the one the checkpoint's run trained on; "
        "required with --reference)",
    )
    parser.add_argument("--split", default="test", help="split folder to evaluate on (default: test)")
    parser.add_argument(
        "--shot", type=int, nargs="+", default=[1, 5], help="shots to evaluate (default: 1 5)"
    )
    parser.add_argument("--way", type=int, default=5, help="classes per episode (default: 5)")
    parser.add_argument("--query", type=int, default=16, help="query images per class (default: 16)")
    parser.add_argument(
        "--episodes", type=int, default=10000, help="episodes per shot, at least 2 (default: 10000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="episode seed, 0 or more (default: 0)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size (default: the training size recorded in the checkpoint, else the model's own, else 84)",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="CHECKPOINT may hold the HMDRN authors' released weights (load_reference_checkpoint); an "
        "fsl_core checkpoint loads as without it",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="with --reference only: model name (default and only choice: hmdrn)",
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="with --reference only: backbone (default and only choice: conv4)",
    )
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
    parser.add_argument(
        "--out",
        default=None,
        help="JSON output file, a name ending in .json (default: next to the checkpoint, named after the "
        "checkpoint and settings)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="if the output file exists, move it aside to <name>.replaced-<UTC time>.json and write anew",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def format_table(results: Mapping[Any, Mapping[str, Any]]) -> str:
    """The printed table of ``{shot: EvalResult.to_dict()}`` (as a result file holds them): per shot, accuracy
    (mean ± 95% CI, %), seconds embedding the images once, seconds running the episodes, and episodes per second
    of the latter ("-" when not measured)."""
    lines = [f"{'shot':>4}  {'accuracy (%)':>15}  {'embed s':>8}  {'episodes s':>10}  {'episodes/s':>10}"]

    def cell(value: float | None, width: int) -> str:  # a file of an older version may lack a time
        return f"{value:>{width}.1f}" if value is not None else f"{'-':>{width}}"

    for shot, result in results.items():
        accuracy = f"{result['mean']:.2f} ± {result['ci95']:.2f}"
        lines.append(
            f"{shot:>4}  {accuracy:>15}  {cell(result.get('embed_seconds'), 8)}  "
            f"{cell(result.get('episode_seconds'), 10)}  {cell(result.get('episodes_per_second'), 10)}"
        )
    return "\n".join(lines)


@command_line
def main(argv: list[str] | None = None) -> int:
    """Check the inputs and the output path, evaluate, print the table, then write the JSON.

    Returns 0, or 1 after a one-line error on stderr (bad input before any episode runs; a failed write
    after the table was printed).
    """
    args = build_parser().parse_args(argv)
    name = result_file_name(
        args.checkpoint, args.split, args.way, args.shot, args.query, args.episodes, args.seed, args.plain
    )
    out = Path(args.out) if args.out is not None else args.checkpoint.with_name(name)
    try:
        check_episode_settings(args.way, args.shot, args.query, args.episodes, args.seed, reported=True)
        record = checkpoint_record(args.checkpoint)
        if (args.model is not None or args.backbone is not None) and (
            not args.reference or record["fsl_core_checkpoint"]
        ):
            ours = f", and {args.checkpoint} is one" if record["fsl_core_checkpoint"] else ""
            raise ValueError(
                "--model and --backbone are only used with --reference on the HMDRN authors' weights; an "
                f"fsl_core checkpoint records its model{ours}"
            )
        data = evaluation_data_root(args.checkpoint, args.data, args.reference).absolute()
        size = args.image_size or record.get("trained_image_size")
        files = FewShotFolder(data, args.split, transform=None, verify=False).files_sha256()

        def measured_at(size: int) -> Measured:
            return Measured(
                str(data),
                files,
                args.split,
                size,
                args.way,
                tuple(args.shot),
                args.query,
                args.episodes,
                args.seed,
                not args.plain,
            )

        # the authors' weights without --image-size: the size is known once they are loaded
        measured = measured_at(size) if size is not None else None
        earlier = earlier_result(out, record, measured)
        if earlier is not None and earlier.same and not args.overwrite:
            print(
                f"{args.checkpoint} on {data}/{args.split} at {size} px: {args.way}-way, {args.query} queries per "
                f"class, {args.episodes} episodes: measured before, with the same checkpoint file, images and "
                f"settings, in {out} (--overwrite measures again)"
            )
            print(format_table(earlier.content["results"]))
            return 0
        check_result_path(
            args.out if args.out is not None else out,
            args.overwrite,
            other_hint="another --out",
            overwrite_hint="--overwrite",
            example_name=name,
            detail=earlier.detail() if earlier is not None else "",
            suffix=".json",
        )
        device = resolve_device(args.device)
        started = time.perf_counter()
        results = evaluate_checkpoint(
            args.checkpoint,
            data,
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
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    size = next(iter(results.values())).image_size
    print(
        f"{args.checkpoint} on {data}/{args.split} at {size} px: {args.way}-way, {args.query} queries per "
        f"class, {args.episodes} episodes, {device}"
    )
    if args.reference and record["fsl_core_checkpoint"]:
        print(
            f"note: {args.checkpoint} is an fsl_core checkpoint, which records its model: --reference is not needed"
        )
    trained = record.get("trained_image_size")
    if trained is not None and size != trained:
        print(f"note: the model was trained at {trained} px and is evaluated at {size} px (--image-size)")
    print(format_table(results_to_dict(results)), flush=True)
    try:
        changed = file_sha256(record["checkpoint"]) != record["checkpoint_sha256"]
    except OSError:  # moved away or replaced meanwhile
        changed = True
    if changed:
        print(
            f"error: {record['checkpoint']} changed or was removed while it was evaluated (a run still training?), so "
            "the results above cannot say which version they measured and were not saved; evaluate it again once "
            "it is final",
            file=sys.stderr,
        )
        return 1
    made = folder_to_make(out)
    try:
        moved = write_results(
            results,
            out,
            overwrite=args.overwrite,
            **record,
            **measured_at(size).record(),
            reference=not record["fsl_core_checkpoint"],
            device=str(device),
            seconds=seconds,
            fsl_core_version=fsl_core.__version__,
            torch_version=str(torch.__version__),
            git_revision=git_revision(),
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}; the results above were not saved", file=sys.stderr)
        return 1
    if moved is not None:
        print(f"previous result moved to: {moved}")
    print(f"written: {out}" + (f" (the folder {made} was made)" if made is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
