"""The SOAP face of the gateway: spyne types, the four operations and their faults.

SOAP 1.1 document/literal with lxml schema validation on the way in, so a call missing a
part or carrying a wrong type is refused by the schema before our code runs. The operations
only translate between SOAP and a `core.SoapCalls` (`core.GatewayCore` in the gateway), which
spyne finds in the method context (`udc`), so one process can serve several gateways (the
tests do).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import spyne.const
from spyne import (
    Application,
    Array,
    Boolean,
    ComplexModel,
    Fault,
    Integer,
    Long,
    ServiceBase,
    Unicode,
    rpc,
)
from spyne.protocol.soap import Soap11

from services.contracts.messages import Refusal
from services.soap_gateway.auth import ENVIRON_KEY, Caller, NotAuthorisedError
from services.soap_gateway.checks import CallRefused
from services.soap_gateway.core import BusUnavailableError, NodeOutcome, NodeState, SoapCalls

NAMESPACE = "urn:multinet:soap-gateway:1"
log = logging.getLogger(__name__)

# spyne runs a full gc.collect() at the end of a call at most once a second, to close file
# descriptors of file attachments (we have none). Here that is ~20 ms holding the GIL, which
# every call in flight waits for: the gateway's p99 latency. Python's own collector is enough.
spyne.const.MIN_GC_INTERVAL = float("inf")


class Reason(ComplexModel):  # type: ignore[misc]
    """Why a worker refused a document: where (line, policy, field) and what."""

    __namespace__ = NAMESPACE
    _type_info = (
        ("reason", Unicode(min_occurs=1, nillable=False)),
        ("policy_id", Unicode),
        ("field", Unicode),
        ("line", Integer),
    )


class NodeResult(ComplexModel):  # type: ignore[misc]
    """One node's outcome of a call: applied, refused or not-reached."""

    __namespace__ = NAMESPACE
    _type_info = (
        ("node", Unicode(min_occurs=1, nillable=False)),
        ("direction", Unicode(min_occurs=1, nillable=False)),
        ("outcome", Unicode(min_occurs=1, nillable=False)),
        ("requested_version", Long(min_occurs=1, nillable=False)),
        ("version", Long),
        ("reasons", Array(Reason)),
    )


class NodeStatus(ComplexModel):  # type: ignore[misc]
    """One node as the bus last reported it; absent values were not heard yet."""

    __namespace__ = NAMESPACE
    _type_info = (
        ("node", Unicode(min_occurs=1, nillable=False)),
        ("direction", Unicode(min_occurs=1, nillable=False)),
        ("online", Boolean),
        ("version", Long),
        ("last_result", Unicode),
        ("refused_version", Long),
        ("reasons", Array(Reason)),
    )


_Part = Unicode(min_occurs=1, nillable=False)
#: The uplink document: absent in scheme 2, where the downlink document is symmetric.
_Uplink = Unicode(min_occurs=0, nillable=False)
_F = TypeVar("_F", bound=Callable[..., Any])


def _operation(name: str, *params: Any, returns: Any) -> Callable[[_F], _F]:
    """spyne's `rpc`, typed; `name` is the WSDL operation name (Python names stay lowercase)."""
    decorator: Callable[[_F], _F] = rpc(*params, _returns=returns, _operation_name=name)
    return decorator


def _reasons(refusals: tuple[Refusal, ...]) -> list[Any]:
    return [
        Reason(reason=r.reason, policy_id=r.policy_id, field=r.field, line=r.line) for r in refusals
    ]


def _result(outcome: NodeOutcome) -> Any:
    return NodeResult(
        node=outcome.node,
        direction=outcome.direction.value,
        outcome=outcome.outcome.value,
        requested_version=outcome.requested_version,
        version=outcome.version,
        reasons=_reasons(outcome.refusals),
    )


def _status(state: NodeState) -> Any:
    view = state.view
    return NodeStatus(
        node=view.node,
        direction=state.direction.value,
        online=view.online,
        version=view.version,
        last_result=view.last_result,
        refused_version=view.refused_version,
        reasons=_reasons(view.refusals),
    )


def _core(ctx: Any) -> SoapCalls:
    calls: SoapCalls = ctx.udc  # set by `make_application`'s listener
    return calls


