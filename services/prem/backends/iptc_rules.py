"""`RuleSpec`s (`core.iptables_rules`) as python-iptables rule objects, and back, in memory:
nothing here reads or commits a table. The only module besides the back end that touches
python-iptables' untyped API.
"""

from __future__ import annotations

from typing import Any

import iptc

from services.prem.core.iptables_rules import RuleSpec


def new_rule(family: int) -> Any:
    """An empty iptc rule of `family`."""
    return iptc.Rule6() if family == 6 else iptc.Rule()


def make_rule(spec: RuleSpec, family: int) -> Any:
    """An iptc rule from `spec`."""
    rule = new_rule(family)
    if spec.src is not None:
        rule.src = spec.src
    if spec.dst is not None:
        rule.dst = spec.dst
    if spec.protocol is not None:
        rule.protocol = str(spec.protocol)
    for name, params in spec.matches:
        match = rule.create_match(name)
        for key, value in params:
            match.set_parameter(key, value)
    target = rule.create_target(spec.target, goto=spec.goto)
    for key, value in spec.target_params:
        target.set_parameter(key, value)
    return rule


def capture(rule: Any, family: int) -> RuleSpec:
    """An iptc rule as plain data; `-s/-d` of 0/0 are absent, the protocol is a number."""
    ip = rule.entry.ipv6 if family == 6 else rule.entry.ip
    inverted = int(ip.invflags) != 0 or "!" in str(rule.src) or "!" in str(rule.dst)
    src, dst = str(rule.src), str(rule.dst)
    proto = int(ip.proto)
    matches = tuple(
        (
            str(m.name),
            tuple((str(k), " ".join(map(str, v))) for k, v in m.get_all_parameters().items()),
        )
        for m in rule.matches
    )
    target = rule.target
    return RuleSpec(
        src=None if _is_any(src) else src,
        dst=None if _is_any(dst) else dst,
        protocol=proto or None,
        matches=matches,
        target=str(target.name),
        target_params=tuple(
            (str(k), " ".join(map(str, v))) for k, v in target.get_all_parameters().items()
        ),
        goto=bool(target.goto),
        inverted=inverted,
    )


def _is_any(address: str) -> bool:
    return address.endswith(("/0", "/0.0.0.0", "/::"))
