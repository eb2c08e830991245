"""``python -m fsl_core.data.prepare cub|dogs|cars SRC DST [options]`` and ``... check ROOT``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fsl_core.cli import CommandParser
from fsl_core.runtime import command_line

from .cars import prepare_cars
from .check import check_prepared
from .cub import prepare_cub
from .dogs import prepare_dogs
from .source import PrepareError
from .splits import COMMITTED_SPLITS

EPILOG = (
    "Output: DST/{train,val,test}/<class>/<image>, DST/{val,test}_pre/ (Resize([92,92]) -> CenterCrop(84)) "
    "and DST/prepare_summary.json. Re-running the same command resumes; the source folder is only read."
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = CommandParser(
        prog="fsl-prepare",
        epilog=EPILOG,
        description="Prepare CUB-200-2011, Stanford Dogs or Stanford Cars as a few-shot folder; check one.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{cub,dogs,cars,check}")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("src", help="the extracted original data set (read only)")
        sub.add_argument(
            "dst", help="the folder to write (new, empty, or an earlier run of the same command)"
        )
        sub.add_argument("--split-file", help="a JSON file with 'train', 'val' and 'test' class lists")
        sub.add_argument(
            "--format",
            dest="image_format",
            choices=("png", "jpeg"),
            default="png",
            help="output files: png (lossless, default, as FRN) or jpeg (quality 95)",
        )
        sub.add_argument(
            "--workers", type=int, default=None, help="threads decoding/encoding (default: up to 4)"
        )
        sub.add_argument("--quiet", action="store_true", help="no progress bar")

    cub = commands.add_parser("cub", help="CUB-200-2011 (SRC = CUB_200_2011/)", epilog=EPILOG)
    common(cub)
    cub.add_argument(
        "--split",
        choices=COMMITTED_SPLITS["cub"],
        default="130-20-50",
        help="130-20-50: BiFRN/HMDRN class lists (default); 100-50-50: FRN's rule",
    )
    cub.add_argument(
        "--no-crop", dest="crop", action="store_false", help="keep whole images (default: crop to boxes)"
    )
    dogs = commands.add_parser(
        "dogs", help="Stanford Dogs (SRC holds Images/ and Annotation/), 70/20/30 classes", epilog=EPILOG
    )
    common(dogs)
    dogs.add_argument("--crop", action="store_true", help="crop to the union of the annotated boxes")
    cars = commands.add_parser(
        "cars",
        help="Stanford Cars (SRC holds cars_train/, cars_test/, devkit/), 130/17/49 classes",
        epilog=EPILOG,
    )
    common(cars)
    cars.add_argument("--crop", action="store_true", help="crop to the annotated boxes")
    check = commands.add_parser("check", help="validate a prepared folder and print its counts")
    check.add_argument("root", help="a prepared folder (ours or FRN/BiFRN's)")
    check.add_argument("--verify-images", action="store_true", help="also decode every image")
    return parser


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; 0 on success, 1 with a one-line error on bad input, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            result = check_prepared(args.root, verify_images=args.verify_images)
            print(
                f"{result['root']}: valid few-shot folder"
                + (f" ({', '.join(result['pre'])} present)" if result["pre"] else "")
            )
            for split, count in result["splits"].items():
                print(
                    f"  {split:<6} {count['classes']:>5} classes {count['images']:>7} images "
                    f"(smallest class {count['smallest_class']})"
                )
            return 0
        options = dict(
            split_file=args.split_file,
            crop=args.crop,
            image_format=args.image_format,
            workers=args.workers,
            progress=not args.quiet,
        )
        if args.command == "cub":
            prepare_cub(args.src, args.dst, split=args.split, **options)
        elif args.command == "dogs":
            prepare_dogs(args.src, args.dst, **options)
        else:
            prepare_cars(args.src, args.dst, **options)
        return 0
    except PrepareError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
