"""The MCoA agent of the test bed: a small NEMO home agent and mobile router (issue 5).

This kernel has no Mobile IPv6, so this package plays the MCoA-enabled NEMO daemon: the mobile
router registers one care-of address per egress link (one BID each, RFC 5648) with real Binding
Updates on raw protocol-135 sockets, and the home agent answers with Binding Acknowledgements
and keeps one bit pipe per accepted BID, routed from the BID table the PREM's fwmark rules use.

Lab simplifications, on purpose:
- No IPsec: RFC 3963/6275 require BUs and BAs to be protected by ESP; this kernel has no ESP
  (KERNEL.md), so signalling is sent in the clear and the HA trusts its configured list of
  mobile routers. Never run this outside a lab.
- No Home Address option and no type 2 routing header (the kernel drops or refuses them): BUs
  leave from the care-of address and name the home address in a Mobile Node Identifier option
  (see `identity`).
- Pipes are SRv6 `encap.red` (IPv6-in-IPv6) with End.DT6 decapsulation (see `pipes`); the VXLAN
  variant of KERNEL.md is not implemented.

Pure decisions live in `cache` (HA) and `registration` (MR); `pipes`, `mhsocket`, `ha`, `mr`
and `agent` are the edge.
"""
