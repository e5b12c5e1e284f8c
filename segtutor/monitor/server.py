"""Start a local visdom server in the background and wait until it answers.

``python -m visdom.server -port N -bind_local -env_path DIR``: ``-bind_local`` makes it listen on
127.0.0.1 only (without it, visdom listens on every interface), ``-env_path`` keeps its saved
environments in a folder of this run instead of ``~/.visdom``.

The server ends with the process that started it: ``terminate()``, the end of a ``with`` block,
or the interpreter's exit stop it; and if that process dies without a chance to clean up
(SIGKILL, a crashed kernel), a watcher thread inside the server notices within about half a
second, removes the server's temporary folder and exits. A server left over from older code can
be found with ``pgrep -af visdom.server`` and stopped with ``kill PID``.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"

# Run in the child as `python -c _WATCHED PARENT_PID CLEANUP_DIR MODULE ARGS...`: a daemon thread
# polls the parent's pid (it changes when the parent dies, whatever the signal, on every POSIX
# system; prctl(PR_SET_PDEATHSIG) would be Linux only and tied to the thread that forked), then
# runs MODULE as `python -m MODULE ARGS...` would.
_WATCHED = """\
import os, runpy, shutil, sys, threading, time

parent, cleanup, module = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    if cleanup:
        shutil.rmtree(cleanup, ignore_errors=True)
    os._exit(0)


threading.Thread(target=watch, name="parent-watch", daemon=True).start()
sys.argv = [module, *sys.argv[4:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def watched_command(module: str, args: list[str], cleanup: str | Path | None = None) -> list[str]:
    """The command line that runs ``python -m module args...`` and ends when this process dies.

    Start it with :class:`subprocess.Popen` from this process (the watch compares the child's
    parent pid with this process's). ``cleanup``: a folder the child removes when it notices.
    """
    return [sys.executable, "-c", _WATCHED, str(os.getpid()), str(cleanup or ""), module, *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when an HTTP GET of ``url`` returns status 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class VisdomServer:
    """Handle on a running ``visdom.server`` process: ``url``, ``port``, ``terminate()``.

    Also a context manager: ``with start_visdom(0) as server: ...`` stops it at the end.
    """

    def __init__(
        self,
        process: subprocess.Popen,
        port: int,
        env_path: Path,
        log_path: Path,
        own_dir: tempfile.TemporaryDirectory | None,
    ) -> None:
        self.process = process
        self.port = port
        self.env_path = env_path
        self.log_path = log_path
        self._own_dir = own_dir

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s).

        Then remove its temp folder.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None
        atexit.unregister(self.terminate)

    def log(self) -> str:
        """What the server printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> VisdomServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited ({self.process.returncode})"
        return f"VisdomServer({self.url}, {state})"


def start_visdom(
    port: int = 8097,
    env_path: str | Path | None = None,
    timeout: float = 60.0,
    check_assets: bool = True,
) -> VisdomServer:
    """Start ``python -m visdom.server`` on 127.0.0.1:``port`` and wait until its page answers.

    Args:
        port: TCP port; ``0`` picks a free one (see ``handle.port``).
        env_path: where visdom keeps saved environments; default a temporary folder removed by
            ``terminate()``.
        timeout: seconds to wait for the first answer.
        check_assets: refuse early, with the fix, when visdom's web assets are missing (offline the
            server would try CDNs and exit with status 1).

    Raises RuntimeError when the assets are missing, the port is taken, or the server exits or
    does not answer in time (the server's own output is quoted).
    """
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    if check_assets:
        from segtutor.monitor.assets import missing

        gone = missing()
        if gone:
            raise RuntimeError(
                f"visdom's web assets are missing ({len(gone)} files, e.g. {gone[0]}); run "
                "`make visdom-assets` (python -m segtutor.monitor.assets) once"
            )
    if port == 0:
        port = free_port()
    elif answers(f"http://{HOST}:{port}") or _port_taken(port):
        raise RuntimeError(f"port {port} on {HOST} is already in use; pick another port or 0")
    own = None
    if env_path is None:
        own = tempfile.TemporaryDirectory(prefix="segtutor-visdom-")
        env_path = Path(own.name) / "env"
    env_path = Path(env_path)
    env_path.mkdir(parents=True, exist_ok=True)
    log_path = env_path.parent / f"visdom-server-{port}.log"
    cmd = watched_command(
        "visdom.server",
        [
            "-port",
            str(port),
            "-bind_local",
            "-env_path",
            str(env_path),
            "-logging_level",
            "WARNING",
        ],
        cleanup=own.name if own is not None else None,
    )
    with open(log_path, "wb") as log:
        # its own session: a Ctrl-C in the notebook does not reach it; terminate() ends it
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    handle = VisdomServer(proc, port, env_path, log_path, own)
    # the server runs in its own session: stopped at a normal exit here, and by its own watch
    # of this process when this process is killed
    atexit.register(handle.terminate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = handle.log()[-2000:]
            handle.terminate()
            raise RuntimeError(f"visdom.server exited with status {proc.returncode}:\n{out}")
        if answers(handle.url, timeout=1.0):
            return handle
        time.sleep(0.2)
    out = handle.log()[-2000:]
    handle.terminate()
    raise RuntimeError(f"visdom.server did not answer on {HOST}:{port} within {timeout} s:\n{out}")


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False
