"""Client ids are bound to broker users (deploy/mosquitto/clientids, enforced by the
multinet_clientid plugin): nobody can take over another client's session.

Each test runs a private mosquitto with the shipped configuration and real clients: the
services' own MQTT 5 client and mosquitto's command-line clients. Without the binding,
connecting as `mr1` with the HA worker's client id closes the worker's connection, takes its
session and, since the ACL then filters every message for the wrong user, loses the policy
documents queued in it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services import bus
from services.contracts.topics import DEFAULT_ROOT, Topics
from tests.conftest import _require
from tests.deploy import clientids
from tests.deploy.brokerproc import SHIPPED_CLIENTIDS
from tests.deploy.conftest import USERS, SecuredBroker
from tests.deploy.probe import NOT_AUTHORIZED, Received

pytestmark = pytest.mark.broker

T = Topics()
RULES = clientids.load(SHIPPED_CLIENTIDS)


def cid(service: str, node: str) -> str:
    """The client id the service computes for itself (services/bus.py)."""
    return bus.client_id(service, node, DEFAULT_ROOT)


#: (broker user, client id) of every connection of the shipped deployment (deploy/compose.yaml
#: and deploy/config): the node users' PREM workers, the MR's monitor and own mobility_events,
#: the HA's mobility_events and MCoA agent, an NSA replica's two connections, the gateway,
#: the operator console.
SERVICE_IDS: list[tuple[str, str]] = [
    ("ha1", cid("prem", "ha1")),
    ("mr1", cid("prem", "mr1")),
    ("mr1", cid("monitor", "mr1")),
    ("mr1", cid("mobility-events", "mr1")),
    ("mobility-ha", cid("mobility-events", "ha1")),
    ("mobility-ha", cid("mcoa-ha", "ha1")),
    ("nsa", cid("nsa", "nsa-1")),
    ("nsa", cid("nsa-metrics", "nsa-1")),
    ("soap-gateway", cid("soap-gateway", "soap-gateway")),
    ("console", cid("console", "console")),
]


def test_the_shipped_rules_use_the_services_tag_for_the_default_root() -> None:
    tag = cid("x", "y").rsplit("-", 1)[1]
    for rule in RULES:
        if not rule.clientid.endswith("*"):
            assert rule.clientid.endswith(f"-{tag}"), f"{rule}: not the tag of {DEFAULT_ROOT}"


@pytest.mark.parametrize(("user", "client_id"), SERVICE_IDS)
def test_each_service_may_use_its_own_client_id_and_no_other_user_may(
    user: str, client_id: str
) -> None:
    assert clientids.allowed(RULES, user, client_id)
    others = [other for other in USERS if other != user]
    assert [o for o in others if clientids.allowed(RULES, o, client_id)] == []


def test_every_user_connects_with_its_own_ids_and_is_refused_with_anyone_elses(
    secured_broker: SecuredBroker,
) -> None:
    owned = {user: clientids.ids_for(RULES, user) for user in USERS}
    for user, ids in owned.items():
        for client_id in ids:
            probe = secured_broker.probe(user, client_id=client_id)
            assert not probe.connect().is_failure, f"{user} as {client_id}"
            probe.close()
        for other, theirs in owned.items():
            for client_id in theirs if other != user else []:
                code = secured_broker.probe(user, client_id=client_id).connect()
                assert code.value == NOT_AUTHORIZED, f"{user} took {other}'s id {client_id}"
    # A random id (what mosquitto_pub and most clients pick by default) is nobody's.
    assert secured_broker.probe("mr1", client_id="mosq-3fZd0vQmTn").connect().value == (
        NOT_AUTHORIZED
    )


def _mosquitto_cli(
    secured_broker: SecuredBroker, tool: str, user: str, client_id: str, *args: str
) -> subprocess.CompletedProcess[str]:
    _require(shutil.which(tool) is not None, f"needs {tool} (Debian: mosquitto-clients)")
    argv = [tool, "-h", "127.0.0.1", "-p", str(secured_broker.running.port), "-V", "mqttv5"]
    argv += ["-u", user, "-P", secured_broker.users.passwords[user], "-i", client_id, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


def test_a_takeover_is_refused_and_the_victims_queued_document_is_delivered(
    secured_broker: SecuredBroker,
) -> None:
    victim_id = cid("prem", "ha1")
    worker = secured_broker.probe("ha1", client_id=victim_id, persistent=True)
    assert not worker.connect().is_failure
    worker.subscribe(T.policy("ha1"))
    worker.close()  # offline, its session (and the subscription) kept by the broker
    nsa = secured_broker.connect("nsa")
    assert not nsa.publish(T.policy("ha1"), b"queued-document").is_failure

    # mr1 and the operator try to become the worker: mosquitto's own clients, then paho.
    sub = _mosquitto_cli(
        secured_broker, "mosquitto_sub", "mr1", victim_id, "-c", "-q", "1", "-t", T.policy("ha1")
    )
    pub = _mosquitto_cli(
        secured_broker, "mosquitto_pub", "mr1", victim_id, "-t", T.status("ha1"), "-m", "x"
    )
    for done in (sub, pub):
        assert done.returncode != 0
        assert "not authori" in (done.stdout + done.stderr).lower(), done
    paho = secured_broker.probe("operator", client_id=victim_id, persistent=True)
    assert paho.connect().value == NOT_AUTHORIZED

    assert worker.connect().is_failure is False
    assert worker.wait_for(b"queued-document") == [Received(T.policy("ha1"), b"queued-document")]
    log = secured_broker.running.log_text()
    for user in ("mr1", "operator"):
        assert f"client id '{victim_id}' does not belong to user '{user}'" in log, log


def test_a_takeover_attempt_does_not_disconnect_the_victim(
    secured_broker: SecuredBroker,
) -> None:
    victim_id = cid("prem", "mr1")
    worker = secured_broker.probe("mr1", client_id=victim_id, persistent=True)
    assert not worker.connect().is_failure
    worker.subscribe(T.policy("mr1"))
    attempt = _mosquitto_cli(
        secured_broker, "mosquitto_sub", "ha1", victim_id, "-t", T.policy("mr1"), "-W", "2"
    )
    assert attempt.returncode != 0
    assert not secured_broker.connect("nsa").publish(T.policy("mr1"), b"still-mine").is_failure
    assert worker.wait_for(b"still-mine") == [Received(T.policy("mr1"), b"still-mine")]
    assert not worker.disconnected


def test_rules_are_reloaded_on_sighup_and_a_broken_file_keeps_the_old_rules(
    secured_broker: SecuredBroker,
) -> None:
    rules = secured_broker.running.directory / "clientids"
    shipped = rules.read_text(encoding="utf-8")
    rules.write_text(shipped + "\nuser mr1\nclientid mr1-extra\n", encoding="utf-8")
    secured_broker.running.process.send_signal(signal.SIGHUP)
    probe = secured_broker.probe("mr1", client_id="mr1-extra")
    _eventually(lambda: not probe.connect().is_failure, "the new rule applies after SIGHUP")
    probe.close()

    rules.write_text(shipped + "\nbogus line here\n", encoding="utf-8")
    secured_broker.running.process.send_signal(signal.SIGHUP)
    _eventually(
        lambda: "reload failed; keeping the previous rules" in secured_broker.running.log_text(),
        "the broken file is reported",
    )
    again = secured_broker.probe("mr1", client_id="mr1-extra")
    assert not again.connect().is_failure, "the rules loaded before stay"
    assert secured_broker.running.process.poll() is None


def _eventually(condition: Callable[[], bool], what: str, deadline_s: float = 5.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_broker_does_not_start_with_a_broken_rules_file(clientid_plugin: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="multinet-clientids-"))
    try:
        directory.chmod(0o755)
        (directory / "clientids").write_text("user mr1\nclientid prem-*-x\n", encoding="utf-8")
        # mosquitto loads plugins after dropping root: everything readable by its user.
        plugin = directory / clientid_plugin.name
        shutil.copyfile(clientid_plugin, plugin)
        conf = directory / "mosquitto.conf"
        conf.write_text(
            "listener 0 127.0.0.1\nallow_anonymous false\n"
            f"plugin {plugin}\nplugin_opt_clientid_file {directory / 'clientids'}\n",
            encoding="utf-8",
        )
        for path in directory.iterdir():
            path.chmod(0o644)
        done = subprocess.run(
            ["mosquitto", "-c", str(conf)], capture_output=True, text=True, timeout=10, check=False
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert done.returncode != 0
    assert "clientids:2: 'prem-*-x' has a '*' that is not the last character" in done.stderr
