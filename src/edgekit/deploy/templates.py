"""The texts `edge pack` writes into every bundle: install.sh and README.txt (bundle.py is copied as it is)."""

INSTALL_SH = """#!/bin/sh
# Installs edgekit-runtime[{extra}] from ./wheels into ./venv with pip alone (no network), then runs the
# smoke test. PYTHON=/usr/bin/python{python} picks the interpreter (default: python3).
#   --trust ALLOWED_SIGNERS   refuse the bundle unless pack.json carries a good signature by the signer's key
#                             in that file (ssh-keygen -Y verify; see README.txt), before anything else runs
#   --verify-only             stop after the checks: signature, this machine, every file's sha256
set -eu
SIGNER='{signer}'   # edge pack --sign: the name allowed_signers lists the key under; empty: not signed
USAGE="usage: install.sh [--trust ALLOWED_SIGNERS] [--verify-only]"
TRUST=""; TRUSTING=""; VERIFY_ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --trust) [ $# -ge 2 ] || {{ echo "install.sh: --trust needs a file; $USAGE" >&2; exit 2; }}
             TRUSTING=1; TRUST="$2"; shift 2 ;;
    --trust=*) TRUSTING=1; TRUST="${{1#--trust=}}"; shift ;;
    --verify-only) VERIFY_ONLY=1; shift ;;
    -h|--help) echo "$USAGE"; exit 0 ;;
    *) echo "install.sh: unknown option '$1'; $USAGE" >&2; exit 2 ;;
  esac
done
if [ -n "$TRUSTING" ]; then
  case "$TRUST" in /*) ;; *) TRUST="$PWD/$TRUST" ;; esac   # relative to where it was typed, before the cd
  if [ ! -f "$TRUST" ] || [ ! -r "$TRUST" ]; then
    echo "install.sh: --trust $TRUST: no such readable file (an allowed_signers file: see README.txt)" >&2; exit 2
  fi
fi
cd "$(dirname "$0")"
# who made the bundle comes first: whatever runs before this check would run unchecked
if [ -n "$TRUSTING" ]; then
  if ! command -v ssh-keygen >/dev/null 2>&1; then
    echo "install.sh: --trust needs ssh-keygen (OpenSSH 8.1 or later): sudo apt install openssh-client" >&2; exit 2
  fi
  if [ -z "$SIGNER" ] || [ ! -f pack.json.sig ] || [ ! -f pack.json ]; then
    echo "install.sh: refusing to install: the bundle is not signed, and --trust asks for a signed one (edge pack --sign KEY)" >&2
    exit 2
  fi
  if ! SAID=$(ssh-keygen -Y verify -f "$TRUST" -I "$SIGNER" -n {namespace} -s pack.json.sig < pack.json 2>&1); then
    WHY=$(printf '%s\\n' "$SAID" | tr -d '\\r' | grep -v '^Could not verify signature' | head -n 1)   # its lines end in CR LF
    echo "install.sh: refusing to install: pack.json has no good signature by a key of $SIGNER in $TRUST${{WHY:+ ($WHY)}}" >&2
    exit 2
  fi
  echo "install.sh: $(printf '%s\\n' "$SAID" | tr -d '\\r' | grep '^Good' | head -n 1)"
elif [ -f pack.json.sig ]; then
  echo "install.sh: warning: the bundle is signed by $SIGNER but nothing checked it: pass --trust ALLOWED_SIGNERS" >&2
else
  echo "install.sh: warning: the bundle is not signed: its sha256 list catches damage, not deliberate changes" >&2
fi
PY="${{PYTHON:-python3}}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "install.sh: no $PY on this machine; install Python {python} (Raspberry Pi OS: sudo apt install python3-venv)" >&2
  exit 2
fi
# -I everywhere: nothing beside bundle.py (a planted json.py, venv/ or pip/) is imported from this folder
"$PY" -I bundle.py verify
if [ -n "$VERIFY_ONLY" ]; then exit 0; fi
rm -rf venv   # built afresh each time, so a venv/ that came inside the bundle never runs
"$PY" -I -m venv venv || {{ rm -rf venv; echo "install.sh: '$PY -m venv' failed; on Debian or Raspberry Pi OS: sudo apt install python3-venv" >&2; exit 2; }}
venv/bin/python -I -m pip install --quiet --disable-pip-version-check --no-index --find-links wheels "edgekit-runtime[{extra}]"
venv/bin/python -I bundle.py smoke
echo "installed. Classify images with: $(pwd)/venv/bin/edge-run predict $(pwd)/model IMAGE..."
"""

README = """{name}

An edgekit bundle: the {artifact} artifact (model/, with labels.txt and preprocess.json), the wheels of
edgekit-runtime with the {engine} engine for {target} and Python {python} (wheels/), and sample images.

  ./install.sh                          checks the bundle, installs into ./venv without network, runs the smoke test
  ./install.sh --trust ALLOWED_SIGNERS  the same, after refusing a bundle without a good signature by a key in that file
  ./install.sh --verify-only            the checks alone
  venv/bin/edge-run predict model IMAGE...

pack.json lists every file with its sha256, the samples with the answers recorded at pack time, and how
the artifact was chosen. install.sh refuses a bundle with a file that differs from pack.json or that pack.json
does not list. That catches damage (a broken download, a failing SD card), not deliberate changes: whoever can
change a file can change pack.json too.

{signed}
"""

SIGNED = """This bundle is signed by {signer}: pack.json.sig is pack.json's SSH signature
(namespace {namespace}), and since pack.json covers every file it covers the whole bundle. ALLOWED_SIGNERS is a
file with one line per trusted key (ssh-keygen(1), ALLOWED SIGNERS), here:

    {line}

install.sh --trust checks the signature first, but a changed install.sh could skip that: for a bundle that
came by a channel you do not trust, check it yourself before running anything in it:

    ssh-keygen -Y verify -f ALLOWED_SIGNERS -I {signer} -n {namespace} -s pack.json.sig < pack.json
    sha256sum install.sh bundle.py; grep -E '"(install.sh|bundle.py)"' pack.json   # the same digests
"""

UNSIGNED = "This bundle is not signed (edge pack --sign KEY signs one, and install.sh --trust checks it)."
