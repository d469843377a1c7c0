"""`edge bench --host`: the SSH transport, against a real sshd started on 127.0.0.1 with throw-away keys.

Nothing is downloaded: the end-to-end runs use this interpreter as the device's (device_python), and
the one pip run is offline (--no-index) on purpose, to check the "no wheel" message.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.benchmarks.remote.session import RemoteError, device_requirements, run_remote
from edgekit.resources import constraints_file
from edgekit.benchmarks.remote.ssh import SshClient, Target, parse_target, remote_command
from sshd_server import _free_port, _keygen

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory) -> Path:
    """A self-contained plan: one tiny .tflite (16x16, 3 classes), labels, preprocessing, four PNGs."""
    import edgekit  # noqa: F401  (selects tf_keras)
    import tensorflow as tf
    import tf_keras as keras
    from edgekit_runtime import PreprocessSpec

    root = tmp_path_factory.mktemp("plan")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    (root / "artifacts").mkdir()
    (root / "artifacts" / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    (root / "artifacts" / "labels.txt").write_text("blue\ngreen\nred\n")
    spec = PreprocessSpec(height=16, width=16, scale=(1 / 255,) * 3, offset=(0,) * 3)
    (root / "artifacts" / "preprocess.json").write_text(json.dumps(spec.to_dict()))
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"file": f"images/{i}.png", "label": i % 3})
    plan = {"artifacts": [{"name": "tflite-fp32", "file": "artifacts/m.tflite"}], "images": images,
            "threads": [1], "batch": [1], "runs": 5, "warmup": 1}
    (root / "plan.json").write_text(json.dumps(plan))
    return root


def _run(plan_dir, opts):
    lines = []
    result = run_remote(plan_dir, opts, progress=lines.append)
    return result, lines


# -- end to end -----------------------------------------------------------------------------------
def test_end_to_end_with_device_python_and_cleanup(sshd, plan_dir):
    result, lines = _run(plan_dir, sshd.options(device_python=sys.executable))
    [art] = result["artifacts"]
    assert art["name"] == "tflite-fp32" and art["status"] == "ok", art
    assert result["device"]["architecture"] and result["device"]["python"] and result["device"]["cores"]
    assert result["images"] == 4
    assert any("[1/1] tflite-fp32" in ln for ln in lines), lines  # the device's progress, relayed as it ran
    remote = result["remote"]
    assert remote["host"] == f"{sshd.user}@127.0.0.1:{sshd.port}" and remote["dir"] is None
    [work] = [ln.rsplit(" ", 1)[1] for ln in lines if "working in" in ln]
    assert "edgekit-remote-" in work and not os.path.exists(work)  # the device's temp dir is gone


# -- host keys --------------------------------------------------------------------------------------
def test_unknown_host_key_is_refused_with_how_to_add_it(sshd, plan_dir, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(RemoteError) as e:
        run_remote(plan_dir, sshd.options(known_hosts=empty, device_python=sys.executable))
    msg = str(e.value)
    assert "not in" in msg and f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in msg
    assert "--accept-new-host-key" in msg and "\n" not in msg
    assert empty.read_text() == ""


def test_accept_new_host_key_records_it(sshd, plan_dir, tmp_path):
    kh = tmp_path / "fresh" / ".ssh" / "known_hosts"  # not there yet, nor its directory
    with pytest.raises(RemoteError, match=r"no '/nonexistent/python3' on the device"):
        run_remote(plan_dir, sshd.options(known_hosts=kh, accept_new_host_key=True, device_python="/nonexistent/python3"))
    recorded = kh.read_text()
    assert f"[127.0.0.1]:{sshd.port}" in recorded and sshd.host_line.split()[2] in recorded
    # from now on the key is simply known: strict checking passes
    with SshClient(Target("127.0.0.1", sshd.user, sshd.port), identity=sshd.user_key, known_hosts=kh,
                   ssh_config=Path(os.devnull)) as ssh:
        assert ssh.run("echo ok", timeout=30, what="test").stdout == b"ok\n"


def test_changed_host_key_is_refused_even_with_accept_new(sshd, plan_dir, tmp_path):
    other = _keygen(tmp_path / "other")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    before = kh.read_text()
    with pytest.raises(RemoteError) as e:
        run_remote(plan_dir, sshd.options(known_hosts=kh, accept_new_host_key=True, device_python=sys.executable))
    msg = str(e.value)
    assert "CHANGED" in msg and "man-in-the-middle" in msg and "never overrides" in msg
    assert f'ssh-keygen -f "{kh}" -R "[127.0.0.1]:{sshd.port}"' in msg
    assert kh.read_text() == before


# -- login and reachability ---------------------------------------------------------------------------
def test_wrong_user_and_wrong_key_say_authentication_failed(sshd, plan_dir, tmp_path):
    for opts in (sshd.options(host="nosuchuser-edgekit@127.0.0.1"),
                 sshd.options(identity=_keygen(tmp_path / "stranger"))):
        with pytest.raises(RemoteError, match="authentication failed"):
            run_remote(plan_dir, opts)


def test_closed_port_is_unreachable(sshd, plan_dir):
    port = _free_port()
    with pytest.raises(RemoteError, match=f"connection refused on port {port}"):
        run_remote(plan_dir, sshd.options(port=port))


# -- no shell injection -------------------------------------------------------------------------------
def test_shell_metacharacters_never_run(sshd, plan_dir, tmp_path):
    pwned = tmp_path / "pwned"
    for host in (f"bad;touch {pwned}", f"x$(touch {pwned})@127.0.0.1", f"-oProxyCommand=touch {pwned}",
                 f"127.0.0.1 touch {pwned}", f"`touch {pwned}`"):
        with pytest.raises(RemoteError, match="not a valid"):
            run_remote(plan_dir, sshd.options(host=host, port=None))
    # strings that do travel to the device arrive as data, never as shell text
    for evil in (f"{sys.executable};touch {pwned}", f"$(touch {pwned})", f"'; touch {pwned}; '"):
        with pytest.raises(RemoteError, match="on the device"):
            run_remote(plan_dir, sshd.options(device_python=evil))
    assert not pwned.exists()


def test_remote_command_quotes_every_word():
    words = ["a b;c", "$(touch x)", "'q'", "~/v", "*"]
    cmd = remote_command('printf "%s|" "$@"', words)
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd="/").stdout  # as a login shell would
    assert out == "|".join(words) + "|"


# -- the device's Python and packages -----------------------------------------------------------------
def test_missing_and_old_device_python(sshd, plan_dir, tmp_path):
    with pytest.raises(RemoteError, match=r"no '/nonexistent/python3' on the device \(command not found\)"):
        run_remote(plan_dir, sshd.options(device_python="/nonexistent/python3"))
    old = tmp_path / "python3.7"
    old.write_text("#!/bin/sh\necho 'edgekit-python 3.7.3 armv7l'\n")
    old.chmod(0o755)
    with pytest.raises(RemoteError, match=r"is Python 3\.7\.3; the runtime needs Python 3\.9 or newer"):
        run_remote(plan_dir, sshd.options(python=str(old)))


def _device_venv(path: Path, site: Path) -> Path:
    """A venv as the device would have it, made in a second: no ensurepip, packages seen through a .pth.

    `site` holds what the venv can import (pip at least); nothing is downloaded or copied.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    [site_packages] = path.glob("lib/python*/site-packages")
    (site_packages / "device.pth").write_text(f"{site}\n")
    return path


