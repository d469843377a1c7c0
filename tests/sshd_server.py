"""A real OpenSSH server on loopback for the `edge bench --host` tests (the `sshd` fixture in conftest)."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edgekit.benchmarks.remote.session import RemoteOptions

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


class Sshd:
    def __init__(self, root: Path, port: int, user: str, host_key: Path, user_key: Path):
        self.root, self.port, self.user, self.host_key, self.user_key = root, port, user, host_key, user_key
        self.known_hosts = root / "known_hosts"
        self.host_line = f"[127.0.0.1]:{port} " + " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts.write_text(self.host_line + "\n")

    def options(self, **kw) -> RemoteOptions:
        kw.setdefault("host", f"{self.user}@127.0.0.1")
        kw.setdefault("port", self.port)
        kw.setdefault("identity", self.user_key)
        kw.setdefault("known_hosts", self.known_hosts)
        kw.setdefault("ssh_config", Path(os.devnull))  # neither the user's nor the system's ssh config
        kw.setdefault("connect_timeout", 10)
        return RemoteOptions(**kw)


def start_sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 with throw-away host and user keys (a generator: yields Sshd, then stops it)."""
    if not os.path.exists(SSHD) or not shutil.which("ssh"):
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    root = tmp_path_factory.mktemp("sshd")
    host_key, user_key = _keygen(root / "host_ed25519"), _keygen(root / "user_ed25519")
    (root / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    if os.getuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755)  # sshd's privilege-separation directory (systemd makes it normally)
    port, user = _free_port(), pwd.getpwuid(os.getuid()).pw_name
    lines = [f"AllowUsers {user}", "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}",
             f"AuthorizedKeysFile {root / 'authorized_keys'}", "StrictModes no", "PidFile none", "UsePAM no",
             "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
             "AllowAgentForwarding no", "AllowTcpForwarding no", "X11Forwarding no", "PrintMotd no",
             "PerSourcePenaltyExemptList 127.0.0.1"]  # sshd >= 9.8 would otherwise penalise the failing logins
    config = root / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if "PerSourcePenaltyExemptList" in check.stderr:  # an older sshd does not know the option
        config.write_text("\n".join(lines[:-1]) + "\n")
    log = open(root / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()[-2000:]}")
        time.sleep(0.1)
    yield Sshd(root, port, user, host_key, user_key)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


