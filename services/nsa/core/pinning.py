"""Operator pin requests into the routers' pins, and each one's audit record.

A request (`mr/<mr>/pin`, from the console) is checked against the router's classes and
links (`pins.check`): refused with the field named, or applied (a pin from now for its
duration, or a release). Either way the outcome is audited on the router's audit topic and in
the log (who, when, what, outcome), and an applied one has the router decided again. A pin's
end is the decision's wake time; the decision that finds it over drops it and audits the
expiry (`deciding`).
"""

from __future__ import annotations

import logging

from services.contracts.errors import Problem
from services.contracts.messages import AuditRecord, PinRequest
from services.nsa.core.agenda import Agenda
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.effects import Effects
from services.nsa.core.inputs import Trigger, TriggerKind
from services.nsa.core.pins import Pin, check, pin_of, when
from services.nsa.core.slot import Slot, current_view

log = logging.getLogger(__name__)


class PinRequests:
    """Applies operator pin requests to the routers' pins and audits each outcome."""

    def __init__(self, agenda: Agenda, store: ConfigStore, effects: Effects) -> None:
        self.agenda = agenda
        self.store = store
        self.effects = effects

    def request(self, slot: Slot, request: PinRequest, now: float) -> None:
        """One pin or release for the router of `slot`."""
        mobile_router = slot.router.id
        config = self.store.config_for(mobile_router)
        problem = check(request, current_view(slot), config)
        if problem is None and request.release and request.class_name not in slot.pins:
            problem = Problem(f"class {request.class_name!r} is not pinned", field="class_name")
        if problem is not None:
            self.agenda.stats.refused += 1
            self.audit(slot, request, "refused", problem=problem)
            return
        if request.release:
            del slot.pins[request.class_name]
            self.audit(slot, request, "released")
        else:
            pin = pin_of(request, now)
            slot.pins[request.class_name] = pin
            self.audit(slot, request, "applied", pin=pin)
        trigger = Trigger(kind=TriggerKind.CONFIG, detail=f"operator pin by {request.user}")
        self.agenda.waiting(slot, trigger, now)

    def audit(
        self,
        slot: Slot,
        request: PinRequest,
        outcome: str,
        *,
        pin: Pin | None = None,
        problem: Problem | None = None,
    ) -> None:
        """Publish and log the outcome of `request`."""
        record = AuditRecord.model_validate(
            {
                "sender": self.agenda.settings.name,
                "mobile_router": slot.router.id,
                "user": request.user,
                "action": "release" if request.release else "pin",
                "class_name": request.class_name,
                "bid": request.bid,
                "until": None if pin is None else pin.until,
                "requested_at": request.timestamp,
                "outcome": outcome,
                "field": None if problem is None else problem.field,
                "detail": "" if problem is None else problem.reason,
                "reason": request.reason,
            }
        )
        publish(self.effects, record)


def expired(agenda: Agenda, effects: Effects, slot: Slot, now: float) -> None:
    """Drop the router's pins that are over, auditing each."""
    for name, pin in list(slot.pins.items()):
        if pin.until <= now:
            del slot.pins[name]
            record = AuditRecord(
                sender=agenda.settings.name,
                mobile_router=slot.router.id,
                user=pin.user,
                action="expire",
                class_name=name,
                bid=pin.bid,
                until=pin.until,
                requested_at=pin.since,
                outcome="expired",
                reason=pin.reason,
            )
            publish(effects, record)


def publish(effects: Effects, record: AuditRecord) -> None:
    """An audit record on the bus and in the log (one line: who, what, outcome)."""
    what = (
        f"pin {record.class_name} to BID {record.bid}"
        if record.action == "pin"
        else (f"{record.action} {record.class_name}")
    )
    until = "" if record.until is None else f" until {when(record.until)}"
    why = f" ({record.field}: {record.detail})" if record.outcome == "refused" else ""
    log.info(
        "audit %s: %s by %s%s: %s%s",
        record.mobile_router,
        what,
        record.user,
        until,
        record.outcome,
        why,
    )
    effects.audit(record.mobile_router, record)