def test_venv_is_made_once_installed_offline_and_reused(sshd, plan_dir, tmp_path):
    import numpy
    site = Path(numpy.__file__).parent.parent  # this venv's site-packages: the pinned versions are there
    venv = _device_venv(tmp_path / "venv", site)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    opts = sshd.options(python=sys.executable, venv=str(venv), pip_args=("--no-index", "--find-links", str(wheels)))
    result, lines = _run(plan_dir, opts)
    assert result["artifacts"][0]["status"] == "ok" and result["remote"]["python"] == f"{venv}/bin/python"
    assert any("installing numpy==" in ln for ln in lines), lines
    assert "numpy==" in (venv / ".edgekit-requirements").read_text()
    opts.keep = True  # second run: nothing to install; the device's directory stays
    result, lines = _run(plan_dir, opts)
    assert not any("installing" in ln for ln in lines), lines
    kept = Path(result["remote"]["dir"])
    try:
        assert (kept / "result.json").is_file() and (kept / "plan" / "plan.json").is_file()
        assert (kept / "lib" / "edgekit_runtime" / "bench.py").is_file()
        assert list((kept / "lib" / "edgekit_runtime" / "__pycache__").glob("*.pyc"))  # compiled before the run
        assert result["artifacts"][0]["status"] == "ok"
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def test_no_wheel_for_the_device_is_one_clear_line(sshd, plan_dir, tmp_path):
    """pip offline with no wheels: the pinned version first, then the runtime's range, then one sentence."""
    import pip
    only_pip = tmp_path / "only-pip"
    only_pip.mkdir()
    (only_pip / "pip").symlink_to(Path(pip.__file__).parent)
    venv = _device_venv(tmp_path / "venv", only_pip)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    lines = []
    opts = sshd.options(python=sys.executable, venv=str(venv), pip_args=("--no-index", "--find-links", str(wheels)))
    with pytest.raises(RemoteError) as e:
        run_remote(plan_dir, opts, progress=lines.append)
    v = sys.version_info
    assert f"no wheel for numpy on {os.uname().machine} / Python {v.major}.{v.minor}" in str(e.value)
    assert any("trying numpy>=" in ln for ln in lines), lines
    assert not (venv / ".edgekit-requirements").exists()
    [work] = [ln.rsplit(" ", 1)[1] for ln in lines if "working in" in ln]
    assert not os.path.exists(work)  # cleaned up after a failure too


