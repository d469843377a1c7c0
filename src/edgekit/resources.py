"""What the edgekit package ships besides code, found through the installed package, never through a checkout:
the training recipes (configs/*.yaml, named by preset) and the pinned versions (constraints.txt)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Dict

from edgekit.errors import EdgeError
from edgekit.helpers import did_you_mean


def _package_file(*parts: str) -> Path:
    # A wheel installs into a folder and setuptools' editable install maps onto src/: a real path either way
    # (a zipped install would need resources.as_file; pip never makes one).
    return Path(str(resources.files("edgekit").joinpath(*parts)))


def constraints_file() -> Path:
    """The one place where versions are pinned: make, CI and device installs all read it."""
    return _package_file("constraints.txt")


def shipped_configs() -> Dict[str, Path]:
    """Every recipe that ships with edgekit, by name (the file name without .yaml), sorted."""
    folder = _package_file("configs")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def summary(path: Path) -> str:
    """A recipe's first comment line: what it trains, in a sentence."""
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("#") and text:
            return text
    return ""


def config_file(name_or_path: str) -> Path:
    """`-c resnet8` is the shipped recipe; anything that is a file, or looks like a path, is the user's own."""
    given = Path(name_or_path)
    shipped = shipped_configs()
    if not given.exists() and given.parent.name == "configs" and given.stem in shipped:
        return shipped[given.stem]  # configs/resnet8.yaml, as commands written before the recipes moved say
    if given.is_file() or given.suffix in (".yaml", ".yml") or len(given.parts) > 1:
        return given
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise EdgeError(f"no config named {name_or_path!r}: the shipped ones are {', '.join(shipped)} "
                    f"(`edge configs` lists them), or give a YAML file's path.{did_you_mean(name_or_path, shipped)}")
