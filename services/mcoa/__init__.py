"""The MCoA agent of the test bed: a small NEMO home agent and mobile router.

This kernel has no Mobile IPv6, so this package plays the MCoA-enabled NEMO daemon: the mobile
router registers one care-of address per egress link (one BID each, RFC 5648) with real Binding
Updates on raw protocol-135 sockets, and the home agent answers with Binding Acknowledgements
and keeps one bit pipe per accepted BID, routed from the BID table the PREM's fwmark rules use.

Lab simplifications, on purpose:
- No IPsec: RFC 3963/6275 require BUs and BAs to be protected by ESP; this kernel has no ESP
  (docs/kernel.md), so signalling is sent in the clear and the HA trusts its configured list of
  mobile routers. Never run this outside a lab.
- No Home Address option and no type 2 routing header (the kernel drops or refuses them): BUs
  leave from the care-of address and name the home address in a Mobile Node Identifier option
  (see `identity`).

Pipes are of the kind this kernel has and both ends agree on (`pipe_kinds`: ip6tnl devices,
SRv6 routes or VXLAN devices; `services.mobility_header.pipe_option` carries the kind in the
BU; docs/kernel.md).

Pure decisions live in `cache` (HA), `registration` (MR) and `pipe_kinds` (what each kind needs
in the kernel); `pipes`, `devices`, `kernel`, `mhsocket`, `ha`, `mr` and `agent` are the edge.
"""
