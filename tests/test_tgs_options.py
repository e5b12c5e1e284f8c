"""TrainOptions: each option written once, the ``tgs train`` command line generated from it."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import asdict, fields

import pytest

from segtutor import cli, tgs
from segtutor.tgs.options import Number, TrainOptions

CLI_FIELDS = [f for f in fields(TrainOptions) if "help" in f.metadata]


def _train_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    tgs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    steps = next(
        a for a in tgs.choices["tgs"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    return steps.choices["train"]


def test_every_option_of_train_is_a_field_with_its_default_choices_and_metavar():
    actions = {a.dest: a for a in _train_parser()._actions if a.option_strings}
    for f in CLI_FIELDS:
        action = actions.pop(f.name)
        if isinstance(f.default, bool):
            # a flag that flips the default: --no-amp stores False into `amp`
            assert action.option_strings == [
                ("--no-" if f.default else "--") + f.name.replace("_", "-")
            ]
            assert action.const is (not f.default) and action.default is f.default
        else:
            assert action.option_strings == ["--" + f.name.replace("_", "-")]
            assert action.default == f.default
            assert action.choices == f.metadata.get("choices")
            assert action.metavar == f.metadata.get("metavar")
    # what is left is not an option of the recipe
    assert set(actions) == {"help", "data", "out", "resume", "quick"}
    # the ablation switches stay off the command line
    assert {"verbose", "scse", "augment", "aux_weight", "full_res_skip"} <= {
        f.name for f in fields(TrainOptions) if f not in CLI_FIELDS
    }


def test_a_command_line_with_every_option_gives_the_same_options_as_python():
    args = _train_parser().parse_args(
        [
            "--out",
            "r",
            "--folds",
            "3",
            "--train-folds",
            "0,2",
            "--model",
            "unet",
            "--width",
            "2",
            "--pretrained",
            "--size-mode",
            "resize",
            "--stage1-loss",
            "bce_dice",
            "--stage1-epochs",
            "0",
            "--lovasz",
            "hinge",
            "--no-symmetric-lovasz",
            "--cycles",
            "2",
            "--cycle-epochs",
            "3",
            "--lr",
            "0.01",
            "--batch-size",
            "4",
            "--n-images",
            "10",
            "--seed",
            "7",
            "--no-amp",
            "--no-gpu-data",
            "--tensorboard",
            "tb",
            "--visdom",
            "8097",
            "--no-progress",
        ]
    )
    expected = TrainOptions(
        folds=3,
        train_folds=[0, 2],
        model="unet",
        width=2.0,
        pretrained=True,
        size_mode="resize",
        stage1_loss="bce_dice",
        stage1_epochs=0,
        lovasz="hinge",
        symmetric_lovasz=False,
        cycles=2,
        cycle_epochs=3,
        lr=0.01,
        batch_size=4,
        n_images=10,
        seed=7,
        amp=False,
        gpu_data=False,
        tensorboard="tb",
        visdom=8097,
        progress=False,
    )
    assert TrainOptions.from_namespace(args) == expected
    assert TrainOptions.from_namespace(_train_parser().parse_args(["--out", "r"])) == TrainOptions()


def test_help_states_the_quick_and_full_defaults_that_resolved_uses(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        cli.main(["tgs", "train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    quick = TrainOptions().resolved()
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    full = TrainOptions().resolved()
    checked = 0
    for f in CLI_FIELDS:
        if "resolve" not in f.metadata:
            continue
        flag = "--" + f.name.replace("_", "-")
        said = re.search(re.escape(flag) + r" \S+ .*?\(default: ([^)]*)\)", help_text).group(1)
        values = (getattr(quick, f.name), getattr(full, f.name))
        if f.name == "train_folds":  # a list of folds, or None: every fold
            assert values == ([0], None) and said == "quick 0, full all K", (flag, said)
        elif values[0] == values[1]:
            assert float(said) == values[0], (flag, said)
        else:
            assert said == f"quick {values[0]:g}, full {values[1]:g}", (flag, said)
        checked += 1
    # width, stage1_epochs, cycles, cycle_epochs, lr, batch_size, train_folds
    assert checked == 7
    assert (quick.width, full.width, quick.lr, full.lr) == (0.125, 1.0, 3e-3, 1e-3)


SOMETHING_TO_TRAIN = {"stage1_epochs": 1, "cycles": 1, "cycle_epochs": 1}
CANDIDATES = (
    -1,
    0,
    1,
    2,
    3,
    8,
    9,
    65535,
    65536,
    2**32 - 1,
    2**32,
    0.5,
    1e-3,
    1.5,
    1e30,
    float("nan"),
    float("inf"),
    -0.1,
)


@pytest.mark.parametrize(
    "f", [f for f in CLI_FIELDS if "number" in f.metadata], ids=lambda f: f.name
)
def test_the_parser_and_the_api_accept_the_same_numbers(f):
    # one rule per option: what `--lr 2` refuses, TrainOptions(lr=2.0) refuses too
    parser = _train_parser()
    rule: Number = f.metadata["number"]
    for value in CANDIDATES:
        if rule.kind is int and not isinstance(value, int):
            continue
        text = repr(value) if isinstance(value, float) else str(value)
        try:
            parser.parse_args(["--out", "r", "--" + f.name.replace("_", "-"), text])
            by_cli = True
        except SystemExit:
            by_cli = False
        try:
            TrainOptions(**{**SOMETHING_TO_TRAIN, f.name: value}).validate()
            by_api = True
        except ValueError as err:
            assert str(err).startswith(f"{f.name} must be {rule.expected}") or f.name == "folds"
            by_api = False
        if f.name == "folds" and value == 1:
            continue  # the parser takes a positive integer; one fold leaves nothing held out
        assert by_cli == by_api, (f.name, value, by_cli, by_api)


def test_api_refuses_what_the_command_line_always_refused():
    # before, TrainOptions took any finite positive learning rate, width and seed
    for bad, message in [
        ({"lr": 2.0}, r"lr must be a learning rate in \(0, 1\]"),
        ({"width": 9.0}, r"width must be a number in \(0, 8\]"),
        ({"seed": 2**32}, r"seed must be an integer in \[0, 4294967295\]"),
        ({"folds": 2.0}, "folds must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainOptions(stage1_epochs=1, cycles=0, **bad).resolved()


def test_number_rule_never_takes_a_bool_and_parses_only_its_kind():
    positive = Number(int, 1, expected="a positive integer")
    assert positive.accepts(1) and not positive.accepts(True) and not positive.accepts(1.0)
    real = Number(float, 0, 1, open_low=True, expected="x")
    assert real.accepts(1) and real.accepts(0.5) and not real.accepts(0.0)
    assert not real.accepts(True) and not real.accepts(float("nan"))
    assert positive.parse("12") == 12
    for text in ("1.5", "1e3", "", "0", "True"):
        with pytest.raises(ValueError, match=f"expected a positive integer, got {text!r}"):
            positive.parse(text)


def test_options_survive_a_json_round_trip():
    # config.json holds asdict(options); TrainOptions(**that) must give them back
    import json

    opts = TrainOptions(train_folds=[1], tensorboard="tb", width=0.5).resolved()
    assert TrainOptions(**json.loads(json.dumps(asdict(opts)))) == opts


def test_the_command_line_parser_imports_neither_torch_nor_the_workflow():
    code = (
        "import sys; from segtutor import cli; "
        "cli.build_parser().parse_args(['tgs', 'train', '--out', 'r', '--lr', '0.1']); "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('segtutor.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split("\n")[0] == str(
        [
            "segtutor.cli",
            "segtutor.data",
            "segtutor.data.constants",
            "segtutor.tgs",
            "segtutor.tgs.options",
        ]
    )


def test_train_options_resolve_and_reject_bad_values(monkeypatch):
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    quick = tgs.TrainOptions().resolved()
    # quick: one fold trained long enough to find salt (24 epochs at 3e-3) rather than five
    # folds of 3 epochs, whose masks were all blanked; 16 epochs left the book's claims within
    # their seed-to-seed spread once the hypercolumn became cheap; measured in
    # benchmarks/RESULTS.md ("The TGS quick recipe at 24 epochs")
    assert (
        quick.folds,
        quick.train_folds,
        quick.stage1_epochs,
        quick.cycles,
        quick.cycle_epochs,
        quick.lr,
        quick.width,
    ) == (5, [0], 16, 2, 4, 3e-3, 0.125)
    assert TrainOptions().resolved().train_folds is not quick.train_folds  # not shared
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    full = tgs.TrainOptions().resolved()
    assert (
        full.folds,
        full.train_folds,
        full.stage1_epochs,
        full.cycles,
        full.cycle_epochs,
        full.lr,
        full.width,
    ) == (5, None, 30, 4, 20, 1e-3, 1.0)
    kwargs = full.model_kwargs()
    assert kwargs["encoder_width"] == 1.0 and kwargs["decoder_width"] == 64
    assert kwargs["attention"] and kwargs["hypercolumn"] and kwargs["classify"]
    for bad, message in [
        ({"folds": 1}, "folds"),
        ({"train_folds": [5]}, "train_folds"),
        ({"size_mode": "crop"}, "size_mode"),
        ({"lovasz": "x"}, "lovasz"),
        ({"stage1_epochs": 0, "cycles": 0}, "nothing to train"),
    ]:
        with pytest.raises(ValueError, match=message):
            tgs.TrainOptions(**bad).resolved()


def test_train_options_reject_non_finite_and_out_of_range_numbers():
    for bad, name in [
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"width": float("inf")}, "width"),
        ({"seed": -1}, "seed"),
        ({"visdom": 70000}, "visdom"),
        ({"batch_size": 0}, "batch_size"),
        ({"aux_weight": float("nan")}, "aux_weight"),
        ({"seed": True}, "seed"),
    ]:
        with pytest.raises(ValueError, match=f"^{name} must be"):
            tgs.TrainOptions(stage1_epochs=1, cycles=0, **bad).resolved()
    with pytest.raises(ValueError, match="seed must be"):
        tgs.synth("never-written", n=2, seed=-1)


def test_resolved_for_the_other_mode_fills_that_modes_defaults(monkeypatch):
    # a quick page names the full-mode recipe whose recorded results it shows
    monkeypatch.setenv("SEGTUTOR_QUICK", "0")
    full = TrainOptions(seed=3).resolved()
    monkeypatch.setenv("SEGTUTOR_QUICK", "1")
    assert TrainOptions(seed=3).resolved(quick=False) == full
    assert TrainOptions(seed=3).resolved(quick=True) == TrainOptions(seed=3).resolved()
    assert TrainOptions(stage1_epochs=7).resolved(quick=False).stage1_epochs == 7  # set stays
    with pytest.raises(TypeError, match="quick must be True, False or None"):
        TrainOptions().resolved(quick="full")
