"""The exit codes of every command, edge and edge-run alike, in one enum (README "Exit codes" lists the same);
here, in the runtime, because the runtime may import nothing of edgekit while edgekit imports the runtime."""
from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    INTERNAL = 1            # a bug: one line, EDGE_DEBUG=1 shows the traceback
    BAD_INPUT = 2           # bad input or an impossible request (EdgeError)
    OUTSIDE_TOLERANCE = 3   # an artifact exported but disagrees with its source beyond tolerance, or failed
    REGRESSION = 4          # bench --baseline: slower or less accurate than the baseline
    NONE_FITS = 5           # edge select: no artifact fits the budget
    LOST_WORKERS = 75       # EX_TEMPFAIL: a distributed worker stopped answering; rerun with --resume
    INTERRUPTED = 130       # Ctrl-C
