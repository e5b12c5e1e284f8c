"""Progress bars for people, not for the built book.

Every long loop in segtutor and in the chapters shows a ``tqdm.auto`` bar (a widget in Jupyter,
text in a terminal) through :func:`bar`. The book build sets ``SEGTUTOR_PROGRESS=0`` (and tqdm's
own ``TQDM_DISABLE=1``, see ``scripts/build_book.py``): a bar frozen into a static page is clutter,
often stale ("0% 0/1").
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["bar", "enabled"]


def enabled(show: bool = True) -> bool:
    """``show``, unless the environment turns bars off (``SEGTUTOR_PROGRESS=0``)."""
    return bool(show) and os.environ.get("SEGTUTOR_PROGRESS", "1").strip() not in {
        "0",
        "false",
        "no",
    }


def bar(iterable: Iterable[Any] | None = None, *, show: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm.auto`` bar over ``iterable`` (or a manual one), shown when :func:`enabled`."""
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled(show), **kwargs)
