"""The arm64 Debian userland of `make pi-check`: prerequisites, cached rootfs, chroot mounts, commands.

Raspberry Pi OS (64-bit) is Debian on arm64: bookworm (Debian 12, Python 3.11, glibc 2.36) or, since late 2025,
trixie (Debian 13, Python 3.13, glibc 2.41); a debootstrapped root filesystem of that release run through
qemu-user-static's binfmt entry is the same userland on a PC (platforms.RELEASES; --os picks one). The command builders here are the single source of the commands the README tells a Pi user to
type (tests/test_pi_check.py checks that the README shows them), so the check runs exactly those.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from edgekit import platforms
from edgekit.deploy.staging import temp_staging

SUITE, ARCH, VARIANT = platforms.DEFAULT_OS, "arm64", "minbase"
INCLUDE = ("python3", "python3-venv", "python3-pip")
MIRROR = "http://deb.debian.org/debian"
BOOKWORM = platforms.RELEASES["bookworm"]
PYTHON_VERSION = BOOKWORM.python  # the README's commands are bookworm's
GLIBC = BOOKWORM.glibc
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = "qemu-aarch64"
STAMP = ".edgekit-rootfs.json"
TOOLS = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static", "chroot": "coreutils",
         "mount": "mount", "umount": "mount"}
BINFMT_FIX = ("mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc && "
              "update-binfmts --enable qemu-aarch64")


class PiCheckError(Exception):
    """A missing prerequisite or a failed step: one line the user can act on; exit code 2."""


# ------------------------------------------------------------------ prerequisites
def missing_prerequisite(euid: int, which: Callable[[str], Optional[str]] = shutil.which,
                         binfmt_dir: Path = BINFMT_DIR) -> Optional[str]:
    """One line naming the first thing missing, with the command that fixes it; None when all is there."""
    if euid != 0:
        return "pi-check needs root (debootstrap, chroot and mount do): run it as root, e.g. sudo make pi-check"
    missing = [tool for tool in TOOLS if not which(tool)]
    if missing:
        packages = " ".join(dict.fromkeys(TOOLS[t] for t in missing))
        return f"pi-check needs {', '.join(missing)}: apt-get install {packages}"
    if not (binfmt_dir / "register").exists():
        return f"binfmt_misc is not mounted, so arm64 programs cannot run here: {BINFMT_FIX}"
    entry = binfmt_dir / BINFMT_ENTRY
    try:
        text = entry.read_text()
    except OSError:
        return f"no {BINFMT_ENTRY} entry in binfmt_misc (qemu-user-static not registered): " \
               f"update-binfmts --enable {BINFMT_ENTRY}"
    if not text.startswith("enabled"):
        return f"the {BINFMT_ENTRY} binfmt entry is disabled: update-binfmts --enable {BINFMT_ENTRY}"
    return None


def binfmt_fixes_binary(binfmt_dir: Path = BINFMT_DIR) -> bool:
    """True when the entry has the F flag: the kernel holds qemu open, so the chroot needs no copy of it."""
    try:
        flags = [line.split(":", 1)[1].strip() for line in (binfmt_dir / BINFMT_ENTRY).read_text().splitlines()
                 if line.startswith("flags:")]
    except OSError:
        return False
    return bool(flags) and "F" in flags[0]


# --------------------------------------------------------------------- commands
def manylinux_platforms(glibc=GLIBC) -> List[str]:
    """Every platform tag a glibc-`glibc` aarch64 system accepts (pip does not expand manylinux_2_N itself)."""
    return platforms.manylinux_platforms("aarch64", glibc)


# The README spells the platform list as this shell line; the test runs it and compares with manylinux_platforms().
def platforms_shell(glibc=GLIBC) -> str:
    return (f"PLATFORMS=\"--platform manylinux2014_aarch64 $(for v in $(seq 17 {glibc[1]}); "
            "do printf -- '--platform manylinux_2_%s_aarch64 ' $v; done)\"")


PLATFORMS_SHELL = platforms_shell()


platform_args = platforms.platform_args


def download_cmd(pip: Sequence[str], dest: str, packages: Sequence[str], constraints: Optional[str],
                 platforms: Sequence[str], python: str = PYTHON_VERSION) -> List[str]:
    """pip download of aarch64 wheels for the release's CPython, on any machine with internet (an offline Pi's PC).

    `platforms` are the arguments naming the platforms: platform_args(manylinux_platforms()), or the
    README's ["$PLATFORMS"]."""
    cmd = [*pip, "download", *platforms, "--python-version", python, "--only-binary=:all:"]
    if constraints:
        cmd += ["-c", constraints]
    return cmd + ["--dest", dest, *packages]


