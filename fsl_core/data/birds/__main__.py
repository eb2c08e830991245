"""Command line: ``python -m fsl_core.data.birds OUT_DIR [--seed N] [--image-size N] ...``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..images import FewShotDataError
from .card import format_card, load_card
from .generate import generate_birds


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), generate the set, print its card; the exit status."""
    parser = argparse.ArgumentParser(
        prog="fsl-birds",
        description="Generate the embedded fine-grained birds set in the few-shot folder layout.",
    )
    parser.add_argument("out_dir", type=Path, help="output folder (new, empty, or an earlier output)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--images-per-class", type=int, default=40)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--species-per-group", type=int, default=10)
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel processes (default: CPU count, max 8)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        out = generate_birds(
            args.out_dir,
            seed=args.seed,
            image_size=args.image_size,
            images_per_class=args.images_per_class,
            groups=args.groups,
            species_per_group=args.species_per_group,
            workers=args.workers,
        )
    except FewShotDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_card(load_card(out)))
    print(f"written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
