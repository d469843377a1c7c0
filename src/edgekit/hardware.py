"""What this CPU offers, and the TensorFlow settings chosen for it before TensorFlow is imported.

TensorFlow's x86 Linux wheels turn their oneDNN kernels on by default only on CPUs with the neural-network
instructions (AVX-512 VNNI/BF16, AVX-VNNI, AMX). Elsewhere (an AVX2-only AMD EPYC, most desktops) it runs its
Eigen kernels, measured 2.2x (a Xeon capped at AVX2) to 3.3x (an AMD EPYC Zen 4 capped at AVX2; the issue's
Zen 3: 2.9x) slower on ResNet-8 training (RESULTS.md "Every CPU"). `configure()` turns oneDNN on there, and never touches a value the user set.

`EDGE_CPU=avx2` makes an AVX-512/AMX machine stand in for an AVX2-only one: the AVX-512 and AMX flags are
hidden from every choice edgekit makes (oneDNN, bfloat16) and oneDNN is capped at its AVX2 kernels
(ONEDNN_MAX_CPU_ISA=AVX2), unless those variables are set already.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Dict, FrozenSet, MutableMapping, Optional

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
MARK_ENV = "EDGE_ONEDNN_SET_BY"   # "edgekit" when configure() set ONEDNN_ENV: a child process must not take it for the user's
EMULATE_ENV = "EDGE_CPU"
EMULATIONS = ("avx2",)
# The flags for which TensorFlow's own default turns oneDNN on (tensorflow/core/util/util.cc, IsMKLEnabled)
TF_ONEDNN_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
# What an AVX2-only CPU lacks: every AVX-512 and AMX flag, and AVX-VNNI (Alder Lake and later)
_HIDDEN_BY_AVX2 = ("avx512", "amx_", "avx_vnni")


@dataclass(frozen=True)
class Cpu:
    model: Optional[str]
    flags: FrozenSet[str]
    machine: str                  # platform.machine(): x86_64, aarch64 …
    emulated: Optional[str] = None

    @property
    def x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i686", "i386")

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags

    @property
    def onednn_bfloat16(self) -> bool:
        """Whether oneDNN has bfloat16 kernels for this CPU: AVX-512 (BW, emulating the bfloat16 maths), AMX, or
        AVX-NE-CONVERT. On an AVX2-only CPU its convolutions refuse bfloat16 ("could not create a primitive
        descriptor"), measured under EDGE_CPU=avx2."""
        return any(f in self.flags for f in ("avx512bw", "amx_bf16", "avx_ne_convert"))

    @property
    def isa(self) -> str:
        """The CPU class the figures in RESULTS are given for: AMX, AVX-512, AVX2, older x86, or the machine."""
        if not self.x86:
            return self.machine
        if self.amx:
            return "AMX"
        if "avx512f" in self.flags:
            return "AVX-512"
        return "AVX2" if "avx2" in self.flags else "x86 without AVX2"

    @property
    def tf_enables_onednn(self) -> bool:
        """Whether TensorFlow turns oneDNN on by itself on this CPU."""
        return self.x86 and any(f in self.flags for f in TF_ONEDNN_FLAGS)


@dataclass(frozen=True)
class Setup:
    """The TensorFlow settings for this process: what was chosen, by whom, and why."""
    cpu: Cpu
    onednn: Optional[bool]        # None: TensorFlow decides (not an x86 CPU)
    chosen_by: str                # "you" (the environment), "TensorFlow" (its default), "edgekit"
    why: str
    set_env: Dict[str, str]       # what configure() put into the environment

    def describe(self) -> str:
        state = {True: "on", False: "off", None: "as TensorFlow decides"}[self.onednn]
        emulated = f"; emulating an {self.cpu.emulated.upper()} CPU ({EMULATE_ENV})" if self.cpu.emulated else ""
        return f"oneDNN {state} ({self.why}){emulated}"

    def to_dict(self) -> dict:
        return {"cpu_model": self.cpu.model, "cpu_class": self.cpu.isa, "emulated": self.cpu.emulated,
                "onednn": self.onednn, "chosen_by": self.chosen_by, "why": self.why, "set_env": dict(self.set_env),
                "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}


def parse_cpuinfo(text: str) -> Dict[str, str]:
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def detect(cpuinfo: Optional[str] = None, environ: Optional[MutableMapping[str, str]] = None,
           machine: Optional[str] = None) -> Cpu:
    """This CPU from /proc/cpuinfo (or `cpuinfo`), as `EDGE_CPU` presents it."""
    env = os.environ if environ is None else environ
    info = parse_cpuinfo(_read_cpuinfo() if cpuinfo is None else cpuinfo)
    flags = frozenset((info.get("flags") or info.get("Features") or "").split())
    emulated = env.get(EMULATE_ENV, "").strip().lower() or None
    if emulated is not None and emulated not in EMULATIONS:
        emulated = None  # checked by configure(), which says so once; detection never fails
    if emulated == "avx2":
        flags = frozenset(f for f in flags if not f.startswith(_HIDDEN_BY_AVX2))
    return Cpu(info.get("model name") or info.get("Model") or None, flags, machine or platform.machine(), emulated)


def choose(cpu: Cpu, environ: MutableMapping[str, str]) -> Setup:
    """The oneDNN setting for `cpu` (pure: `environ` is read, not written)."""
    user = environ.get(ONEDNN_ENV)
    if environ.get(MARK_ENV) == "edgekit":
        user = None  # set by this process's parent, from the same CPU
    if user is not None and user.strip() != "":
        on = user.strip().lower() not in ("0", "false", "no", "off")
        return Setup(cpu, on, "you", f"{ONEDNN_ENV}={user.strip()} was set", {})
    if not cpu.x86:
        return Setup(cpu, None, "TensorFlow", f"a {cpu.machine} CPU: edgekit changes nothing there", {})
    if cpu.tf_enables_onednn:
        have = next(f for f in TF_ONEDNN_FLAGS if f in cpu.flags)
        return Setup(cpu, True, "TensorFlow", f"this CPU has {have}: TensorFlow's own default", {})
    set_env = {ONEDNN_ENV: "1", MARK_ENV: "edgekit"}
    if cpu.emulated == "avx2" and not environ.get("ONEDNN_MAX_CPU_ISA"):
        set_env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    return Setup(cpu, True, "edgekit", "this CPU has no AVX-512 VNNI: TensorFlow leaves it off", set_env)


_SETUP: Optional[Setup] = None


def configure(environ: Optional[MutableMapping[str, str]] = None) -> Setup:
    """Choose for this CPU and put the choice into the environment (once per process; children inherit it)."""
    global _SETUP
    env = os.environ if environ is None else environ
    if environ is None and _SETUP is not None:
        return _SETUP
    setup = choose(detect(environ=env), env)
    for key, value in setup.set_env.items():
        env[key] = value
    if environ is None:
        _SETUP = setup
    return setup


def current() -> Setup:
    return _SETUP or configure()


def in_tensorflow() -> dict:
    """current().to_dict() with what TensorFlow itself reports (call after importing it)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        actual: Optional[bool] = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a private module: a TensorFlow without it still trains
        actual = None
    return {**current().to_dict(), "onednn_in_tensorflow": actual}


def bad_emulation(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    """One sentence when EDGE_CPU names no known CPU class, else None."""
    value = (os.environ if environ is None else environ).get(EMULATE_ENV, "").strip().lower()
    if value and value not in EMULATIONS:
        return f"{EMULATE_ENV}={value!r} is not a CPU class edgekit can emulate; use {' or '.join(EMULATIONS)}, or unset it."
    return None
