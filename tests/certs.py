"""A throw-away self-signed certificate for the TLS tests (the gateway's HTTPS, the broker's
TLS listener), made by the openssl tool; a test without openssl is skipped (failed in CI)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import _require

#: The names the certificate is valid for: the loopback address, and the broker's host names
#: in the deployment's examples.
SUBJECT_ALT_NAMES = "IP:127.0.0.1,DNS:localhost,DNS:broker"


def self_signed(directory: Path, name: str = "cert") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 valid for a day and its unencrypted key, written to
    `directory` as NAME.crt and NAME.key; returns (certificate, key)."""
    _require(shutil.which("openssl") is not None, "needs openssl for a test certificate")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            f"subjectAltName={SUBJECT_ALT_NAMES}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
