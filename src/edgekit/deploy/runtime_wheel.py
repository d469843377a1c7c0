"""The edgekit-runtime wheel a device installs, made from the edgekit-runtime installed here (a release's or a
clone's editable one alike): the very code that validated the artifacts, with no checkout and no network."""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import importlib.util
import zipfile
from pathlib import Path
from typing import List, Tuple

from edgekit.atomic import write_with
from edgekit.errors import EdgeError

DIST, PACKAGE = "edgekit-runtime", "edgekit_runtime"
# A fixed time for every member: the same installed runtime always gives the same wheel, byte for byte.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_WHEEL = "Wheel-Version: 1.0\nGenerator: edgekit\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _installed() -> Tuple[metadata.Distribution, Path]:
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        raise EdgeError(f"{DIST} is not installed here, and the device's wheel is made from it: "
                        f"pip install {DIST} (the version edgekit asks for).") from None
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EdgeError(f"{DIST} {dist.version} is installed but its package {PACKAGE} cannot be found.")
    return dist, Path(list(spec.submodule_search_locations)[0])


def _members(dist: metadata.Distribution, package: Path) -> List[Tuple[str, bytes]]:
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in (".pyc", ".pyo"))
    members = [(f"{PACKAGE}/{p.relative_to(package).as_posix()}", p.read_bytes()) for p in files]
    info = f"{PACKAGE}-{dist.version}.dist-info"
    meta = dist.read_text("METADATA")
    if not meta:
        raise EdgeError(f"{DIST} {dist.version} is installed without its METADATA: reinstall it.")
    members.append((f"{info}/METADATA", meta.encode()))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:  # edge-run on the device
        members.append((f"{info}/entry_points.txt", entry_points.encode()))
    members.append((f"{info}/top_level.txt", f"{PACKAGE}\n".encode()))
    members.append((f"{info}/WHEEL", _WHEEL.encode()))
    return members


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def runtime_wheel(dest: Path) -> str:
    """Write edgekit_runtime-<version>-py3-none-any.whl into dest (pure Python: one wheel fits every target) and
    return its file name."""
    dist, package = _installed()
    members = _members(dist, package)
    if not any(name == f"{PACKAGE}/__init__.py" for name, _ in members):
        raise EdgeError(f"{DIST} {dist.version} at {package} has no {PACKAGE}/__init__.py: reinstall it.")
    record_name = f"{PACKAGE}-{dist.version}.dist-info/RECORD"
    record = "".join(_record_line(n, d) + "\n" for n, d in members) + f"{record_name},,\n"
    name = f"{PACKAGE}-{dist.version}-py3-none-any.whl"
    dest.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for member, data in [*members, (record_name, record.encode())]:
                zinfo = zipfile.ZipInfo(member, _EPOCH)
                zinfo.external_attr = 0o644 << 16
                zinfo.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(zinfo, data)
    write_with(dest / name, write)
    return name
