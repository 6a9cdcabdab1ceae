"""A schema-checked policy document read into plain data and validated in one pydantic call.

`policy_xml` builds the models element by element, so that a refusal names the line, the
policy and the field; that costs one pydantic call per model, most of a document's parse (a
10-policy Install: about 440 us of 650). Nearly every document is valid and needs none of that
precision, so `policy_xml.parse` first reads the tree here into nested dicts and validates the
whole message at once; only when that fails does it build the models one by one for the
problems. Both ways run the same models and validators, so they accept the same documents and
build equal messages (`tests/contracts/test_policy_raw.py`).

Values have passed the XSD, so their lexical forms are known to be valid; addresses are made
by `ipaddress` here as in `policy_xml`, and a bad one raises `ValueError` (the slow way then
reports it at its element).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from lxml import etree

from services.contracts.policy import PolicyMessage

Raw = dict[str, Any]


def message(root: etree._Element) -> PolicyMessage:
    """The validated message; `pydantic.ValidationError` or `ValueError` when it is not valid."""
    ns = root.tag[: root.tag.index("}") + 1]
    operation = root[0]
    raw = {
        "node": root.get("node"),
        "mobile_router": root.get("mobile-router"),
        "direction": root.get("direction"),
        "version": _int(root.get("version")),
        "symmetric": root.get("symmetric", "false") in ("true", "1"),
        "operation": _OPERATIONS[_local(operation)](operation, ns),
    }
    return PolicyMessage.model_validate(raw)


def _local(element: etree._Element) -> str:
    return str(element.tag).rpartition("}")[2]


def _int(text: str | None) -> int:
    return int((text or "").strip())


def _install(element: etree._Element, ns: str) -> Raw:
    return {"kind": "install", "policies": [_policy(p, ns) for p in element]}


def _update(element: etree._Element, ns: str) -> Raw:
    return {
        "kind": "update",
        "delete": [d.get("id") for d in element.iterchildren(ns + "delete")],
        "replace": [_policy(h[0], ns) for h in element.iterchildren(ns + "replace")],
        "insert": [_policy(h[0], ns) for h in element.iterchildren(ns + "insert")],
    }


_OPERATIONS: dict[str, Callable[[etree._Element, str], Raw]] = {
    "install": _install,
    "update": _update,
    "flush": lambda _element, _ns: {"kind": "flush"},
}


def _policy(element: etree._Element, ns: str) -> Raw:
    raw: Raw = {"id": element.get("id"), "priority": _int(element.get("priority"))}
    action = element[-1]
    if len(element) > 1:
        raw["selector"] = _selector(element[0])
    raw["action"] = _ACTIONS[_local(action)](action, ns)
    return raw


def _bids(element: etree._Element, tag: str) -> list[int]:
    return [_int(child.get("bid")) for child in element.iterchildren(tag)]


def _forward(element: etree._Element, ns: str) -> Raw:
    return {
        "kind": "forward",
        "bid": _int(element.get("bid")),
        "fallbacks": _bids(element, ns + "fallback"),
    }


def _balance(element: etree._Element, ns: str) -> Raw:
    shares = [
        {"bid": _int(s.get("bid")), "weight": _int(s.get("weight"))}
        for s in element.iterchildren(ns + "share")
    ]
    return {"kind": "balance", "shares": shares, "fallbacks": _bids(element, ns + "fallback")}


def _duplicate(element: etree._Element, ns: str) -> Raw:
    return {
        "kind": "duplicate",
        "paths": _bids(element, ns + "path"),
        "fallbacks": _bids(element, ns + "fallback"),
    }


def _priority(element: etree._Element, ns: str) -> Raw:
    tiers = []
    for tier in element.iterchildren(ns + "tier"):
        rate = tier.get("rate-bps")
        tiers.append(
            {"bid": _int(tier.get("bid")), "rate_bps": None if rate is None else _int(rate)}
        )
    return {"kind": "priority", "tiers": tiers, "fallbacks": _bids(element, ns + "fallback")}


_ACTIONS: dict[str, Callable[[etree._Element, str], Raw]] = {
    "forward": _forward,
    "drop": lambda _element, _ns: {"kind": "drop"},
    "balance": _balance,
    "duplicate": _duplicate,
    "priority": _priority,
}


def _selector(element: etree._Element) -> Raw:
    raw: Raw = {}
    for child in element:
        name = _local(child)
        if name in ("source", "destination"):
            raw["src_addr" if name == "source" else "dst_addr"] = _address(child)
        elif name in ("source-port", "destination-port"):
            ports = {"first": _int(child.get("first")), "last": _int(child.get("last"))}
            raw["src_port" if name == "source-port" else "dst_port"] = ports
        else:
            raw[_FIELDS[name]] = _int(child.text)
    return raw


_FIELDS = {"next-header": "next_header", "dscp": "dscp", "flow-label": "flow_label"}


def _address(element: etree._Element) -> object:
    match = element[0]
    if _local(match) == "prefix":
        return ipaddress.ip_network((match.text or "").strip())
    first = ipaddress.ip_address((match.get("first") or "").strip())
    last = ipaddress.ip_address((match.get("last") or "").strip())
    return {"first": first, "last": last}
