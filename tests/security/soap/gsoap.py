"""Build the legacy NSA's gSOAP client (gsoap_client.cpp) from a served WSDL, the way a
toolkit user would: `wsdl2h` and `soapcpp2` with no options at all, then the C++ compiler.

Builds go into a temporary directory; a WSDL already built for (the same text, endpoint
address aside) is reused within the session.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("gsoap_client.cpp")
_BUILT: dict[str, Path] = {}
_ADDRESS = re.compile(rb'location="[^"]*"')


def tools_missing() -> str | None:
    """Why the client cannot be built here, or None."""
    for tool, package in (("wsdl2h", "gsoap"), ("soapcpp2", "gsoap"), ("c++", "g++")):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: {package})"
    if not Path("/usr/include/stdsoap2.h").exists():
        return "needs the gSOAP library and headers (Debian: libgsoap-dev)"
    return None


def fetch_wsdl(url: str, user: str | None = None, password: str | None = None) -> bytes:
    """GET `url?wsdl`, with HTTP Basic credentials when given (README: how a legacy NSA gets
    the WSDL when the gateway needs authentication)."""
    request = urllib.request.Request(f"{url}?wsdl")
    if user is not None and password is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        data: bytes = response.read()
    return data


@dataclass(frozen=True)
class Client:
    """The built client and what generated it (for the tests' assertions)."""

    binary: Path
    header: str  # wsdl2h's output: which SOAP version it chose shows here


def build(wsdl: bytes) -> Client:
    """wsdl2h, soapcpp2 (default options) and c++ in a temporary directory."""
    key = hashlib.sha256(_ADDRESS.sub(b"", wsdl)).hexdigest()
    workdir = _BUILT.get(key)
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="multinet-gsoap-"))
        (workdir / "gateway.wsdl").write_bytes(wsdl)
        shutil.copyfile(SOURCE, workdir / SOURCE.name)
        for argv in (
            ["wsdl2h", "gateway.wsdl"],  # writes gateway.h
            ["soapcpp2", "gateway.h"],
            [
                "c++",
                "-o",
                "gsoap_client",
                SOURCE.name,
                "soapC.cpp",
                "soapClient.cpp",
                "-lgsoap++",
            ],
        ):
            done = subprocess.run(
                argv, cwd=workdir, capture_output=True, text=True, timeout=300, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
        _BUILT[key] = workdir
    return Client(workdir / "gsoap_client", (workdir / "gateway.h").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Answer:
    """One run of the client: exit status and its printed lines."""

    code: int
    lines: list[str]
    text: str


def call(
    client: Client,
    endpoint: str,
    user: str | None,
    password: str | None,
    operation: str,
    mobile_router: str,
    *documents: Path,
) -> Answer:
    """Run the client once (USER "-": no credentials)."""
    argv = [str(client.binary), endpoint, user or "-", password or "-", operation, mobile_router]
    done = subprocess.run(
        [*argv, *(str(d) for d in documents)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    text = done.stdout + done.stderr
    return Answer(done.returncode, done.stdout.splitlines(), text)
