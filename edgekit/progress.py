"""Progress bars for long work (rich), quiet when output is not a terminal."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Logs and CI are not terminals: give tables room instead of wrapping them at 80 columns.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


@contextlib.contextmanager
def progress_bar(description: str, total: Optional[int]) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n=1)` callable; draws a bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda n=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
