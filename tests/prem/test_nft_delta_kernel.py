"""The nftables back end changes a large table of host flows element by element, found by key.

An HA serving many mobile routers holds one exact map per family of distinct single points;
a document for one router changes a few of them. Each scenario runs in a fresh namespace, in
one forked child (`netns.call_in`), and checks what the kernel holds with a second back end
object that knows nothing of the first (its `read` lists the kernel), and with `nft` itself.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable

import pytest

from services import netns
from services.contracts.policy import Drop, Forward, Policy, PortRange, Selector
from services.prem.backends.libnftables import NftContext
from services.prem.backends.nftables import NftablesBackend
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowTable, compile_policies
from services.prem.core.reconcile import plan
from tests.features import need_backend

pytestmark = pytest.mark.kernel

SETTINGS = PremSettings.model_validate(
    {
        "node": "ha1",
        "role": "ha",
        "mobile_router": "mr1",
        "bids": [{"bid": 1}, {"bid": 2}, {"bid": 3}],
    }
)


def flow(i: int, bid: int | None = 1, *, port: int | None = None, prefix: int = 128) -> Policy:
    """Policy `f<i>`: UDP to host 2001:db8:<i>::1 (or a prefix of it), one port."""
    return Policy(
        id=f"f{i}",
        priority=i,
        selector=Selector(
            dst_addr=ipaddress.IPv6Network(f"2001:db8:{i:x}::/{prefix}")
            if prefix < 128
            else ipaddress.IPv6Network(f"2001:db8:{i:x}::1/128"),
            next_header=17,
            dst_port=PortRange(first=port or 5000 + i, last=port or 5000 + i),
        ),
        action=Drop() if bid is None else Forward(bid=bid),
    )


def v4flow(i: int) -> Policy:
    return Policy(
        id=f"v{i}",
        priority=1000 + i,
        selector=Selector(dst_addr=ipaddress.IPv4Network(f"10.1.{i}.1/32"), next_header=6),
        action=Forward(bid=2),
    )


def kernel_table(settings: PremSettings) -> FlowTable:
    """What a back end object that never wrote reads from the kernel."""
    return NftablesBackend(settings).read()


def elements(ns: str) -> int:
    """Elements in every map and set of our table, as `nft` lists them."""
    listing = json.loads(netns.run(ns, ["nft", "-j", "list", "table", "inet", "multinet_prem"]))
    return sum(
        len(o[kind].get("elem", []))
        for o in listing["nftables"]
        for kind in ("map", "set")
        if kind in o
    )


def _scenario() -> list[str]:
    backend = NftablesBackend(SETTINGS)
    modes = []
    base = [flow(i, 1 + i % 3) for i in range(40)] + [v4flow(i) for i in range(5)]
    first = compile_policies(base)
    backend.apply(first, plan(first, backend.read()))
    modes.append(backend.last_apply)
    assert kernel_table(SETTINGS) == first

    # One router's document: 3 replaced (new BID, one now a drop), 2 deleted, 3 inserted, one
    # of them at the key a deleted rule freed; an IPv4 rule deleted too.
    changed = {i: flow(i, 3 if i != 7 else None) for i in (5, 6, 7)}
    kept = [p for p in base if p.id not in {"f10", "f11", "v2"}]
    second_set = [changed.get(int(p.id[1:]), p) if p.id[0] == "f" else p for p in kept]
    second_set += [flow(100, 2), flow(101, 1), flow(11, 2, port=5011)]
    second = compile_policies(second_set)
    backend.apply(second, plan(second, first))
    modes.append(backend.last_apply)
    assert kernel_table(SETTINGS) == second

    # Inconsistent changes (a removal of a rule that is not there): refused by the index,
    # the full path still makes the kernel hold the table wanted.
    third = compile_policies([*second_set, flow(102, 2)])
    bogus = plan(third, compile_policies([*second_set, flow(200, 1)]))
    backend.apply(third, bogus)
    modes.append(backend.last_apply)
    assert kernel_table(SETTINGS) == third

    # A prefix is not a point: the full path, from the layers the index gave back.
    fourth = compile_policies([*second_set, flow(102, 2), flow(300, 1, prefix=48)])
    backend.apply(fourth, plan(fourth, third))
    modes.append(backend.last_apply)
    assert kernel_table(SETTINGS) == fourth
    return modes


def test_a_router_change_is_an_element_delta_and_reads_back(
    make_netns: Callable[[str], str],
) -> None:
    need_backend("nftables")
    ns = make_netns("delta")
    modes = netns.call_in(ns, _scenario)
    assert modes[:2] == ["replace", "delta"]
    assert modes[2] in {"elements", "replace"}
    assert modes[3] in {"elements", "replace"}
    assert elements(ns) == 40 + 5 - 3 + 3 + 1 + 1


def _restart_then_delta() -> tuple[str, bool]:
    """A worker restarted over a point table: the index is built from the kernel's listing."""
    first = compile_policies([flow(i) for i in range(30)])
    NftablesBackend(SETTINGS).apply(first, plan(first, ()))
    backend = NftablesBackend(SETTINGS)
    held = backend.read()
    second = compile_policies([flow(i) for i in range(1, 30)] + [flow(0, 2)])
    backend.apply(second, plan(second, held))
    return backend.last_apply, kernel_table(SETTINGS) == second


