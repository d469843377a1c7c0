"""Several devices in one `edge bench`: who they are (--host, repeated, and --hosts FILE) and running each one's
session at the same time, with bounded concurrency. Each device is measured exactly as a single --host is."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

from edgekit.benchmarks.remote.ssh import parse_target
from edgekit.errors import EdgeError
from edgekit.benchmarks.remote.session import RemoteError

T = TypeVar("T")


@dataclass(frozen=True)
class Device:
    destination: str          # user@host[:port], as ssh takes it
    name: str                 # the device's id in the report (default: the destination)
    port: Optional[int] = None


def read_hosts_file(path: Path) -> List[Device]:
    """One `user@host[:port] [name]` per line; blank lines and # comments are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeError(f"--hosts {path}: cannot read it ({exc}).") from None
    devices = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise EdgeError(f"--hosts {path}, line {number}: {line.strip()!r} is not `user@host[:port] [name]`.")
        devices.append(_device(words[0], words[1] if len(words) == 2 else None, f"--hosts {path}, line {number}"))
    if not devices:
        raise EdgeError(f"--hosts {path} lists no hosts (one `user@host[:port] [name]` per line).")
    return devices


def _device(text: str, name: Optional[str], where: str, port: Optional[int] = None) -> Device:
    try:
        parse_target(text, port)
    except RemoteError as exc:
        raise EdgeError(f"{where}: {exc}") from None
    if name is not None and (not name or any(c in name for c in "/\\ \t")):
        raise EdgeError(f"{where}: {name!r} is not a usable device name (no spaces or slashes).")
    return Device(text, name or text, port)


def devices(hosts: Sequence[str], hosts_file: Optional[Path], port: Optional[int] = None) -> List[Device]:
    """The devices of --host (each may carry :port; --port applies to those that do not) and --hosts FILE;
    two with the same name are refused (their rows could not be told apart)."""
    found = [_device(h, None, f"--host {h}", port) for h in hosts]
    if hosts_file is not None:
        found += read_hosts_file(hosts_file)
    seen = {}
    for d in found:
        if d.name in seen:
            raise EdgeError(f"two hosts are named {d.name!r} ({seen[d.name]} and {d.destination}); name them apart in "
                            "--hosts FILE (`user@host[:port] name`).")
        seen[d.name] = d.destination
    return found


def each(devices_: Sequence[Device], work: Callable[[Device], T], parallel: int) -> List[Tuple[Device, T]]:
    """work(device) for every device, at most `parallel` at a time; results in the devices' order. `work` turns
    its own failures into its result (one device's trouble must not stop the others)."""
    if not devices_:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(devices_)))) as pool:
        return list(zip(devices_, pool.map(work, devices_)))
