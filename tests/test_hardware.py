"""CPU detection and the TensorFlow setup chosen from it (fast tier: fake /proc/cpuinfo, no TensorFlow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgekit import hardware

EPYC_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni
"""
EPYC_ZEN4 = EPYC_ZEN3.replace("7B13", "9B14").replace("sha_ni", "sha_ni avx512f avx512bw avx512_vnni avx512_bf16")
XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512bw avx_vnni avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""
PI5 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU part\t: 0xd0b
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def setup_for(cpuinfo: str, env: dict, machine: str = "x86_64") -> hardware.Setup:
    return hardware.choose(hardware.detect(cpuinfo, env, machine), env)


def test_avx2_only_cpu_gets_onednn_that_tensorflow_leaves_off():
    s = setup_for(EPYC_ZEN3, {})
    assert s.cpu.isa == "AVX2" and not s.cpu.tf_enables_onednn
    assert s.onednn is True and s.chosen_by == "edgekit"
    assert s.set_env[hardware.ONEDNN_ENV] == "1" and "ONEDNN_MAX_CPU_ISA" not in s.set_env
    assert s.describe() == "oneDNN on (this CPU has no AVX-512 VNNI: TensorFlow leaves it off)"


@pytest.mark.parametrize("info,flag", [(XEON_AMX, "avx512_vnni"), (EPYC_ZEN4, "avx512_vnni")])
def test_cpus_where_tensorflow_turns_onednn_on_are_left_alone(info, flag):
    s = setup_for(info, {})
    assert s.onednn is True and s.chosen_by == "TensorFlow" and s.set_env == {}
    assert flag in s.why


@pytest.mark.parametrize("value,on", [("0", False), ("false", False), ("1", True)])
def test_a_users_own_setting_is_never_overridden(value, on):
    env = {hardware.ONEDNN_ENV: value}
    s = setup_for(EPYC_ZEN3, env)
    assert s.onednn is on and s.chosen_by == "you" and s.set_env == {}
    hardware.configure(env)
    assert env == {hardware.ONEDNN_ENV: value}


def test_arm_is_left_to_tensorflow():
    s = setup_for(PI5, {}, machine="aarch64")
    assert s.onednn is None and s.set_env == {} and s.cpu.isa == "aarch64"


def test_edge_cpu_avx2_hides_avx512_and_amx_and_caps_onednn():
    env = {hardware.EMULATE_ENV: "avx2"}
    s = setup_for(XEON_AMX, env)
    assert s.cpu.isa == "AVX2" and not s.cpu.amx and not any("avx512" in f for f in s.cpu.flags)
    assert s.chosen_by == "edgekit" and s.set_env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "emulating an AVX2 CPU" in s.describe()
    env2 = {hardware.EMULATE_ENV: "avx2", "ONEDNN_MAX_CPU_ISA": "AVX"}  # the user's cap stays
    assert "ONEDNN_MAX_CPU_ISA" not in setup_for(XEON_AMX, env2).set_env
    assert hardware.bad_emulation({hardware.EMULATE_ENV: "zen9"}).startswith("EDGE_CPU='zen9' is not a CPU class")
    assert hardware.bad_emulation({}) is None


def test_configure_marks_its_own_choice_so_children_do_not_take_it_for_the_users():
    env: dict = {}
    first = hardware.choose(hardware.detect(EPYC_ZEN3, env, "x86_64"), env)
    env.update(first.set_env)
    again = hardware.choose(hardware.detect(EPYC_ZEN3, env, "x86_64"), env)
    assert again.chosen_by == "edgekit"


def test_importing_edgekit_sets_the_environment_before_tensorflow(tmp_path):
    """A real child process: the user's 0 stays 0; without it, this machine's own choice is recorded."""
    code = "import edgekit, json, os, sys; from edgekit import hardware; " \
           "print(json.dumps([os.environ.get('TF_ENABLE_ONEDNN_OPTS'), hardware.current().to_dict(), 'tensorflow' in sys.modules]))"
    env = {k: v for k, v in os.environ.items() if k not in (hardware.ONEDNN_ENV, hardware.MARK_ENV)}
    user = json.loads(subprocess.run([sys.executable, "-c", code], env={**env, hardware.ONEDNN_ENV: "0"},
                                     capture_output=True, text=True, check=True).stdout)
    assert user[0] == "0" and user[1]["chosen_by"] == "you" and user[1]["onednn"] is False and user[2] is False
    emulated = json.loads(subprocess.run([sys.executable, "-c", code], env={**env, hardware.EMULATE_ENV: "avx2"},
                                         capture_output=True, text=True, check=True).stdout)
    if hardware.detect(environ={}).x86:
        assert emulated[0] == "1" and emulated[1]["cpu_class"] == "AVX2" and emulated[1]["emulated"] == "avx2"


@pytest.mark.parametrize("info,env,refused", [
    (EPYC_ZEN3, {}, True),                                  # oneDNN on (edgekit's choice), no AVX-512: refused
    (EPYC_ZEN3, {hardware.ONEDNN_ENV: "0"}, False),         # the user turned oneDNN off: Eigen runs bfloat16, slowly
    (EPYC_ZEN4, {}, False),
    (XEON_AMX, {}, False),
    (XEON_AMX, {hardware.EMULATE_ENV: "avx2"}, True),       # the stand-in behaves as the AVX2 CPU does
])
def test_bfloat16_is_refused_where_onednn_has_no_bfloat16_kernels(monkeypatch, info, env, refused):
    from edgekit.errors import EdgeError
    from edgekit.train import precision
    monkeypatch.setattr(hardware, "current", lambda: setup_for(info, dict(env)))
    if refused:
        with pytest.raises(EdgeError, match=r"^precision bfloat16 needs a CPU with AVX-512 or AMX .* this one is AVX2 "
                                            r".*use precision float32 or auto\.$"):
            precision.choose("bfloat16", from_scratch=True)
    else:
        assert precision.choose("bfloat16", from_scratch=True) == ("bfloat16", "set in the config")
    assert precision.choose("auto", from_scratch=True)[0] == ("bfloat16" if "bf16" in info and not env else "float32")
