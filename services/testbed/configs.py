"""The settings file of every service of a run, generated from the addressing plan (pure).

Each function returns the file's content as a mapping; `write` stores it as YAML (the
settings loader reads YAML as well as TOML) in the run directory, where it stays beside the
service's log for inspection. Every file carries the run's own broker section: a unique topic
root per run, so runs sharing the broker never see each other, and a short session expiry, so
a finished run's sessions do not linger on the broker.

The NSA's file (`nsa_settings`) follows the `[nsa]` table of the NSA service being built
beside this one (`services.nsa.core.settings.NsaServiceSettings`: name, mobile routers, the
gateway, the decision settings, profiles, initial preferences and rules); it is the one place
to adapt if that table changes before the service lands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.nsa.core import NsaConfig
from services.testbed import addressing as a

SESSION_EXPIRY_S = 300
NSA_NODE = "nsa"
MONITOR_INTERVAL_S = 0.5


@dataclass(frozen=True)
class RunSettings:
    """What the files of one run share."""

    run_dir: Path
    topic_root: str
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    soap_port: int = 8080
    backend: str = "nftables"
    pipe: str = "vxlan"
    #: HOST:PORT of the operator console (`--console`); None: no console this run.
    console_listen: str | None = None

    @property
    def gateway_url(self) -> str:
        """Where the SOAP gateway answers (its WSDL is at `?wsdl`)."""
        return f"http://127.0.0.1:{self.soap_port}/"

    def broker(self) -> dict[str, Any]:
        """The `[broker]` table every service reads."""
        return {
            "host": self.broker_host,
            "port": self.broker_port,
            "topic_root": self.topic_root,
            "session_expiry_s": SESSION_EXPIRY_S,
        }


def prem(run: RunSettings, role: str) -> dict[str, Any]:
    """A PREM worker: the HA judges a BID by its table alone (a pipe may leave by any AR
    link), the MR by its egress device as well (carrier loss: local fallback at once)."""
    node = a.HA_NODE if role == "ha" else a.MR_NODE
    bids: list[dict[str, Any]] = [
        {"bid": link.bid} if role == "ha" else {"bid": link.bid, "interface": link.interface}
        for link in a.MR_LINKS
    ]
    return {
        "prem": {
            "node": node,
            "role": role,
            "mobile_router": a.MOBILE_ROUTER,
            "backend": run.backend,
            "table_base": a.TABLE_BASE,
            "state_file": str(run.run_dir / "state" / f"prem-{node}.json"),
            "bids": bids,
        },
        "broker": run.broker(),
    }


def mcoa(run: RunSettings, role: str) -> dict[str, Any]:
    """An MCoA agent: the HA serves mr1; the MR registers one BID per access link."""
    if role == "ha":
        section: dict[str, Any] = {
            "node": a.HA_NODE,
            "role": "ha",
            "pipe": run.pipe,
            "table_base": a.TABLE_BASE,
            "ha": {
                "ha_address": a.HA_ADDRESS,
                "mobile_routers": [
                    {"id": a.MOBILE_ROUTER, "home_address": a.MR_HOME, "prefixes": [a.MNP]}
                ],
            },
        }
    else:
        section = {
            "node": a.MR_NODE,
            "role": "mr",
            "pipe": run.pipe,
            "table_base": a.TABLE_BASE,
            "mr": {
                "mr_id": a.MOBILE_ROUTER,
                "home_address": a.MR_HOME,
                "ha_address": a.HA_ADDRESS,
                "prefixes": [a.MNP],
                "lifetime": 60,
                "links": [
                    {
                        "interface": link.interface,
                        "bid": link.bid,
                        "priority": link.priority,
                        "gateway": a.AR_LINK_LOCAL,
                    }
                    for link in a.MR_LINKS
                ],
            },
        }
    return {"mcoa": section, "broker": run.broker()}


def mobility_events(run: RunSettings) -> dict[str, Any]:
    """Binding events from the BUs and BAs the HA sees."""
    return {
        "mobility_events": {
            "node": a.HA_NODE,
            "mobile_routers": [{"id": a.MOBILE_ROUTER, "prefixes": [a.MNP]}],
            "handover_started_on_new_coa": True,
        },
        "broker": run.broker(),
    }


#: Where each access router's probe responder listens (UDP probes of a scenario's `monitor`).
PROBE_PORT = 50007


def monitor(
    run: RunSettings,
    traces: dict[str, Path] | None = None,
    watch: Mapping[Any, Any] | None = None,
) -> dict[str, Any]:
    """The MR's link monitor: ICMPv6 probes to the AR (its link-local address, the same on
    every AR, so a handover does not change the target), optional radio traces per link.
    `watch` (a scenario's `monitor`: per link a MonitorLink) may make a link protected, give
    it brownout thresholds, or probe it by UDP to the AR's probe responder instead."""
    links = []
    for link in a.MR_LINKS:
        how = (watch or {}).get(link.interface)
        entry: dict[str, Any] = {
            "interface": link.interface,
            "bid": link.bid,
            "technology": link.technology,
            "cost_per_mb": 0.0 if link.technology == "wlan" else 0.02,
            "probe": {"kind": "icmp", "target": a.AR_LINK_LOCAL},
        }
        if how is not None:
            entry["protected"] = how.protected
            if how.probe == "udp":
                entry["probe"] = {"kind": "udp", "target": a.AR_LINK_LOCAL, "port": PROBE_PORT}
            for key in ("brownout_delay_ms", "brownout_loss"):
                if getattr(how, key) is not None:
                    entry[key] = getattr(how, key)
        trace = (traces or {}).get(link.interface)
        if trace is not None:
            entry["radio"] = "trace"
            entry["trace"] = {"file": str(trace), "speed": 1.0, "loop": False}
        links.append(entry)
    return {
        "monitor": {
            "node": a.MR_NODE,
            "interval_s": MONITOR_INTERVAL_S,
            "probe_timeout_s": 1.0,
            "publish": {"period_s": 1.0},
            "links": links,
        },
        "broker": run.broker(),
    }


def soap_gateway(run: RunSettings) -> dict[str, Any]:
    """The gateway on localhost, without callers (authentication off: a closed lab)."""
    return {
        "soap_gateway": {
            "host": "127.0.0.1",
            "port": run.soap_port,
            "ack_deadline_s": 5.0,
            "mobile_routers": [{"id": a.MOBILE_ROUTER, "ha_node": a.HA_NODE, "mr_node": a.MR_NODE}],
        },
        "broker": run.broker(),
    }


CONSOLE_NODE = "console"
CONSOLE_USER = "operator"


def console(run: RunSettings, password_hash: str) -> dict[str, Any]:
    """The operator console on the operator side: one user, `operator`, whose password was
    generated for this run (only its hash is written here; the password goes to the
    terminal). Its intervals are the shipped defaults; its history holds the run's routers."""
    if run.console_listen is None:
        raise ValueError("this run has no console (console_listen is None)")
    return {
        "console": {
            "name": CONSOLE_NODE,
            "listen": run.console_listen,
            "users": {CONSOLE_USER: {"role": "operator", "password_hash": password_hash}},
        },
        "broker": run.broker(),
    }


def nsa_settings(run: RunSettings, config: NsaConfig) -> dict[str, Any]:
    """The NSA service's file: the scenario's decision configuration, delivered through the
    run's gateway. The start-up hold is short: the NSA starts before the MR registers, so
    binding events follow within seconds."""
    data = config.model_dump(mode="json")
    decision = {k: v for k, v in data["settings"].items() if k != "scheme"}
    return {
        "nsa": {
            "name": NSA_NODE,
            "scheme": data["settings"]["scheme"],
            "mobile_routers": [{"id": a.MOBILE_ROUTER, "ha_node": a.HA_NODE, "mr_node": a.MR_NODE}],
            "gateway": {"mode": "soap", "url": run.gateway_url},
            "decision": decision,
            "profiles": data["profiles"],
            "preferences": data["preferences"],
            "rules": data["rules"],
            "startup_hold_s": 10.0,
        },
        "broker": run.broker(),
    }


def write(path: Path, content: dict[str, Any]) -> Path:
    """Store one settings file as YAML; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path
