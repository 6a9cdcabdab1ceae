"""The per-node link monitor: it probes each access link and publishes link metrics and state.

This package holds its pure core (probe statistics, the up/down state machine, material-change
detection and radio trace replay). Time is always an argument (`now`), so tests step a fake clock;
sockets, netlink and MQTT live at the edge, outside these modules.
"""