def wheel_cmd(pip: Sequence[str], source: str, dest: str) -> List[str]:
    return [*pip, "wheel", "--no-deps", "--wheel-dir", dest, source]


def venv_cmd(venv: str) -> List[str]:
    return ["python3", "-m", "venv", venv]


def install_cmd(venv: str, wheels: str, extra: str) -> List[str]:
    return [f"{venv}/bin/pip", "install", "--no-index", "--find-links", wheels, f"edgekit-runtime[{extra}]"]


def predict_cmd(edge_run: str, export: str, fmt: str, images: Sequence[str], top_k: Optional[int] = None) -> List[str]:
    """edge-run predict as a user types it; with top_k = number of classes and --json it returns every probability."""
    cmd = [edge_run, "predict", export, "--format", fmt, *images]
    return cmd + ["--top-k", str(top_k), "--json"] if top_k else cmd


def debootstrap_cmd(target: str, mirror: str = MIRROR, suite: str = SUITE) -> List[str]:
    return ["debootstrap", f"--arch={ARCH}", f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}",
            suite, target, mirror]


MAIN_PACKAGES = ("numpy", "pillow", "ai-edge-litert", "onnxruntime")   # pinned by constraints.txt
TFLITE_PACKAGES = ("tflite-runtime", "numpy<2")  # tflite-runtime is built against numpy 1: no constraints
PI_RUNS = (("litert", "tflite-int8"), ("onnx", "onnx-fp32"))


def sh(cmd: Sequence[str]) -> str:
    """A command as typed in a shell: quoted only where needed, ~ and $PLATFORMS left for the shell to expand."""
    return " ".join(a if a == "$PLATFORMS" or re.fullmatch(r"[\w@%+=:,./~-]+", a) else shlex.quote(a) for a in cmd)


def user_commands(wheels: str = "wheels", export: str = "export", home: str = "~",
                  release: platforms.OsRelease = BOOKWORM) -> Dict[str, List[str]]:
    """The README's "Running on a Raspberry Pi" commands (bookworm's; a trixie check reports trixie's): what the
    check runs, with a user's paths."""
    pip = ["pip"]
    pc = [platforms_shell(release.glibc),
          sh(download_cmd(pip, wheels, MAIN_PACKAGES, "src/edgekit/constraints.txt", ["$PLATFORMS"], release.python)),
          sh(wheel_cmd(pip, "./runtime", wheels)),
          sh(download_cmd(pip, wheels, TFLITE_PACKAGES, None, ["$PLATFORMS"], release.python))]
    pi = []
    for extra, fmt in PI_RUNS:
        venv = f"{home}/edgekit-{extra}"
        pi += [sh(venv_cmd(venv)), sh(install_cmd(venv, f"{home}/{wheels}", extra)),
               sh(predict_cmd(f"{venv}/bin/edge-run", f"{home}/{export}", fmt, ["cat.jpg"]))]
    return {"pc": pc, "pi": pi}


