"""`edge pack --sign KEY`: pack.json signed with an SSH key, which `install.sh --trust ALLOWED_SIGNERS` checks.

pack.json lists every file of the bundle with its sha256 and bundle.py refuses any file it does not list, so a
good signature on pack.json vouches for the whole bundle. ssh-keygen -Y sign/verify (OpenSSH 8.1 and later)
is what every board already has, and an allowed_signers file is a plain list of trusted keys (ssh-keygen(1),
"ALLOWED SIGNERS"). The signer's name is baked into install.sh (and recorded in pack.json), since
`ssh-keygen -Y verify` needs the identity to look the key up under.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgekit.deploy import bundle
from edgekit.errors import EdgeError

NAMESPACE = "edgekit-bundle"   # a signature made for anything else (git commits, files) does not verify here
SIGNATURE = bundle.SIGNATURE
# install.sh holds the name between single quotes, and allowed_signers reads commas and wildcards as patterns
SIGNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")


@dataclass(frozen=True)
class Signing:
    key: Path
    signer: str                   # the principal devices list the key under in their allowed_signers file
    public: Optional[str] = None  # "ssh-ed25519 AAAA…", when KEY.pub is there to read


def _keygen() -> str:
    found = shutil.which("ssh-keygen")
    if not found:
        raise EdgeError("--sign needs ssh-keygen (OpenSSH 8.1 or later); on Debian or Ubuntu: "
                        "sudo apt install openssh-client.")
    return found


def _public(key: Path) -> Optional[str]:
    """The public key line beside a private key (KEY.pub), or KEY itself when it is one (a key in ssh-agent)."""
    for path in (key.with_name(key.name + ".pub"), key) if key.suffix != ".pub" else (key,):
        try:
            line = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if line.startswith(("ssh-", "ecdsa-", "sk-")) and "\n" not in line and len(line.split()) >= 2:
            return line
    return None


def prepare(key: Path, signer: Optional[str]) -> Signing:
    """Checked before packing starts, so a wrong --sign is one line rather than minutes of wasted work."""
    key = Path(key).expanduser()
    if not key.is_file():
        raise EdgeError(f"--sign {key}: no such key file (an SSH private key, e.g. ~/.ssh/id_ed25519).")
    tool = _keygen()
    res = subprocess.run([tool, "-l", "-f", str(key)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise EdgeError(f"--sign {key}: ssh-keygen cannot read it as an SSH key "
                        f"({(res.stderr.strip().splitlines() or ['no reason given'])[-1]}).")
    public = _public(key)
    if signer is None:
        # the key's comment (often user@host): from KEY.pub, since `ssh-keygen -l` shows a file name for none
        comment = " ".join(public.split()[2:]) if public else " ".join(res.stdout.split()[2:-1])
        if not comment:
            raise EdgeError(f"--sign {key}: the key has no comment to name its signer; pass --signer NAME, the "
                            "name devices list the key under in their allowed_signers file.")
        signer = comment
    if not SIGNER_NAME.fullmatch(signer):
        raise EdgeError(f"signer name {signer!r} is not usable: letters, digits and . _ @ + - only (at most 100); "
                        "pass --signer NAME.")
    return Signing(key, signer, " ".join(public.split()[:2]) if public else None)


def sign(path: Path, signing: Signing) -> Path:
    """path.sig next to path. stdin stays the terminal's: ssh-keygen asks there for a key's passphrase."""
    sig = path.with_name(path.name + ".sig")
    res = subprocess.run([_keygen(), "-Y", "sign", "-f", str(signing.key), "-n", NAMESPACE, str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0 or not sig.is_file():
        tail = [ln for ln in res.stderr.strip().splitlines() if ln.strip()][-1:] or ["no signature written"]
        raise EdgeError(f"ssh-keygen could not sign with {signing.key}: {tail[0]}")
    return sig


def allowed_signers_line(signing: Signing) -> Optional[str]:
    """The line a device's allowed_signers file needs to trust this key for bundles only."""
    if signing.public is None:
        return None
    return f'{signing.signer} namespaces="{NAMESPACE}" {signing.public}'
