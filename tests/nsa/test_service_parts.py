"""The service's pure parts: settings, topic routes, the partition, call pairing, the
configuration store, the inbox and the gateway replies."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from services.contracts.errors import InvalidInput
from services.contracts.messages import Refusal
from services.contracts.policy import Install, Update
from services.contracts.topics import Topics
from services.nsa.core import acknowledge, new_ledgers, plan
from services.nsa.core.calls import Call, CallResult, pair
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.partition import owned, owner
from services.nsa.core.routes import InputKind, Routes
from services.nsa.core.settings import GatewayLink, NsaServiceSettings, RouterEntry
from services.nsa.delivery import DryRunDelivery, SoapDelivery, _reply
from services.nsa.inbox import Inbox
from services.nsa.settings import load_file
from tests.nsa.enginebed import nsa_settings
from tests.nsa.factories import HA_NODE, MR, MR_NODE, config, profile
from tests.nsa.test_plan import applied, assigned

REPO = Path(__file__).resolve().parents[2]


# --- settings -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"replica": 2, "replicas": 2}, "replica 2 is not below replicas 2"),
        ({"decision": {"scheme": 2}}, "set scheme in [nsa], not in [nsa.decision]"),
        ({"profiles": []}, "no application profiles"),
        ({"gateway": {"mode": "soap"}}, "mode soap needs the gateway's url"),
        ({"gateway": {"mode": "dry-run", "password": "x"}}, "a password needs its username"),
        ({"colour": "blue"}, "Extra inputs are not permitted"),
        (
            {"mobile_routers": [{"id": "a", "ha_node": "h", "mr_node": "m"}] * 2},
            "declared twice",
        ),
        (
            {
                "mobile_routers": [
                    {"id": "a", "ha_node": "h", "mr_node": "m"},
                    {"id": "b", "ha_node": "h", "mr_node": "m"},
                ]
            },
            "is the MR of 'a' and 'b'",
        ),
        ({"preferences": [{"classes": {"vidoe": {}}}]}, "unknown class named at"),
        ({"profiles_file": "p.toml"}, "give profiles or profiles_file, not both"),
    ],
)
def test_settings_refuse_what_cannot_work(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        nsa_settings(**change)


def test_the_files_a_settings_file_names_are_read_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "profiles.yaml").write_text(
        "profiles:\n  - name: video\n    selectors: [{next_header: 17}]\n"
    )
    (tmp_path / "parts" / "rules.toml").write_text(
        "[rules]\ndefault = { max_cost_per_mb = 0.5 }\nclasses = { video = { min_security = 2 } }\n"
    )
    (tmp_path / "secret").write_text("s3cret\n")
    path = tmp_path / "nsa.toml"
    path.write_text(
        "[nsa]\nscheme = 2\n"
        'mobile_routers = [{ id = "mr1", ha_node = "ha1", mr_node = "mr1" }]\n'
        'profiles_file = "parts/profiles.yaml"\nrules_file = "parts/rules.toml"\n'
        "[nsa.gateway]\n"
        'mode = "soap"\nurl = "http://gw:8080/"\nusername = "nsa"\npassword_file = "secret"\n'
    )
    loaded = load_file(path)
    assert [p.name for p in loaded.config.profiles] == ["video"]
    assert loaded.config.rules.rule_for("video").min_security == 2
    assert loaded.config.settings.scheme == 2, "the scheme comes from [nsa]"
    assert loaded.password is not None
    assert loaded.password.get_secret_value() == "s3cret"
    (tmp_path / "parts" / "rules.toml").write_text("[rules]\nclasses = { audio = {} }\n")
    with pytest.raises(InvalidInput, match=r"rules\.classes\.audio"):
        load_file(path)


@pytest.mark.parametrize("name", ["deploy/examples/nsa.toml", "deploy/config/nsa.toml"])
def test_the_shipped_settings_pass_check_config(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "check-config", str(REPO / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK (nsa)" in done.stdout


def test_check_config_names_the_key_of_an_nsa_problem(tmp_path: Path) -> None:
    path = tmp_path / "nsa.toml"
    path.write_text('[nsa]\nreplicas = 0\nmobile_routers = []\nprofiles = [{ name = "x" }]\n')
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "field nsa.replicas" in done.stderr
    assert "field nsa.mobile_routers" in done.stderr
    assert "field nsa.profiles.0.selectors" in done.stderr


# --- routes -------------------------------------------------------------------------------
ROUTERS = (
    RouterEntry(id="mr1", ha_node="ha1", mr_node="mrn1"),
    RouterEntry(id="mr2", ha_node="ha2", mr_node="mrn2"),
)


@pytest.mark.parametrize("per_router", [False, True])
def test_routes_sort_every_input_topic_built_by_topics(per_router: bool) -> None:
    topics = Topics("t/multinet/v1")
    routes = Routes(topics, ROUTERS[:1], per_router=per_router)
    cases = {
        topics.link_metrics("mrn1", "wlan0"): (InputKind.METRICS, "mr1"),
        topics.link_state("mrn1", "wlan0"): (InputKind.LINK_STATE, "mr1"),
        topics.node_metrics("mrn1"): (InputKind.NODE_METRICS, "mr1"),
        topics.binding_event("mr1", 2): (InputKind.BINDING, "mr1"),
        topics.preferences("mr1"): (InputKind.PREFERENCES, "mr1"),
        topics.operator_rules(): (InputKind.RULES, ""),
        topics.status("ha1"): (InputKind.STATUS, "ha1"),
        topics.presence("mrn1", "prem"): (InputKind.PRESENCE, "mrn1"),
    }
    for topic, expected in cases.items():
        raw = routes.route(topic, b"{}")
        assert raw is not None, topic
        assert (raw.kind, raw.key) == expected
    not_ours = [
        topics.link_metrics("mrn2", "wlan0"),  # another replica's router
        topics.node_metrics("mrn2"),
        topics.binding_event("mr2", 1),
        topics.status("ha2"),
        topics.presence("mrn1", "monitor"),  # another service of the node
        topics.policy("ha1"),
        topics.decision("mr1"),
        "other/multinet/v1/operator/rules",
    ]
    assert [routes.route(t, b"") for t in not_ours] == [None] * len(not_ours)


def test_a_partitioned_replica_subscribes_to_its_own_routers_only() -> None:
    topics = Topics("t/multinet/v1")
    wide = Routes(topics, ROUTERS)
    assert wide.metrics_filters() == [
        "t/multinet/v1/node/+/link/+/metrics",
        "t/multinet/v1/node/+/metrics",
    ]
    assert "t/multinet/v1/mr/+/binding/+" in wide.filters()
    own = Routes(topics, ROUTERS[:1], per_router=True)
    assert own.metrics_filters() == [
        "t/multinet/v1/node/mrn1/link/+/metrics",
        "t/multinet/v1/node/mrn1/metrics",
    ]
    assert set(own.filters()) == {
        "t/multinet/v1/operator/rules",
        "t/multinet/v1/node/mrn1/link/+/state",
        "t/multinet/v1/mr/mr1/binding/+",
        topics.preferences("mr1"),
        topics.pin("mr1"),  # operator pins: only its own routers'
        topics.status("ha1"),
        topics.status("mrn1"),
        topics.presence("ha1", "prem"),
        topics.presence("mrn1", "prem"),
    }


# --- partition ----------------------------------------------------------------------------
def test_the_partition_is_stable_and_covers_every_router_once() -> None:
    routers = [RouterEntry(id=f"mr{i}", ha_node=f"h{i}", mr_node=f"m{i}") for i in range(300)]
    shares = [owned(routers, 3, index) for index in range(3)]
    assert sorted(r.id for share in shares for r in share) == sorted(r.id for r in routers)
    assert all(70 < len(share) < 130 for share in shares), [len(s) for s in shares]
    # The same answer in any process: a known value, not Python's salted hash.
    assert [owner(f"mr{i}", 3) for i in range(6)] == [owner(f"mr{i}", 3) for i in range(6)]
    script = (
        "from services.nsa.core.partition import owner; "
        "print([owner(f'mr{i}', 3) for i in range(6)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == str([owner(f"mr{i}", 3) for i in range(6)])
    assert owner("anything", 1) == 0
    with pytest.raises(ValueError, match="at least 1"):
        owner("mr1", 0)


# --- calls --------------------------------------------------------------------------------
CFG = config(profile(ports=(5001, 5002)))


def test_two_updates_make_one_update_call() -> None:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    ledgers, messages = plan(ledgers, CFG, assigned(("video", (1, 1))))
    ledgers, call = pair(ledgers, CFG, assigned(("video", (1, 1))), messages, 1)
    assert call is not None
    assert call.operation == "install"
    assert call.uplink is not None
    assert (call.downlink.node, call.uplink.node) == (HA_NODE, MR_NODE)


def test_mixed_operations_become_two_installs_above_every_version() -> None:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    state = assigned(("video", (1, 1)))
    ledgers, messages = plan(ledgers, CFG, state)
    for message in messages:
        ledgers = acknowledge(ledgers, applied(message))
    ledgers = ledgers.model_copy(update={"mr": ledgers.mr.lost() if ledgers.mr else None})
    moved = assigned(("video", (2, 2)))
    ledgers, messages = plan(ledgers, CFG, moved)
    kinds = {m.node: m.operation.kind for m in messages}
    assert kinds == {HA_NODE: "update", MR_NODE: "install"}
    ledgers, call = pair(ledgers, CFG, moved, messages, 7)
    assert call is not None
    assert call.operation == "install"
    assert isinstance(call.downlink.operation, Install)
    assert call.uplink is not None
    assert isinstance(call.uplink.operation, Install)
    assert call.downlink.version > max(m.version for m in messages if m.node == HA_NODE)
    assert ledgers.ha.in_flight == call.downlink


def test_one_node_without_a_message_gets_a_harmless_install() -> None:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    state = assigned(("video", (1, 1)))
    ledgers, first = plan(ledgers, CFG, state)
    assert all(isinstance(m.operation, Install) for m in first)
    only_ha = tuple(m for m in first if m.node == HA_NODE)
    ledgers, call = pair(ledgers, CFG, state, only_ha, 2)
    assert call is not None
    assert call.uplink is not None
    assert isinstance(call.uplink.operation, Install)
    updates = assigned(("video", (2, 1)))
    assert not isinstance(call.downlink.operation, Update)
    assert pair(ledgers, CFG, updates, (), 3) == (ledgers, None)


# --- configuration store --------------------------------------------------------------------
def test_rules_naming_an_unknown_class_are_refused_and_the_old_ones_kept() -> None:
    store = ConfigStore(CFG)
    good = {"sender": "op", "rules": {"classes": {"video": {"max_cost_per_mb": 0.1}}}}
    store.set_rules(json.dumps(good).encode())
    assert store.config_for(MR).rules.rule_for("video").max_cost_per_mb == 0.1
    bad = {"sender": "op", "rules": {"classes": {"audio": {}}}}
    with pytest.raises(InvalidInput, match=r"rules\.classes\.audio"):
        store.set_rules(json.dumps(bad).encode())
    assert store.config_for(MR).rules.rule_for("video").max_cost_per_mb == 0.1
    store.set_rules(b"")
    assert store.config_for(MR).rules.rule_for("video").max_cost_per_mb is None


def test_a_routers_preferences_stay_its_own() -> None:
    store = ConfigStore(CFG)
    mine = {"sender": "op", "mobile_router": MR, "entries": [{"default": {"cost": 5}}]}
    store.set_preferences(MR, json.dumps(mine).encode())
    assert store.config_for(MR).weights_for(MR, CFG.profiles[0]).cost == 5
    assert store.config_for("mr2").weights_for("mr2", CFG.profiles[0]).cost == 1
    elsewhere = {**mine, "mobile_router": "mr2"}
    with pytest.raises(InvalidInput, match="the topic's router"):
        store.set_preferences(MR, json.dumps(elsewhere).encode())
    other = {**mine, "entries": [{"mobile_router": "mr2", "default": {"cost": 1}}]}
    with pytest.raises(InvalidInput, match="this document for 'mr1'"):
        store.set_preferences(MR, json.dumps(other).encode())


def test_a_reload_drops_overrides_that_name_a_removed_class() -> None:
    store = ConfigStore(config(profile(), profile("audio", ports=(6000,))))
    prefs = {"sender": "op", "mobile_router": MR, "entries": [{"classes": {"audio": {}}}]}
    store.set_preferences(MR, json.dumps(prefs).encode())
    dropped = store.set_base(CFG)
    assert dropped == [f"the retained preferences of {MR} (unknown class)"]
    assert store.config_for(MR).preferences == ()


# --- inbox --------------------------------------------------------------------------------
def test_the_inbox_drops_offers_beyond_its_bound_and_blocks_puts() -> None:
    inbox: Inbox[int] = Inbox(3)
    assert [inbox.offer(i) for i in range(5)] == [True, True, True, False, False]
    assert inbox.dropped == 2
    put = threading.Thread(target=inbox.put, args=(99,))
    put.start()
    put.join(0.2)
    assert put.is_alive(), "put waits for room"
    assert inbox.take(0, 2) == [0, 1]
    put.join(2)
    assert not put.is_alive()
    inbox.put_control(-1)  # past the bound
    assert inbox.take(0, 10) == [2, 99, -1]
    assert inbox.take(0.05, 10) == []
    assert inbox.offer_many([1, 2, 3, 4]) == 3
    assert inbox.dropped == 3


# --- delivery -------------------------------------------------------------------------------
def _call() -> Call:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    state = assigned(("video", (1, 1)))
    ledgers, messages = plan(ledgers, CFG, state)
    _, call = pair(ledgers, CFG, state, messages, 1)
    assert call is not None
    return call


def test_gateway_rows_become_replies() -> None:
    row = {
        "node": HA_NODE,
        "direction": "downlink",
        "outcome": "refused",
        "requested_version": 4,
        "version": 9,
        "reasons": {"Reason": [{"reason": "stale", "field": "version", "line": None}]},
    }
    reply = _reply(row)
    assert (reply.outcome, reply.requested_version, reply.version) == ("refused", 4, 9)
    assert reply.reasons == ("field version stale",)
    unreached = _reply({**row, "outcome": "not-reached", "version": None, "reasons": None})
    assert (unreached.outcome, unreached.version, unreached.reasons) == ("not-reached", None, ())
    assert Refusal(reason="x").reason == "x"


def test_the_dry_run_answers_applied_and_an_unreachable_gateway_an_error() -> None:
    results: list[CallResult] = []
    DryRunDelivery(results.append).deliver(_call())
    assert results[-1].applied
    assert [r.node for r in results[-1].replies] == [HA_NODE, MR_NODE]
    done = threading.Event()

    def record(result: CallResult) -> None:
        results.append(result)
        done.set()

    link = GatewayLink(mode="soap", url="http://127.0.0.1:9/", connect_timeout_s=1.0)
    delivery = SoapDelivery(link, None, record, lambda error: pytest.fail(str(error)))
    delivery.deliver(_call())
    assert done.wait(15)
    delivery.close()
    assert results[-1].error is not None
    assert "unreachable" in results[-1].error
    assert not results[-1].applied


def test_settings_model_is_the_check_config_section() -> None:
    from services.cli import SECTIONS

    assert SECTIONS["nsa"] is NsaServiceSettings
