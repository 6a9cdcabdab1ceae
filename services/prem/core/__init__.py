"""The PREM's pure core: every decision of a worker as a function of data.

- `settings`: what the core knows of its node (role, BIDs, marks, tables, names, limits);
- `policyset`: a policy document applied to the desired state, or refused with its reasons;
- `flowtable`: the desired state compiled into prioritised flow rules (fallbacks included),
  and a packet classified against them (the fake data plane's answer);
- `reconcile`: the change list from the rules enforced to the rules desired;
- `nft_layers`, `nft_render`, `nft_parse`: flow rules as nftables verdict maps and rules, and
  back from a listing;
- `iptables_rules`: flow rules as xtables rule specs, and back;
- `rules`: the policy-routing rules a node wants and the change from those the kernel holds;
- `usability`: which BIDs are unusable given their devices and routing tables.

Nothing here opens a socket, starts a thread, reads a clock, runs a process or touches a file
or the kernel; the shell around it (`enforcer`, `routing`, `linkwatch`, `store`, the back ends'
kernel parts, `node`, `worker`, `standalone`) does, and imports from here, never the reverse.
The one import of `socket` (`nft_render`) is for `inet_ntop`, a pure text conversion.
"""
