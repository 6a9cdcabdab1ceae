"""The enforcer on the in-memory data plane: documents in, data plane and statuses out."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from services.contracts import policy_xml
from services.contracts.policy import Flush, Install, Update
from services.prem import store
from services.prem.backends.memory import MemoryBackend
from services.prem.core.flowtable import Packet
from services.prem.enforcer import Enforcer
from tests.prem.factories import message, settings, udp_to

PKT = Packet(
    ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("2001:db8::2"), 17, 1, 5001
)


def _enforcer(tmp_path: Path) -> tuple[Enforcer, MemoryBackend]:
    backend = MemoryBackend()
    return Enforcer(settings(tmp_path), backend), backend


def _doc(version: int, op: Install | Update | Flush) -> bytes:
    return policy_xml.render(message(version, op))


def test_applied_document_is_enforced_stored_and_acknowledged(tmp_path: Path) -> None:
    enforcer, plane = _enforcer(tmp_path)
    status = enforcer.handle_document(_doc(1, Install(policies=(udp_to("v", 5001, 2),))))
    assert (status.result, status.version, status.inserted) == ("applied", 1, 1)
    assert plane.bid_for(PKT) == 2
    assert store.load(tmp_path / "state.json", "ha1").version == 1


def test_refused_document_changes_nothing(tmp_path: Path) -> None:
    enforcer, plane = _enforcer(tmp_path)
    enforcer.handle_document(_doc(1, Install(policies=(udp_to("v", 5001, 2),))))
    batches = plane.applied_batches
    for bad in (
        _doc(1, Flush()),  # replayed version
        _doc(2, Install(policies=(udp_to("v", 5001, 9),))),  # unknown BID
        b"<not-xml",
        policy_xml.render(message(3, Flush(), node="ha2")),  # another node
    ):
        status = enforcer.handle_document(bad)
        assert status.result == "refused"
        assert status.refusals
        assert status.version == 1
    assert plane.applied_batches == batches
    assert plane.bid_for(PKT) == 2
    assert store.load(tmp_path / "state.json", "ha1").version == 1


def test_kernel_failure_refuses_and_keeps_the_old_state(tmp_path: Path) -> None:
    enforcer, plane = _enforcer(tmp_path)
    enforcer.handle_document(_doc(1, Install(policies=(udp_to("v", 5001, 2),))))
    plane.fail_next_apply = True
    status = enforcer.handle_document(_doc(2, Update(replace=(udp_to("v", 5001, 1),))))
    assert status.result == "refused"
    assert "kernel" in status.refusals[0].reason
    assert enforcer.state.version == 1
    assert plane.bid_for(PKT) == 2
    # The same version can be sent again once the fault is gone.
    assert (
        enforcer.handle_document(_doc(2, Update(replace=(udp_to("v", 5001, 1),)))).result
        == "applied"
    )
    assert plane.bid_for(PKT) == 1


def test_redelivered_document_is_acknowledged_without_work(tmp_path: Path) -> None:
    enforcer, plane = _enforcer(tmp_path)
    doc = _doc(1, Install(policies=(udp_to("v", 5001, 2),)))
    enforcer.handle_document(doc)
    batches = plane.applied_batches
    status = enforcer.handle_document(doc)
    assert (status.result, status.version) == ("applied", 1)
    assert plane.applied_batches == batches


def test_fallback_moves_flows_and_reports(tmp_path: Path) -> None:
    enforcer, plane = _enforcer(tmp_path)
    enforcer.handle_document(_doc(1, Install(policies=(udp_to("v", 5001, 2, fallbacks=(1,)),))))
    status = enforcer.handle_unusable(frozenset({2}))
    assert status is not None
    assert status.result == "fallback"
    assert [(f.policy_id, f.primary_bid, f.active_bid) for f in status.fallbacks] == [("v", 2, 1)]
    assert plane.bid_for(PKT) == 1
    assert enforcer.handle_unusable(frozenset({2})) is None
    back = enforcer.handle_unusable(frozenset())
    assert back is not None
    assert back.fallbacks == ()
    assert plane.bid_for(PKT) == 2


def test_restart_reconciles_from_the_stored_state(tmp_path: Path) -> None:
    enforcer, _ = _enforcer(tmp_path)
    enforcer.handle_document(_doc(1, Install(policies=(udp_to("v", 5001, 2),))))
    fresh_plane = MemoryBackend()
    restarted = Enforcer(settings(tmp_path), fresh_plane)
    assert restarted.reconcile() == 2
    assert fresh_plane.bid_for(PKT) == 2
    assert restarted.reconcile() == 0


def test_symmetric_document_is_forwarded_mirrored_to_the_peer(tmp_path: Path) -> None:
    backend = MemoryBackend()
    enforcer = Enforcer(settings(tmp_path, peer_node="mr1"), backend)
    doc = policy_xml.render(
        message(1, Install(policies=(udp_to("v", 5001, 2),))).model_copy(update={"symmetric": True})
    )
    reply = enforcer.handle(doc)
    assert reply.status.result == "applied"
    assert reply.forward is not None
    assert (reply.forward.node, reply.forward.direction.value, reply.forward.version) == (
        "mr1",
        "uplink",
        1,
    )
    assert isinstance(reply.forward.operation, Install)
    (mirrored,) = reply.forward.operation.policies
    assert mirrored.selector.src_port is not None
    assert mirrored.selector.src_port.first == 5001
    assert mirrored.selector.dst_port is None
    assert enforcer.handle(doc).forward == reply.forward, "a redelivery forwards again"


def test_symmetric_document_without_a_peer_is_refused(tmp_path: Path) -> None:
    enforcer, plane = _enforcer(tmp_path)
    doc = policy_xml.render(message(1, Flush()).model_copy(update={"symmetric": True}))
    reply = enforcer.handle(doc)
    assert reply.status.result == "refused"
    assert reply.status.refusals[0].field == "symmetric"
    assert reply.forward is None
    assert plane.applied_batches == 0
