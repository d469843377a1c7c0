"""make pi-check: the parts that need neither root, network nor an arm64 rootfs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.deploy.pi import check as pc
from edgekit.deploy.pi import userland as ul
from edgekit.deploy.pi import report as pi_report
from edgekit.deploy.pi import rootfs as rf

README = Path(__file__).resolve().parent.parent / "README.md"


# ------------------------------------------------------------------ prerequisites
def _binfmt(tmp_path, register=True, entry="enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n"):
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    if register:
        (d / "register").write_text("")
    if entry is not None:
        (d / "qemu-aarch64").write_text(entry)
    return d


def _all_tools(name):
    return f"/usr/bin/{name}"


def test_prerequisites_all_present(tmp_path):
    assert rf.missing_prerequisite(0, _all_tools, _binfmt(tmp_path)) is None


def test_prerequisite_not_root(tmp_path):
    msg = rf.missing_prerequisite(1000, _all_tools, _binfmt(tmp_path))
    assert "needs root" in msg and "\n" not in msg


def test_prerequisite_missing_packages_names_the_apt_command(tmp_path):
    which = lambda name: None if name in ("debootstrap", "qemu-aarch64-static") else _all_tools(name)
    msg = rf.missing_prerequisite(0, which, _binfmt(tmp_path))
    assert msg.endswith("apt-get install debootstrap qemu-user-static")
    assert "debootstrap, qemu-aarch64-static" in msg


def test_prerequisite_binfmt_not_mounted(tmp_path):
    msg = rf.missing_prerequisite(0, _all_tools, _binfmt(tmp_path, register=False, entry=None))
    assert "binfmt_misc is not mounted" in msg
    assert "mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc" in msg
    assert "update-binfmts --enable qemu-aarch64" in msg


def test_prerequisite_binfmt_entry_missing_or_disabled(tmp_path):
    (tmp_path / "a").mkdir()
    msg = rf.missing_prerequisite(0, _all_tools, _binfmt(tmp_path / "a", entry=None))
    assert "no qemu-aarch64 entry" in msg and msg.endswith("update-binfmts --enable qemu-aarch64")
    (tmp_path / "b").mkdir()
    msg = rf.missing_prerequisite(0, _all_tools, _binfmt(tmp_path / "b", entry="disabled\nflags: PF\n"))
    assert "disabled" in msg and msg.endswith("update-binfmts --enable qemu-aarch64")


def test_binfmt_fix_binary_flag(tmp_path):
    assert rf.binfmt_fixes_binary(_binfmt(tmp_path))
    (tmp_path / "x").mkdir()
    assert not rf.binfmt_fixes_binary(_binfmt(tmp_path / "x", entry="enabled\nflags: P\n"))
    assert not rf.binfmt_fixes_binary(tmp_path / "nowhere")


# ------------------------------------------------------------------------- commands
def test_platforms_cover_bookworm_glibc():
    plats = rf.manylinux_platforms()
    assert plats[0] == "manylinux2014_aarch64"
    assert {"manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64",
            "manylinux_2_36_aarch64"} <= set(plats)
    assert "manylinux_2_37_aarch64" not in plats


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_readme_platforms_line_expands_to_the_same_platforms():
    out = subprocess.run(["bash", "-c", rf.PLATFORMS_SHELL + '; echo $PLATFORMS'], capture_output=True, text=True)
    assert out.stdout.split() == rf.platform_args(rf.manylinux_platforms())


def test_download_command():
    cmd = rf.download_cmd(["pip"], "wheels", rf.MAIN_PACKAGES, "constraints.txt",
                          rf.platform_args(["manylinux2014_aarch64", "manylinux_2_28_aarch64"]))
    assert cmd == ["pip", "download", "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64",
                   "--python-version", "3.11", "--only-binary=:all:", "-c", "constraints.txt", "--dest", "wheels",
                   "numpy", "pillow", "ai-edge-litert", "onnxruntime"]
    assert "-c" not in rf.download_cmd(["pip"], "w", rf.TFLITE_PACKAGES, None, [])


def test_install_predict_debootstrap_commands():
    assert rf.venv_cmd("/v") == ["python3", "-m", "venv", "/v"]
    assert rf.install_cmd("/v", "/w", "onnx") == ["/v/bin/pip", "install", "--no-index", "--find-links", "/w",
                                                  "edgekit-runtime[onnx]"]
    assert rf.predict_cmd("edge-run", "exp", "tflite-int8", ["a.jpg"]) == \
        ["edge-run", "predict", "exp", "--format", "tflite-int8", "a.jpg"]
    assert rf.predict_cmd("edge-run", "exp", "onnx-fp32", ["a.jpg", "b.jpg"], 10)[-5:] == \
        ["a.jpg", "b.jpg", "--top-k", "10", "--json"]
    assert rf.debootstrap_cmd("/t") == ["debootstrap", "--arch=arm64", "--variant=minbase",
                                        "--include=python3,python3-venv,python3-pip", "bookworm", "/t",
                                        "http://deb.debian.org/debian"]
    assert rf.chroot_env("cortex-a72")["QEMU_CPU"] == "cortex-a72" and "QEMU_CPU" not in rf.chroot_env(None)


def test_shell_quoting_of_user_commands():
    cmds = rf.user_commands()
    assert "pip install --no-index --find-links ~/wheels 'edgekit-runtime[litert]'" in " ".join(cmds["pi"])
    assert any("$PLATFORMS" in c and "'numpy<2'" in c for c in cmds["pc"])


def test_readme_shows_the_commands_the_check_runs():
    text = README.read_text(encoding="utf-8")
    assert "## Running on a Raspberry Pi" in text
    section = text.split("## Running on a Raspberry Pi", 1)[1]
    for cmd in rf.user_commands()["pc"] + rf.user_commands()["pi"]:
        assert cmd in section, cmd


# ------------------------------------------------------------------------------ data
def test_select_images_balanced_seeded():
    names = {c: [f"{i:04d}.jpg" for i in range(50)] for c in ("cat", "dog", "ship")}
    a = pc.select_images(names, 10, seed=0)
    assert a == pc.select_images(names, 10, seed=0)
    assert a != pc.select_images(names, 10, seed=1)
    counts = {c: sum(1 for k, _ in a if k == c) for c in names}
    assert counts == {"cat": 4, "dog": 3, "ship": 3}
    assert len(set(a)) == 10
    with pytest.raises(rf.PiCheckError, match="only 50"):
        pc.select_images(names, 200, seed=0)


def test_parse_predictions_is_exact():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=4).astype(np.float32)
    doc = {"model": "m", "engine": "litert", "predictions": [
        {"image": f"{i}.jpg", "top_k": [{"label": str(j), "index": int(j), "probability": float(row[j])}
                                        for j in np.argsort(-row)]} for i, row in enumerate(probs)]}
    images, got, engine = pc.parse_predictions(json.dumps(doc), 10)
    assert images == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"] and engine == "litert"
    assert got.dtype == np.float32 and np.array_equal(got, probs)
    for p in doc["predictions"]:
        p["top_k"] = p["top_k"][:3]
    with pytest.raises(rf.PiCheckError, match="fewer than 10"):
        pc.parse_predictions(json.dumps(doc), 10)


def test_read_test_images_from_archive(tiny_tar):
    imgs = pc.read_test_images(tiny_tar)
    assert sorted(imgs) == ["blue", "green", "red"]
    assert all(len(v) == 6 for v in imgs.values())


# ------------------------------------------------------------------------ comparison
def test_tolerance_rule():
    q = {"outputs": [{"dtype": "uint8", "quantization": {"scale": [0.00390625], "zero_point": [0]}}]}
    assert pc.tolerance_for(q)[0] == 0.00390625
    assert pc.tolerance_for({"outputs": [{"dtype": "float32", "quantization": None}]})[0] == pc.FLOAT_TOLERANCE
    assert pc.tolerance_for({})[0] == pc.FLOAT_TOLERANCE


def _probs():
    return np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], np.float32)


def test_compare_bit_exact_and_within_tolerance():
    ref = _probs()
    same = pc.compare(ref, ref.copy(), 1e-5, truth=[0, 2, 0])
    assert same["passed"] and same["bit_exact"] and same["top1_agreement"] == 1.0 and same["max_abs_diff"] == 0
    assert same["accuracy_host"] == same["accuracy_aarch64"] == pytest.approx(2 / 3)
    near = ref.copy()
    near[0, 0] += 3e-6
    c = pc.compare(ref, near, 1e-5)
    assert c["passed"] and not c["bit_exact"] and 0 < c["max_abs_diff"] < 1e-5


def test_compare_fails_on_top1_flip_or_large_diff():
    ref = _probs()
    flipped = ref.copy()
    flipped[2] = [0.5, 0.2, 0.3]
    c = pc.compare(ref, flipped, 1.0)
    assert not c["passed"] and c["disagreements"] == [2] and c["top1_agree"] == 2
    off = ref.copy()
    off[1, 2] += 0.01
    c = pc.compare(ref, off, 0.0039)
    assert not c["passed"] and c["top1_agreement"] == 1.0
    assert not pc.compare(ref, ref[:2], 1.0)["passed"]


def _report(litert_pass=True, tflite=None):
    comp = pc.compare(_probs(), _probs(), 1e-5)
    comp["passed"] = litert_pass
    engines = {"litert": {"extra": "litert", "required": True, "installed": True,
                          "versions": {"ai-edge-litert": "2.3.0", "numpy": "2.4.6"},
                          "artifacts": {"tflite-int8": {"comparison": comp, "host_engine": "ai-edge-litert 2.3.0"},
                                        "tflite-fp32": {"host_engine": "ai-edge-litert 2.3.0",
                                                        "error": "edge-run failed: killed by SIGSEGV"}}}}
    engines["tflite"] = tflite or {"extra": "tflite", "required": False, "installed": False,
                                   "error": "pip install failed: no matching distribution", "artifacts": {}}
    return {"passed": pc.overall_passed(engines), "created": "now", "export": "/e", "engines": engines,
            "images": {"count": 3, "seed": 0, "per_class": {"a": 3}},
            "host": {"machine": "x86_64", "python": "3.11.7", "libc": "glibc 2.36", "engines": {}},
            "target": {"machine": "aarch64", "python": "3.11.2", "libc": "glibc 2.36", "suite": "bookworm",
                       "qemu_cpu": "cortex-a72", "rootfs_reused": True},
            "commands": rf.user_commands(), "wall_clock_s": {"rootfs_build": 240.0, "this_check": 100.0}}


def test_optional_engine_does_not_fail_the_check_required_one_does():
    rep = _report()
    assert not rep["passed"]                       # tflite-fp32 of litert crashed
    del rep["engines"]["litert"]["artifacts"]["tflite-fp32"]
    assert pc.overall_passed(rep["engines"])
    assert not _report(litert_pass=False)["passed"]
    rep = _report()
    rep["engines"]["litert"]["installed"] = False
    assert not pc.overall_passed(rep["engines"])


def test_table_is_aligned_and_markdown_complete():
    rep = _report()
    lines = pi_report.render_table(rep).splitlines()
    assert lines[0].startswith("engine") and set(lines[1]) <= {"-", " "}
    for name in ("artifact", "vs host", "top-1 agree", "result"):
        col = lines[0].index(name)
        assert all(line[col - 2:col] == "  " for line in lines[2:]), name
    assert "3/3 (100.0%)" in lines[2] and lines[2].endswith("pass")
    assert "killed by SIGSEGV" in lines[3] and lines[3].endswith("FAIL")
    assert "does not install" in lines[-1] and lines[-1].endswith("n/a (optional)")
    md = pi_report.render_markdown(rep)
    assert "FAIL" in md.splitlines()[0] and "nothing here is a latency figure" in md
    assert "bit-exact: litert tflite-int8" in pi_report.exactness(rep)
    assert "max \\|Δp\\|" in md and "tflite-fp32: edge-run failed: killed by SIGSEGV" in md
    assert rf.user_commands()["pi"][1] in md


def test_run_group_stops_the_whole_group_on_timeout(tmp_path):
    marker = tmp_path / "grandchild-ran"
    script = f"(sleep 1; touch {marker}) & sleep 30"
    with pytest.raises(subprocess.TimeoutExpired):
        rf.run_group(["sh", "-c", script], timeout=0.3)
    time.sleep(1.2)
    assert not marker.exists()                       # the background grandchild died with its group
    assert rf.run_group(["sh", "-c", "echo hi; exit 3"], capture_output=True, text=True).stdout == "hi\n"


def test_tail_names_the_signal():
    assert ul.tail(subprocess.CompletedProcess([], -11, "", "")) == "killed by SIGSEGV"
    assert ul.tail(subprocess.CompletedProcess([], 1, "", "a\nb\nqemu: uncaught target signal\n")) == "a | b"


def test_shown_shortens_image_lists():
    cmd = ["edge-run", "predict", "exp"] + [f"{i}.jpg" for i in range(200)] + ["--json"]
    s = ul.shown(cmd)
    assert "0.jpg 1.jpg … (200 images) --json" in s and "5.jpg" not in s
    dl = rf.download_cmd(["pip"], "w", ["numpy"], None, rf.platform_args(rf.manylinux_platforms()))
    assert ul.shown(dl) == "pip download $PLATFORMS --python-version 3.11 --only-binary=:all: --dest w numpy"


# --------------------------------------------------------------------- mounts, rootfs
def test_mounts_under_parses_escapes_and_orders_deepest_first(tmp_path):
    root = tmp_path / "my root"
    root.mkdir()
    r = str(root).replace(" ", "\\040")
    info = tmp_path / "mountinfo"
    info.write_text("\n".join([
        "22 1 0:21 / / rw - ext4 /dev/vda rw",
        f"30 22 0:5 / {r}/proc rw - proc proc rw",
        f"31 22 0:6 / {r}/sys ro - sysfs sysfs ro",
        f"32 22 0:7 / {r}/dev/pts rw - devpts devpts rw",
        f"33 22 0:8 / {r}x/proc rw - proc proc rw"]) + "\n")
    got = rf.mounts_under(root, str(info))
    assert got[0] == f"{root}/dev/pts" and set(got) == {f"{root}/proc", f"{root}/sys", f"{root}/dev/pts"}


def test_planned_mounts(tmp_path):
    cmds = rf.planned_mounts(tmp_path, dev_has_nodes=True)
    assert [c[-1] for c in cmds] == [str(tmp_path / "proc"), str(tmp_path / "sys")]
    assert "ro" in cmds[1]
    assert rf.planned_mounts(tmp_path, dev_has_nodes=False)[-1] == ["mount", "--bind", "/dev", str(tmp_path / "dev")]
    cmds = rf.planned_mounts(tmp_path, True, "/tmp/x/cpuinfo")
    assert cmds[1] == ["mount", "--bind", "/tmp/x/cpuinfo", str(tmp_path / "proc/cpuinfo")]   # after /proc itself


def test_pi_cpuinfo_looks_like_a_pi():
    assert rf.cpu_ids("0-1\n") == [0, 1] and rf.cpu_ids("0-2,5") == [0, 1, 2, 5]
    text = rf.pi_cpuinfo("cortex-a72", [0, 1])
    assert text.count("processor\t: ") == 2 and "processor\t: 1\n" in text
    assert "CPU implementer\t: 0x41" in text and "CPU part\t: 0xd08" in text and "Raspberry Pi 4" in text
    assert "asimddp" in rf.pi_cpuinfo("cortex-a76", [0]) and "asimddp" not in text


def test_rootfs_cached_is_reused_without_running_anything(tmp_path, monkeypatch):
    root = tmp_path / "pi-rootfs"
    root.mkdir()
    (root / rf.STAMP).write_text(json.dumps({"suite": "bookworm", "arch": "arm64", "variant": "minbase",
                                             "include": list(rf.INCLUDE), "build_seconds": 250}))
    monkeypatch.setattr(rf, "run_group", lambda *a, **k: pytest.fail("nothing should run"))
    assert rf.ensure_rootfs(root, print)["reused"]


def test_rootfs_build_is_atomic(tmp_path, monkeypatch):
    root = tmp_path / "pi-rootfs"
    stale = tmp_path / "pi-rootfs.tmp-1"
    (stale / "usr").mkdir(parents=True)   # an interrupted earlier build

    def fake_run(cmd, **kw):
        if cmd[0] == "debootstrap":
            Path(cmd[-2], "usr/bin").mkdir(parents=True)
            kw["stdout"].write("I: Retrieving InRelease\nE: Couldn't download packages\n")
            return subprocess.CompletedProcess(cmd, fake_run.rc)
        return subprocess.CompletedProcess(cmd, 0, "3.11\n", "")

    monkeypatch.setattr(rf, "run_group", fake_run)
    fake_run.rc = 1
    with pytest.raises(rf.PiCheckError, match="debootstrap failed.*Couldn't download"):
        rf.ensure_rootfs(root, lambda m: None)
    assert not root.exists() and [p.name for p in tmp_path.iterdir()] == ["pi-rootfs-build.log"]
    fake_run.rc = 0
    stamp = rf.ensure_rootfs(root, lambda m: None)
    assert not stamp["reused"] and (root / "usr/bin").is_dir() and rf.read_stamp(root)["python"] == "3.11"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pi-rootfs", "pi-rootfs-build.log"]


# ------------------------------------------------------------------------------ CLI
def test_bad_export_is_one_line_exit_2(tmp_path, capsys):
    code = pc.main(["--export", str(tmp_path), "--images", "4", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("pi-check:") and "manifest.json" in err and "\n" not in err


def test_unknown_format_or_engine_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        pc.main(["--export", str(tmp_path), "--out", str(tmp_path / "o"), "--formats", "onnx-int8"])
    assert exc.value.code == 2 and "unknown format 'onnx-int8'. Did you mean 'onnx-fp32'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        pc.main(["--export", str(tmp_path), "--out", str(tmp_path / "o"), "--engines", "litert,tensorrt"])
    assert exc.value.code == 2 and "unknown engine tensorrt" in capsys.readouterr().err
    code = pc.main(["--export", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--engines", "onnx",
                    "--formats", "tflite-int8"])
    assert code == 2 and "no engine among onnx runs tflite-int8" in capsys.readouterr().err


def test_no_tensorflow_imported():
    code = "import sys, edgekit.deploy.pi.check; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_bundle_check_refuses_what_is_not_an_aarch64_bundle(tmp_path, capsys):
    import json as _json
    import tarfile
    from edgekit.deploy.pi.bundle_check import check_bundle
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    with pytest.raises(rf.PiCheckError, match="not an `edge pack` bundle"):
        check_bundle(junk, print)
    folder = tmp_path / "b" / "run-tflite-int8-x86_64-py3.11"
    folder.mkdir(parents=True)
    (folder / "pack.json").write_text(_json.dumps({"target": {"arch": "x86_64", "python": "3.11"}}))
    bundle = tmp_path / "x86.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    with pytest.raises(rf.PiCheckError, match="is for x86_64; the emulated Pi is aarch64 .pack with --target aarch64."):
        check_bundle(bundle, print)
    assert pc.main(["--bundle", str(bundle)]) == 2
    assert "pi-check: " in capsys.readouterr().err
    (folder / "pack.json").write_text(_json.dumps({"target": ["aarch64"]}))   # hand-edited: wrong types
    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    with pytest.raises(rf.PiCheckError, match="its pack.json names no target architecture"):
        check_bundle(bundle, print)


def test_trixie_is_debian_13_with_python_3_13_and_its_own_rootfs(tmp_path, monkeypatch):
    from edgekit import platforms
    trixie = platforms.RELEASES["trixie"]
    assert (trixie.debian, trixie.python, trixie.glibc) == (13, "3.13", (2, 41))
    assert rf.debootstrap_cmd("/t", suite="trixie")[-3:] == ["trixie", "/t", rf.MIRROR]
    assert rf.download_cmd(["pip"], "w", ["numpy"], None, [], trixie.python)[2:4] == ["--python-version", "3.13"]
    assert rf.manylinux_platforms(trixie.glibc)[-1] == "manylinux_2_41_aarch64"
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path))
    assert rf.default_rootfs() == tmp_path / "pi-rootfs" and rf.default_rootfs("trixie") == tmp_path / "pi-rootfs-trixie"
    bookworm_stamp = {"suite": "bookworm", "arch": rf.ARCH, "variant": rf.VARIANT, "include": list(rf.INCLUDE)}
    assert rf.stamp_matches(bookworm_stamp) and not rf.stamp_matches(bookworm_stamp, "trixie")


def test_pack_takes_the_os_release_s_python_unless_told():
    from edgekit.deploy.config import PackConfig
    from edgekit.errors import EdgeError
    assert PackConfig("r").device_python == "3.11" and PackConfig("r", os="trixie").device_python == "3.13"
    assert PackConfig("r", os="trixie", python="3.12").device_python == "3.12"
    with pytest.raises(EdgeError, match="unknown --os 'jessie'"):
        PackConfig("r", os="jessie").check()


def test_a_trixie_check_reports_trixie_s_commands():
    from edgekit import platforms
    pc_cmds = rf.user_commands(release=platforms.RELEASES["trixie"])["pc"]
    assert "seq 17 41" in pc_cmds[0] and "--python-version 3.13" in pc_cmds[1]
    assert rf.user_commands()["pc"][0] == rf.PLATFORMS_SHELL and "seq 17 36" in rf.PLATFORMS_SHELL
