"""Benchmarking on a device over SSH: the OpenSSH transport (ssh.py) and the device session (session.py)."""
