"""The SSH transport of `edge bench --host`: the system's OpenSSH client, run with argument lists.

Every remote command is a fixed POSIX `sh` script written in this file, sent as `sh -c SCRIPT edgekit
ARG...` with each piece passed through shlex.quote: strings from the user (paths, interpreter names)
only ever arrive as the script's positional parameters, never as shell text. The host string is
checked against a strict pattern and given after `--`, so it can be neither shell text nor an ssh option.

Host keys are always verified (BatchMode, StrictHostKeyChecking=yes, or accept-new when asked: that
trusts an unknown host, never a changed key). One connection is shared by the session's commands
(ControlMaster in a private local directory), so a run costs one key exchange. ssh's failures (exit
code 255) become one RemoteError sentence the user can act on.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, List, NamedTuple, Optional, Sequence

from edgekit.errors import EdgeError

SSH_FAILED = 255
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")  # a name, an IPv4 address or an ssh_config alias
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%[A-Za-z0-9_.-]+)?")


class RemoteError(EdgeError):
    """The device could not be reached, refused us, or could not run the benchmark; one sentence."""


@dataclass(frozen=True)
class Target:
    host: str
    user: Optional[str] = None
    port: Optional[int] = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


def parse_target(text: str, port: Optional[int] = None) -> Target:
    """`host`, `user@host`, `user@host:port`, `user@[v6addr]:port` or `ssh://user@host:port`.

    Anything else (spaces, shell characters, a leading '-') is refused before ssh ever sees it.
    """
    rest = text.strip()
    bad = RemoteError(f"{text!r} is not a valid SSH destination; expected user@host, host or user@host:port.")
    if rest.startswith("ssh://"):
        rest = rest[6:].rstrip("/")
    user, at, host = rest.rpartition("@")
    if at and not _USER.fullmatch(user):
        raise RemoteError(f"{user!r} is not a valid user name for SSH (in {text!r}).")
    in_text = None
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", host)
    if m:
        host, in_text = m.group(1), m.group(2)
        if not _IPV6.fullmatch(host):
            raise bad
    elif host.count(":") == 1:
        host, in_text = host.split(":")
    if not (_HOST.fullmatch(host) or (host.count(":") >= 2 and _IPV6.fullmatch(host))):
        raise bad
    if in_text is not None:
        if not in_text.isdigit():
            raise bad
        if port is not None and int(in_text) != port:
            raise RemoteError(f"two different ports for {text!r}: {in_text} in the host and {port} given apart.")
        port = int(in_text)
    if port is not None and not 0 < int(port) < 65536:
        raise RemoteError(f"SSH port {port} is out of range (1-65535).")
    return Target(host=host, user=user or None, port=None if port is None else int(port))


def remote_command(script: str, args: Sequence[str]) -> str:
    """The one string ssh hands to the login shell: `sh -c SCRIPT edgekit ARG...`, every word quoted."""
    return " ".join(shlex.quote(str(w)) for w in ("sh", "-c", script, "edgekit", *args))


def _config_value(path: Path) -> str:
    """A path as an ssh -o value: ssh splits values on spaces and expands % tokens."""
    text = str(path).replace("%", "%%")
    if '"' in text:
        raise RemoteError(f"{path}: a path with a double quote cannot be given to ssh.")
    return f'"{text}"' if any(c.isspace() for c in text) else text


class Completed(NamedTuple):
    returncode: int
    stdout: bytes
    stderr: str


class SshClient:
    """Runs fixed scripts on one device; use as a context manager so the shared connection is closed."""

    def __init__(self, target: Target, *, identity: Optional[Path] = None, known_hosts: Optional[Path] = None,
                 accept_new_host_key: bool = False, ssh_config: Optional[Path] = None,
                 connect_timeout: float = 15, multiplex: bool = True):
        self.target = target
        self.identity = Path(identity).expanduser() if identity else None
        self.known_hosts = Path(known_hosts or "~/.ssh/known_hosts").expanduser().absolute()
        self.accept_new = accept_new_host_key
        self.ssh_config = ssh_config
        self.connect_timeout = max(1, int(round(connect_timeout)))
        self.multiplex = multiplex and os.name == "posix"
        self._control_dir: Optional[str] = None
        if shutil.which("ssh") is None:
            raise RemoteError("the OpenSSH client (ssh) is not installed here (apt-get install openssh-client).")
        if self.identity is not None and not self.identity.is_file():
            raise RemoteError(f"{self.identity}: SSH identity file not found.")
        if self.accept_new:  # ssh cannot record a new key in a directory that does not exist
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- the ssh command line ------------------------------------------------------------------
    def _options(self) -> List[str]:
        opts = {"BatchMode": "yes", "StrictHostKeyChecking": "accept-new" if self.accept_new else "yes",
                "UserKnownHostsFile": _config_value(self.known_hosts), "UpdateHostKeys": "no",
                "ConnectTimeout": str(self.connect_timeout), "ServerAliveInterval": "15",
                "ServerAliveCountMax": "4", "LogLevel": "ERROR", "ForwardAgent": "no", "ForwardX11": "no",
                "ClearAllForwardings": "yes", "RequestTTY": "no"}
        if self.identity is not None:
            opts["IdentitiesOnly"] = "yes"
        if self._control_dir is not None:
            opts.update(ControlMaster="auto", ControlPath=f"{self._control_dir}/cm", ControlPersist="60")
        argv = ["-F", str(self.ssh_config)] if self.ssh_config else []
        if self.identity is not None:
            argv += ["-i", str(self.identity)]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        if self.target.user:
            argv += ["-l", self.target.user]
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        return argv

    def argv(self, script: str, args: Sequence[str] = ()) -> List[str]:
        return ["ssh", "-T", *self._options(), "--", self.target.host, remote_command(script, args)]

    def __enter__(self) -> "SshClient":
        if self.multiplex:
            base = "/tmp" if os.path.isdir("/tmp") else None  # a socket path must stay short
            self._control_dir = tempfile.mkdtemp(prefix="edgekit-ssh-", dir=base)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._control_dir is None:
            return
        if os.path.exists(f"{self._control_dir}/cm"):
            try:
                subprocess.run(["ssh", *self._options(), "-O", "exit", "--", self.target.host],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=10, start_new_session=True)
            except (OSError, subprocess.SubprocessError):
                pass
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    # -- running a script ------------------------------------------------------------------------
    def run(self, script: str, args: Sequence[str] = (), *, timeout: float, what: str,
            send: Optional[Callable[[IO[bytes]], None]] = None,
            on_line: Optional[Callable[[str], None]] = None) -> Completed:
        """Run a script; ssh failures raise RemoteError, the script's own exit code is returned.

        `send` writes the script's stdin (then it is closed); otherwise stdin stays open until the
        script ends, so a script can notice (EOF) that the connection went away. `on_line` receives
        stderr line by line as it arrives. The ssh process has its own session: Ctrl-C reaches us,
        and we stop it, rather than ssh dying under us mid-write.
        """
        proc = subprocess.Popen(self.argv(script, args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        out: List[bytes] = []
        err: List[str] = []
        send_error: List[BaseException] = []

        def read_out() -> None:
            out.append(proc.stdout.read())

        def read_err() -> None:
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                err.append(line)
                if on_line is not None and line.strip():
                    on_line(line)

        def write_in() -> None:
            try:
                send(proc.stdin)
                proc.stdin.close()
            except (BrokenPipeError, OSError) as exc:  # ssh died: its stderr tells why
                send_error.append(exc)
            except BaseException as exc:  # a local problem (a file vanished): stop ssh, report it
                send_error.append(exc)
                proc.kill()

        threads = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
        if send is not None:
            threads.append(threading.Thread(target=write_in, daemon=True))
        for t in threads:
            t.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise RemoteError(f"{self.target}: {what} did not finish within {timeout:.0f} s (stopped).") from None
        except BaseException:
            _stop(proc)
            raise
        finally:
            for t in threads:
                t.join(5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
        stderr = "\n".join(err)
        if code == SSH_FAILED:
            raise RemoteError(self.explain(stderr, what))
        if send_error and not isinstance(send_error[0], OSError):
            raise send_error[0]
        return Completed(code, b"".join(out), stderr)

    # -- ssh's complaints as one sentence ----------------------------------------------------------
    def explain(self, stderr: str, what: str = "the command") -> str:
        t, kh = self.target, self.known_hosts
        port = t.port or 22
        pattern = f"[{t.host}]:{port}" if port != 22 else t.host
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "has changed and you have requested" in stderr:
            m = re.search(r'ssh-keygen -f "(.*?)" -R "(.*?)"', stderr)
            fix = f'ssh-keygen -f "{m.group(1)}" -R "{m.group(2)}"' if m else f'ssh-keygen -f "{kh}" -R "{pattern}"'
            return (f"{t}: the device's host key has CHANGED since it was recorded in {kh}, so the connection "
                    f"was refused: this may be a man-in-the-middle attack. Only if you know the device was "
                    f"reinstalled or re-keyed, remove the old key with `{fix}` and add the new one after "
                    f"checking its fingerprint (--accept-new-host-key never overrides a changed key).")
        if "Host key verification failed" in stderr or "host key is known for" in stderr:
            return (f"{t}: the device's host key is not in {kh}, so it cannot be verified. Check the "
                    f"fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then add "
                    f"it with `ssh-keyscan -p {port} {t.host} >> {kh}` (compare `ssh-keygen -lf {kh}`), "
                    f"or pass --accept-new-host-key to trust a first-seen key.")
        if "Permission denied" in stderr or "Too many authentication failures" in stderr:
            key = f"the key {self.identity}" if self.identity else "your SSH key"
            return (f"{t}: authentication failed (wrong user name or key): check the user and that {key} is "
                    f"in that user's ~/.ssh/authorized_keys on the device (ssh-copy-id).")
        if "Could not resolve hostname" in stderr:
            return f"{t}: cannot resolve the host name {t.host!r}."
        if "Connection refused" in stderr:
            return (f"{t}: connection refused on port {port}: is the SSH server running on the device, "
                    f"and is that its port?")
        if re.search(r"timed out|Operation timed out", stderr):
            return (f"{t}: the device did not answer within {self.connect_timeout} s (connection timed out): "
                    f"is it switched on and reachable from here?")
        if re.search(r"No route to host|Network is unreachable|Host is unreachable", stderr):
            return f"{t}: the device is unreachable (no route to host)."
        if re.search(r"kex_exchange_identification|Connection closed by|Connection reset", stderr):
            return f"{t}: the device closed the connection before login ({_last(stderr)})."
        return f"{t}: ssh failed during {what}: {_last(stderr) or 'no message (exit code 255)'}."


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1].rstrip(".") if lines else ""


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
