"""The mobility-events service: turns BU/BA signalling into binding events.

A NEMO mobile router registers each of its care-of addresses with the home agent in Binding
Updates, one Binding Identifier (BID) per address (MCoA, RFC 5648), and the home agent answers
with Binding Acknowledgements. This service watches that signalling and publishes what changed
(a BID bound, refreshed, moved to a new care-of address, or deregistered), so the decision and
enforcement services never parse packets themselves. The wire format is the shared
`services.mobility_header` (pure, without I/O; malformed signalling is refused with one typed
error and counted).
"""
