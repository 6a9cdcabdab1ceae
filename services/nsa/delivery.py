"""Delivering calls: a real SOAP client generated from the gateway's WSDL, in a worker pool.

The gateway answers a call only once both workers acknowledged (or its deadline passed), so
one call can take seconds; a small pool keeps one slow router from holding up the others
while the engine keeps one call per router in flight. Each pool thread builds its own zeep
client from `url?wsdl` (zeep clients are not documented as thread-safe) with the gateway's
HTTP Basic credentials, and binds the service to the configured URL rather than the address
the WSDL advertises (the gateway may sit behind a name it does not know).

Every call ends in exactly one `CallResult` handed to `done`: the per-node replies, or the
reason there are none (a SOAP Fault, the gateway unreachable, a timeout). A failure that is
none of these is a bug: it goes to `fatal`, which ends the service loudly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import requests
import zeep
import zeep.exceptions
import zeep.helpers
import zeep.transports

from services.contracts import policy_xml
from services.nsa.core.calls import Call, CallResult, NodeReply, Outcome
from services.nsa.core.settings import GatewayLink

log = logging.getLogger(__name__)

#: The gateway's binding, as its WSDL names it (services/soap_gateway/service.py).
BINDING = "{urn:multinet:soap-gateway:1}MultinetSoapGateway"
_OUTCOMES: dict[str, Outcome] = {
    "applied": "applied",
    "refused": "refused",
    "not-reached": "not-reached",
}


class Delivery(Protocol):
    """Where the engine's calls go."""

    def deliver(self, call: Call) -> None:
        """Start `call`; its result is handed to the `done` callback later."""
        ...

    def close(self) -> None:
        """Stop taking calls; calls in flight may still report."""
        ...


class DryRunDelivery:
    """Sends nothing: every document counts as applied at once (decision-side benchmarks,
    trying out profiles). Says so in the log once."""

    def __init__(self, done: Callable[[CallResult], None]) -> None:
        self._done = done
        log.warning("delivery is a dry run: decisions reach no PREM worker")

    def deliver(self, call: Call) -> None:
        """Answer `call` as applied by every node it addresses."""
        replies = tuple(NodeReply(m.node, "applied", m.version, m.version) for m in call.messages())
        self._done(CallResult(call, replies))

    def close(self) -> None:
        """Nothing to release."""


class SoapDelivery:
    """Calls the gateway's Install/Update from a thread pool, one zeep client per thread."""

    def __init__(
        self,
        link: GatewayLink,
        password: str | None,
        done: Callable[[CallResult], None],
        fatal: Callable[[BaseException], None],
    ) -> None:
        if link.url is None:
            raise ValueError("SOAP delivery needs the gateway's url")
        self.link = link
        self.url = link.url
        self._password = password
        self._done = done
        self._fatal = fatal
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=link.workers, thread_name_prefix="nsa-soap")

    def deliver(self, call: Call) -> None:
        """Queue `call` for the next free pool thread."""
        future = self._pool.submit(self._run, call)
        future.add_done_callback(self._check)

    def close(self) -> None:
        """Stop the pool; queued calls are dropped (their deadlines count them as lost)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _check(self, future: Future[None]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            self._fatal(error)

    def _run(self, call: Call) -> None:
        try:
            rows = self._call(call)
        except zeep.exceptions.Fault as exc:
            self._forget_client()
            self._done(CallResult(call, error=f"SOAP Fault {exc.code}: {exc.message}"))
            return
        except (zeep.exceptions.Error, requests.RequestException, OSError) as exc:
            self._forget_client()
            error = f"gateway {self.url} unreachable or failing: {type(exc).__name__}: {exc}"
            self._done(CallResult(call, error=error))
            return
        self._done(CallResult(call, tuple(_reply(row) for row in rows)))

    def _call(self, call: Call) -> list[dict[str, Any]]:
        service = self._service()
        operation = service.Install if call.operation == "install" else service.Update
        downlink = policy_xml.render(call.downlink).decode("utf-8")
        uplink = None if call.uplink is None else policy_xml.render(call.uplink).decode("utf-8")
        answer = operation(mobile_router=call.mobile_router, downlink=downlink, uplink=uplink)
        rows: list[dict[str, Any]] = zeep.helpers.serialize_object(answer) or []  # type: ignore[no-untyped-call]
        return rows

    def _service(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            session = requests.Session()
            if self.link.username is not None:
                session.auth = (self.link.username, self._password or "")
            transport = zeep.transports.Transport(  # type: ignore[no-untyped-call]
                session=session,
                timeout=self.link.connect_timeout_s,
                operation_timeout=self.link.call_timeout_s,
            )
            client = zeep.Client(f"{self.url}?wsdl", transport=transport)  # type: ignore[no-untyped-call]
            service = client.create_service(BINDING, self.url)  # type: ignore[no-untyped-call]
            self._local.client = client  # the service proxy needs its client alive
            self._local.service = service
        return service

    def _forget_client(self) -> None:
        """After a failure, the next call builds a fresh client (the gateway may have been
        restarted or moved)."""
        self._local.service = None
        self._local.client = None


def _reply(row: dict[str, Any]) -> NodeReply:
    reasons = row.get("reasons") or {}
    items = reasons.get("Reason", []) if isinstance(reasons, dict) else []
    texts = tuple(
        " ".join(
            part
            for part in (
                f"line {r['line']}" if r.get("line") is not None else "",
                f"policy {r['policy_id']}" if r.get("policy_id") else "",
                f"field {r['field']}" if r.get("field") else "",
                str(r.get("reason", "")),
            )
            if part
        )
        for r in items
    )
    outcome = _OUTCOMES.get(str(row.get("outcome")), "not-reached")
    version = row.get("version")
    return NodeReply(
        node=str(row["node"]),
        outcome=outcome,
        requested_version=int(row["requested_version"]),
        version=None if version is None else int(version),
        reasons=texts,
    )


def make_delivery(
    link: GatewayLink,
    password: str | None,
    done: Callable[[CallResult], None],
    fatal: Callable[[BaseException], None],
) -> Delivery:
    """The delivery the settings ask for."""
    if link.mode == "dry-run":
        return DryRunDelivery(done)
    return SoapDelivery(link, password, done, fatal)
