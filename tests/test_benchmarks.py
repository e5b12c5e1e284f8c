"""Every benchmark script runs end to end with ``--quick``: all of its branches, the GPU-only ones
included (on the CPU), at tiny sizes, printing its table. A benchmark is otherwise only run by
hand, so a branch that needs a GPU went unexecuted until one appeared (bench_models.py crashed
in its bf16 pass on the first GPU that ran it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
MODELS = ("fcn8s", "unet", "segnet", "unetpp", "resunet34", "deeplabv3", "deeplabv3plus", "pspnet")

# what each script's table must show; a regular expression per line of output
EXPECTED: dict[str, list[str]] = {
    "bench_models.py": [
        r"^== fp32$",
        r"^== bf16 autocast \+ channels_last$",
        # one row per model in each of the two passes (resunet34 twice per pass)
        *[rf"^{name}\b.* img/s" for name in MODELS],
    ],
    "bench_train.py": [
        r"^  hand-written loop +\d+\.\d ms$",
        r"^  Trainer\.fit +\d+\.\d ms$",
        r"^  overhead [+-]\d+\.\d %",
        r"^  overhead in CPU time [+-]\d+\.\d %",
        r"^  minor page faults per epoch: hand-written loop \d+, Trainer\.fit \d+$",
        r"^loop bookkeeping, .* us/step",
        r"^  fp32 DataLoader +\d+\.\d images/s +1\.00x$",
        r"^  AMP \+ channels_last +\d+\.\d images/s",
        r"^  AMP \+ channels_last \+ GPU-resident +\d+\.\d images/s",
        r"^  AMP \+ channels_last \+ GPU-resident \+ compile +\d+\.\d images/s",
    ],
    "bench_crf.py": [
        r"^\| what \| median \| min \|",
        r"^\| segtutor fast, \d+ threads? \| \d+ ms",
        r"^\| segtutor fast, 1 thread \| \d+ ms",
        r"^\| segtutor fast, CPU tensors \(--quick\) \| \d+ ms",
    ],
    "bench_losses.py": [
        r"^lovasz_hinge per-image fwd\+bwd, B=",
        r"^  speed-up +\d+\.\dx",
        r"^tgs_map on \d+ masks",
        r"^  per-image loop, numpy .* speed-up",
        r"^  reading both masks once",
    ],
    "bench_tgs.py": [
        r"^== seed 0$",
        r"^== seed 1$",
        r"^baseline U-Net \+ BCE +test TGS mAP \d\.\d{4} +fresh TGS mAP \d\.\d{4}",
        r"^complete pipeline +test TGS mAP \d\.\d{4} +fresh TGS mAP \d\.\d{4}",
        r"^pipeline - baseline: test [+-]\d\.\d{4}, fresh [+-]\d\.\d{4} TGS mAP$",
        r"^== pipeline - baseline over 2 seeds$",
        r"^test +mean [+-]\d\.\d{4} +SD \d\.\d{4} +pipeline ahead in [012] of 2$",
        r"^fresh +mean [+-]\d\.\d{4} +SD \d\.\d{4} +pipeline ahead in [012] of 2$",
    ],
    "calibrate_tgs.py": [
        r"^baseline 'no salt anywhere': mAP \d\.\d{3}$",
        r"^step 2: train BCE \d\.\d{4}, val mAP \d\.\d{3}",
        r"^RESULT difficulty=0\.5 final mAP",
    ],
}


def test_every_benchmark_script_is_covered():
    # a new bench_*.py needs its line here (calibrate_chapters.py executes whole chapters: not here)
    scripts = {p.name for p in BENCH.glob("bench_*.py")} | {"calibrate_tgs.py"}
    assert scripts == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_quick_mode_runs_every_branch_and_prints_the_table(script, tmp_path):
    # one thread: these are smoke tests on a shared CI machine, not measurements
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{script} --quick failed:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    missing = [
        pattern
        for pattern in EXPECTED[script]
        if not any(re.search(pattern, line) for line in lines)
    ]
    assert not missing, f"{script} --quick did not print {missing}:\n{proc.stdout}"
    if script == "bench_models.py":
        rows = [line for line in lines if re.match(r"^[a-z0-9]+\b.* img/s", line)]
        assert len(rows) == 2 * 9, "9 rows (the PAIRS) in each of the two passes"
    # no work folder left behind (bench_tgs writes a data set and two runs into one)
    assert not list(tmp_path.glob("segtutor-*"))


@pytest.mark.parametrize("bad", ["a", "0,0", "-1", ""])
def test_bench_tgs_rejects_bad_seeds_before_any_work(bad):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_tgs.py"), "--seeds", bad],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--seeds: expected distinct seeds >= 0" in proc.stderr
