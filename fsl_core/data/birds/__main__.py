"""Command line: ``python -m fsl_core.data.birds OUT_DIR [--seed N] [--image-size N] ...``."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fsl_core.cli import CommandParser
from fsl_core.runtime import command_line

from ..images import FewShotDataError
from .card import format_card, load_card
from .generate import generate_birds, is_complete
from .taxonomy import GENERATOR_VERSION, BirdSettings


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), generate the set, print its card; the exit status."""
    parser = CommandParser(
        prog="fsl-birds",
        description="Generate the embedded fine-grained birds set in the few-shot folder layout.",
    )
    parser.add_argument(
        "out_dir",
        type=Path,
        help="output folder (new, empty, or an earlier output: one made with other settings only with --overwrite)",
    )
    for setting in dataclasses.fields(BirdSettings):
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            type=int,
            default=setting.default,
            help=setting.metadata["help"] + " (default: %(default)s)",
        )
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel processes (default: CPU count, max 8)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a complete set in OUT_DIR made with other settings (runs trained on it then see other "
        "images), or draw the same one again",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    settings = {setting.name: getattr(args, setting.name) for setting in dataclasses.fields(BirdSettings)}
    try:
        if not args.overwrite and is_complete(args.out_dir, settings):
            out = args.out_dir.absolute()
            print(format_card(load_card(out)))
            print(
                f"{out} already holds this set, complete (same settings, generator version {GENERATOR_VERSION}): "
                "nothing drawn; --overwrite draws it again"
            )
            return 0
        out = generate_birds(args.out_dir, **settings, workers=args.workers, overwrite=args.overwrite)
        card = format_card(load_card(out))
    except (FewShotDataError, OSError, ValueError) as error:  # ValueError: a damaged card
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(card)
    print(f"written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