def chroot_env(qemu_cpu: Optional[str]) -> Dict[str, str]:
    """A clean environment inside the chroot; QEMU_CPU picks the emulated core (cortex-a72 = Raspberry Pi 4)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if qemu_cpu:
        env["QEMU_CPU"] = qemu_cpu
    return env


def run_group(cmd: Sequence[str], timeout: Optional[float] = None, **kw) -> subprocess.CompletedProcess:
    """subprocess.run in a process group of its own, stopped whole (TERM, then KILL) on Ctrl-C, SIGTERM or a
    timeout: pip or debootstrap inside the chroot leave no orphans behind in a rootfs about to be unmounted."""
    if kw.pop("capture_output", False):
        kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with subprocess.Popen(list(cmd), start_new_session=True, **kw) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, None)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
                    break
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ------------------------------------------------------------------------ mounts
def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path, mountinfo: str = "/proc/self/mountinfo") -> List[str]:
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    root = os.path.realpath(path)
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return []
    points = [_unescape(line.split()[4]) for line in lines if len(line.split()) > 4]
    return sorted({p for p in points if p == root or p.startswith(root.rstrip("/") + "/")},
                  key=lambda p: (-p.count("/"), p))


def unmount_all(path: Path) -> None:
    """Unmount everything below `path`; lazily when busy. Raises if something stays mounted."""
    for point in mounts_under(path):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    left = mounts_under(path)
    if left:
        raise PiCheckError(f"could not unmount {', '.join(left)}; unmount by hand before retrying")


def safe_rmtree(path: Path) -> None:
    """rm -rf that never descends into a mounted /proc, /sys or /dev (a bound /dev would lose its nodes)."""
    if path.is_dir() and not path.is_symlink():
        unmount_all(path)
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# Raspberry Pi cores as their /proc/cpuinfo shows them (64-bit kernel): CPU part, variant, revision, Features.
PI_CPUS = {"cortex-a53": ("Raspberry Pi 3 Model B Plus Rev 1.3", "0xd03", "0x0", "4", "fp asimd evtstrm crc32 cpuid"),
           "cortex-a72": ("Raspberry Pi 4 Model B Rev 1.4", "0xd08", "0x0", "3", "fp asimd evtstrm crc32 cpuid"),
           "cortex-a76": ("Raspberry Pi 5 Model B Rev 1.0", "0xd0b", "0x4", "1", "fp asimd evtstrm aes pmull sha1 "
                          "sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp")}


def cpu_ids(text: str) -> List[int]:
    """CPU numbers of a sysfs list such as "0-3,6"."""
    ids: List[int] = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            ids += range(int(lo), int(hi or lo) + 1)
    return ids


def pi_cpuinfo(qemu_cpu: str, cpus: Sequence[int]) -> str:
    """An ARM /proc/cpuinfo for the chroot. qemu-user 7.2 (bookworm) passes the host's x86 one through, and
    XNNPACK's cpuinfo library (in ai-edge-litert and onnxruntime) dies with SIGSEGV parsing it."""
    model, part, variant, revision, features = PI_CPUS[qemu_cpu]
    block = ("processor\t: {}\nBogoMIPS\t: 108.00\nFeatures\t: " + features + "\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: " + variant + "\nCPU part\t: " + part + "\nCPU revision\t: "
             + revision + "\n\n")
    return "".join(block.format(i) for i in cpus) + f"Model\t\t: {model}\n"


def planned_mounts(root: Path, dev_has_nodes: bool, cpuinfo: Optional[str] = None) -> List[List[str]]:
    """mount commands for a chroot: /proc (with an ARM cpuinfo over the host's), /sys read-only (XNNPACK
    reads the CPU list there), /dev only when the rootfs has no device nodes."""
    cmds = [["mount", "-t", "proc", "proc", str(root / "proc")]]
    if cpuinfo:
        cmds.append(["mount", "--bind", cpuinfo, str(root / "proc/cpuinfo")])
    cmds.append(["mount", "-t", "sysfs", "-o", "ro", "sysfs", str(root / "sys")])
    if not dev_has_nodes:
        cmds.append(["mount", "--bind", "/dev", str(root / "dev")])
    return cmds


