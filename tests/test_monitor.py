"""Monitoring: TensorBoard event files read back, a real local visdom server, its offline log and
replay, -bind_local, and a headless browser that checks both pages really draw."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from segtutor.monitor import (
    ConsoleLogger,
    Logger,
    MultiLogger,
    TensorBoardLogger,
    VisdomLogger,
    assets,
    read_scalars,
    replay,
    start_visdom,
)
from segtutor.monitor import server as server_mod
from segtutor.monitor.tensorboard import read_images
from tests.browser import chromium, needs_browser

ASSETS_MISSING = assets.missing()
needs_assets = pytest.mark.skipif(
    bool(ASSETS_MISSING),
    reason=f"visdom's web assets are not installed ({len(ASSETS_MISSING)} missing): "
    "run `make visdom-assets`",
)


# ---------------------------------------------------------------------------- interface
class Recorder(Logger):
    def __init__(self):
        self.calls = []

    def log_scalar(self, tag, value, step):
        self.calls.append((tag, value, step))


class Broken(Logger):
    def log_scalar(self, tag, value, step):
        raise OSError("disk gone")


def test_multilogger_fans_out_and_drops_a_broken_backend(capsys):
    rec = Recorder()
    multi = MultiLogger([rec, Broken(), ConsoleLogger()])
    with pytest.warns(RuntimeWarning, match="Broken.log_scalar failed"):
        multi.log_scalar("loss", 0.5, 1)
    multi.log_scalars({"a": 1.0, "b": float("nan"), "c": "text"}, step=2, prefix="x/")
    assert rec.calls == [("loss", 0.5, 1), ("x/a", 1.0, 2)]  # NaN and non-numbers skipped
    assert len(multi.loggers) == 2
    assert "step      1  loss 0.5" in capsys.readouterr().out
    with pytest.raises(TypeError, match="Logger"):
        MultiLogger([object()])


# ---------------------------------------------------------------------------- TensorBoard
def test_tensorboard_scalars_and_images_read_back(tmp_path):
    logger = TensorBoardLogger(tmp_path / "run")
    values = [1.0, 0.5, 0.25, 0.125]
    for step, v in enumerate(values):
        logger.log_scalar("loss/train", v, step)
    img = torch.rand(2, 3, 8, 8)
    logger.log_images("grid", img, step=7)
    logger.log_histogram("w", torch.randn(100), 0)
    logger.log_pr_curve("pr", torch.tensor([0, 1, 1, 0]), torch.tensor([0.1, 0.9, 0.6, 0.4]), 0)
    logger.log_text("note", "hello", 0)
    logger.close()
    scalars = read_scalars(tmp_path / "run")
    assert scalars["loss/train"].steps == [0, 1, 2, 3]
    assert scalars["loss/train"].values == pytest.approx(values)
    images = read_images(tmp_path / "run")
    step, arr = images["grid"][0]
    assert step == 7 and arr.shape == (12, 22, 3)  # two 8x8 images in make_grid's 2-pixel frame
    for i, col in enumerate((2, 12)):
        expected = img[i].permute(1, 2, 0).numpy() * 255
        assert np.abs(arr[2:10, col : col + 8].astype(float) - expected).max() <= 1.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        read_scalars(tmp_path / "empty")


def test_trainer_writes_its_history_to_tensorboard(tmp_path):
    from segtutor.train import Trainer

    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = (x[:, 0] > 0.5).float()
    dl = DataLoader(TensorDataset(x, y), batch_size=4)
    model = nn.Conv2d(1, 1, 1)
    logger = TensorBoardLogger(tmp_path / "tr")
    tr = Trainer(
        model,
        nn.BCEWithLogitsLoss(),
        torch.optim.SGD(model.parameters(), lr=0.5),
        dl,
        dl,
        num_classes=1,
        device="cpu",
        logger=logger,
        log_every=2,
        progress=False,
        verbose=False,
        log_histograms=True,
    )
    hist = tr.fit(3)
    logger.close()
    sc = read_scalars(tmp_path / "tr")
    assert sc["epoch/val_loss"].steps == [1, 2, 3]
    assert sc["epoch/val_loss"].values == pytest.approx([r["val_loss"] for r in hist], rel=1e-6)
    assert sc["epoch/val_tgs_map"].values == pytest.approx(
        [r["val_tgs_map"] for r in hist], rel=1e-6
    )
    assert sc["step/train_loss"].steps == [2, 4, 6, 8, 10, 12]
    grid = read_images(tmp_path / "tr")["val/image_target_prediction"]
    assert [s for s, _ in grid] == [1, 2, 3]


# ---------------------------------------------------------------------------- visdom
@pytest.fixture(scope="module")
def visdom_server():
    if ASSETS_MISSING:
        pytest.skip("visdom's web assets are not installed: run `make visdom-assets`")
    handle = start_visdom(0)
    yield handle
    handle.terminate()
    assert not handle.alive()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port``, from /proc/net/tcp{,6} (Linux)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            addr, p = fields[1].split(":")
            if int(p, 16) == port and fields[3] == "0A":
                found.add(addr)
    return found


def test_visdom_server_binds_loopback_only(visdom_server):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp to read listening sockets")
    addrs = _listening_addresses(visdom_server.port)
    assert addrs == {"0100007F"}, f"expected only 127.0.0.1 (0100007F), got {addrs}"


def test_visdom_live_line_plot_and_image(visdom_server):
    env = "test_live"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a live server: no "server gone" warning
        lg = VisdomLogger(
            env=env,
            port=visdom_server.port,
            every=2,
            log_file=Path(tempfile.mkdtemp()) / "live.jsonl",
        )
    assert lg.mode == "live"
    for step in range(5):
        lg.log_scalar("epoch/val_loss", 1.0 / (step + 1), step)
    img = torch.zeros(3, 3, 8, 8)
    img[:, 0] = 1.0  # red squares
    lg.log_images("val/grid", img, step=4)
    lg.close()
    windows = json.loads(lg.vis.get_window_data(env=env))
    assert {"epoch_val_loss", "val_grid"} <= set(windows)
    line = json.loads(lg.vis.get_window_data("epoch_val_loss", env=env))
    trace = line["content"]["data"][0]
    assert trace["x"] == [0, 1, 2, 3, 4]
    assert trace["y"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert line["title"] == "epoch/val_loss"
    image = json.loads(lg.vis.get_window_data("val_grid", env=env))
    assert image["type"] == "image" and image["content"]["src"].startswith("data:image/")


def test_visdom_offline_log_then_replay(visdom_server, tmp_path):
    log = tmp_path / "offline.jsonl"
    dead = server_mod.free_port()
    lg = VisdomLogger(env="test_offline", port=dead, log_file=log)  # nothing listens there
    assert lg.mode == "offline"
    for step in range(3):
        lg.log_scalar("loss", 0.1 * step, step)
    lg.log_images("grid", torch.rand(3, 3, 4, 4), 0)
    lg.close()
    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert len(lines) == 4 and {ep for ep, _ in lines} <= {"events", "update"}
    sent = replay(log, port=visdom_server.port)
    assert sent == 4
    probe = VisdomLogger(env="test_offline", port=visdom_server.port, log_file=tmp_path / "p.jsonl")
    windows = json.loads(probe.vis.get_window_data(env="test_offline"))
    assert {"loss", "grid"} <= set(windows)
    assert windows["loss"]["content"]["data"][0]["y"] == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(ConnectionError, match="no visdom server"):
        replay(log, port=dead)


def test_visdom_server_gone_mid_run_is_a_warning_not_a_crash(visdom_server, tmp_path):
    from segtutor.train import Trainer

    log = tmp_path / "gone.jsonl"
    lg = VisdomLogger(env="test_gone", port=visdom_server.port, log_file=log)
    assert lg.mode == "live"
    lg.log_scalar("loss", 1.0, 0)
    # the server goes away: from the client's side, its port now refuses connections
    lg.vis.port = lg.port = server_mod.free_port()
    x = torch.rand(8, 1, 4, 4)
    dl = DataLoader(TensorDataset(x, (x[:, 0] > 0.5).float()), batch_size=4)
    model = nn.Conv2d(1, 1, 1)
    tr = Trainer(
        model,
        nn.BCEWithLogitsLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        dl,
        dl,
        num_classes=1,
        device="cpu",
        logger=lg,
        progress=False,
        verbose=False,
    )
    with pytest.warns(RuntimeWarning, match="is gone"):
        hist = tr.fit(2)
    assert len(hist) == 2 and lg.mode == "offline"
    logged = [json.loads(s)[1] for s in log.read_text().splitlines()]
    assert sum(1 for m in logged if m.get("win") == "epoch_val_loss") == 2  # both epochs kept


def test_start_visdom_rejects_bad_port_and_taken_port(visdom_server):
    with pytest.raises(ValueError, match="port"):
        start_visdom(-1)
    with pytest.raises(RuntimeError, match="already in use"):
        start_visdom(visdom_server.port)


# ---------------------------------------------------------------------------- assets
def test_assets_missing_lists_everything_for_an_empty_folder(tmp_path):
    gone = assets.missing(tmp_path)
    assert "version.built" in gone and "js/jquery.min.js" in gone
    assert "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular" in gone
    assert "js/mathjax/2.7.5/jax/output/SVG/fonts/TeX/Size1/Regular/Main.js" in gone


@needs_assets
def test_visdom_build_step_finds_everything_and_downloads_nothing(monkeypatch):
    """visdom's own download step, run against the installed assets, must not touch the network."""
    from urllib import request

    import requests
    from visdom.server import build

    def no_network(*args, **kwargs):
        raise AssertionError(f"visdom tried to download {args[:1]}")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(request.OpenerDirector, "open", no_network)
    pkg = assets.static_dir().parent
    build.download_scripts(install_dir=str(pkg))
    assert (pkg / "static" / "version.built").read_text().strip() == assets.visdom_version()


