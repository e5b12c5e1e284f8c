"""The ``segtutor`` command line: help for every option, one-line errors with exit status 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segtutor import cli

STEPS = ("synth", "train", "predict", "evaluate")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_of_every_step_has_help_and_shows_in_help_output(capsys):
    steps = _subparsers(_subparsers(cli.build_parser())["tgs"])
    assert set(steps) == set(STEPS)
    for name, parser in steps.items():
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["tgs", name, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        for action in parser._actions:
            assert action.help and len(action.help) > 10, (name, action.option_strings)
            for flag in action.option_strings:
                assert flag in out, (name, flag)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["tgs", "evaluate", "--data"], "expected one argument"),
        (["tgs", "evaluate", "--submission", "x.csv"], "required: --data"),
        (["tgs", "synth", "--out", "d", "--n", "0"], "positive integer"),
        (["tgs", "predict", "--data", "d", "--run", "r", "--out", "o", "--threshold", "1.5"],
         "[0, 1]"),
        (["tgs", "train", "--out", "r", "--train-folds", "a,b"], "fold numbers"),
        (["tgs", "frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and fragment in err


def test_missing_data_folder_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    code = cli.main(["tgs", "evaluate", "--data", str(missing), "--submission", str(tmp_path / "s.csv")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("segtutor tgs evaluate: error:") and str(missing) in captured.err


def test_a_file_where_a_folder_is_expected(tmp_path, capsys):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    code = cli.main(["tgs", "evaluate", "--data", str(not_a_dir), "--submission", str(not_a_dir)])
    assert code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_console_script_exit_status(tmp_path):
    # the installed entry point (pyproject: segtutor = "segtutor.cli:main"), run as a process
    script = Path(sys.executable).with_name("segtutor")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "segtutor.cli"]
    env = dict(os.environ, SEGTUTOR_DEBUG="")
    done = subprocess.run(
        cmd + ["tgs", "evaluate", "--data", str(tmp_path / "nope"), "--submission", "s.csv"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
