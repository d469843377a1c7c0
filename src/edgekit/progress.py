"""Progress bars for long work (rich), quiet when output is not a terminal."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Logs and CI are not terminals: give tables room instead of wrapping them at 80 columns.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


@contextlib.contextmanager
def progress_bar(description: str, total: Optional[int]) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n=1)` callable; draws a bar on a terminal, a line per 10 % in logs."""
    if not sys.stderr.isatty():
        yield _log_lines(description, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def _log_lines(description: str, total: Optional[int]) -> Callable[[int], None]:
    done, next_mark, start = [0], [0.1], time.perf_counter()

    def advance(n: int = 1) -> None:
        done[0] += n
        if total and done[0] / total >= next_mark[0] - 1e-9:
            print(f"{description}: {done[0] / total:4.0%} ({done[0]:,}/{total:,}) "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            next_mark[0] = (int(done[0] / total * 10) + 1) / 10
    return advance
