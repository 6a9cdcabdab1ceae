"""Thousands of generated policy documents through the PREM's real handling code, in process.

The enforcer (the worker's core: parse, checks, apply, status) on the in-memory data plane.
For every document: an answer comes back (never an exception), it survives the bus (encoded
and decoded again by what the gateway and the NSA run, equal), its texts are safe echoes, a
refusal leaves the data plane and the stored state exactly as they were, and an applied
document leaves the data plane equal to the desired state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings

from services.contracts import policy_xml
from services.contracts.echo import FIELD_LIMIT, ID_LIMIT, REASON_LIMIT, echo
from services.contracts.messages import PolicyStatus, Refusal, StatusWarning, decode, encode
from services.contracts.policy import Install
from services.prem import store
from services.prem.backends.memory import MemoryBackend
from services.prem.core.flowtable import compile_policies
from services.prem.enforcer import Enforcer
from tests.prem.factories import message, udp_to
from tests.prem.factories import settings as prem_settings
from tests.security.strategies import documents, with_version

ENFORCED = (udp_to("video", 5001, 2, fallbacks=(1,)), udp_to("voice", 5002, 1))


def _answer(document: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        plane = MemoryBackend()
        enforcer = Enforcer(prem_settings(Path(directory)), plane)
        first = enforcer.handle_document(policy_xml.render(message(1, Install(policies=ENFORCED))))
        assert first.result == "applied"
        table, state = plane.read(), store.load(Path(directory) / "state.json", "ha1")

        status = enforcer.handle(with_version(document, 2)).status
        event(status.result)

        assert decode(PolicyStatus, encode(status)) == status
        notes: list[Refusal | StatusWarning] = [*status.refusals, *status.warnings]
        for note in notes:
            assert note.reason == echo(note.reason, REASON_LIMIT)
            assert note.policy_id is None or note.policy_id == echo(note.policy_id, ID_LIMIT)
            assert note.field is None or note.field == echo(note.field, FIELD_LIMIT)
        if status.result == "refused":
            assert status.refusals
            assert status.version == 1
            assert plane.read() == table
            assert store.load(Path(directory) / "state.json", "ha1") == state
        else:
            assert status.result == "applied"
            assert plane.read() == compile_policies(enforcer.state.policies)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_every_generated_document_is_answered(document: bytes) -> None:
    _answer(document)
