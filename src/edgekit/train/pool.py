"""Worker processes that run one function over many jobs, results back as they finish.

They are started as `python -c`, not through multiprocessing: its spawn re-runs the caller's main script in
every worker (a script without an `if __name__ == "__main__":` guard would start over in each), and its fork
copies whatever locks TensorFlow's threads hold at that moment. Jobs and results are pickles on the
workers' stdin and stdout, so the function and everything it takes and returns must pickle.
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import queue
import selectors
import struct
import subprocess
import sys
import threading
from typing import Callable, Iterable, Iterator, List, Optional

PATH_ENV = "EDGE_POOL_SYS_PATH"
# the parent's sys.path, so that a worker imports the same edgekit however the parent found it
_BOOT = (f"import json, os, sys; sys.path[:] = json.loads(os.environ.pop({PATH_ENV!r})); "
         "from edgekit.train.pool import serve; serve(sys.argv[1])")


class WorkerStopped(Exception):
    """A worker process ended without answering (killed, out of memory, crashed)."""


def results(function: str, jobs: Iterable, workers: int, advance: Optional[Callable[[int], None]] = None) -> Iterator:
    """`module:function`(job) for every job, run by `workers` processes; each result as it comes (not in job
    order). Jobs are taken from `jobs` only as workers are ready for them (two each), so a generator of jobs
    never has many in memory. An exception in a worker is raised here. `advance(len(result))` is called for
    each result."""
    procs: List[subprocess.Popen] = []
    env = {**os.environ, PATH_ENV: json.dumps(sys.path)}
    try:
        for _ in range(workers):
            procs.append(subprocess.Popen([sys.executable, "-c", _BOOT, function], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, bufsize=0, env=env))
        todo, busy = iter(jobs), {p.pid: 0 for p in procs}
        sel = selectors.DefaultSelector()

        def feed(p) -> None:
            job = next(todo, None)
            if job is not None:
                _send(p.stdin.fileno(), job)
                busy[p.pid] += 1

        # two jobs per worker: one running, one waiting, so it never idles while its result travels back
        for p in procs:
            sel.register(p.stdout, selectors.EVENT_READ, p)
            feed(p)
            feed(p)
        while any(busy.values()):
            for key, _ in sel.select():
                p = key.data
                reply = _receive(p.stdout.fileno())
                if reply is None:
                    raise WorkerStopped(f"a worker process stopped (exit status {p.wait()})")
                ok, payload = reply
                if not ok:
                    raise payload
                busy[p.pid] -= 1
                feed(p)
                if advance:
                    advance(len(payload))
                yield payload
    finally:
        for p in procs:
            p.stdin.close()  # a worker's signal to finish
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()


def serve(function: str) -> None:
    """A worker: jobs from stdin, results to stdout, until stdin closes."""
    module, name = function.split(":")
    run = getattr(importlib.import_module(module), name)
    out = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the results
    jobs: "queue.Queue" = queue.Queue()

    def pull() -> None:
        # stdin is always drained, so the parent never waits to hand over a job while this worker waits for the
        # parent to take a result: the two pipes cannot both be full at once
        while True:
            job = _receive(0)
            jobs.put(job)
            if job is None:
                return

    threading.Thread(target=pull, daemon=True).start()
    try:
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                reply = (True, run(job))
            except Exception as exc:  # raised in the parent, as running there would
                reply = (False, exc)
                try:
                    pickle.dumps(exc)
                except Exception:
                    reply = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
            _send(out, reply)
    except (KeyboardInterrupt, BrokenPipeError):
        pass  # the parent stopped, and says why


def _send(fd: int, obj) -> None:
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("<Q", len(blob)) + blob)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int):
    """The next message, or None at the end of the stream."""
    head = _read_exact(fd, 8)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack("<Q", head)[0])
    return None if body is None else pickle.loads(body)


def _read_exact(fd: int, n: int) -> Optional[bytes]:
    parts, got = [], 0
    while got < n:
        part = os.read(fd, min(n - got, 1 << 20))
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)
