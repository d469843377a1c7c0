"""PackConfig: every `edge pack` setting and its default, in one place (the CLI reads its defaults here)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgekit import platforms
from edgekit.errors import EdgeError


@dataclass(frozen=True)
class PackConfig:
    run_dir: Path
    format: str = "best"            # an export's format name, or best (asks edge select)
    target: str = "aarch64"
    os: str = platforms.DEFAULT_OS   # the device's Debian / Raspberry Pi OS release: its Python and glibc
    python: Optional[str] = None    # default: the os release's Python (bookworm 3.11, trixie 3.13)
    engine: Optional[str] = None    # default: the first engine for the artifact's suffix (litert, onnx)
    out: Optional[Path] = None
    force: bool = False
    wheels: Optional[Path] = None   # a folder of wheels to pack from instead of PyPI (offline packing)
    device: Optional[str] = None    # the bench device `best` selects for
    samples: int = 8
    data: Optional[str] = None      # images to draw the samples from; default: the run's or the conversion's data
    sign: Optional[Path] = None     # an SSH private key: pack.json.sig (deploy/sign.py)
    signer: Optional[str] = None    # the name install.sh --trust looks the key up under; default: the key's comment

    @property
    def release(self) -> platforms.OsRelease:
        return platforms.RELEASES[self.os]

    @property
    def device_python(self) -> str:
        return self.python or self.release.python

    def check(self) -> None:
        if self.os not in platforms.RELEASES:
            raise EdgeError(f"unknown --os '{self.os}'; choose one of {', '.join(platforms.RELEASES)}.")
        if self.target not in platforms.ARCHITECTURES:
            raise EdgeError(f"unknown target '{self.target}'; choose one of {', '.join(platforms.ARCHITECTURES)}.")
        if self.python is not None and not re.fullmatch(r"3\.\d{1,2}", self.python):
            raise EdgeError(f"--python takes a version such as 3.11, got '{self.python}'.")
        if self.samples < 1:
            raise EdgeError(f"--samples must be at least 1, got {self.samples}.")
        if self.wheels is not None and not Path(self.wheels).is_dir():
            raise EdgeError(f"--wheels {self.wheels}: no such folder.")
