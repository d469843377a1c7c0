"""`edge pack --check` / `edge pi-check --bundle FILE`: an `edge pack` bundle for aarch64, installed by its own
install.sh with pip alone (no network) inside the emulated Raspberry Pi OS userland, then its smoke test, which
compares every sample's top-1 with the one this machine recorded at pack time."""
from __future__ import annotations

import contextlib
import json
import shutil
import tarfile
import time
from pathlib import Path
from typing import Callable

from edgekit.deploy import bundle as bundle_script
from edgekit.deploy.pi import rootfs as rf
from edgekit.atomic import write_json
from edgekit.layout import REPORT_JSON
from edgekit.deploy.pi.userland import WORKDIR, guarded, prepared_rootfs, run, tail, target_info


def check_bundle(path: Path, log: Callable[[str], None], rootfs: Path = None, qemu_cpu: str = "cortex-a72",
                 mirror: str = rf.MIRROR, rebuild: bool = False, keep: bool = False,
                 release: rf.platforms.OsRelease = rf.BOOKWORM) -> dict:
    """Unpack, install and smoke-test the bundle in the arm64 chroot; a report dict with `passed`."""
    import os
    start = time.monotonic()
    path = Path(path).resolve()
    try:
        with tarfile.open(path) as tar:
            tops = {m.name.split("/")[0] for m in tar.getmembers()}
            manifest = json.loads(tar.extractfile(f"{sorted(tops)[0]}/{bundle_script.MANIFEST}").read())
    except (OSError, tarfile.TarError, KeyError, ValueError, AttributeError) as exc:
        raise rf.PiCheckError(f"{path}: not an `edge pack` bundle ({exc})") from None
    if len(tops) != 1:
        raise rf.PiCheckError(f"{path}: a bundle holds one top-level folder, this one {len(tops)}")
    target = manifest.get("target") if isinstance(manifest, dict) else None
    arch = target.get("arch") if isinstance(target, dict) else None
    if not isinstance(arch, str):
        raise rf.PiCheckError(f"{path}: its pack.json names no target architecture; not an `edge pack` bundle")
    if arch != "aarch64":
        raise rf.PiCheckError(f"{path} is for {arch}; the emulated Pi is aarch64 (pack with --target aarch64)")
    problem = rf.missing_prerequisite(os.geteuid())
    if problem:
        raise rf.PiCheckError(problem)
    rootfs = Path(rootfs or rf.default_rootfs(release.suite)).absolute()
    name = tops.pop()
    with contextlib.ExitStack() as stack:
        stamp, work = prepared_rootfs(stack, rootfs, log, mirror, rebuild, keep, release)
        work.mkdir(parents=True)
        with tarfile.open(path) as tar:
            tar.extractall(work, filter="data")
        env = rf.chroot_env(qemu_cpu)
        if not rf.binfmt_fixes_binary():
            shutil.copy2(shutil.which("qemu-aarch64-static"), rootfs / "usr/bin/qemu-aarch64-static")
        with rf.chroot_mounts(rootfs, qemu_cpu):
            target = target_info(rootfs, env)
            res = run(["env", "PYTHON=/usr/bin/python3", f"{WORKDIR}/{name}/install.sh"], log, env, rootfs)
    lines = (res.stdout + res.stderr).splitlines()
    passed = res.returncode == 0 and any(line.startswith("smoke test passed") for line in lines)
    for line in lines:
        log(f"  {line}")
    return {"passed": passed, "bundle": str(path), "size_bytes": path.stat().st_size,
            "sha256": bundle_script.sha256(str(path)), "artifact": (manifest.get("artifact") or {}).get("name")
            if isinstance(manifest.get("artifact"), dict) else None,
            "engine": manifest.get("engine"), "samples": len(manifest.get("samples") or []),
            "install_exit_code": res.returncode, "output": lines[-15:] if not passed else
            [line for line in lines if line.startswith(("bundle:", "smoke test"))],
            "error": None if passed else tail(res),
            "target": {**target, "rootfs": str(rootfs), "suite": release.suite, "qemu_cpu": qemu_cpu, "rootfs_reused": stamp["reused"]},
            "wall_clock_s": round(time.monotonic() - start, 1)}


def main(args) -> int:
    """`edge pi-check --bundle FILE` (args parsed by check.main): one PASS/FAIL line, report.json, exit 0/1/2."""
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    report, code = guarded(lambda: check_bundle(Path(args.bundle), log, args.rootfs, args.qemu_cpu, args.mirror,
                                                args.rebuild, args.keep, args.release))
    if report is None:
        return code
    out = Path(args.out) if args.out else Path(args.bundle).resolve().parent / "pi-check-bundle"
    write_json(out / REPORT_JSON, report)
    t = report["target"]
    print(f"\n{'PASS' if report['passed'] else 'FAIL'}: {Path(args.bundle).name} ({report['size_bytes'] / 1e6:.1f} MB) "
          f"installed with pip alone on {t['machine']} Python {t['python']} (qemu {t['qemu_cpu']}); "
          + ("smoke test passed" if report["passed"] else f"failed: {report['error']}") + f" · {out / 'report.json'}")
    return 0 if report["passed"] else 1
