"""The run folder: snapshot files listed and ordered in one place."""

from __future__ import annotations

import pytest

from segtutor import tgs


def test_snapshots_come_in_cycle_order_and_other_files_are_ignored(tmp_path):
    for name in (
        "snapshot_10.pt",
        "snapshot_9.pt",
        "snapshot_1.pt",
        "snapshot_x.pt",
        "snapshot_\u0662.pt",
        "snapshot_3.pt.tmp",
        "history.json",
        "snapshot_.pt",
    ):
        (tmp_path / name).write_bytes(b"")
    # numbers, not text: a plain sorted() would put snapshot_10 before snapshot_9
    assert [p.name for p in tgs.snapshot_paths(tmp_path)] == [
        "snapshot_1.pt",
        "snapshot_9.pt",
        "snapshot_10.pt",
    ]
    assert [p.name for p in tgs.snapshot_paths(str(tmp_path))][-1] == "snapshot_10.pt"


def test_a_fold_without_snapshots_is_named(tmp_path):
    (tmp_path / "snapshot_a.pt").write_bytes(b"")
    with pytest.raises(tgs.TGSInputError, match=f"{tmp_path} has no snapshot_<number>.pt"):
        tgs.snapshot_paths(tmp_path)
