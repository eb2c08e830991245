"""Command line: classify your own images with a trained few-shot model.

    fsl-predict outputs/02_train/NAME/train/best.pt my_support/ a.jpg b.jpg
    fsl-predict best.pt my_support/ my_photos/ --csv predictions.csv
    fsl-predict CUB_conv4.pth --reference my_support/ photo.jpg

``SUPPORT_DIR`` holds one sub-folder per class (``<class name>/<image files>``); each ``IMAGE`` is an image
file or a folder (its image files). Prints one line per image, tab-separated: the file as given, the
predicted class and its probability. ``--csv`` also writes the table (file, predicted, probability, then one
column per class), atomically; an existing file is kept unless ``--overwrite`` moves it aside first
(``<name>.replaced-<UTC time>.csv``). Classes with unequal numbers of support images are handled as
``fsl_core.classifier`` describes. Messages go to stderr, so stdout holds only the predictions.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fsl_core.classifier import FewShotClassifier, image_inputs, prediction_table, unread_files, unread_note
from fsl_core.cli import CommandParser
from fsl_core.engine.evaluate import check_result_path
from fsl_core.run_folder import move_aside
from fsl_core.runtime import atomic_write_bytes, command_line, folder_to_make, some_names


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = CommandParser(
        prog="fsl-predict",
        description="Classify images with a trained few-shot model and a support folder of labelled examples.",
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="best.pt / last.pt of a training run, a save_model file, or with --reference the HMDRN authors' "
        "released weights",
    )
    parser.add_argument("support_dir", type=Path, help="support folder: <class name>/<image files>")
    parser.add_argument("images", nargs="+", help="image files or folders of them to classify")
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="also write the table of predictions to this file (a name ending in .csv)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="if the --csv file exists, move it aside to <name>.replaced-<UTC time>.csv and write anew",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="CHECKPOINT holds the HMDRN authors' released Conv-4 weights (load_reference_checkpoint)",
    )
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size (default: the training size recorded in the checkpoint, else the model's own, else 84)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per backbone pass (default: 64)")
    return parser


@command_line
def main(argv: list[str] | None = None) -> int:
    """Load, fit the support folder, classify, print a line per image, then write the CSV if asked.

    Returns 0, or 1 after a one-line error on stderr (bad input before anything is classified; a failed
    write after the predictions were printed).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.csv is not None:
            check_result_path(
                args.csv,
                args.overwrite,
                other_hint="another --csv",
                overwrite_hint="--overwrite",
                example_name="predictions.csv",
                suffix=".csv",
            )
        _, sources = image_inputs(args.images)  # every image is checked before the model is loaded
        first: dict[Path, str] = {}  # each image once, where it was first given
        repeated: list[str] = []
        for source in sources:
            key = Path(source).resolve()
            if key in first:
                repeated.append(first[key])
            first.setdefault(key, str(source))
        files = list(first.values())
        if repeated:  # an image given by name and through its folder, say
            repeated = list(dict.fromkeys(repeated))
            print(
                f"note: given more than once, classified once: {some_names(repeated, separator='; ')}",
                file=sys.stderr,
            )
        classifier = FewShotClassifier.from_checkpoint(
            args.checkpoint,
            device=args.device,
            reference=args.reference,
            image_size=args.image_size,
            batch_size=args.batch_size,
        )
        classifier.fit(args.support_dir)
        print(f"{classifier}", file=sys.stderr)
        probabilities = classifier.predict_proba(files)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if unread := unread_files(args.images):
        print(f"note: of the folders to classify, {unread_note(unread)}", file=sys.stderr)
    table = prediction_table(probabilities, files)
    for row in table.itertuples(index=False):
        print(f"{row.file}\t{row.predicted}\t{row.probability:.4f}")
    sys.stdout.flush()
    if args.csv is not None:
        made = folder_to_make(args.csv)
        try:
            moved = move_aside(args.csv) if args.csv.exists() else None
            try:
                atomic_write_bytes(table.to_csv(index=False).encode(), args.csv)
            except BaseException:
                if moved is not None:
                    os.replace(moved, args.csv)
                raise
        except OSError as error:
            print(f"error: {error}; the predictions above were not saved", file=sys.stderr)
            return 1
        if moved is not None:
            print(f"previous table moved to: {moved}", file=sys.stderr)
        print(f"written: {args.csv}" + (f" (the folder {made} was made)" if made else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
