"""Installed versions of named distributions, recorded in run and export manifests."""
from __future__ import annotations

from importlib import metadata
from typing import Dict, Iterable


def package_versions(names: Iterable[str]) -> Dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
