"""What machine a benchmark ran on: CPU, cores, frequency policy, OS, Python, engines; Pi health flags.

Everything is read from /proc, /sys and the standard library, so it works on a bare Raspberry Pi OS
image; a field that cannot be read is None rather than an error. Temperature and throttling are
read twice (before and after a benchmark) because a Pi that throttles mid-run reports slow figures.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .engines import ENGINES

PACKAGES = ("edgekit-runtime", "numpy", "pillow", *(e.package for e in ENGINES.values()))


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00") or None
    except OSError:
        return None


def _cpuinfo() -> Dict[str, str]:
    fields: Dict[str, str] = {}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def cpu_flags() -> List[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`), empty where /proc/cpuinfo has none."""
    info = _cpuinfo()
    return (info.get("flags") or info.get("Features") or "").split()


def cpu_model() -> Optional[str]:
    info = _cpuinfo()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if info.get(key):
            return info[key]
    # Arm cores list only an implementer/part number; name the common ones a Pi has.
    parts = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd05": "Cortex-A55"}
    part = info.get("CPU part")
    return parts.get(part or "", f"Arm CPU part {part}" if part else None) or platform.processor() or None


def _os_name() -> Optional[str]:
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return f"{platform.system()} {platform.release()}"


def _versions() -> Dict[str, Optional[str]]:
    from importlib import metadata
    out: Dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_freq() -> Dict[str, Optional[object]]:
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"

    def mhz(name: str) -> Optional[float]:
        v = _read(base + name)
        return round(int(v) / 1000, 1) if v and v.isdigit() else None

    return {"governor": _read(base + "scaling_governor"), "cur_mhz": mhz("scaling_cur_freq"),
            "max_mhz": mhz("cpuinfo_max_freq"), "min_mhz": mhz("cpuinfo_min_freq")}


def health() -> Dict[str, Optional[object]]:
    """Temperature (°C) and, on a Raspberry Pi, the firmware's throttling flags."""
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    out: Dict[str, Optional[object]] = {"temperature_c": round(int(temp) / 1000, 1) if temp and temp.lstrip("-").isdigit()
                                        else None, "throttled": None}
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd:
        try:
            text = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=5).stdout
            out["throttled"] = text.strip().split("=", 1)[-1] or None  # "0x0" = never throttled
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def fingerprint() -> Dict[str, object]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "hostname": platform.node(),
        "board": _read("/proc/device-tree/model"),  # "Raspberry Pi 4 Model B Rev 1.4" on a Pi
        "cpu": cpu_model(),
        "architecture": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_freq": _cpu_freq(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": _versions(),
        "memory_mb": _mem_total_mb(),
    }


def _mem_total_mb() -> Optional[int]:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None
