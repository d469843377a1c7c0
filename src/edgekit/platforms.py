"""Wheel platform tags of a target device, for `pip download --platform` (pip does not expand them itself)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

BOOKWORM_GLIBC = (2, 36)   # Debian bookworm / Raspberry Pi OS bookworm: every manylinux_2_N wheel with N <= 36 runs
ARCHITECTURES = ("aarch64", "armv7l", "x86_64")


def manylinux_platforms(arch: str = "aarch64", glibc: Tuple[int, int] = BOOKWORM_GLIBC) -> List[str]:
    """Every platform tag a glibc-`glibc` Linux on `arch` accepts, oldest first."""
    return [f"manylinux2014_{arch}"] + [f"manylinux_2_{minor}_{arch}" for minor in range(17, glibc[1] + 1)]


def platform_args(platforms: Sequence[str]) -> List[str]:
    return [a for p in platforms for a in ("--platform", p)]
