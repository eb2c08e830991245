"""Command line for episodic training (also under ``torchrun`` for several processes).

    fsl-train --model hmdrn --backbone conv4 --data data/birds --run-dir outputs/train/NAME
    fsl-train --protocol quick --model protonet --data data/birds --epochs 5
    torchrun --nproc_per_node=2 -m fsl_core.cli.train --model hmdrn --data data/birds --run-dir outputs/train/ddp

Every setting of ``fsl_core.engine.TrainConfig`` is a flag; settings left out take the protocol's value, or,
when RUN_DIR holds a run, the run's own (``continued_settings``). Running the same command again continues the
run from ``RUN_DIR/last.pt``, and so does ``--run-dir RUN_DIR`` alone, or with what changes (``--epochs 20`` to
train longer); a RUN_DIR holding another run is refused (``--overwrite`` moves its files aside into
``RUN_DIR/replaced-<time>/`` and starts anew from the flags given); Ctrl-C stops with one line.
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from fsl_core.cli import CommandParser
from fsl_core.data.transforms import AUGMENTATIONS
from fsl_core.engine.config import (
    PROTOCOL_SETTINGS,
    PROTOCOLS,
    SAMPLERS,
    SCHEDULERS,
    TrainConfig,
    continued_settings,
    protocol_value,
    setting_default,
    setting_help,
)
from fsl_core.engine.train import TrainingDiverged, TrainingInterrupted, train
from fsl_core.run_folder import RunFolderInUse, read_manifest
from fsl_core.runtime import command_line

_CHOICES = {
    "protocol": PROTOCOLS,
    "sampler": SAMPLERS,
    "scheduler": SCHEDULERS,
    "augmentation": tuple(AUGMENTATIONS),
}
_FLAGS = {"data_root": ["--data", "--data-root"]}


def parse_option(text: str) -> tuple[str, Any]:
    """``"key=value"`` → (key, value); the value is read as a Python literal (``3``, ``0.5``, ``'last'``,
    ``[1, 2]``, ``None``) and kept as a string when it is not one (``levels=last+mid``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"--option expects key=value with a Python name as key, got {text!r}"
        )
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return key, value


def _positive(text: str) -> int:
    """An argparse type: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _protocol_defaults(name: str) -> str:
    """ "authors: 30 (conv4) / 10 (resnet12); quick: 5" — the values each protocol gives ``name``."""
    shown = []
    for protocol in PROTOCOLS:
        values = {backbone: protocol_value(protocol, backbone, name) for backbone in ("conv4", "resnet12")}
        if values["conv4"] == values["resnet12"]:
            text = "the number of epochs" if values["conv4"] is None else str(values["conv4"])
        else:
            text = " / ".join(f"{value} ({backbone})" for backbone, value in values.items())
        shown.append(f"{protocol}: {text}")
    return "; ".join(shown)


def build_parser() -> argparse.ArgumentParser:
    """The parser: one flag per TrainConfig setting, plus --option, --stop-after-epochs and --rank-log."""
    parser = CommandParser(
        prog="fsl-train",
        description=(
            "Episodic training of a few-shot model from scratch. Writes config.json, metrics.csv, last.pt and "
            "best.pt into the run folder; running again with the same --run-dir continues from last.pt. Unset "
            "settings take the values of --protocol ('authors': the HMDRN paper's protocol; 'quick': a short "
            "CPU demonstration), or, when --run-dir holds a run, the run's own: --run-dir DIR --epochs N "
            "trains it longer. Under torchrun every process trains on different episodes (DDP)."
        ),
    )
    for spec in fields(TrainConfig):
        name, kind = spec.name, str(spec.type)
        flags = _FLAGS.get(name, ["--" + name.replace("_", "-")])
        default = setting_default(name)
        if default is not None:
            help_text = f"{setting_help(name)} (default: {default})"
        elif name in PROTOCOL_SETTINGS:
            help_text = f"{setting_help(name)} ({_protocol_defaults(name)})"
        else:
            help_text = setting_help(name)
        help_text = help_text.replace("%", "%%")
        if name == "options":
            parser.add_argument(
                "--option",
                dest="options",
                action="append",
                type=parse_option,
                metavar="KEY=VALUE",
                help="model option, repeatable, value read as a Python literal (e.g. --option mask=False "
                "--option levels=last)",
                default=argparse.SUPPRESS,
            )
            continue
        if kind.startswith("bool"):
            parser.add_argument(
                *flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                help=help_text,
                default=argparse.SUPPRESS,
            )
            continue
        value_type = int if kind.startswith("int") else float if kind.startswith("float") else str
        metavar = {int: "N", float: "X", str: "PATH" if name in ("data_root", "run_dir") else "NAME"}[
            value_type
        ]
        parser.add_argument(
            *flags,
            dest=name,
            type=value_type,
            choices=_CHOICES.get(name),
            help=help_text,
            default=argparse.SUPPRESS,
            metavar=None if name in _CHOICES else metavar,
        )
    parser.add_argument(
        "--stop-after-epochs",
        type=_positive,
        default=None,
        metavar="N",
        help="stop after N epochs of this command (resume later with the same command)",
    )
    parser.add_argument(
        "--rank-log",
        action="store_true",
        help="every process writes RUN_DIR/rank<r>.json with its episodes and a parameter digest",
    )
    return parser


@command_line
def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train, print a summary; a one-line error and exit status 1 on bad input."""
    parser = build_parser()
    arguments = vars(parser.parse_args(argv))
    stop_after = arguments.pop("stop_after_epochs")
    rank_log = arguments.pop("rank_log")
    if "options" in arguments:
        options: dict[str, Any] = {}
        for key, value in arguments["options"]:
            options[key] = value
        arguments["options"] = options
    rank = int(os.environ.get("RANK", "0"))
    prefix = f"[rank {rank}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    try:
        settings = continued_settings(arguments.get("run_dir"), arguments)
        run_dir = arguments.get("run_dir")
        if rank == 0 and set(settings) - set(arguments):
            print(
                f"{run_dir} holds a run: the settings not given are those it recorded; it goes on if those given agree"
            )
        elif rank == 0 and arguments.get("overwrite") and run_dir and read_manifest(run_dir) is not None:
            print(f"--overwrite: a new run in {run_dir}, from the flags given and the protocol's values")
        result = train(stop_after_epochs=stop_after, rank_log=rank_log, **settings)
    except TrainingInterrupted as interruption:
        print(f"{prefix}{interruption}", file=sys.stderr)
        return 128 + interruption.signal_number  # the shell's status of a process the signal stopped
    except (ValueError, OSError, TrainingDiverged, RunFolderInUse) as error:
        print(f"{prefix}error: {error}", file=sys.stderr)
        return 1
    if rank == 0:
        print(f"run folder: {result.run_dir}")
        print(f"epochs: {result.epochs_done}/{result.config.epochs}")
        if result.best_val_acc is not None:
            print(
                f"best validation accuracy: {result.best_val_acc:.2f} ± {result.best_val_ci95:.2f} % (95 % "
                f"interval; epoch {result.best_epoch}), kept in {Path(result.run_dir) / 'best.pt'}"
            )
        if result.finished:
            best = Path(result.run_dir) / "best.pt"
            chosen = best if best.exists() else best.with_name("last.pt")
            print(f"next: fsl-evaluate {shlex.quote(str(chosen))} --shot 1 5 --episodes 10000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
