"""The user-facing error type: the CLI prints its message as one line and exits non-zero."""
from edgekit_runtime.exits import Exit


class EdgeError(Exception):
    """Bad input or an impossible request; the message is one sentence the user can act on."""

    exit_code = Exit.BAD_INPUT
