"""The end-to-end test bed: the paper's Figure 6 in network namespaces, driven by scenarios.

The chain of Figure 1 runs on real packets: an HTTP stream from the correspondent node (CN)
through the home agent (HA), one of two access routers and a multihomed mobile router (MR) to
a mobile network node (MNN), while the real services (PREM workers, MCoA agents, monitor,
mobility events, SOAP gateway, NSA) run as their own processes, each in its node's namespace.

Modules: `addressing` (names, addresses, ifindexes: pure), `topology` (build and tear down the
namespaces), `access` (what happens to the MR's access links: carrier, handover, care-of
address), `configs` (each service's settings file), `processes` (which services, in which
order, ready when), `supervisor` (processes, logs, readiness, the registry), `recorder` (bus
messages with arrival times), `counters` (the MR's interface counters every 100 ms), `stream`
(the paced HTTP stream and its receiver), `tcpstats` (the CN's retransmissions), `scenario`
(the timeline file), `conditions` and `actions` (what a step waits on and does), `timeline`
(running the steps), `runner` and `rundata` (one run), `analysis`, `plot` and `report` (the
measured timeline and its outputs), `simworld` and `simulate` (the decisions without root),
`cli` (`multinet testbed ...`).
"""
