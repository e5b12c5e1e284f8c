"""One atomic file writer for the whole package.

A file written through :func:`atomic_write` is either the complete new content or whatever was
there before (the old file, or nothing): the data go to a temporary file in the target's folder,
which is flushed to disk (``fsync``) and then renamed over the target with ``os.replace``, atomic
on POSIX and Windows. A crash, a full disk or an exception half-way leaves no partial file and no
temporary file behind.

Rules that the plain ``tempfile.mkstemp`` + ``os.replace`` recipe gets wrong:

- Permissions: an existing file keeps its permission bits; a new file gets ``0o666`` minus the
  umask, like ``open(path, "w")`` (``mkstemp`` would make every file ``0o600``).
- Only regular files are replaced. A target that exists and is a folder, a device (``/dev/full``),
  a FIFO or a socket raises ``ValueError``: renaming over a device node as root would replace the
  device with a plain file.
- A symbolic link given as the target is replaced by the new file; the file it points to is left
  alone (writing through the link would not be atomic for the link's target folder).
- Error messages name the target, not the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "check_target"]

_MODES = ("wb", "w")


def check_target(path: str | os.PathLike) -> int | None:
    """Check that :func:`atomic_write` may write ``path``, before any work is done for it.

    Returns the permission bits to keep (an existing regular file), or None (a new file, or a
    symlink, which is replaced). Raises ValueError for a target that exists and is not a regular
    file, and FileNotFoundError when the folder to write into does not exist.
    """
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            return None
        if not stat.S_ISREG(info.st_mode):
            kind = (
                "a folder"
                if stat.S_ISDIR(info.st_mode)
                else "a device"
                if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
                else "a FIFO"
                if stat.S_ISFIFO(info.st_mode)
                else "a socket"
                if stat.S_ISSOCK(info.st_mode)
                else "not a regular file"
            )
            raise ValueError(f"cannot write {path}: it exists and is {kind}, not a regular file")
        return stat.S_IMODE(info.st_mode)
    if not path.parent.is_dir():
        raise FileNotFoundError(2, f"folder {path.parent} does not exist", str(path))
    return None


def _create_temp(path: Path) -> tuple[int, Path]:
    """Open a new temporary file beside ``path``; the kernel applies the umask to ``0o666``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(17, f"cannot write {path}: no free temporary name beside it", str(path))


def _fsync_folder(folder: Path) -> None:
    # the rename is durable only once the folder's entry is on disk; not every platform can
    # open a folder (Windows), so this is best effort
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _naming_target(err: OSError, path: Path) -> OSError:
    """The same kind of OSError (same errno and subclass), with the target's path as filename."""
    if err.errno is None:
        return type(err)(f"cannot write {path}: {err}")
    return OSError(err.errno, err.strerror or str(err), str(path))


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str = "utf-8",
    newline: str | None = "",
    fsync: bool = True,
) -> Iterator[IO[Any]]:
    """Context manager: a file handle whose content replaces ``path`` atomically on exit.

    Args:
        path: the file to write (its folder must exist). An existing regular file keeps its
            permission bits; a new one gets ``0o666 & ~umask``. A symlink is replaced by the new
            file (the file it points to is not touched).
        mode: ``"wb"`` (bytes) or ``"w"`` (text with ``encoding`` and ``newline``; the default
            ``newline=""`` writes ``"\\n"`` as is, which the csv module expects).
        fsync: flush the data to disk before the rename, so that a power cut cannot leave an
            empty file under the new name. About 3 ms a file on an ext4 disk; a writer of
            thousands of files that can be written again (a synthetic data set) may turn it off.

    Raises:
        ValueError: ``path`` exists and is not a regular file (a folder, a device, a FIFO), or
            ``mode`` is not one of the two above.
        OSError: the write, ``fsync`` or rename failed; the message names ``path``.

    If the body raises, the target is left as it was and the temporary file is removed.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    path = Path(path)
    keep_mode = check_target(path)
    try:
        fd, tmp = _create_temp(path)
    except OSError as err:
        raise _naming_target(err, path) from None
    try:
        try:
            if keep_mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fd, keep_mode)
            handle = (
                os.fdopen(fd, "wb")
                if mode == "wb"
                else os.fdopen(fd, "w", encoding=encoding, newline=newline)
            )
        except BaseException:
            os.close(fd)
            raise
        with handle:
            try:
                yield handle
            except OSError as err:
                # a write error (no space, quota) carries no file name; one about another
                # file (the body read something) keeps its own
                if err.filename is None and err.errno is not None:
                    raise _naming_target(err, path) from err
                raise
            try:
                handle.flush()
                if fsync:
                    os.fsync(handle.fileno())
            except OSError as err:
                raise _naming_target(err, path) from None
        if keep_mode is not None and not hasattr(os, "fchmod"):
            os.chmod(tmp, keep_mode)
        # the target may have become a folder or a device while we wrote: check again
        check_target(path)
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _naming_target(err, path) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` with :func:`atomic_write`; returns the path."""
    with atomic_write(path, "wb", fsync=fsync) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` with :func:`atomic_write` (newlines written as given)."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)
