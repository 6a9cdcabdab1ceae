"""PREM: Policy Reception and Enforcement Module, one worker per node (HA and MR).

`core/` decides (pure functions of data, see its docstring); the rest is the shell that does
I/O around it: `enforcer` (one document or link change at a time: decide, apply through a back
end, store), `backends/` (nftables, iptables, memory), `routing` (the policy-routing rules),
`linkwatch` (netlink events), `store` (the durable desired state), `node` (the node's life
cycle), and the two transports that feed it: `worker` (MQTT) and `standalone` (SOAP, no
broker).
"""
