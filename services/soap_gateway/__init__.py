"""The SOAP gateway: the NSA's (and legacy NSAs') way to deliver policies to PREM workers.

This first part serves scheme 1 of the paper over HTTP: each Install, Update or Flush call
carries one mobile router's downlink document (for its HA) and uplink document (for the MR
itself), both in our policy vocabulary (`urn:multinet:flow-policy:1`). Both documents are
validated before either is published, so a call invalid for one node reaches none; then both
go to the workers over MQTT and the answer holds one outcome per node (applied, refused or
not-reached). `GetStatus` reports what each node enforces, as the bus last told us.

Modules: `config` (settings), `checks` (request validation, pure), `tracker` (correlating
acknowledgements and presence, thread-safe, no MQTT), `core` (one call's delivery, no SOAP),
`buslink` (the one long-lived MQTT client), `service` (spyne types and operations), `wsgi`
(body limits in front of spyne), `server` (cheroot, signals).

What the outcomes promise: the gateway's own checks (schema, vocabulary, addressing, the
operation matching the call) are all or nothing across the two nodes. Each worker then checks
what only it knows (its enforced version, its BIDs) and may refuse alone, so one node can be
`applied` while the other is `refused`; the caller sees both and decides. `not-reached` means
no acknowledgement before the deadline, not that nothing happened: the document stays queued
in the worker's persistent session and may still be applied when the worker returns. A worker
refusal that names no requested version (a document over the worker's own, smaller limits)
cannot be correlated and shows as `not-reached`; keep the gateway's limits at or below the
workers'.

Not in this part (to be filed): scheme 2 (downlink only, the HA mapping the uplink set),
SOAP over UDP, standalone mode (no broker), authentication of SOAP callers, the benchmark.
"""

# Before any module of this package imports spyne (Python 3.12+; see the module).
from services.soap_gateway import spyne_compat as _spyne_compat  # noqa: F401
