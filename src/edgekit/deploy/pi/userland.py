"""Running commands in the emulated Raspberry Pi OS userland (a cached arm64 chroot under qemu): the rootfs
locked and prepared, each command logged as a user would type it, its failure in one line."""
from __future__ import annotations

import contextlib
import fcntl
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from edgekit.signals import sigterm_as_interrupt

from . import rootfs as rf

WORKDIR = "/opt/pi-check"                        # inside the rootfs; wiped at the start and end of each run
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def guarded(work: Callable[[], dict]) -> Tuple[Optional[dict], int]:
    """(report, 0) of a check, or (None, exit code) after one line on stderr: 2 when it could not be set up,
    1 when a command in the userland timed out, 130 when interrupted (its mounts are undone either way)."""
    try:
        with sigterm_as_interrupt():
            return work(), 0
    except rf.PiCheckError as exc:
        print(f"pi-check: {exc}", file=sys.stderr)
        return None, 2
    except subprocess.TimeoutExpired as exc:
        print(f"pi-check: timed out after {exc.timeout:.0f} s: {shown(exc.cmd)}", file=sys.stderr)
        return None, 1
    except KeyboardInterrupt:
        print("pi-check: interrupted (mounts undone)", file=sys.stderr)
        return None, 130


def shown(cmd: Sequence[str], max_images: int = 2) -> str:
    """A command for the log: long image lists shortened, the platform flags as the README's $PLATFORMS."""
    plats = rf.platform_args(rf.manylinux_platforms())
    cmd = list(cmd)
    for i in range(len(cmd) - len(plats) + 1):
        if cmd[i:i + len(plats)] == plats:
            cmd[i:i + len(plats)] = ["$PLATFORMS"]
            break
    imgs = [a for a in cmd if a.endswith(IMAGE_EXTS)]
    if len(imgs) <= max_images:
        return rf.sh(cmd)
    keep = [a for a in cmd if a not in imgs[max_images:]]
    at = keep.index(imgs[max_images - 1]) + 1
    return rf.sh(keep[:at]) + f" … ({len(imgs)} images) " + rf.sh(keep[at:])


def run(cmd: Sequence[str], log, env=None, chroot: Optional[Path] = None, timeout=3600) -> subprocess.CompletedProcess:
    log(("(arm64) $ " if chroot else "$ ") + shown(cmd))
    full = ["chroot", str(chroot), *cmd] if chroot else list(cmd)
    return rf.run_group(full, capture_output=True, text=True, env=env, timeout=timeout)


def tail(result: subprocess.CompletedProcess, lines: int = 3) -> str:
    """The last lines a failed command printed, or how it died."""
    if result.returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-result.returncode).name}"
    text = [t for t in (result.stderr.strip() or result.stdout.strip()).splitlines() if not t.startswith("qemu: ")]
    return " | ".join(text[-lines:]) or f"exit code {result.returncode}"


def target_info(chroot: Path, env) -> dict:
    code = ("import json, platform, sys; print(json.dumps({'machine': platform.machine(), 'python': "
            "platform.python_version(), 'libc': ' '.join(platform.libc_ver())}))")
    res = rf.run_group(["chroot", str(chroot), "python3", "-c", code], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise rf.PiCheckError(f"python3 does not run in the arm64 chroot: {tail(res)}")
    return json.loads(res.stdout)


def prepared_rootfs(stack: contextlib.ExitStack, rootfs: Path, log, mirror: str, rebuild: bool, keep: bool,
                    release: rf.platforms.OsRelease = rf.BOOKWORM):
    """(stamp, empty work dir): the rootfs locked for the stack's life and built if needed; the work dir wiped
    now and, unless `keep`, when the stack closes."""
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    lock = stack.enter_context(open(rootfs.parent / f"{rootfs.name}.lock", "w"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise rf.PiCheckError(f"another pi-check is using {rootfs}") from None
    stamp = rf.ensure_rootfs(rootfs, log, mirror, rebuild, release)
    log(f"rootfs: {rootfs} (" + ("reused" if stamp["reused"] else f"built in {stamp['seconds']:.0f} s") + ")")
    work = rootfs / WORKDIR.lstrip("/")
    rf.safe_rmtree(work)
    if not keep:
        stack.callback(rf.safe_rmtree, work)
    return stamp, work
