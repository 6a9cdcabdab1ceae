"""The SOAP gateway as a library: what a program that serves the gateway's SOAP service itself
uses (the PREM's standalone daemon, which enforces each call in its own kernel instead of
delivering it over the bus). Everything else in this package is the gateway's own business.

- the settings of a SOAP server (`GatewaySettings`, `CallerSettings`; `StandaloneSoapSettings`
  is the `[standalone]` table of a PREM's settings file: its callers and TLS) and the warnings
  it must give at start (`access_warnings`);
- the calls it answers (`SoapCalls`), with the gateway's answers (`NodeOutcome`, `NodeState`,
  `node_outcome`), refusals (`CallRefused`, `FaultCode`, `PartProblem`, `BusUnavailableError`)
  and authorisation (`Caller`, `authorise`);
- the correlation of statuses with waiting calls (`Tracker`), and what a valid call delivers
  (`Delivery`);
- the server itself (`SoapServer`: the WSDL, the WSGI guard, HTTP Basic, TLS, SOAP over UDP),
  `ListenError` when its sockets cannot be opened, and `quiet_client_faults`.
"""

from __future__ import annotations

from services.soap_gateway.auth import Caller
from services.soap_gateway.checks import CallRefused, Delivery, FaultCode, PartProblem
from services.soap_gateway.config import (
    CallerSettings,
    GatewaySettings,
    StandaloneSoapSettings,
    access_warnings,
)
from services.soap_gateway.core import (
    BusUnavailableError,
    NodeOutcome,
    NodeState,
    SoapCalls,
    authorise,
    node_outcome,
)
from services.soap_gateway.soap_server import ListenError, SoapServer, quiet_client_faults
from services.soap_gateway.tracker import Tracker

__all__ = [
    "BusUnavailableError",
    "CallRefused",
    "Caller",
    "CallerSettings",
    "Delivery",
    "FaultCode",
    "GatewaySettings",
    "ListenError",
    "NodeOutcome",
    "NodeState",
    "PartProblem",
    "SoapCalls",
    "SoapServer",
    "StandaloneSoapSettings",
    "Tracker",
    "access_warnings",
    "authorise",
    "node_outcome",
    "quiet_client_faults",
]