# ---------------------------------------------------------------------------- headless browser
@needs_browser
def test_browser_sees_the_visdom_plot_drawn(visdom_server, tmp_path):
    lg = VisdomLogger(env="test_browser", port=visdom_server.port, log_file=tmp_path / "b.jsonl")
    for step in range(4):
        lg.log_scalar("epoch/browser_loss", 1.0 / (step + 1), step)
    lg.close()
    proc = chromium(
        f"{visdom_server.url}/env/test_browser",
        tmp_path / "profile",
        ["--dump-dom"],
        ["epoch/browser_loss", "main-svg"],
    )
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch/browser_loss" in dom, "the window title is not in the rendered page"
    assert "main-svg" in dom, "plotly did not draw the line plot (no main-svg element)"


@pytest.mark.slow
@needs_browser
def test_browser_sees_tensorboard_serving_the_run(tmp_path):
    logger = TensorBoardLogger(tmp_path / "runs" / "demo")
    for step in range(5):
        logger.log_scalar("loss/browser_check", 1.0 / (step + 1), step)
    logger.close()
    port = server_mod.free_port()
    tb = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path / "runs"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not server_mod.answers(f"http://127.0.0.1:{port}/data/runs"):
            assert tb.poll() is None, "tensorboard exited"
            assert time.monotonic() < deadline, "tensorboard did not answer in 90 s"
            time.sleep(0.5)
        proc = chromium(
            f"http://127.0.0.1:{port}/#timeseries",
            tmp_path / "profile",
            ["--dump-dom", "--window-size=1280,900"],
            ["loss/browser_check"],
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "loss/browser_check" in proc.stdout, (
            "TensorBoard's page does not show the logged tag"
        )
    finally:
        tb.terminate()
        tb.wait(timeout=30)


# ---------------------------------------------------------------------------- parent death
def _ended(pid: int) -> bool:
    """True when ``pid`` has exited (gone, or a zombie that nobody has reaped yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return fields[0] in ("Z", "X")


def _kill_parent_and_wait(parent_code: str, tmp_path: Path) -> tuple[dict, bool]:
    """Run ``parent_code`` in a process that prints one JSON line about the child it started,
    SIGKILL that process, and report whether the child ended within 10 s."""
    import os
    import signal

    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = parent.stdout.readline()
        assert line, parent.stderr.read()[-2000:]
        info = json.loads(line)
        assert not _ended(info["pid"])
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the child can act
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not _ended(info["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        ended = _ended(info["pid"])
        if not ended:  # do not leave it running after a failure
            os.kill(info["pid"], signal.SIGKILL)
        return info, ended
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        parent.stdout.close()
        parent.stderr.close()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_watched_child_ends_and_cleans_up_when_its_parent_is_killed(tmp_path):
    # the watch itself, on a stand-in for the server (the standard library's HTTP server)
    code = f"""
import json, subprocess, tempfile, time
from segtutor.monitor import server
folder = tempfile.mkdtemp(dir={str(tmp_path)!r})
cmd = server.watched_command("http.server", ["0", "--bind", "127.0.0.1"], cleanup=folder)
proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True)
time.sleep(1.0)
print(json.dumps({{"pid": proc.pid, "folder": folder}}), flush=True)
time.sleep(120)
"""
    info, ended = _kill_parent_and_wait(code, tmp_path)
    assert ended, "the child outlived its SIGKILLed parent"
    assert not Path(info["folder"]).exists(), "the child's temporary folder was left behind"


@pytest.mark.slow
@needs_assets
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_visdom_server_ends_when_the_process_that_started_it_is_killed(tmp_path):
    code = """
import json, time
from segtutor.monitor import start_visdom
handle = start_visdom(0)
print(json.dumps({"pid": handle.process.pid, "port": handle.port,
                  "folder": str(handle.env_path.parent)}), flush=True)
time.sleep(120)
"""
    info, ended = _kill_parent_and_wait(code, tmp_path)
    assert ended, "visdom.server kept running after the process that started it was SIGKILLed"
    assert not Path(info["folder"]).exists(), "the server's temporary folder was left behind"
    assert not server_mod.answers(f"http://127.0.0.1:{info['port']}")