def test_venv_without_ensurepip_says_what_to_install(sshd, plan_dir, tmp_path):
    fake = tmp_path / "python3"
    fake.write_text(f"""#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
  echo "The virtual environment was not created successfully because ensurepip is not available." >&2; exit 1
fi
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    with pytest.raises(RemoteError, match=r"-m venv .* failed on the device .*install python3-venv"):
        run_remote(plan_dir, sshd.options(python=str(fake), venv=str(tmp_path / "venv")))


def test_device_requirements_pin_where_the_ranges_allow():
    reqs = {n: (p, f) for n, p, f in device_requirements(["litert"], "3.11.2", "aarch64", constraints_file())}
    pins = dict(ln.split("==") for ln in (constraints_file()).read_text().split() if "==" in ln)
    assert reqs["numpy"] == (f"numpy=={pins['numpy']}", "numpy>=1.23")
    assert reqs["ai-edge-litert"][0] == f"ai-edge-litert=={pins['ai-edge-litert']}"
    assert set(reqs) == {"numpy", "pillow", "ai-edge-litert"}
    # tflite-runtime needs numpy<2: the numpy 2 pin does not fit, so the range goes instead
    tfl = {n: p for n, p, _ in device_requirements(["tflite"], "3.9.2", "armv7l", constraints_file())}
    assert tfl["numpy"] in ("numpy<2,>=1.23", "numpy>=1.23,<2") and tfl["tflite-runtime"] == "tflite-runtime>=2.11"
    with pytest.raises(RemoteError, match="unknown runtime extra"):
        device_requirements(["cuda"], "3.11", "x86_64", None)


@pytest.mark.parametrize("text, expected", [
    ("pi@raspberrypi.local", Target("raspberrypi.local", "pi", None)),
    ("raspberrypi", Target("raspberrypi", None, None)),
    ("pi@10.0.0.7:2222", Target("10.0.0.7", "pi", 2222)),
    ("ssh://pi@host:22", Target("host", "pi", 22)),
    ("pi@[fe80::1%eth0]:2200", Target("fe80::1%eth0", "pi", 2200)),
    ("::1", Target("::1", None, None)),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


def test_parse_target_refuses_conflicts_and_junk():
    with pytest.raises(RemoteError, match="two different ports"):
        parse_target("pi@host:22", port=2222)
    for junk in ("", "pi@", "a b", "host:port", "-p", "pi@-oProxyCommand=x", "pi@host:99999"):
        with pytest.raises(RemoteError):
            parse_target(junk)


def test_ssh_failures_become_one_sentence():
    ssh = SshClient.__new__(SshClient)
    ssh.target, ssh.known_hosts, ssh.identity, ssh.connect_timeout = Target("pi.local", "pi"), Path("/kh"), None, 15
    for stderr, expected in [
        ("ssh: Could not resolve hostname pi.local: Name or service not known", "cannot resolve the host name"),
        ("ssh: connect to host pi.local port 22: Connection timed out", "did not answer within 15 s"),
        ("ssh: connect to host pi.local port 22: No route to host", "unreachable"),
        ("kex_exchange_identification: read: Connection reset by peer", "closed the connection before login"),
        ("something new", "ssh failed during the command: something new"),
    ]:
        msg = ssh.explain(stderr)
        assert expected in msg and msg.startswith("pi@pi.local: ") and "\n" not in msg