@contextlib.contextmanager
def chroot_mounts(root: Path, qemu_cpu: Optional[str] = None) -> Iterator[List[str]]:
    """Mount what the chroot needs; everything is unmounted afterwards, on error and Ctrl-C too."""
    unmount_all(root)  # left over by a run that was killed
    dev_null = root / "dev" / "null"
    has_nodes = dev_null.exists() and dev_null.is_char_device()
    done: List[str] = []
    with temp_staging("pi-check-mounts-") as tmp:
        cpuinfo = None
        if qemu_cpu:
            cpuinfo = str(tmp / "cpuinfo")
            present = Path("/sys/devices/system/cpu/present")
            ids = cpu_ids(present.read_text()) if present.exists() else list(range(os.cpu_count() or 1))
            Path(cpuinfo).write_text(pi_cpuinfo(qemu_cpu, ids))
        try:
            for cmd in planned_mounts(root, has_nodes, cpuinfo):
                result = subprocess.run(cmd, capture_output=True, text=True)
                if result.returncode != 0:
                    raise PiCheckError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
                done.append(cmd[-1])
            yield done
        finally:
            unmount_all(root)


# ------------------------------------------------------------------------ rootfs
def default_rootfs(suite: str = SUITE) -> Path:
    base = os.environ.get("EDGE_CACHE_DIR") or Path.home() / ".cache" / "edgekit"
    return Path(base).expanduser() / ("pi-rootfs" if suite == SUITE else f"pi-rootfs-{suite}")


def stamp_matches(stamp: dict, suite: str = SUITE) -> bool:
    return (stamp.get("suite"), stamp.get("arch"), stamp.get("variant"), tuple(stamp.get("include", ()))) == \
        (suite, ARCH, VARIANT, INCLUDE)


def read_stamp(rootfs: Path) -> Optional[dict]:
    try:
        return json.loads((rootfs / STAMP).read_text())
    except (OSError, ValueError):
        return None


def ensure_rootfs(rootfs: Path, log: Callable[[str], None], mirror: str = MIRROR, rebuild: bool = False,
                  release: platforms.OsRelease = BOOKWORM) -> dict:
    """Reuse the cached rootfs when complete, else debootstrap one into a temporary sibling and rename it in.

    Only a finished build carries the stamp file, so an interrupted one is never reused; its directory
    is removed on the next run. Returns the stamp, with `reused` and `seconds` of this call.
    """
    rootfs = Path(rootfs).absolute()
    stamp = None if rebuild else read_stamp(rootfs)
    if stamp and stamp_matches(stamp, release.suite):
        return {**stamp, "reused": True, "seconds": 0.0}
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    for stale in rootfs.parent.glob(f"{rootfs.name}.tmp-*"):
        log(f"removing an unfinished rootfs build: {stale}")
        safe_rmtree(stale)
    tmp = rootfs.parent / f"{rootfs.name}.tmp-{os.getpid()}"
    build_log = rootfs.parent / f"{rootfs.name}-build.log"
    cmd = debootstrap_cmd(str(tmp), mirror, release.suite)
    log(f"building the arm64 {release.suite} rootfs (about 4 minutes; log {build_log}): " + " ".join(cmd))
    start = time.monotonic()
    try:
        with open(build_log, "w") as out:
            result = run_group(cmd, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = " | ".join(build_log.read_text(errors="replace").strip().splitlines()[-3:])
            raise PiCheckError(f"debootstrap failed (exit {result.returncode}): {tail}")
        check = run_group(["chroot", str(tmp), "python3", "-c", "import venv, ensurepip, sys; "
                                "print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True,
                               env=chroot_env(None))
        if check.returncode != 0 or check.stdout.strip() != release.python:
            raise PiCheckError(f"the new rootfs cannot run python3 {release.python}: "
                               f"{(check.stderr or check.stdout).strip()[-200:]}")
        stamp = {"suite": release.suite, "arch": ARCH, "variant": VARIANT, "include": list(INCLUDE), "mirror": mirror,
                 "python": check.stdout.strip(), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "build_seconds": round(time.monotonic() - start, 1)}
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        unmount_all(tmp)
        if rootfs.exists():
            safe_rmtree(rootfs)
        os.replace(tmp, rootfs)
    except BaseException:
        try:
            safe_rmtree(tmp)
        except (OSError, PiCheckError) as exc:
            log(f"could not remove {tmp}: {exc}")
        raise
    return {**stamp, "reused": False, "seconds": stamp["build_seconds"]}