def test_after_a_restart_the_first_change_is_a_delta_built_from_the_read(
    make_netns: Callable[[str], str],
) -> None:
    need_backend("nftables")
    ns = make_netns("delta")
    assert netns.call_in(ns, _restart_then_delta) == ("delta", True)


def _foreign_change_then_delta(ns: str) -> tuple[str, bool]:
    """Someone deleted one of our elements behind the back end's back: the delta that deletes
    it is refused whole, and the full path reads the kernel and makes it hold the table."""
    backend = NftablesBackend(SETTINGS)
    first = compile_policies([flow(i) for i in range(20)])
    backend.apply(first, plan(first, backend.read()))
    ctx = NftContext()
    ctx.run("delete element inet multinet_prem s0_6_da_pr_dp_b1 { 2001:db8:3::1 . 17 . 5003 }\n")
    second = compile_policies([flow(i) for i in range(20) if i != 3] + [flow(3, 2)])
    backend.apply(second, plan(second, first))
    return backend.last_apply, kernel_table(SETTINGS) == second


def test_a_refused_delta_falls_back_to_reading_and_rewriting_the_table(
    make_netns: Callable[[str], str],
) -> None:
    need_backend("nftables")
    ns = make_netns("delta")
    mode, held = netns.call_in(ns, _foreign_change_then_delta, ns)
    assert mode in {"elements", "replace"}
    assert held


def scoped(router: int, port: int, bid: int) -> Policy:
    """A class policy of router `router` at an HA: UDP port `port`, scoped by its /48."""
    return Policy(
        id=f"r{router}.p{port}",
        priority=port - 5000,
        selector=Selector(
            dst_addr=ipaddress.IPv6Network(f"2001:db8:{router:x}::/48"),
            next_header=17,
            dst_port=PortRange(first=port, last=port),
        ),
        action=Forward(bid=bid),
    )


def _fleet_scenario() -> tuple[list[str], bool]:
    """Routers' class policies, each scoped by the router's /48 (masked exact keys): one
    router's document is a delta, read back equal by a back end that never wrote."""
    backend = NftablesBackend(SETTINGS)
    base = {r: [scoped(r, 5000 + c, 1 + (r + c) % 3) for c in range(3)] for r in range(50)}
    first = compile_policies([p for ps in base.values() for p in ps])
    backend.apply(first, plan(first, backend.read()))
    modes = [backend.last_apply]
    # Router 7 moves every class to another BID and drops one; router 50 joins.
    base[7] = [scoped(7, 5000 + c, 1 + (8 + c) % 3) for c in range(2)]
    base[50] = [scoped(50, 5000, 2)]
    second = compile_policies([p for ps in base.values() for p in ps])
    backend.apply(second, plan(second, first))
    modes.append(backend.last_apply)
    return modes, kernel_table(SETTINGS) == second


def test_routers_scoped_by_their_prefixes_change_by_elements_too(
    make_netns: Callable[[str], str],
) -> None:
    need_backend("nftables")
    ns = make_netns("delta")
    modes, held = netns.call_in(ns, _fleet_scenario)
    assert modes == ["replace", "delta"]
    assert held
    assert elements(ns) == 50 * 3 - 1 + 1
