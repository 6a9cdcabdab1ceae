"""Hostile policy documents against a live PREM worker (nftables, its own namespace, the real
broker): every one is answered with a status naming the problem, the kernel read-back
(`nft -j list ruleset`, `ip rule`, `ip route`) is unchanged, the process lives on, and the
next valid document still applies; a sentinel table and rules of somebody else stay untouched
throughout.

One worker serves the whole module (`live_node`), so a case that broke it would also fail
every case after it.
"""

from __future__ import annotations

import base64
import hashlib
import queue

import pytest
from hypothesis import HealthCheck, given, settings

from services.contracts import policy_xml
from services.contracts.echo import ID_LIMIT, REASON_LIMIT, echo
from services.contracts.messages import PolicyStatus
from services.contracts.policy import Install, Selector
from services.prem.readback import read_table
from tests.prem.factories import message, udp_to
from tests.security.documents import ENCODINGS, HOLDING, Case, poison_cases
from tests.security.live import NODE, LiveNode, snapshot, state_dir_replaced
from tests.security.strategies import documents, with_version

pytestmark = [pytest.mark.kernel, pytest.mark.broker]

REFUSED = "multinet_prem_messages_refused_total"
DEAD_LETTERS = "multinet_dead_letters_total"


def _text(status: PolicyStatus) -> str:
    return " ".join(f"{r.field or ''} {r.reason}" for r in status.refusals).lower()


def _assert_safe(status: PolicyStatus) -> None:
    """Every text of the answer is an echo: printable ASCII, bounded, whatever was sent."""
    for refusal in status.refusals:
        for text, limit in ((refusal.reason, REASON_LIMIT), (refusal.policy_id, ID_LIMIT)):
            if text is not None:
                assert text == echo(text, limit), refusal
    assert len(status.model_dump_json()) < 64 * 1024


def _still_serving(node: LiveNode) -> None:
    assert node.worker.alive(), node.log_tail()
    node.apply_valid()


@pytest.mark.parametrize("case", [*poison_cases(), *HOLDING, *ENCODINGS], ids=lambda c: c.name)
def test_a_hostile_document_is_answered_and_changes_nothing(
    live_node: LiveNode, case: Case
) -> None:
    node = live_node
    if not node.applied:
        node.apply_valid()
    before, enforced = snapshot(node.namespace), node.version
    status = node.send(case.build(node.next_version()))
    assert status.result == "refused", status
    assert status.version == enforced
    for word in case.words:
        assert word in _text(status), (word, status.refusals)
    if case.policy_id is not None:
        assert echo(case.policy_id, ID_LIMIT) in {r.policy_id for r in status.refusals}
    _assert_safe(status)
    assert snapshot(node.namespace) == before
    assert node.letters.drain() == [], "a refusal, not a dead letter"
    _still_serving(node)
    assert snapshot(node.namespace).sentinel() == before.sentinel()


def test_a_retained_document_published_now_is_refused(live_node: LiveNode) -> None:
    node = live_node
    node.apply_valid()
    before = snapshot(node.namespace)
    document = policy_xml.render(
        message(node.next_version(), Install(policies=(udp_to("other", 7000, 1),)))
    )
    refused_before = node.metric(REFUSED, reason="retained")
    status = node.send(document, retain=True)
    assert status.result == "refused", status
    assert (status.refusals[0].field, status.version) == ("retain", node.version)
    assert "retained policy document" in status.refusals[0].reason
    assert snapshot(node.namespace) == before
    assert node.metric(REFUSED, reason="retained") == refused_before + 1
    # Deleting the retained message is itself a (retained, empty) delivery: refused as well.
    assert node.send(b"", retain=True).refusals[0].field == "retain"
    _still_serving(node)


def test_policies_that_can_never_match_are_applied_with_a_warning(live_node: LiveNode) -> None:
    node = live_node
    first = udp_to("a-video", 5001, 1, priority=5)
    shadowed = first.model_copy(update={"id": "b-video"})
    other = udp_to("c-voice", 5002, 2, priority=5)
    document = message(node.next_version(), Install(policies=(shadowed, first, other)))
    status = node.send(policy_xml.render(document))
    assert status.result == "applied", status
    assert [(w.policy_id, w.field) for w in status.warnings] == [("b-video", "selector")]
    assert "'a-video'" in status.warnings[0].reason
    assert "never matches" in status.warnings[0].reason
    assert first.selector == shadowed.selector != Selector()
    assert {"a-video", "b-video", "c-voice"} <= set(read_table(node.namespace).by_policy())
    node.applied = (shadowed, first, other)
    _still_serving(node)


def test_a_document_whose_handling_raises_becomes_a_dead_letter(live_node: LiveNode) -> None:
    node = live_node
    node.apply_valid()
    before, enforced = snapshot(node.namespace), node.version
    document = policy_xml.render(
        message(node.next_version(), Install(policies=(udp_to("moved", 6000, 2),)))
    )
    with state_dir_replaced(node):
        # The kernel batch commits, then storing the state fails: not a refusal the worker
        # foresaw, so the document is set aside and the kernel put back.
        status = node.send(document)
        letter = node.letters.next()
    assert status.result == "refused", status
    assert status.version == enforced
    assert status.refusals[0].reason.startswith("not handled: FileExistsError"), status
    assert (letter.node, letter.service, letter.input) == (NODE, "prem", "policy")
    assert letter.error == "FileExistsError"
    assert letter.payload_sha256 == hashlib.sha256(document).hexdigest()
    assert base64.b64decode(letter.payload_head) == document[:1024]
    assert snapshot(node.namespace) == before, "the committed batch was undone"
    assert node.metric(DEAD_LETTERS, input="policy") == 1
    assert node.metric(REFUSED, reason="not-handled") == 1
    records = [r for r in node.worker.records() if "dead letter" in str(r.get("message"))]
    assert records
    assert records[-1]["node"] == NODE
    assert records[-1]["level"] == "ERROR"
    # The document was acknowledged: a restarted worker is not handed it again, and the next
    # document is the first thing it answers.
    node.worker.stop()
    node.worker.start()
    node.client.wait_online(NODE, timeout_s=20)
    _still_serving(node)
    with pytest.raises(queue.Empty):
        node.letters.next(timeout_s=0.5)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(document=documents())
def test_a_live_sample_of_generated_documents(live_node: LiveNode, document: bytes) -> None:
    node = live_node
    before = snapshot(node.namespace)
    status = node.send(with_version(document, node.next_version()))
    assert status.result in ("applied", "refused"), status
    _assert_safe(status)
    assert node.worker.alive(), node.log_tail()
    after = snapshot(node.namespace)
    if status.result == "refused":
        assert after == before
        assert status.refusals
    assert after.sentinel() == before.sentinel()
    assert node.letters.drain() == []


def test_the_worker_still_applies_after_the_battery(live_node: LiveNode) -> None:
    _still_serving(live_node)
