"""The command lines as a user meets them in their --help."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points

import pytest


class _Parsed(Exception):
    """Raised instead of parsing: carries the parser a command line built."""


@pytest.mark.parametrize(
    "script",
    ["fsl-train", "fsl-evaluate", "fsl-predict", "fsl-notebook", "fsl-prepare", "fsl-birds"],
)
def test_every_option_of_every_command_line_has_help(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``--help`` shows: a help text for every argument of every command line (and of its subcommands),
    the entry points as the package installs them."""
    (entry_point,) = [point for point in entry_points(group="console_scripts") if point.name == script]

    def capture(parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(_Parsed) as parsed:
        entry_point.load()(["--help"])
    parsers, missing = [parsed.value.args[0]], []
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
            elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
