"""The command lines, installed as console scripts (``pyproject.toml``) and runnable with ``python -m``:

- ``fsl-train`` (``python -m fsl_core.cli.train``): episodic training, also under ``torchrun`` (DDP);
- ``fsl-evaluate`` (``python -m fsl_core.cli.evaluate``): accuracy ± 95% CI of a checkpoint;
- ``fsl-predict`` (``python -m fsl_core.predict``): your own images classified from a support folder;
- ``fsl-notebook`` (``python -m fsl_core.notebooks``): a parameterised notebook through papermill;
- ``fsl-prepare`` (``python -m fsl_core.data.prepare``): CUB, Stanford Dogs, Stanford Cars in the few-shot layout;
- ``fsl-birds`` (``python -m fsl_core.data.birds``): the embedded generated birds set.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from fsl_core.runtime import did_you_mean


class CommandParser(argparse.ArgumentParser):
    """The parser of every command line: a wrong flag or value gives one line, not the usage block, naming the
    problem, the closest flag to a misspelt one, and for argparse's own errors where the flags are listed
    (``--help``). Exit status 2, as for every usage error. A flag is given in full: ``--epoch 2`` is refused
    with "did you mean '--epochs'?", not read as ``--epochs 2`` (argparse's prefixes), as ``fsl-notebook -p``
    refuses a parameter name it does not know."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        hint, listing = "", self.prog
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown and unknown.group(1).startswith("-"):
            typed = unknown.group(1).split("=")[0]
            for parser in self._with_subcommands():  # a subcommand's flags are reported by the top parser
                flags = [option for action in parser._actions for option in action.option_strings]
                if hint := did_you_mean(typed, flags):
                    listing = parser.prog
                    break
        usage = re.match(
            r"unrecognized arguments|the following arguments|argument |ambiguous option", message
        )
        listed = f"; the flags: {listing} --help" if usage else ""  # argparse's own errors give no way out
        self.exit(2, f"{self.prog}: error: {message}{hint}{listed}\n")

    def _with_subcommands(self) -> list[argparse.ArgumentParser]:
        """This parser, then its subcommands' parsers."""
        parsers: list[argparse.ArgumentParser] = [self]
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
        return parsers
