"""Wheel platform tags of a target device, for `pip download --platform` (pip does not expand them itself)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

ARCHITECTURES = ("aarch64", "armv7l", "x86_64")


@dataclass(frozen=True)
class OsRelease:
    """A Debian release a device runs (Raspberry Pi OS is Debian with Raspberry Pi's kernel): its Python and the
    glibc every manylinux_2_N wheel with N <= glibc[1] runs on."""
    suite: str
    debian: int
    python: str
    glibc: Tuple[int, int]


# Raspberry Pi OS moved from bookworm to trixie in late 2025; bookworm stays the default (most boards in the field)
RELEASES = {"bookworm": OsRelease("bookworm", 12, "3.11", (2, 36)), "trixie": OsRelease("trixie", 13, "3.13", (2, 41))}
DEFAULT_OS = "bookworm"
BOOKWORM_GLIBC = RELEASES["bookworm"].glibc


def manylinux_platforms(arch: str = "aarch64", glibc: Tuple[int, int] = BOOKWORM_GLIBC) -> List[str]:
    """Every platform tag a glibc-`glibc` Linux on `arch` accepts, oldest first."""
    return [f"manylinux2014_{arch}"] + [f"manylinux_2_{minor}_{arch}" for minor in range(17, glibc[1] + 1)]


def platform_args(platforms: Sequence[str]) -> List[str]:
    return [a for p in platforms for a in ("--platform", p)]
