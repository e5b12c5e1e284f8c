"""The package's one atomic writer: all or nothing, permissions like open(), regular files only,
symlinks replaced, errors that name the target."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from segtutor import fileio


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_round_trip_bytes_text_and_handle(tmp_path):
    fileio.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
    fileio.atomic_write_text(tmp_path / "t.txt", "a,b\nc\n")
    assert (tmp_path / "t.txt").read_bytes() == b"a,b\nc\n"  # newlines written as given
    with fileio.atomic_write(tmp_path / "h.txt", "w") as handle:
        handle.write("é\n")
    assert (tmp_path / "h.txt").read_text(encoding="utf-8") == "é\n"
    assert _leftovers(tmp_path) == []


def test_new_file_mode_follows_the_umask_like_open(tmp_path):
    old = os.umask(0o027)
    try:
        with open(tmp_path / "reference", "w"):  # what the OS gives a plain open()
            pass
        fileio.atomic_write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new.txt") == _mode(tmp_path / "reference") == 0o640


def test_existing_file_keeps_its_permission_bits(tmp_path):
    path = tmp_path / "kept.txt"
    path.write_text("old")
    for bits in (0o644, 0o604, 0o755):
        os.chmod(path, bits)
        fileio.atomic_write_text(path, "new")
        assert _mode(path) == bits and path.read_text() == "new"


def _special_targets(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    targets = [folder, fifo]
    if Path("/dev/full").exists():
        targets.append(Path("/dev/full"))
    return targets


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_a_target_that_is_not_a_regular_file_is_refused(tmp_path):
    for target in _special_targets(tmp_path):
        before = os.lstat(target)
        with pytest.raises(ValueError, match=f"cannot write {target}: .*not a regular file"):
            fileio.atomic_write_bytes(target, b"x")
        after = os.lstat(target)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_symlink_target_is_replaced_and_what_it_points_to_left_alone(tmp_path):
    pointee = tmp_path / "pointee.txt"
    pointee.write_text("untouched")
    link = tmp_path / "link.txt"
    link.symlink_to(pointee)
    fileio.atomic_write_text(link, "new")
    assert not link.is_symlink() and link.read_text() == "new"
    assert pointee.read_text() == "untouched"


def test_missing_folder_names_the_target(tmp_path):
    target = tmp_path / "nope" / "x.csv"
    with pytest.raises(FileNotFoundError) as info:
        fileio.atomic_write_text(target, "x")
    assert info.value.filename == str(target) and "does not exist" in str(info.value)


def test_an_exception_in_the_body_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(KeyError), fileio.atomic_write(path, "w") as handle:
        handle.write("half")
        raise KeyError("boom")
    assert path.read_text() == "old" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["fsync", "replace", "write"])
def test_os_errors_name_the_target_not_the_temporary_file(tmp_path, monkeypatch, where):
    path = tmp_path / "out.csv"
    path.write_text("old")

    def no_space(*args, **kwargs):
        raise OSError(
            28, "No space left on device", *[str(a) for a in args[:1] if isinstance(a, (str, Path))]
        )

    with pytest.raises(OSError) as info:
        if where == "write":
            with fileio.atomic_write(path, "wb"):
                no_space()
        else:
            monkeypatch.setattr(fileio.os, where, no_space)
            fileio.atomic_write_text(path, "new")
    monkeypatch.undo()
    assert info.value.errno == 28
    assert info.value.filename == str(path)
    assert ".tmp" not in str(info.value)
    assert path.read_text() == "old" and _leftovers(tmp_path) == []


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"), fileio.atomic_write(tmp_path / "x", "a"):
        pass
