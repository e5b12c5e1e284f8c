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
        (
            ["tgs", "predict", "--data", "d", "--run", "r", "--out", "o", "--threshold", "1.5"],
            "[0, 1]",
        ),
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
    code = cli.main(
        ["tgs", "evaluate", "--data", str(missing), "--submission", str(tmp_path / "s.csv")]
    )
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


@pytest.mark.slow
def test_console_script_exit_status(tmp_path):
    # the installed entry point (pyproject: segtutor = "segtutor.cli:main"), run as a process
    script = Path(sys.executable).with_name("segtutor")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "segtutor.cli"]
    env = dict(os.environ, SEGTUTOR_DEBUG="")
    done = subprocess.run(
        cmd + ["tgs", "evaluate", "--data", str(tmp_path / "nope"), "--submission", "s.csv"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1


# every numeric option is checked by the parser, before any data is read; the one-line message
# names the option (argparse's "argument --x:"), also where numpy would have said only
# "expected non-negative integer"
TRAIN = ["tgs", "train", "--data", "no-such-data", "--out", "run"]
PREDICT = ["tgs", "predict", "--data", "no-such-data", "--run", "run", "--out", "s.csv"]
SYNTH = ["tgs", "synth", "--out", "data"]


@pytest.mark.parametrize(
    "argv, option",
    [(TRAIN + ["--lr", v], "--lr") for v in ("nan", "inf", "1e30", "-0.1", "0", "-inf")]
    + [(TRAIN + ["--width", v], "--width") for v in ("inf", "nan", "0", "-1", "1e9")]
    + [(TRAIN + ["--visdom", v], "--visdom") for v in ("0", "70000", "-1")]
    + [(TRAIN + ["--seed", v], "--seed") for v in ("-1", str(2**32), "1.5")]
    + [
        (TRAIN + ["--batch-size", "0"], "--batch-size"),
        (TRAIN + ["--n-images", "0"], "--n-images"),
        (TRAIN + ["--cycles", "-1"], "--cycles"),
        (TRAIN + ["--cycle-epochs", "0"], "--cycle-epochs"),
    ]
    + [
        (SYNTH + ["--seed", "-1"], "--seed"),
        (SYNTH + ["--n", "1e30"], "--n"),
        (SYNTH + ["--n", "10000000"], "--n"),
        (SYNTH + ["--n-test", "-1"], "--n-test"),
    ]
    + [(PREDICT + ["--threshold", v], "--threshold") for v in ("nan", "inf", "-0.1")]
    + [
        (PREDICT + ["--empty-threshold", "nan"], "--empty-threshold"),
        (PREDICT + ["--min-size", "-1"], "--min-size"),
        (PREDICT + ["--min-size", "99999"], "--min-size"),
        (PREDICT + ["--batch-size", "0"], "--batch-size"),
    ],
)
def test_numeric_options_are_checked_in_the_parser_naming_the_option(
    tmp_path, monkeypatch, capsys, argv, option
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}: expected" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing created


def test_train_options_in_range_pass_the_parser():
    args = cli.build_parser().parse_args(
        TRAIN + ["--lr", "1e-3", "--width", "0.125", "--visdom", "8097", "--seed", str(2**32 - 1)]
    )
    assert (args.lr, args.width, args.visdom, args.seed) == (1e-3, 0.125, 8097, 2**32 - 1)


def test_visdom_flag_in_help_and_book_is_the_one_visdom_accepts(capsys):
    import importlib.util
    import re

    # visdom's own server declares its flag with one dash ("-bind_local"); "--bind_local" fails
    source = Path(importlib.util.find_spec("visdom.server.run_server").origin).read_text()
    assert re.search(r"""["']-bind_local["']""", source)
    with pytest.raises(SystemExit):
        cli.main(["tgs", "train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "-port PORT -bind_local" in help_text and "--bind_local" not in help_text
    chapter = Path(__file__).resolve().parents[1] / "book" / "tgs" / "training.md"
    assert "--bind_local" not in chapter.read_text() and "-bind_local" in chapter.read_text()
