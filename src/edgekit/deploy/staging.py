"""Temporary working folders of `edge pack` and `edge pi-check` (a bundle's tree, downloaded wheels, venvs).

Removed on Ctrl-C and on `kill` (SIGTERM) alike; one left by a run that could not clean up (SIGKILL, a power
cut) is cleared by the next run, as convert does with its staging directories (edgekit.atomic)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgekit.atomic import clear_dead_staging, make_staging
from edgekit.signals import interrupts_deferred, sigterm_as_interrupt


@contextlib.contextmanager
def temp_staging(prefix: str) -> Iterator[Path]:
    """A new folder in the temp dir (TMPDIR), marked with this process and removed when the block ends."""
    parent = Path(tempfile.gettempdir())
    clear_dead_staging(parent, prefix)
    staging = None
    with sigterm_as_interrupt():
        try:
            with interrupts_deferred():  # a signal between mkdtemp and the owner mark would leave an unmarked folder
                staging = make_staging(parent, prefix)
            yield staging
        finally:
            if staging is not None:
                with interrupts_deferred():  # a second Ctrl-C must not leave half a tree behind
                    shutil.rmtree(staging, ignore_errors=True)


def child_env(staging: Path) -> dict:
    """The environment for a child (pip) whose own temp files must go when the staging folder goes: a killed
    pip leaves its pip-* folders behind."""
    tmp = staging / "tmp"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}
