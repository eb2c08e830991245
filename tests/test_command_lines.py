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


@pytest.mark.parametrize(
    "script, argv, closest",
    [
        ("fsl-train", ["--modle", "hmdrn"], "--model"),
        (
            "fsl-train",
            ["--epoch", "2"],
            "--epochs",
        ),  # a prefix of a flag is no flag: given in full, or refused
        ("fsl-evaluate", ["best.pt", "--episode", "5"], "--episodes"),
        ("fsl-evaluate", ["best.pt", "--shots", "1"], "--shot"),
        ("fsl-predict", ["best.pt", "support", "a.jpg", "--cvs", "p.csv"], "--csv"),
        ("fsl-notebook", ["02_train", "--runname", "x"], "--run-name"),
        ("fsl-birds", ["data/birds", "--sed=3"], "--seed"),
        ("fsl-prepare", ["check", "data/birds", "--verify-imags"], "--verify-images"),
    ],
)
def test_a_misspelt_flag_is_one_line_with_the_closest_flag(
    script: str, argv: list[str], closest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (entry_point,) = [point for point in entry_points(group="console_scripts") if point.name == script]
    with pytest.raises(SystemExit) as stop:
        entry_point.load()(argv)
    assert stop.value.code == 2
    typed = argv[-2] if argv[-2].startswith("-") else argv[-1]
    listing = f"{script} {argv[0]}" if script == "fsl-prepare" else script  # the subcommand's flags
    assert capsys.readouterr().err == (
        f"{script}: error: unrecognized arguments: {' '.join(argv[argv.index(typed) :])} (did you mean "
        f"'{closest}'?); the flags: {listing} --help\n"
    )


def test_the_closest_name_is_the_same_name_in_another_case_first() -> None:
    from fsl_core.runtime import did_you_mean

    assert did_you_mean("HMDRN", ["protonet", "frn", "bifrn", "hmdrn"]) == " (did you mean 'hmdrn'?)"
    assert did_you_mean("hmdnr", ["protonet", "frn", "bifrn", "hmdrn"]) == " (did you mean 'hmdrn'?)"
    assert did_you_mean("resnet", ["conv4", "resnet12"]) == " (did you mean 'resnet12'?)"
    assert did_you_mean("vit", ["conv4", "resnet12"]) == ""


def test_stop_after_epochs_is_checked_as_the_flag_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    from fsl_core.cli.train import main

    for typed in ("0", "x"):
        with pytest.raises(SystemExit) as stop:
            main(["--stop-after-epochs", typed])
        assert stop.value.code == 2
        assert capsys.readouterr().err == (
            f"fsl-train: error: argument --stop-after-epochs: expected a positive integer, got '{typed}'; the flags: "
            "fsl-train --help\n"
        )


def test_fsl_train_names_the_flags_of_episodes_its_data_set_cannot_give(
    tiny_folder, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """4 classes of 5 to 8 images per split: the refusal names the flag to change, in the command line's words."""
    from fsl_core.cli.train import main

    run = tmp_path_factory.mktemp("runs") / "run"  # tiny_folder is the test's tmp_path: the run lies apart
    base = ["--data-root", str(tiny_folder), "--run-dir", str(run), "--protocol", "quick"]
    base += ["--way", "3", "--shot", "1", "--query", "2", "--image-size", "16"]
    assert main([*base, "--val-way", "7"]) == 1
    assert capsys.readouterr().err.startswith(
        f"error: validation: --val-way=7: {tiny_folder}/val has only 4 classes; use --val-way <= 4; --val-shot 5 + "
        "--val-query 16 = 21 images per class, but all 4 classes"
    )
    assert main([*base, "--query", "6"]) == 1
    assert (
        "training: --shot 1 + --query 6 = 7 images per class, but 2 of the 4 classes of "
        f"{tiny_folder}/train have fewer: class_0 (5), class_1 (6); lower --shot or --query so that --shot + "
        "--query <= 5\n"
    ) in capsys.readouterr().err
    assert not run.exists()
    assert main([*base[:2], "--run-dir", str(tiny_folder / "run")]) == 1  # the run folder inside the data set
    assert capsys.readouterr().err.startswith(
        f"error: --run-dir {tiny_folder}/run lies inside the data set {tiny_folder}: a run writes its folder and "
        "with --overwrite moves what it holds aside, so it must be apart from the data; give a --run-dir outside"
    )
