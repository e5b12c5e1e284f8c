"""visdom backend: live plots when a server answers, visdom's offline log file otherwise.

Every message also goes to a log file (visdom's own ``log_to_filename`` format, one JSON
``[endpoint, message]`` per line), so a run can always be replayed into a server later with
:func:`replay`. If the server goes away in the middle of a run the logger warns once and carries on
writing the log only: monitoring never stops training.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segtutor.monitor.base import Logger, to_image_batch
from segtutor.monitor.server import HOST, answers


def _win(tag: str) -> str:
    # window ids end up in the page's DOM ids: keep them to safe characters
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tag)


class VisdomLogger(Logger):
    """Line plots (one window per scalar tag), image grids, histograms and text in visdom.

    Args:
        env: visdom environment (a tab of the page) for this run.
        port: the server's port on 127.0.0.1 (see :func:`segtutor.monitor.start_visdom`).
        log_file: where the message log goes; default ``runs/visdom/<env>.jsonl``. Replay it with
            :func:`replay`.
        every: send a scalar window's new points every this many calls (fewer HTTP requests);
            :meth:`flush` sends what is pending.
        offline: True forces the offline log even if a server answers; None = probe the server.
    """

    def __init__(
        self,
        env: str = "segtutor",
        port: int = 8097,
        log_file: str | Path | None = None,
        every: int = 1,
        offline: bool | None = None,
        server: str = f"http://{HOST}",
    ) -> None:
        import logging

        import visdom

        # visdom warns through logging about every new session and the missing event socket
        # (which this logger does not use); keep notebooks and test logs quiet
        logging.getLogger("visdom").setLevel(logging.ERROR)
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.env, self.port, self.every, self.server = env, int(port), every, server
        self.log_file = (
            Path(log_file) if log_file is not None else Path("runs") / "visdom" / f"{env}.jsonl"
        )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if offline is None:
            # a refused connection answers at once; the long timeout only waits for a server
            # that is up but busy (on a loaded 2-core machine its first page took over 1 s)
            offline = not answers(f"{server}:{port}", timeout=5.0)
        self.live = not offline
        if self.live:
            try:
                with warnings.catch_warnings():
                    # visdom 0.2.4 calls the deprecated logger.warn itself
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.vis = visdom.Visdom(
                        server=server,
                        port=self.port,
                        env=env,
                        raise_exceptions=True,
                        use_incoming_socket=False,
                        log_to_filename=str(self.log_file),
                    )
            except (ConnectionError, OSError):  # it answered the probe, then went away
                self.live = False
        if not self.live:
            self.vis = visdom.Visdom(env=env, offline=True, log_to_filename=str(self.log_file))
        self._windows: set[str] = set()
        self._pending: dict[str, list[tuple[int, float]]] = {}

    @property
    def mode(self) -> str:
        """``"live"`` while the server takes the messages, ``"offline"`` otherwise."""
        return "live" if self.live else "offline"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.vis, method)(*args, **kwargs)
        except (ConnectionError, OSError) as err:
            # visdom wrote the message to the log before posting; keep logging, stop posting
            warnings.warn(
                f"visdom server at {self.server}:{self.port} is gone ({err}); "
                f"continuing offline, the run is still logged to {self.log_file} "
                "(replay it later with segtutor.monitor.replay)",
                RuntimeWarning,
                stacklevel=3,
            )
            self.vis.offline = True
            self.live = False
            return None

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        points = self._pending.setdefault(tag, [])
        points.append((int(step), float(value)))
        if len(points) >= self.every:
            self._send_points(tag)

    def _send_points(self, tag: str) -> None:
        points = self._pending.pop(tag, [])
        if not points:
            return
        win = _win(tag)
        x = np.array([p[0] for p in points], dtype=np.float64)
        y = np.array([p[1] for p in points], dtype=np.float64)
        if win in self._windows:
            self._call("line", Y=y, X=x, win=win, update="append")
        else:
            self._call(
                "line",
                Y=y,
                X=x,
                win=win,
                opts={
                    "title": tag,
                    "xlabel": "step" if tag.startswith("step/") else "epoch",
                    "ylabel": tag.split("/")[-1],
                    "showlegend": False,
                },
            )
            self._windows.add(win)

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        batch = to_image_batch(images).numpy()
        self._call(
            "images",
            batch,
            nrow=3,
            padding=2,
            win=_win(tag),
            opts={"title": f"{tag} (step {step})", "caption": "image | target | prediction"},
        )

    def log_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        v = torch.as_tensor(values).detach().flatten().float().cpu().numpy()
        if v.size < 2:
            return
        self._call(
            "histogram", X=v, win=_win(tag), opts={"title": f"{tag} (step {step})", "numbins": 30}
        )

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        self._call("text", f"<b>{tag}</b><br><pre>{text}</pre>", win=_win(tag))

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        rows = "".join(
            f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in {**hparams, **metrics}.items()
        )
        self._call("text", f"<table>{rows}</table>", win="hparams")

    def flush(self) -> None:
        for tag in list(self._pending):
            self._send_points(tag)

    def close(self) -> None:
        self.flush()


def replay(
    log_file: str | Path, port: int = 8097, server: str = f"http://{HOST}", env: str | None = None
) -> int:
    """Send every message of a visdom log file to a running server; returns how many were sent.

    ``env`` moves the whole log into another environment (default: the env it was logged in).
    Raises ConnectionError when no server answers.
    """
    import json

    import visdom

    log_file = Path(log_file)
    if not log_file.is_file():
        raise FileNotFoundError(f"visdom log {log_file} does not exist")
    if not answers(f"{server}:{port}", timeout=5.0):
        raise ConnectionError(
            f"no visdom server answers at {server}:{port}; start one with "
            "segtutor.monitor.start_visdom(port)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # visdom's own logger.warn call
        vis = visdom.Visdom(
            server=server, port=int(port), raise_exceptions=True, use_incoming_socket=False
        )
    sent = 0
    with open(log_file) as fh:
        for line in fh:
            if not line.strip():
                continue
            endpoint, msg = json.loads(line)
            if env is not None:
                msg["eid"] = env
            vis._send(msg, endpoint, from_log=True)  # visdom's own replay step, one message
            sent += 1
    return sent
