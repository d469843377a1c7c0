"""Untrusted input on the pack side (issue 26), on tampered copies of a tiny real export and bundle: manifests and
reports that point outside the export, files added to a bundle or planted beside bundle.py, a broken pack.json,
bundles signed with a real ssh-keygen, and the staging folder of a pack stopped with SIGTERM or killed outright.
Every refusal is one line with exit code 2, and nothing is written anywhere."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.atomic import OWNER, make_staging
from edgekit.benchmarks.config import BenchConfig
from edgekit.benchmarks.run import bench
from edgekit.cli import app
from edgekit.convert import ConvertConfig, convert
from edgekit.deploy import bundle
from testdata import ARCH, PY, WHEELHOUSE, unpack

pytestmark = pytest.mark.tf  # converts and loads models with TensorFlow

ART = "model_tflite-fp32.tflite"
NOT_SIGNED = "install.sh: warning: the bundle is not signed: its sha256 list catches damage, not deliberate changes"
PLANT = "open({marker!r}, 'w').write('ran')\n"   # a planted file's payload: it leaves a mark when it runs


def edge(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def listing(*folders) -> dict:
    """Every path under the folders with its size and mtime: what 'nothing written' is compared on."""
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for d in folders for p in [Path(d), *Path(d).rglob("*")]}


def keygen(*args, stdin=None):
    done = subprocess.run(["ssh-keygen", *map(str, args)], capture_output=True, text=True, input=stdin)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    if not any(WHEELHOUSE.glob("numpy-*.whl")):
        pytest.fail(f"no wheels in {WHEELHOUSE}: run `make venv` (it downloads them), or set EDGE_TEST_WHEELHOUSE")
    run = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("trust") / "run"))
    assert convert(ConvertConfig(run, formats="tflite-fp32", val_samples=6, calib_samples=6)).all_passed
    bench(BenchConfig(run, runs=2, warmup=1, threads=(1,), batch=(1,), latency_images=2))
    return run


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """alice (trusted: allowed_signers lists her key for bundles) and mallory (not)."""
    d = tmp_path_factory.mktemp("keys")
    for name in ("alice", "mallory"):
        keygen("-q", "-t", "ed25519", "-N", "", "-C", name, "-f", d / name)
    public = " ".join((d / "alice.pub").read_text().split()[:2])
    (d / "allowed_signers").write_text(f'alice namespaces="edgekit-bundle" {public}\n')
    return d


@pytest.fixture(scope="module")
def signed(run, keys, tmp_path_factory):
    """A bundle packed with --sign (alice's key), unpacked: tests tamper with copies of it."""
    out = tmp_path_factory.mktemp("signed") / "b.tar.gz"
    code, text = edge("pack", run, "--format", "tflite-fp32", "--target", ARCH, "--python", PY, "--wheels",
                      WHEELHOUSE, "--samples", 2, "--out", out, "--sign", keys / "alice")
    assert code == 0, text
    public = " ".join((keys / "alice.pub").read_text().split()[:2])
    assert f'signed by alice; ALLOWED_SIGNERS on the device holds the line: alice namespaces="edgekit-bundle" ' \
           f'{public}' in " ".join(text.split())
    root = unpack(out, out.parent)
    assert json.loads((root / "pack.json").read_text())["signature"]["signer"] == "alice"
    assert (root / "pack.json.sig").is_file()
    return root


@pytest.fixture
def bundle_copy(signed, tmp_path):
    return Path(shutil.copytree(signed, tmp_path / signed.name, symlinks=True))


def install(root: Path, *args, cwd=None, timeout=600):
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1"}
    return subprocess.run([str(root / "install.sh"), *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


# ------------------------------------------------------------------------------------ containment (row 1)
@pytest.fixture
def box(run, tmp_path, monkeypatch):
    """A copy of the run to tamper with, a folder beside it that tampering points at, and a temp dir of its own."""
    copy = Path(shutil.copytree(run, tmp_path / "box" / "run"))
    elsewhere = tmp_path / "box" / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(copy / "export" / ART, elsewhere / "evil.tflite")   # a real model: copying it would succeed
    (elsewhere / "labels.txt").write_text("stolen\n" * 10)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return copy


def _entry(manifest: dict) -> dict:
    return next(e for e in manifest["artifacts"] if e["format"] == "tflite-fp32")


def _edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _rename_everywhere(run: Path, name: str) -> None:
    """The artifact renamed in the export's manifest and in the bench report, as a hand-edited copy would be."""
    _edit_json(run / "export" / "manifest.json", lambda m: _entry(m).update(format=name))
    _edit_json(run / "bench" / "report.json",
               lambda r: [row.update(name=name) for row in r["rows"] if row.get("name") == "tflite-fp32"])


def _set_file(run: Path, file) -> None:
    _edit_json(run / "export" / "manifest.json", lambda m: _entry(m).update(file=file))


def _link(run: Path, name: str, target: str) -> None:
    (run / "export" / name).unlink()
    (run / "export" / name).symlink_to(target)


def _fifo(run: Path, name: str) -> None:
    (run / "export" / name).unlink()
    os.mkfifo(run / "export" / name)


ESCAPES = {
    # edge select refuses the report's name first (benchmarks/select.py); pack's own check is the next case's
    "format name with .., best": (["--format", "best"], lambda r: _rename_everywhere(r, "x/../../../../elsewhere/q"),
                                  "'x/../../../../elsewhere/q'"),
    "format name with .., named": (["--format", "x/../../../../elsewhere/q"],
                                   lambda r: _rename_everywhere(r, "x/../../../../elsewhere/q"),
                                   "names an artifact format 'x/../../../../elsewhere/q' that edge convert does not make"),
    "unknown format name, best": (["--format", "best"], lambda r: _rename_everywhere(r, "tflite-evil"),
                                  "names an artifact format 'tflite-evil' that edge convert does not make"),
    "file with ..": (["--format", "tflite-fp32"], lambda r: _set_file(r, "../../elsewhere/evil.tflite"),
                     "the tflite-fp32 artifact's file '../../elsewhere/evil.tflite' is not a .tflite file name in "
                     "the export folder: refusing to pack it."),
    "absolute file": (["--format", "tflite-fp32"], lambda r: _set_file(r, str(r.parent / "elsewhere/evil.tflite")),
                      "is not a .tflite file name in the export folder: refusing to pack it."),
    "numeric file": (["--format", "tflite-fp32"], lambda r: _set_file(r, 7),
                     "the tflite-fp32 artifact's file 7 is not a .tflite file name"),
    "model links out": (["--format", "tflite-fp32"], lambda r: _link(r, ART, "../../elsewhere/evil.tflite"),
                        f"the tflite-fp32 artifact's file '{ART}' leads outside"),
    "labels link out": (["--format", "tflite-fp32"], lambda r: _link(r, "labels.txt", str(r.parent / "elsewhere/labels.txt")),
                        "labels.txt leads outside"),
    "model is a FIFO": (["--format", "tflite-fp32"], lambda r: _fifo(r, ART),
                        "is not a regular file: refusing to pack it."),
}


@pytest.mark.parametrize("case", ESCAPES)
def test_pack_refuses_what_leads_outside_the_export(box, case):
    args, tamper, message = ESCAPES[case]
    tamper(box)
    before = listing(box.parent, tempfile.gettempdir())
    code, out = edge("pack", box, *args, "--target", ARCH, "--python", PY, "--wheels", WHEELHOUSE)
    text = " ".join(out.split())
    assert code == 2 and message in text and text.startswith("error: ") and text.endswith("."), out
    assert len(out.strip().splitlines()) == 1
    assert listing(box.parent, tempfile.gettempdir()) == before           # no bundle, no staging tree, no copy


def test_pack_needs_sign_for_signer_and_a_readable_key(box, keys):
    base = ["pack", box, "--format", "tflite-fp32", "--target", ARCH, "--python", PY, "--wheels", WHEELHOUSE]
    before = listing(box.parent, tempfile.gettempdir())
    code, out = edge(*base, "--signer", "alice")
    assert code == 2 and "--signer names who signed the bundle: pass --sign KEY as well." in " ".join(out.split())
    code, out = edge(*base, "--sign", keys / "nokey")
    assert code == 2 and f"--sign {keys / 'nokey'}: no such key file" in " ".join(out.split())
    code, out = edge(*base, "--sign", keys / "alice", "--signer", "al'ice")
    assert code == 2 and "signer name \"al'ice\" is not usable" in " ".join(out.split())
    assert listing(box.parent, tempfile.gettempdir()) == before


# ------------------------------------------------------------------------------------ integrity (row 2)
def test_files_pack_json_does_not_list_are_refused(bundle_copy, tmp_path):
    planted = {"wheels/edgekit_runtime-9.9.9-py3-none-any.whl": b"PK\x03\x04", "samples/extra.png": b"x",
               "notes/": None, "model.tflite": b"x"}
    for rel, data in planted.items():
        (bundle_copy / rel).mkdir() if data is None else (bundle_copy / rel).write_bytes(data)
    before = listing(tmp_path)
    done = install(bundle_copy, "--verify-only")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("install.sh: warning: the bundle is signed by alice but nothing checked it")
    assert len(lines) == 2 and lines[1].startswith("bundle: refusing to install, the bundle was damaged or changed")
    for rel in planted:
        assert f"{rel}: not listed in pack.json" in lines[1] or f"{rel.rstrip('/')}/: not listed" in lines[1]
    assert listing(tmp_path) == before and not (bundle_copy / "venv").exists()


def test_a_planted_json_py_does_not_run(bundle_copy, tmp_path):
    marker = tmp_path / "json-ran"
    (bundle_copy / "json.py").write_text(PLANT.format(marker=str(marker)) + "from _json import *\n")
    done = install(bundle_copy, "--verify-only")
    assert done.returncode == 2 and "json.py: not listed in pack.json" in done.stderr
    assert not marker.exists()
    # what -I prevents: run without it, Python imports the planted module from the script's folder
    subprocess.run([sys.executable, "bundle.py", "verify"], cwd=bundle_copy, capture_output=True)
    assert marker.exists()


def _links_out(root: Path):
    target = root.parent / "outside.txt"
    target.write_text("x")
    (root / "README.txt").unlink()
    (root / "README.txt").symlink_to(target)


BROKEN = {
    "pack.json missing": (lambda r: (r / "pack.json").unlink(), "bundle: no pack.json in {root}: not an edgekit "
                          "bundle, or an incomplete one; unpack the .tar.gz again"),
    "pack.json not JSON": (lambda r: (r / "pack.json").write_bytes(b"\xff{not json"), "bundle: {root}/pack.json is "
                           "not valid JSON ("),
    "pack.json too deep": (lambda r: (r / "pack.json").write_text("[" * 100000), "is not valid JSON"),
    "empty files": (lambda r: _edit_json(r / "pack.json", lambda m: m.update(files={})),
                    "bundle: pack.json is not an edge pack manifest: files must be a non-empty list"),
    "files a list": (lambda r: _edit_json(r / "pack.json", lambda m: m.update(files=["bundle.py"])),
                     "bundle: pack.json is not an edge pack manifest: files must be an object of path: sha256"),
    "file outside": (lambda r: _edit_json(r / "pack.json", lambda m: m["files"].update({"../x": "0" * 64})),
                     "files key '../x' must be a relative path inside the bundle"),
    "absolute file": (lambda r: _edit_json(r / "pack.json", lambda m: m["files"].update({"/etc/passwd": "0" * 64})),
                      "files key '/etc/passwd' must be a relative path inside the bundle"),
    "target wrong type": (lambda r: _edit_json(r / "pack.json", lambda m: m.update(target="aarch64")),
                          "target must be an object with arch and python strings"),
    "unlisted sample": (lambda r: _edit_json(r / "pack.json", lambda m: m["samples"][0].update(file="/dev/zero")),
                        "samples[0] must be an object with a listed file and expected"),
    "a link": (_links_out, "README.txt: a symbolic link"),
    "a FIFO": (lambda r: ((r / "model" / ART).unlink(), os.mkfifo(r / "model" / ART)),
               f"model/{ART}: not a regular file"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_bundle_is_one_line_and_exit_2(bundle_copy, tmp_path, case):
    tamper, message = BROKEN[case]
    tamper(bundle_copy)
    before = listing(tmp_path)
    done = install(bundle_copy, "--verify-only", timeout=120)  # a FIFO read would hang: the timeout fails it
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 2, done.stderr
    assert message.format(root=bundle_copy) in lines[1], lines[1]
    assert "Traceback" not in done.stderr and listing(tmp_path) == before


def test_the_bundle_verifies_once_installed_and_a_venv_it_brought_never_runs(bundle_copy, keys, tmp_path):
    """Also: a signed bundle passes with the right allowed_signers file (given relative to the caller)."""
    marker = tmp_path / "venv-ran"
    fake = bundle_copy / "venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    done = install(bundle_copy, "--trust", "allowed_signers", cwd=keys)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'install.sh: Good "edgekit-bundle" signature for alice with ED25519 key' in done.stdout
    assert "smoke test passed: 2 of 2" in done.stdout and done.stderr == ""
    assert not marker.exists()
    again = subprocess.run([sys.executable, "-I", "bundle.py", "verify"], cwd=bundle_copy, capture_output=True, text=True)
    assert again.returncode == 0 and "files verified" in again.stdout   # venv/ is what install made


# -------------------------------------------------------------------------------------- authenticity
def test_signed_bundle_refuses_a_tampered_pack_json(bundle_copy, keys):
    """The attack checksums alone cannot stop: a wheel added and listed in pack.json with its right sha256."""
    wheel = bundle_copy / "wheels" / "edgekit_runtime-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04 planted")
    _edit_json(bundle_copy / "pack.json", lambda m: m["files"].update({f"wheels/{wheel.name}": bundle.sha256(str(wheel))}))
    assert install(bundle_copy, "--verify-only").returncode == 0   # unchecked, it passes
    done = install(bundle_copy, "--trust", keys / "allowed_signers", "--verify-only")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (f"install.sh: refusing to install: pack.json has no good signature by a key of "
                                   f"alice in {keys / 'allowed_signers'} (Signature verification failed: "
                                   "incorrect signature)")


def test_signed_bundle_refuses_an_added_file(bundle_copy, keys):
    (bundle_copy / "wheels" / "edgekit_runtime-9.9.9-py3-none-any.whl").write_bytes(b"PK\x03\x04")
    done = install(bundle_copy, "--trust", keys / "allowed_signers", "--verify-only")
    assert done.returncode == 2 and done.stdout.startswith('install.sh: Good "edgekit-bundle" signature for alice')
    assert done.stderr.strip() == ("bundle: refusing to install, the bundle was damaged or changed after packing: "
                                   "wheels/edgekit_runtime-9.9.9-py3-none-any.whl: not listed in pack.json")


def test_signed_bundle_refuses_a_wrong_key_and_an_unsigned_bundle(bundle_copy, keys):
    (bundle_copy / "pack.json.sig").unlink()
    trust = ["--trust", keys / "allowed_signers", "--verify-only"]
    done = install(bundle_copy, *trust)
    assert done.returncode == 2 and done.stderr.strip() == (
        "install.sh: refusing to install: the bundle is not signed, and --trust asks for a signed one "
        "(edge pack --sign KEY)")
    keygen("-Y", "sign", "-f", keys / "mallory", "-n", "edgekit-bundle", bundle_copy / "pack.json")  # re-signed
    done = install(bundle_copy, *trust)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"install.sh: refusing to install: pack.json has no good signature by a key of alice in "
        f"{keys / 'allowed_signers'}")
    done = install(bundle_copy, "--trust", keys / "missing", "--verify-only")
    assert done.returncode == 2 and "install.sh: --trust" in done.stderr and "no such readable file" in done.stderr
    done = install(bundle_copy, "--trust=", "--verify-only")   # an empty --trust is not "no --trust"
    assert done.returncode == 2 and "no such readable file" in done.stderr


# -------------------------------------------------------------------------------------- staging (row 7)
def test_sigterm_removes_the_staging_folder(run, tmp_path):
    tmp, out = tmp_path / "tmp", tmp_path / "out" / "b.tar.gz"
    tmp.mkdir()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("edge")), "pack", str(run), "--format", "tflite-fp32",
                             "--target", ARCH, "--python", PY, "--wheels", str(WHEELHOUSE), "--samples", "2",
                             "--out", str(out)], env={**os.environ, "TMPDIR": str(tmp)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp.glob("edge-pack-*/dl")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)   # the wheels are being downloaded: the staging tree holds model/ and pip's files
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "Traceback" not in text, text   # 130: typer's exit code for an interrupt
    assert list(tmp.iterdir()) == [] and not out.parent.exists()


def test_a_killed_packs_staging_folder_is_cleared_by_the_next(box):
    tmp = Path(tempfile.gettempdir())
    dead = subprocess.Popen(["true"])
    dead.wait()   # its pid is now nobody's
    stale = tmp / "edge-pack-stale"
    (stale / "run-tflite-fp32" / "wheels").mkdir(parents=True)
    (stale / OWNER).write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "start": None}))
    live = make_staging(tmp, "edge-pack-")   # this process's: a pack still running, left alone
    code, out = edge("pack", box, "--format", "tflite-fp32", "--target", "armv7l", "--python", PY, "--wheels",
                     WHEELHOUSE, "--out", box.parent / "b.tar.gz")
    assert code == 2 and "have no wheel for armv7l" in " ".join(out.split())   # fails after its staging was made
    assert sorted(tmp.iterdir()) == [live] and not (box.parent / "b.tar.gz").exists()
