"""Reading files a user or a copied export hands the runtime, without trusting them.

An export directory may have been edited by hand or tampered with: a manifest `file` may point outside
it, a FIFO among the images would block `open()` forever, a "labels.txt" may be a link to /dev/zero.
Every such file is looked at with stat() before it is opened (special files are never opened, so a FIFO
cannot hang and a tape device cannot rewind), opened with O_NONBLOCK and checked again on the open
descriptor (a file swapped for a FIFO in between is still caught), and read up to a cap.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional, Type

from .errors import InputError, RuntimeErrorBase

MiB = 1 << 20
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def kind_of(mode: int) -> str:
    """'a FIFO (named pipe)', 'a directory', ... for a stat mode that is not a regular file."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def regular_file(path: "str | os.PathLike", error: Type[RuntimeErrorBase], what: str = "file",
                 limit: Optional[int] = None) -> os.stat_result:
    """stat() of `path` (links followed), or `error` with one sentence when it is missing, special or too big."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}.") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise error(f"{path}: cannot read this {what} ({_reason(exc)}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: is {kind_of(st.st_mode)}, not a regular {what}.")
    if limit is not None and st.st_size > limit:
        raise error(f"{path}: {what} of {_mb(st.st_size)}, over the {_mb(limit)} this runtime reads.")
    return st


def read_capped(path: "str | os.PathLike", limit: int, error: Type[RuntimeErrorBase], what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is `error` with one sentence."""
    regular_file(path, error, what, limit)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"{path}: cannot open this {what} ({_reason(exc)}).") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for something else since the stat() above
            raise error(f"{path}: is {kind_of(st.st_mode)}, not a regular {what}.")
        chunks, size = [], 0
        while size <= limit:  # st_size may lie (/proc files) or the file may grow: count what is read
            chunk = os.read(fd, min(4 * MiB, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read this {what} ({_reason(exc)}).") from None
    finally:
        os.close(fd)
    if size > limit:
        raise error(f"{path}: {what} of over {_mb(limit)}, more than this runtime reads.")
    return b"".join(chunks)


def leaves_folder(name: str) -> Optional[str]:
    """How a relative file name read from a file would leave its folder on any OS: "absolute" (a root, a drive
    or a UNC share), "dotdot" (a '..' part), or None. The name alone is judged; links need `inside()`."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        return "absolute"
    return "dotdot" if ".." in posix.parts or ".." in windows.parts else None


def contained(directory: Path, name: object, error: Type[RuntimeErrorBase], source: str) -> Path:
    """`directory / name` for a relative file name read from a file (`source`, for the message), refused when it
    is not a string, is absolute, climbs with '..' or resolves (links followed) outside `directory`. The path
    returned keeps the name as written (for messages); it may not exist."""
    if not isinstance(name, str) or not name:
        raise error(f"{source}: a file name must be a non-empty string, not {_short(name)}.")
    if "\x00" in name:
        raise error(f"{source}: file name {_short(name)} holds a NUL byte.")
    leaves = leaves_folder(name)
    if leaves == "absolute":
        raise error(f"{source}: file {_short(name)} is an absolute path; only names inside {directory} are read.")
    if leaves == "dotdot":
        raise error(f"{source}: file {_short(name)} climbs out with '..'; only names inside {directory} are read.")
    path = directory / PurePosixPath(name)
    if not inside(directory, path):
        raise error(f"{source}: file {_short(name)} resolves to {_resolved(path)}, outside {directory} "
                    "(a link); only files inside it are read.")
    return path


def inside(directory: Path, path: Path) -> bool:
    """Whether `path`, links resolved, lies inside `directory` (links resolved too)."""
    try:
        base, target = Path(os.path.realpath(directory)), Path(os.path.realpath(path))
    except (OSError, ValueError):
        return False
    return target == base or base in target.parents


def sha256_of(path: Path, error: Type[RuntimeErrorBase], what: str = "model file") -> str:
    regular_file(path, error, what)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(MiB), b""):
                h.update(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read this {what} ({_reason(exc)}).") from None
    return h.hexdigest()


def current_rss() -> int:
    """This process's resident memory now, in bytes (Linux /proc; elsewhere the peak so far, a safe overestimate)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
        import sys
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError, ValueError):
        return 0


def budget_under(max_memory_mb: float, reserve: int = 16 * MiB, least: int = 32 * MiB) -> int:
    """Bytes left for decoding an image if this process is to stay under `max_memory_mb`: the limit less what
    it holds now and a `reserve` (batch buffers, allocator slack); InputError below `least`."""
    if isinstance(max_memory_mb, bool) or not isinstance(max_memory_mb, (int, float)) or not max_memory_mb > 0:
        raise InputError(f"the memory limit must be a positive number of MB, not {max_memory_mb!r}.")
    held = current_rss()
    budget = int(min(max_memory_mb, 1 << 40) * MiB) - held - reserve
    if budget < least:
        need = (held + reserve + least) // MiB + 1
        raise InputError(f"a memory limit of {max_memory_mb:g} MB is too small: this process already holds "
                         f"{held // MiB} MB with the model loaded; allow at least {need} MB.")
    return budget


def _resolved(path: Path) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return "?"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno) if exc.errno != errno.ENAMETOOLONG else "name too long"
    return str(exc).strip() or type(exc).__name__


def _mb(n: int) -> str:
    return f"{n / MiB:.0f} MB" if n >= MiB else f"{n} bytes"


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
