"""A private mosquitto running the SHIPPED deploy/mosquitto configuration.

The test copy differs from the shipped file only where it must: the listener port (a free one,
on 127.0.0.1) and the paths of the password file, ACL, client-id rules, client-id plugin
(built from its shipped source for the test), persistence directory and, when the TLS listener
is switched on, its certificate files. Every other line, the ACL and the client-id rules
themselves are the shipped text.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.ports import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SHIPPED_CONF = DEPLOY / "mosquitto" / "mosquitto.conf"
SHIPPED_ACL = DEPLOY / "mosquitto" / "acl"
SHIPPED_CLIENTIDS = DEPLOY / "mosquitto" / "clientids"
PLUGIN_SOURCE = DEPLOY / "mosquitto" / "plugin" / "multinet_clientid.c"
PASSWD_HELPER = DEPLOY / "mosquitto" / "make_passwd.py"

_TLS_START = "# --- TLS listener"
_TLS_END = "# --- end of TLS listener"
_COMMENTED_DIRECTIVE = re.compile(r"^#([a-z_]+) (.*)$")


@dataclass(frozen=True)
class TlsFiles:
    """Where the test's certificate, key and CA are, and the TLS listener's port."""

    port: int
    certfile: Path
    keyfile: Path
    cafile: Path


def mosquitto_version() -> str:
    """`2.0.11` from the first line of `mosquitto -h`."""
    done = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    found = re.search(r"mosquitto version (\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "unknown"


def build_plugin(directory: Path) -> Path:
    """Compile the shipped client-id plugin into `directory` (needs cc and Debian's
    mosquitto-dev and libmosquitto-dev headers)."""
    target = directory / "multinet_clientid.so"
    done = subprocess.run(
        [
            "cc",
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(target),
            str(PLUGIN_SOURCE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot build {PLUGIN_SOURCE.name}:\n{done.stderr}")
    return target


def rewrite_conf(
    text: str, *, port: int, directory: Path, plugin: Path, tls: TlsFiles | None = None
) -> str:
    """The shipped configuration with the test's port and paths (and the TLS block on)."""
    paths = {
        "password_file": str(directory / "passwd"),
        "acl_file": str(directory / "acl"),
        "plugin": str(plugin),
        "plugin_opt_clientid_file": str(directory / "clientids"),
        "persistence_location": f"{directory / 'data'}/",
    }
    if tls is not None:
        paths |= {
            "certfile": str(tls.certfile),
            "keyfile": str(tls.keyfile),
            "cafile": str(tls.cafile),
        }
    listeners = {"1883": str(port)} | ({"8883": str(tls.port)} if tls is not None else {})
    rewritten: dict[str, int] = {}
    out: list[str] = []
    in_tls = False
    for shipped in text.splitlines():
        if shipped.startswith(_TLS_START):
            in_tls = True
        elif shipped.startswith(_TLS_END):
            in_tls = False
        commented = _COMMENTED_DIRECTIVE.match(shipped)
        line = shipped
        if in_tls and tls is not None and commented:
            line = f"{commented.group(1)} {commented.group(2)}"
        key, _, value = line.partition(" ")
        if key in paths:
            line = f"{key} {paths[key]}"
            rewritten[key] = rewritten.get(key, 0) + 1
        elif key == "listener" and value.split(" ")[0] in listeners:
            shipped_port = value.split(" ")[0]
            line = f"listener {listeners[shipped_port]} 127.0.0.1"
            rewritten[f"listener {shipped_port}"] = rewritten.get(f"listener {shipped_port}", 0) + 1
        out.append(line)
    expected = dict.fromkeys(paths, 1) | {f"listener {value}": 1 for value in listeners}
    assert rewritten == expected, (
        f"the shipped {SHIPPED_CONF.name} changed shape: rewrote {rewritten}, expected {expected}"
    )
    return "\n".join(out) + "\n"


@dataclass
class RunningBroker:
    """One mosquitto process and where its files are."""

    port: int
    tls: TlsFiles | None
    directory: Path
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        """What the broker printed (log_dest stdout)."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate (then kill) the broker and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _hand_to_broker_user(directory: Path) -> None:
    """Started as root, mosquitto drops to the `mosquitto` user before it reads the password
    file, the ACL and its persistence directory: give it the directory, as a deployment must."""
    if os.geteuid() != 0:
        return
    account = pwd.getpwnam("mosquitto")
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_broker(
    directory: Path,
    passwd: Path,
    plugin: Path,
    *,
    tls_certificate: tuple[Path, Path] | None = None,
    timeout_s: float = 10.0,
) -> RunningBroker:
    """Copy the shipped ACL and client-id rules and the given password file into `directory`,
    write the rewritten configuration there (with `plugin`, the built client-id plugin), start
    mosquitto and wait until it accepts connections.

    `tls_certificate` (a self-signed certificate and its key) switches the shipped TLS
    listener on, the certificate serving as its own CA.
    """
    port = free_port()
    shutil.copyfile(SHIPPED_ACL, directory / "acl")
    shutil.copyfile(SHIPPED_CLIENTIDS, directory / "clientids")
    # The broker loads it as its own user (after dropping root), from its own directory.
    shutil.copyfile(plugin, directory / plugin.name)
    shutil.copyfile(passwd, directory / "passwd")
    (directory / "data").mkdir()
    tls: TlsFiles | None = None
    if tls_certificate is not None:
        certfile, keyfile = directory / "broker.crt", directory / "broker.key"
        shutil.copyfile(tls_certificate[0], certfile)
        shutil.copyfile(tls_certificate[1], keyfile)
        tls = TlsFiles(port=free_port(), certfile=certfile, keyfile=keyfile, cafile=certfile)
    conf = directory / "mosquitto.conf"
    conf.write_text(
        rewrite_conf(
            SHIPPED_CONF.read_text(encoding="utf-8"),
            port=port,
            directory=directory,
            plugin=directory / plugin.name,
            tls=tls,
        ),
        encoding="utf-8",
    )
    _hand_to_broker_user(directory)
    log = directory / "broker.log"
    with log.open("wb") as out:
        # Line-buffered, so the log holds every line as soon as mosquitto writes it (stdio
        # would keep up to 4 KiB of a redirected stdout).
        process = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    broker = RunningBroker(port=port, tls=tls, directory=directory, process=process, log=log)
    deadline = time.monotonic() + timeout_s
    while not (_listening(port) and (tls is None or _listening(tls.port))):
        if process.poll() is not None or time.monotonic() > deadline:
            text = broker.log_text()
            broker.stop()
            raise RuntimeError(f"mosquitto did not start on port {port}:\n{text}")
        time.sleep(0.02)
    return broker
