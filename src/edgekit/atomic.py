"""Atomic file writes: a reader (or a crash, or Ctrl-C) never sees half a file."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Call writer(tmp_path) then rename into place; tmp keeps the full name (Keras reads .weights.h5 from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        if tmp_path.is_file():  # mkstemp makes 0600 files; give the usual umask-based mode instead
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_with(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o: Any):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------- staging directories a killed process left
OWNER = ".owner.json"   # in a staging directory: which process made it, to tell a live one from a dead one


def _start_time(pid: int) -> "str | None":
    """The process's start time in clock ticks since boot (Linux), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def make_staging(parent: Path, prefix: str) -> Path:
    """A new staging directory under parent, marked with this process (host, pid, start time)."""
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (staging / OWNER).write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(),
                                             "start": _start_time(os.getpid())}))
    return staging


def clear_dead_staging(parent: Path, prefix: str) -> list:
    """Remove the staging directories under parent whose process provably died (same host, and that pid is
    gone or is another process now); a live one, another host's or an unmarked one is left alone."""
    removed = []
    for d in sorted(Path(parent).glob(prefix + "*")) if Path(parent).is_dir() else ():
        try:
            owner = json.loads((d / OWNER).read_text())
        except (OSError, ValueError):
            continue
        if owner.get("host") != os.uname().nodename or not isinstance(owner.get("pid"), int):
            continue
        start = _start_time(owner["pid"])
        if start is None or (owner.get("start") is not None and start != owner["start"]):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