def _caller(ctx: Any) -> Caller | None:
    """The caller the WSGI layer authenticated; None over a transport without credentials."""
    environ = getattr(ctx.transport, "req_env", None)
    caller = environ.get(ENVIRON_KEY) if isinstance(environ, dict) else None
    return caller if isinstance(caller, Caller) else None


def _unauthorised(exc: NotAuthorisedError) -> Fault:
    # Logged with the caller and its address by the WSGI stack (wsgi.RefusalLog), like every
    # refusal.
    return Fault(faultcode=exc.code, faultstring=str(exc))


def _deliver(
    ctx: Any, operation: str, mobile_router: str, downlink: str, uplink: str | None
) -> Any:
    try:
        outcomes = _core(ctx).deliver(
            operation, mobile_router, downlink, uplink, caller=_caller(ctx)
        )
    except NotAuthorisedError as exc:
        raise _unauthorised(exc) from exc
    except CallRefused as exc:
        raise Fault(faultcode=exc.code.value, faultstring=str(exc)) from exc
    except BusUnavailableError as exc:
        raise Fault(faultcode="Server.BusUnavailable", faultstring=str(exc)) from exc
    return [_result(o) for o in outcomes]


class PolicyGateway(ServiceBase):  # type: ignore[misc]
    """Scheme 1: each call carries the HA's downlink and the MR's uplink document.

    Scheme 2: the call carries only a downlink document marked `symmetric="true"`; the HA's
    worker enforces it and forwards the mirrored uplink set to the MR's worker."""

    @_operation("Install", _Part, _Part, _Uplink, returns=Array(NodeResult))
    def install(ctx: Any, mobile_router: str, downlink: str, uplink: str | None) -> Any:  # noqa: N805
        """Replace both nodes' policy sets."""
        return _deliver(ctx, "install", mobile_router, downlink, uplink)

    @_operation("Update", _Part, _Part, _Uplink, returns=Array(NodeResult))
    def update(ctx: Any, mobile_router: str, downlink: str, uplink: str | None) -> Any:  # noqa: N805
        """Insert, delete and replace entries on both nodes."""
        return _deliver(ctx, "update", mobile_router, downlink, uplink)

    @_operation("Flush", _Part, _Part, _Uplink, returns=Array(NodeResult))
    def flush(ctx: Any, mobile_router: str, downlink: str, uplink: str | None) -> Any:  # noqa: N805
        """Remove every policy of both nodes."""
        return _deliver(ctx, "flush", mobile_router, downlink, uplink)

    @_operation("GetStatus", _Part, returns=Array(NodeStatus))
    def get_status(ctx: Any, mobile_router: str) -> Any:  # noqa: N805
        """What the HA and the MR of `mobile_router` enforce, and whether they are online."""
        try:
            states = _core(ctx).status(mobile_router, caller=_caller(ctx))
        except NotAuthorisedError as exc:
            raise _unauthorised(exc) from exc
        except CallRefused as exc:
            raise Fault(faultcode=exc.code.value, faultstring=str(exc)) from exc
        return [_status(s) for s in states]


class _Soap11(Soap11):  # type: ignore[misc]
    """SOAP 1.1 with schema validation serialised: an lxml schema keeps its error log on
    itself, and cheroot runs calls on several threads (see policy_xml's `_SCHEMA_LOCK`)."""

    _validating = threading.Lock()

    def validate_body(self, ctx: Any, message: Any) -> Any:
        """Validate the body against the generated schema, one call at a time."""
        with self._validating:
            return super().validate_body(ctx, message)


def _protocol() -> Any:
    # spyne's defaults already refuse these; stating them keeps a default change from
    # weakening the parser. The body guard (wsgi.py) refuses any DTD before this parser runs.
    return _Soap11(
        validator="lxml",
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
    )


def make_application(core: SoapCalls) -> Any:
    """A spyne application bound to `core` (handed to each call as `ctx.udc`)."""
    app = Application(
        [PolicyGateway],
        tns=NAMESPACE,
        name="MultinetSoapGateway",
        in_protocol=_protocol(),
        out_protocol=_protocol(),
    )

    def bind(ctx: Any) -> None:
        ctx.udc = core

    app.event_manager.add_listener("method_call", bind)
    return app
