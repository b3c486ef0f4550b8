"""Progress bars for the long offline commands (evaluation, training, calibration).

On a terminal: prompt_toolkit's ProgressBar, the one the setup wizard's model pulls use,
so every long task of the project looks alike. Anywhere else (a pipe, a CI log) the
iterables pass through untouched and the commands' own log lines say how far they are.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
Counter = Callable[..., Iterable[Any]]


def _plain(items: Iterable[T], label: str = "", total: int | None = None) -> Iterable[T]:
    return items


@contextlib.contextmanager
def progress(title: str, enabled: bool | None = None) -> Iterator[Counter]:
    """`with progress("Training") as bar: for x in bar(items, label=..., total=...)`.

    `enabled` defaults to whether standard error is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _plain
        return
    from prompt_toolkit.output import create_output
    from prompt_toolkit.patch_stdout import patch_stdout
    from prompt_toolkit.shortcuts import ProgressBar

    output = create_output(stdout=sys.stderr)
    # Log lines printed meanwhile go above the bar instead of through it.
    with patch_stdout(), ProgressBar(title=title, output=output) as bar:

        def count(items: Iterable[T], label: str = "", total: int | None = None) -> Iterable[T]:
            return bar(items, label=label, total=total)

        yield count
