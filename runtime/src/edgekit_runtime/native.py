"""Small helpers the runtime and every stage above it share, importing nothing heavy: one-line error text, and
native libraries' chatter on file descriptor 2 kept off the terminal."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from typing import Callable, Iterator, List


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first meaningful line of an exception's text (MLIR 'loc(…)' lines skipped), or its type's name."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.lstrip().startswith("loc(")]
    return (lines[0] if lines else type(exc).__name__)[:limit]


@contextlib.contextmanager
def quiet_native_stderr(replay: bool = False,
                        keep: Callable[[str], bool] = lambda line: not line.startswith("INFO: ")) -> Iterator[List[str]]:
    """Send what native code writes straight to fd 2 (engines' "INFO: Created TensorFlow Lite XNNPACK
    delegate", converters' calibration logs) into a buffer; the yielded list gets the text afterwards, for
    error messages. With `replay`, after a success the lines `keep` accepts (default: all but engines' INFO
    notices) are passed on.
    EDGE_DEBUG=1 leaves stderr alone."""
    captured: List[str] = []
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None or os.environ.get("EDGE_DEBUG"):
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    ok = False
    with warnings.catch_warnings(), tempfile.TemporaryFile() as sink:
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), fd)
        try:
            yield captured
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            captured.append(text)
            if ok and replay:
                for line in text.splitlines():
                    if line.strip() and keep(line):
                        print(line, file=sys.stderr)
