"""Fixtures for the deployment tests: the broker users, made once with the shipped helper, and
a private mosquitto per test running the shipped configuration and ACL."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.contracts.messages import Envelope
from services.contracts.settings import BrokerSettings
from tests.conftest import _require
from tests.deploy import clientids
from tests.deploy.brokerproc import (
    PASSWD_HELPER,
    SHIPPED_CLIENTIDS,
    RunningBroker,
    build_plugin,
    mosquitto_version,
    start_broker,
)
from tests.deploy.probe import Probe

#: The helper's default users: the ACL's node users and roles.
USERS = ("ha1", "mr1", "mobility-ha", "nsa", "soap-gateway", "operator", "console")


def password_variable(user: str) -> str:
    """The deploy/.env name of a user's password (make_passwd.py, compose.yaml)."""
    return "MQTT_PASSWORD_" + user.upper().replace("-", "_")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY='value' lines, as make_passwd.py writes them."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key] = value.removeprefix("'").removesuffix("'")
    return values


@dataclass(frozen=True)
class Users:
    """The password file the helper wrote and each user's password."""

    passwd: Path
    passwords: dict[str, str]


@pytest.fixture(scope="session")
def broker_users(tmp_path_factory: pytest.TempPathFactory) -> Users:
    """Every default user with a random password, by deploy/mosquitto/make_passwd.py."""
    _require(shutil.which("mosquitto") is not None, "needs mosquitto (Debian: mosquitto)")
    _require(shutil.which("mosquitto_passwd") is not None, "needs mosquitto_passwd")
    directory = tmp_path_factory.mktemp("broker-users")
    passwd, env = directory / "passwd", directory / "env"
    done = subprocess.run(
        [sys.executable, str(PASSWD_HELPER), "--passwd", str(passwd), "--env", str(env)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    values = read_env_file(env)
    return Users(passwd, {user: values[password_variable(user)] for user in USERS})


@pytest.fixture(scope="session")
def clientid_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped client-id plugin, compiled once for the session."""
    _require(shutil.which("cc") is not None, "needs a C compiler for the client-id plugin")
    _require(
        Path("/usr/include/mosquitto_broker.h").exists()
        and Path("/usr/include/mosquitto.h").exists(),
        "needs the mosquitto plugin headers (Debian: mosquitto-dev, libmosquitto-dev)",
    )
    return build_plugin(tmp_path_factory.mktemp("clientid-plugin"))


@pytest.fixture(scope="session")
def broker_version() -> str:
    """The version of the mosquitto under test."""
    return mosquitto_version()


@dataclass
class SecuredBroker:
    """A running private broker and a way to connect to it as any user."""

    running: RunningBroker
    users: Users
    probes: list[Probe]
    #: Client ids handed out so far, so that two connections never share one.
    taken: set[str] = field(default_factory=set)

    def client_id(self, user: str | None) -> str:
        """A client id of `user` (deploy/mosquitto/clientids) no probe uses yet; for a user
        without any (anonymous, unknown), a fresh id of no one."""
        rules = clientids.load(SHIPPED_CLIENTIDS)
        choices = ids_for_user(rules, user)
        if user is not None and user in self.users.passwords:
            free = [c for c in choices if c not in self.taken]
            assert free, f"every client id of {user} is in use: {sorted(self.taken)}"
            self.taken.add(free[0])
            return free[0]
        return f"nobody-{uuid.uuid4().hex[:8]}"

    def settings(
        self, user: str | None, password: str | None = None, *, tls: bool = False
    ) -> BrokerSettings:
        """Client settings for `user` with its own password (or the one given), on the plain
        or (`tls`) the TLS listener."""
        if password is None and user is not None:
            password = self.users.passwords[user]
        if not tls:
            return BrokerSettings(port=self.running.port, username=user, password=password)
        assert self.running.tls is not None, "this broker has no TLS listener"
        return BrokerSettings(
            port=self.running.tls.port,
            username=user,
            password=password,
            tls=True,
            ca_file=self.running.tls.cafile,
        )

    def probe(
        self,
        user: str | None,
        password: str | None = None,
        *,
        tls: bool = False,
        will_topic: str | None = None,
        will: Envelope | None = None,
        client_id: str | None = None,
        persistent: bool = False,
    ) -> Probe:
        """A client, not connected yet, closed at teardown; its client id is one of its user's
        unless `client_id` is given."""
        settings = self.settings(user, password, tls=tls)
        probe = Probe(
            settings,
            client_id=client_id or self.client_id(user),
            will_topic=will_topic,
            will=will,
            persistent=persistent,
        )
        self.probes.append(probe)
        return probe

    def connect(self, user: str) -> Probe:
        """A connected client of `user` (its CONNACK must be a success)."""
        probe = self.probe(user)
        code = probe.connect()
        assert not code.is_failure, f"{user} refused: {code}\n{self.running.log_text()}"
        return probe


def ids_for_user(rules: list[clientids.Rule], user: str | None) -> list[str]:
    """The ids of `user` in `rules` (none for an anonymous client)."""
    return [] if user is None else clientids.ids_for(rules, user)


def _broker_directory() -> Path:
    """A directory the broker's own user can enter: pytest's base directory is private (0700)
    to root, and a root-started mosquitto reads its files as the `mosquitto` user."""
    return Path(tempfile.mkdtemp(prefix="multinet-acl-"))


@pytest.fixture
def make_secured_broker(
    broker_users: Users, clientid_plugin: Path
) -> Iterator[Callable[..., SecuredBroker]]:
    """Factory: start a private broker (optionally with the TLS listener on); all stopped at
    teardown, after their clients."""
    started: list[SecuredBroker] = []

    def make(*, tls_certificate: tuple[Path, Path] | None = None) -> SecuredBroker:
        running = start_broker(
            _broker_directory(),
            broker_users.passwd,
            clientid_plugin,
            tls_certificate=tls_certificate,
        )
        broker = SecuredBroker(running, broker_users, [])
        started.append(broker)
        return broker

    yield make
    for broker in started:
        for probe in broker.probes:
            probe.close()
        broker.running.stop()


@pytest.fixture
def secured_broker(make_secured_broker: Callable[..., SecuredBroker]) -> SecuredBroker:
    """A private broker with the shipped configuration and ACL, for one test."""
    broker: SecuredBroker = make_secured_broker()
    return broker
