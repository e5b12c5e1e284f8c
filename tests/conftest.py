"""Shared test settings: small CPU work, deterministic seeds, chapters last."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

os.environ.setdefault("SEGTUTOR_QUICK", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def pytest_collection_modifyitems(config, items):
    """Run the unit tests first and the (slow) chapter execution last."""
    items.sort(key=lambda item: item.get_closest_marker("book") is not None)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests import test_book

    lines = test_book.SUMMARY
    if lines:
        terminalreporter.section("chapter execution times (quick mode), slowest first")
        for line in lines:
            terminalreporter.write_line(line)
